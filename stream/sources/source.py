"""The running source (:class:`VideoSource`: the consumer's side, its state and
counters) and :func:`open_source`, which checks the options and starts one. The package
notes (:mod:`microgesture.stream.sources`) describe the behaviour."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from microgesture.core.errors import MicrogestureError
from microgesture.core.redact import redact_text, secrets_of as _secrets_of
from microgesture.core.video import DEFAULT_VIDEO_FPS, IMAGE_EXTENSIONS
from microgesture.stream.sources.buffer import Backoff, _Buffer
from microgesture.stream.sources.capture_loop import CaptureLoop, _OpenFailed
from microgesture.stream.sources.captures import ImageFolderCapture, OpenCVOpener
from microgesture.stream.sources.records import (FILE_BUFFER, FILE_MAX_FAILED_READS, LIVE_BUFFER,
                                                LIVE_MAX_FAILED_READS, LIVE_STALL_S, STATUS_HISTORY,
                                                BufferPolicy, Clock, Frame, SourceStats, SourceStatus,
                                                StreamState, SystemClock, fmt_size)
from microgesture.stream.sources.spec import _SPEC_HELP, SourceSpec, default_stream_id, parse_spec
from microgesture.stream.stall import TimedReader

log = logging.getLogger("microgesture.stream.sources")   # one logger name for the package

StatusCallback = Callable[[SourceStatus], Any]


class VideoSource(CaptureLoop):
    """A running source; make one with :func:`open_source`.

    Consumer API: iterate (frames until the source ends or is stopped), ``get(timeout)``
    (the next frame, or None on timeout and once ``finished``), ``next_item(timeout)``
    (frames and :class:`SourceStatus` records in order), ``stats()``, ``stop()`` (also
    on leaving a ``with`` block), ``size`` ``(width, height)``, ``fps``, ``state``,
    ``statuses`` (the history) and ``finished``.
    """

    def __init__(self, spec: SourceSpec, stream_id: str, policy: BufferPolicy, capacity: int,
                 realtime: bool, backoff: Backoff | None, clock: Clock, opener: Callable,
                 fps: float | None, max_failed_reads: int,
                 on_status: Iterable[StatusCallback] = (), seed: int | None = None,
                 stall_s: float | None = LIVE_STALL_S):
        self._spec, self.stream_id, self.policy = spec, stream_id, policy
        self._stall_s = stall_s if spec.live else None
        self._reader: TimedReader | None = None
        self.kind, self.realtime = spec.kind, realtime and not spec.live
        self._backoff = backoff if spec.live else None
        self._clock, self._opener, self._fps_override = clock, opener, fps
        self._max_failed = max_failed_reads
        self._secrets = _secrets_of(spec.target)
        self._rng = random.Random(seed)
        self._buffer = _Buffer(capacity, policy)
        self._callbacks: list[StatusCallback] = list(on_status)
        self._statuses: deque[SourceStatus] = deque(maxlen=STATUS_HISTORY)
        self._state = StreamState.CONNECTING
        self._state_lock = threading.RLock()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._cap = None
        self._size: tuple[int, int] | None = None
        self._fps: float | None = None
        self._frame_count = 0
        self._next_id = 0
        self._fail_run = 0
        self._fail_from: int | None = None
        self._t0_ns = 0
        self._mono0 = clock.monotonic_ns()
        self._wall0 = time.time()
        self._counts_lock = threading.Lock()
        self._read = self._delivered = self._reconnects = 0
        self._dropped: Counter[str] = Counter()
        self._read_times: deque[int] = deque(maxlen=32)
        self._last_frame_ns: int | None = None
        self._connect_prev_size: tuple[int, int] | None = None

    # ----------------------------------------------------------------- public

    @property
    def spec(self) -> str:
        """The source, with credentials redacted."""
        return self._spec.display

    @property
    def live(self) -> bool:
        return self._spec.live

    @property
    def state(self) -> StreamState:
        return self._state

    @property
    def size(self) -> tuple[int, int] | None:
        """``(width, height)`` of the latest frame."""
        return self._size

    @property
    def fps(self) -> float:
        """The nominal frame rate (given, or reported by the capture), else the measured
        one, else :data:`DEFAULT_VIDEO_FPS`."""
        with self._counts_lock:
            measured = self._measured_fps()
        return self._fps or measured or DEFAULT_VIDEO_FPS

    @property
    def statuses(self) -> list[SourceStatus]:
        with self._state_lock:
            return list(self._statuses)

    @property
    def finished(self) -> bool:
        """The source has ended or stopped and every buffered item was taken."""
        return self._buffer.drained

    def add_status_callback(self, callback: StatusCallback) -> None:
        """Call ``callback(status)`` on every later state change (in the capture thread)."""
        self._callbacks.append(callback)

    def get(self, timeout: float | None = None) -> Frame | None:
        """The next frame; None after ``timeout`` seconds, or when the source is finished."""
        item = self._buffer.get(timeout, frames_only=True)
        if item is not None:
            self._count_delivered()
        return item

    def next_item(self, timeout: float | None = None) -> Frame | SourceStatus | None:
        """The next frame or status record, in the order they happened; None after
        ``timeout`` seconds, or when the source is finished."""
        item = self._buffer.get(timeout, frames_only=False)
        if isinstance(item, Frame):
            self._count_delivered()
        return item

    def _check_started(self) -> None:
        if self._thread is None and not self._buffer.drained and self._state is StreamState.CONNECTING:
            raise MicrogestureError(f"{self._display} was opened with start=False: call "
                                    "source.start() before reading it.")

    def __iter__(self) -> Iterator[Frame]:
        self._check_started()
        while True:
            frame = self.get(timeout=0.5)
            if frame is not None:
                yield frame
            elif self.finished:
                return

    def items(self) -> Iterator[Frame | SourceStatus]:
        """Frames and status records in order, until the source is finished."""
        self._check_started()
        while True:
            item = self.next_item(timeout=0.5)
            if item is not None:
                yield item
            elif self.finished:
                return

    def stats(self) -> SourceStats:
        with self._counts_lock:
            return SourceStats(self.stream_id, self._state, self._read, self._delivered,
                               dict(self._dropped), self._reconnects, self._measured_fps(),
                               self._buffer.frames, self._size)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the capture thread to finish (ENDED or STOPPED); True if it did."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """Stop reading and release the capture. Frames already buffered can still be
        taken. Safe to call more than once."""
        self._stop_event.set()
        self._buffer.stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("%s: the capture is still blocked in read(); it will be released "
                            "when the read returns.", self._display)
        if self._thread is None:
            self._release()
            self._buffer.close()
        self._transition(StreamState.STOPPED, "stopped by stop()")

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (f"VideoSource(stream_id={self.stream_id!r}, kind={self.kind!r}, "
                f"spec={self.spec!r}, state={self._state.name}, size={fmt_size(self._size)}, "
                f"policy={self.policy.name})")

    # ----------------------------------------------------------------- start

    def start(self) -> VideoSource:
        """Connect (the first frame is read here) and start the capture thread.
        Raises :class:`MicrogestureError` when the source cannot be opened or read."""
        if self._thread is not None:
            return self
        self._emit_status(StreamState.CONNECTING, f"opening {self._display}")
        try:
            first = self._connect()
        except _OpenFailed as exc:
            reason = str(exc)
            self._transition(StreamState.ENDED, f"could not open: {reason}")
            self._buffer.close()
            raise MicrogestureError(f"cannot open {self._display}: {reason}. {self._hint()}") from None
        self._transition(StreamState.CONNECTED, f"connected to {self._display} "
                         f"({fmt_size(self._size)}, {self.fps:g} fps)", size=self._size)
        for frame in first:
            self._deliver(*frame)
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"microgesture-source-{self.stream_id}")
        self._thread.start()
        return self

    def _hint(self) -> str:
        return {
            "webcam": "No such camera, or another program is using it; camera indices "
                      "start at 0 (see `ls /dev/video*` on Linux).",
            "network": "Check the URL, the user and password, and that the camera is "
                       "reachable from this machine (try it with `ffplay`).",
            "file": "It is not a video OpenCV can read (missing codec, damaged or truncated "
                    "file, or another kind of file).",
            "folder": "Expected a folder of PNG, JPEG, BMP, TIFF or WebP images.",
            "image": "Expected a PNG, JPEG, BMP, TIFF or WebP image.",
        }[self.kind]

    @property
    def _display(self) -> str:
        return self._spec.display

    def _scrub(self, text: Any) -> str:
        return redact_text(text, self._secrets)

    # ----------------------------------------------------------------- bookkeeping

    def _drop(self, cause: str, count: int = 1) -> None:
        if count > 0:
            with self._counts_lock:
                self._dropped[cause] += count

    def _count_delivered(self) -> None:
        with self._counts_lock:
            self._delivered += 1

    def _measured_fps(self) -> float | None:
        times = list(self._read_times)
        if len(times) < 2 or times[-1] <= times[0]:
            return None
        return (len(times) - 1) * 1e9 / (times[-1] - times[0])

    def _transition(self, state: StreamState, detail: str = "", **fields) -> SourceStatus | None:
        with self._state_lock:
            old = self._state
            if old.terminal:
                return None
            if not old.can_go_to(state):
                raise RuntimeError(f"bug: source state {old.name} -> {state.name} is not allowed")
            status = self._record_status(state, detail, previous=old, **fields)
        self._announce(status)
        return status

    def _emit_status(self, state: StreamState, detail: str) -> SourceStatus:
        """The first status (CONNECTING), which has no previous state."""
        with self._state_lock:
            status = self._record_status(state, detail, previous=None)
        self._announce(status)
        return status

    def _record_status(self, state: StreamState, detail: str, previous: StreamState | None,
                       **fields) -> SourceStatus:
        self._state = state
        status = SourceStatus(self.stream_id, state, self._clock.monotonic_ns(),
                              self._scrub(detail), previous, **fields)
        self._statuses.append(status)
        self._buffer.put_status(status)
        return status

    def _announce(self, status: SourceStatus) -> None:
        """Log the status and call the callbacks (outside the state lock)."""
        level = (logging.WARNING if status.state in (StreamState.LOST, StreamState.RECONNECTING)
                 or status.size_changed else logging.INFO)
        log.log(level, "%s: %s: %s", self.stream_id, status.event, status.detail)
        for callback in list(self._callbacks):
            try:
                callback(status)
            except Exception as exc:  # noqa: BLE001 - one failing callback cannot stop the source
                log.error("%s: status callback %r failed: %s", self._display,
                          getattr(callback, "__name__", callback), self._scrub(exc))


def open_source(spec: Any, stream_id: str | None = None, policy: BufferPolicy | str | None = None,
                buffer: int | None = None, realtime: bool = False,
                reconnect: bool | Backoff = True, clock: Clock | None = None,
                opener: Callable[[Any], Any] | None = None, *, fps: float | None = None,
                max_failed_reads: int | None = None,
                on_status: Iterable[StatusCallback] = (), seed: int | None = None,
                start: bool = True, stall_s: float | None = LIVE_STALL_S) -> VideoSource:
    """Open a source and start reading it in a thread (see the module notes).

    ``spec``: a camera index (``0``), an ``rtsp://`` / ``http(s)://`` URL, a video file or
    a folder of images. ``stream_id``: the name in frames and statuses (default: see
    :func:`default_stream_id`). ``policy``: a :class:`BufferPolicy` or its name (default
    ``DROP_OLDEST`` for live sources and realtime files, ``WAIT`` for files). ``buffer``:
    frames buffered (default 4 live, 16 files). ``realtime``: pace a file at its frame
    rate (ignored for live sources). ``reconnect``: True (default :class:`Backoff`), a
    :class:`Backoff`, or False (a lost live source ends); files never reconnect.
    ``clock``, ``opener``: for tests (:class:`FakeClock`, :class:`FakeOpener`).
    ``fps``: the frame rate of a folder, or one that replaces a file's own.
    ``max_failed_reads``: failed reads in a row after which a live source is LOST
    (default 5) and a file has ended (default 25). ``on_status``: callbacks that see
    every status from the first. ``seed``: for the backoff jitter. ``start=False``:
    call ``start()`` yourself. ``stall_s``: a live source that sends nothing for this
    long (a read that hangs, or reads that fail) is LOST and reconnects; None: only
    failed reads count (see :mod:`stream.stall`).
    """
    parsed = parse_spec(spec)
    if opener is None:
        if parsed.kind in ("file", "folder", "image") and not Path(parsed.target).exists():
            raise MicrogestureError(f"{parsed.display} does not exist; {_SPEC_HELP}.")
        if parsed.kind == "folder" and not ImageFolderCapture(parsed.target).isOpened():
            raise MicrogestureError(
                f"{parsed.display} is a folder with no image files; expected images with one of "
                f"the extensions {', '.join(sorted(IMAGE_EXTENSIONS))}.")
        opener = OpenCVOpener(fps=fps, read_timeout_s=stall_s or LIVE_STALL_S)
    if stall_s is not None and not (isinstance(stall_s, (int, float)) and 0 < stall_s < 3600):
        raise MicrogestureError(f"the stall limit must be a number of seconds > 0 (and under an "
                                f"hour), got {stall_s!r}.")
    if fps is not None and not fps > 0:
        raise MicrogestureError(f"fps must be positive, got {fps}.")
    realtime = bool(realtime) and not parsed.live
    if policy is None:
        policy = BufferPolicy.DROP_OLDEST if parsed.live or realtime else BufferPolicy.WAIT
    policy = BufferPolicy.parse(policy)
    if buffer is None:
        buffer = LIVE_BUFFER if parsed.live or realtime else FILE_BUFFER
    if isinstance(buffer, bool) or not isinstance(buffer, (int, np.integer)) or buffer < 1:
        raise MicrogestureError(f"buffer is a number of frames >= 1, got {buffer!r}.")
    if reconnect is True:
        backoff = Backoff()
    elif reconnect is False or reconnect is None:
        backoff = None
    elif isinstance(reconnect, Backoff):
        backoff = reconnect
    else:
        raise MicrogestureError(f"reconnect must be True, False or a Backoff, got {reconnect!r}.")
    if max_failed_reads is None:
        max_failed_reads = LIVE_MAX_FAILED_READS if parsed.live else FILE_MAX_FAILED_READS
    if max_failed_reads < 1:
        raise MicrogestureError(f"max_failed_reads must be >= 1, got {max_failed_reads}.")
    if stream_id is None:
        stream_id = default_stream_id(parsed)
    elif not isinstance(stream_id, str) or not stream_id:
        raise MicrogestureError(f"stream_id must be a non-empty string, got {stream_id!r}.")
    else:   # it travels in every frame and event: never with the source's credentials
        stream_id = redact_text(stream_id, _secrets_of(parsed.target))
    source = VideoSource(parsed, stream_id, policy, int(buffer), realtime, backoff,
                         clock or SystemClock(), opener, fps, max_failed_reads, on_status, seed,
                         stall_s)
    return source.start() if start else source
