"""Reads with a time limit, so that a camera that stops sending is noticed.

A network camera that hangs (or an RTSP server stopped with ``kill -STOP``) keeps
its TCP connection open: ``cv2.VideoCapture.read()`` then blocks, and FFmpeg's own
read timeout does not always end the wait. :class:`TimedReader` runs a capture's
``read()`` on a thread of its own, one read per request (never ahead, so the
frames and their timing are exactly those of a direct read), and the caller waits
for it at most ``timeout`` seconds. A read that takes longer makes the reader
*abandoned*: the caller treats the source as lost and reconnects with a new
capture; the stuck read's thread releases the old capture whenever its read
returns and discards whatever it returns, so frames buffered before the freeze are
never delivered as live ones.

``get`` and ``release`` of a capture are only ever called while no read runs on
it (the reader releases it itself, from its thread).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

log = logging.getLogger(__name__)


class Stalled(Exception):
    """A read did not return within the time limit."""


class TimedReader:
    """``read(timeout)`` on a capture, from a thread of its own (see the module notes)."""

    def __init__(self, cap: Any, name: str = "microgesture-read"):
        self.cap = cap
        self._want = threading.Event()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._result: Any = None
        self._abandoned = False
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        try:
            while True:
                self._want.wait()
                self._want.clear()
                if self._closed:
                    return
                try:
                    result = self.cap.read()
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    result = exc
                with self._lock:
                    if self._abandoned or self._closed:
                        return
                    self._result = result
                    self._done.set()
        finally:
            try:
                self.cap.release()
            except Exception as exc:  # noqa: BLE001 - releasing must not fail anyone
                log.debug("releasing an abandoned capture failed: %s", exc)

    def read(self, timeout: float, cancel: threading.Event | None = None):
        """``(ok, image)`` as ``cap.read()`` returns it; raises :class:`Stalled` when it
        takes longer than ``timeout`` seconds, or when ``cancel`` is set meanwhile (the
        reader is then abandoned)."""
        if self._abandoned or self._closed:
            raise Stalled("this reader was abandoned")
        self._done.clear()
        self._want.set()
        deadline = time.monotonic() + timeout
        while not self._done.wait(min(0.1, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() < deadline and not (cancel is not None and cancel.is_set()):
                continue
            with self._lock:
                if not self._done.is_set():
                    self._abandoned = True
                    raise Stalled(f"no frame within {timeout:g} s")
            break
        result = self._result
        if isinstance(result, BaseException):
            raise result
        return result

    def get(self, prop: int) -> float:
        return self.cap.get(prop)

    @property
    def abandoned(self) -> bool:
        return self._abandoned

    def close(self, wait_s: float = 2.0) -> None:
        """Stop the thread; it releases the capture, now (waited for, up to ``wait_s``) or,
        after a stuck read, when that read returns (not waited for)."""
        with self._lock:
            self._closed = True
            stuck = self._abandoned
        self._want.set()
        if not stuck and self._thread is not threading.current_thread():
            self._thread.join(wait_s)
