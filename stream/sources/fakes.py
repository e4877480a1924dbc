"""Test stand-ins for a source's capture, opener and clock: scripted frames, failures,
hangs and disconnects, and time that moves only when told."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

import numpy as np

from microgesture.stream.sources.captures import (CAP_PROP_FPS, CAP_PROP_FRAME_COUNT, CAP_PROP_FRAME_HEIGHT,
                                                 CAP_PROP_FRAME_WIDTH, CAP_PROP_POS_FRAMES, CAP_PROP_POS_MSEC)


class FakeClock:
    """A clock that moves only when told: ``sleep(s)`` returns at once and advances it
    (each sleep is recorded in ``sleeps``), ``advance(s)`` moves it without recording.
    Thread-safe."""

    def __init__(self, start_ns: int = 0):
        self._now = int(start_ns)
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def monotonic_ns(self) -> int:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(float(seconds))
            if seconds > 0:
                self._now += round(seconds * 1e9)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += max(0, round(seconds * 1e9))

    def __repr__(self) -> str:
        return f"FakeClock(now_ns={self.monotonic_ns()})"



class FakeCapture:
    """A scripted stand-in for ``cv2.VideoCapture``, for tests.

    ``script``: items returned by ``read()`` in turn: an array (a BGR frame) gives
    ``(True, frame)``; ``None`` gives ``(False, None)`` (a failed read); a
    ``threading.Event`` makes that read hang until the event is set (a frozen camera),
    then return the next item. After the script
    every read fails (a file's end, or a camera that went away: a disconnect).
    ``clock`` (a :class:`FakeClock`): each read advances it by ``interval_s`` (default
    ``1 / fps``), as a camera blocks until its next frame, except the first ``backlog``
    reads, which return at once (frames a stream buffered while it was opened).
    ``timestamps=True``: ``get(CAP_PROP_POS_MSEC)`` gives the stream time of the last
    frame read (``index / fps``), as a network stream does; otherwise 0 (unknown).
    ``opened=False``: a capture that failed to open. ``frame_count``: what
    ``get(CAP_PROP_FRAME_COUNT)`` reports.
    """

    def __init__(self, script: Iterable[np.ndarray | None] = (), fps: float = 30.0,
                 frame_count: int | None = None, clock: FakeClock | None = None,
                 interval_s: float | None = None, opened: bool = True, backlog: int = 0,
                 timestamps: bool = False):
        self._script = list(script)
        self.fps, self.frame_count, self.clock, self.opened = fps, frame_count, clock, opened
        self.backlog, self.timestamps = backlog, timestamps
        self.interval_s = (1.0 / fps if fps else 0.0) if interval_s is None else interval_s
        self.reads = 0
        self.released = False
        first = next((f for f in self._script if f is not None), None)
        self._size = (first.shape[1], first.shape[0]) if first is not None else (0, 0)

    def isOpened(self) -> bool:  # noqa: N802 - cv2's name
        return self.opened and not self.released

    def read(self):
        if self.released or not self.opened:
            return False, None
        if self.clock is not None and self.interval_s and self.reads >= self.backlog:
            self.clock.advance(self.interval_s)
        index = self.reads
        self.reads += 1
        item = self._script[index] if index < len(self._script) else None
        if isinstance(item, threading.Event):  # a camera that hangs, then sends again
            item.wait()
            return self.read()
        return (False, None) if item is None else (True, item)

    def get(self, prop: int) -> float:
        pos_ms = (self.reads - 1) * 1000.0 / self.fps if self.timestamps and self.reads else 0.0
        return {CAP_PROP_FPS: float(self.fps or 0), CAP_PROP_FRAME_COUNT: float(self.frame_count or 0),
                CAP_PROP_POS_MSEC: pos_ms,
                CAP_PROP_POS_FRAMES: float(self.reads), CAP_PROP_FRAME_WIDTH: float(self._size[0]),
                CAP_PROP_FRAME_HEIGHT: float(self._size[1])}.get(prop, 0.0)

    def release(self) -> None:
        self.released = True

    @staticmethod
    def numbered_frames(count: int, width: int = 32, height: int = 24, start: int = 0) -> list[np.ndarray]:
        """``count`` frames (never black) whose number can be read back with
        :meth:`frame_number`, in any channel order."""
        frames = []
        for k in range(start, start + count):
            img = np.full((height, width, 3), 1 + k % 250, np.uint8)
            img[0, 0], img[0, 1] = k % 256, (k // 256) % 256
            frames.append(img)
        return frames

    @staticmethod
    def frame_number(image: np.ndarray) -> int:
        return int(image[0, 0, 0]) + 256 * int(image[0, 1, 0])


class FakeOpener:
    """``opener(spec)`` for tests: returns the given captures in turn. An item may be a
    capture, ``None`` (the open fails) or an exception (raised). When the items run out
    every open fails. ``calls`` records the specs it was given."""

    def __init__(self, *captures: Any):
        self._items = list(captures)
        self.calls: list[Any] = []

    def __call__(self, spec):
        self.calls.append(spec)
        if not self._items:
            return None
        item = self._items.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item


