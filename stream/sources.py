"""Live and recorded video sources for streaming: cameras, RTSP/HTTP streams, video files
and image folders, read in a thread of their own into a bounded buffer.

``open_source(spec)`` connects (the first frame is read before it returns, so a wrong
path, URL or camera fails at once with a :class:`MicrogestureError`) and starts the
capture thread. The consumer iterates over it (or calls ``get(timeout)``) for
:class:`Frame` objects::

    with open_source("rtsp://user:pass@camera/stream", stream_id="door") as source:
        for frame in source:
            ...  # frame.image: RGB uint8 (H, W, 3); frame.capture_ns: time.monotonic_ns()

Source kinds (from the spec): a camera index (``0``, or a ``/dev/video*`` device), a
network URL (``rtsp://``, ``rtsps://``, ``rtmp://``, ``http://``, ``https://``), a video
file, an image folder (natural order) or a single image.

Buffering: frames go into a bounded buffer with a named :class:`BufferPolicy`. Live
sources default to ``DROP_OLDEST`` (latency stays bounded: the consumer always gets the
newest frames), files to ``WAIT`` (the reader waits for the consumer; nothing is lost).
``realtime=True`` paces a file at its own frame rate, like a camera (then
``DROP_OLDEST``). Every frame that does not reach the consumer is counted with its
cause in ``stats().dropped``: ``buffer_full`` (the policy dropped it), ``read_failed``
(the capture could not decode it: a gap), ``stale`` (frames FFmpeg had buffered while
a live stream was being opened, skipped to catch up with the live edge), ``truncated``
(a file ended before the frame count in its header) and ``stopped`` (discarded by
``stop()`` while the buffer was full).

Gaps: a failed read never produces a frame (and never a black image); the frame ids and
capture times of the next frames show the gap. Frame ids are the decoded-frame index for
files and folders (a failed read keeps its number), and a per-stream counter of read
attempts for live sources (a failed read takes a number too; ids keep counting across
reconnects).

Timestamps: ``capture_ns`` is ``clock.monotonic_ns()`` when the frame was read, for
live sources and for files replayed with ``realtime=True``. A file read as fast as
the consumer allows gets ``start + frame_index / fps``: when the frame would have been
captured had the file been played from the moment it was opened, so that windows of a
fixed time span hold the right frames. ``read_ns`` is always when the frame entered
the buffer (use it for throughput, ``capture_ns`` for latency). ``wall_time`` is for
display only.

States (:class:`StreamState`): ``CONNECTING -> CONNECTED -> LOST -> RECONNECTING ->
CONNECTED ...``, ending in ``ENDED`` (a file ended, reconnecting was off or gave up)
or ``STOPPED`` (``stop()``). Each change is a :class:`SourceStatus` record, delivered
three ways: to the callbacks (``on_status=`` / :meth:`VideoSource.add_status_callback`,
called in the capture thread; a failing callback is logged and cannot stop the
source), in order with the frames through :meth:`VideoSource.next_item` (``get`` and
iteration skip them), and in :attr:`VideoSource.statuses`. ``SourceStatus.event`` names
the change for publishing: ``connecting``, ``connected``, ``lost``, ``reconnecting``,
``reconnected``, ``size_changed``, ``ended``, ``stopped``.

Reconnecting: a live source that fails ``max_failed_reads`` reads in a row, whose
reads have failed for the stall limit (``stall_s``, default :data:`LIVE_STALL_S`), or
whose read hangs that long (a frozen camera keeps its connection open: reads run on a
:class:`stream.stall.TimedReader`, and a stuck one is abandoned, its frames never
delivered) is LOST; it releases the capture and retries with exponential backoff (:class:`Backoff`: base, factor,
maximum, optional jitter, a maximum number of attempts or forever). After reconnecting
the frame size is checked again: a change is reported in the status (``size``,
``previous_size``, ``event == "reconnected"`` with ``size_changed``); the consumer decides
what to do. A frame of a new size in the middle of a stream is reported the same way
(``event == "size_changed"``). Files and folders never reconnect; they end. Right after
a live source (re)connects, the frames FFmpeg buffered while opening it (about two
seconds of an RTSP stream) are skipped as ``stale`` when the stream's own timestamps show
they were already waiting, so that the first frames delivered are live ones.

Credentials in URLs never appear in logs, errors, reprs or status details: see
:func:`redact`. (OpenCV and FFmpeg print some messages of their own to stderr; those
are outside Python's reach.)

Testing: the opener (``opener(spec) -> capture`` with ``read() -> (ok, bgr)``,
``get(prop)`` and ``release()``, like ``cv2.VideoCapture``) and the clock
(:class:`Clock`: ``monotonic_ns()``, ``sleep(s)``) are injectable; :class:`FakeCapture`,
:class:`FakeOpener` and :class:`FakeClock` script frames, failures, disconnects and time.
"""

from __future__ import annotations

import enum
import logging
import os
import random
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit

import numpy as np

from microgesture.core.errors import MicrogestureError, UnknownNameError, did_you_mean
from microgesture.core.redact import redact, redact_text, secrets_of as _secrets_of  # noqa: F401 (re-exported)
from microgesture.core.video import DEFAULT_VIDEO_FPS, IMAGE_EXTENSIONS, natural_key
from microgesture.stream.stall import Stalled, TimedReader

log = logging.getLogger(__name__)

# cv2.VideoCapture property ids (the same numbers as cv2.CAP_PROP_*; named here so that
# fakes and this module need not import cv2).
CAP_PROP_POS_MSEC = 0
CAP_PROP_POS_FRAMES = 1
CAP_PROP_FRAME_WIDTH = 3
CAP_PROP_FRAME_HEIGHT = 4
CAP_PROP_FPS = 5
CAP_PROP_FRAME_COUNT = 7

#: URL schemes read as network streams (through OpenCV's FFmpeg backend).
NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https")
#: Default buffer sizes (frames): small for live sources (latency), larger for files.
LIVE_BUFFER = 4
FILE_BUFFER = 16
#: Failed reads in a row after which a live source is LOST (and a file has ended).
LIVE_MAX_FAILED_READS = 5
FILE_MAX_FAILED_READS = 25
#: A live source whose reads fail for this long without a frame is LOST, however few
#: reads that took (each network read may wait for OpenCV's read timeout).
LIVE_STALL_S = 5.0
#: Status records kept in ``VideoSource.statuses``.
STATUS_HISTORY = 1000

_LIVE_KINDS = frozenset({"webcam", "network"})


def _cv2():
    import cv2  # imported when a real capture is opened: fakes and tests need no OpenCV
    return cv2


# --------------------------------------------------------------------------- records

class BufferPolicy(enum.Enum):
    """What the capture thread does when the buffer is full."""

    WAIT = "wait"                 # wait for the consumer: nothing is lost (files)
    DROP_OLDEST = "drop_oldest"   # drop the oldest buffered frame: latency stays bounded (live)
    DROP_LATEST = "drop_latest"   # drop the frame just read: keeps the buffered frames

    @classmethod
    def parse(cls, value: BufferPolicy | str) -> BufferPolicy:
        """A policy, or its name in any case (``"drop_oldest"``, ``"DROP_OLDEST"``)."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                return cls(value.strip().lower())
            except ValueError:
                pass
        raise UnknownNameError("buffer policy", str(value), [p.value for p in cls])


class StreamState(enum.Enum):
    """The state of a source; :meth:`can_go_to` says which changes are allowed."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    LOST = "lost"
    RECONNECTING = "reconnecting"
    ENDED = "ended"
    STOPPED = "stopped"

    @property
    def terminal(self) -> bool:
        """No frames will come and no state follows."""
        return self in (StreamState.ENDED, StreamState.STOPPED)

    def can_go_to(self, other: StreamState) -> bool:
        return other in _TRANSITIONS[self]


_S = StreamState
_TRANSITIONS: dict[StreamState, frozenset[StreamState]] = {
    _S.CONNECTING: frozenset({_S.CONNECTED, _S.ENDED, _S.STOPPED}),
    # CONNECTED -> CONNECTED: the frame size changed in the middle of the stream
    _S.CONNECTED: frozenset({_S.CONNECTED, _S.LOST, _S.ENDED, _S.STOPPED}),
    _S.LOST: frozenset({_S.RECONNECTING, _S.ENDED, _S.STOPPED}),
    # RECONNECTING -> RECONNECTING: the next attempt, after a failed one
    _S.RECONNECTING: frozenset({_S.RECONNECTING, _S.CONNECTED, _S.ENDED, _S.STOPPED}),
    _S.ENDED: frozenset(),
    _S.STOPPED: frozenset(),
}


@dataclass(frozen=True, eq=False)
class Frame:
    """One captured frame. ``image``: RGB uint8 (H, W, 3). ``capture_ns``: monotonic
    nanoseconds at capture (see the module notes for files). ``wall_time``: seconds since
    the epoch, for display only. ``read_ns``: when the frame entered the buffer."""

    image: np.ndarray = field(repr=False)
    frame_id: int
    capture_ns: int
    wall_time: float
    stream_id: str
    read_ns: int = 0

    def __repr__(self) -> str:
        shape = "x".join(str(s) for s in self.image.shape)
        return (f"Frame(stream_id={self.stream_id!r}, frame_id={self.frame_id}, "
                f"capture_ns={self.capture_ns}, image={self.image.dtype}[{shape}])")


@dataclass(frozen=True)
class SourceStatus:
    """A change of a source's state. ``detail`` is a human-readable reason (credentials
    redacted). ``size`` and ``previous_size`` are ``(width, height)``; both are set when
    the frame size changed (after a reconnect, or in the middle of a stream)."""

    stream_id: str
    state: StreamState
    capture_ns: int
    detail: str = ""
    previous: StreamState | None = None
    attempt: int = 0                            # reconnect attempt (RECONNECTING / reconnected)
    size: tuple[int, int] | None = None         # (width, height) when CONNECTED
    previous_size: tuple[int, int] | None = None

    @property
    def size_changed(self) -> bool:
        return (self.size is not None and self.previous_size is not None
                and self.size != self.previous_size)

    @property
    def event(self) -> str:
        """What happened, for publishing: connecting, connected, lost, reconnecting,
        reconnected, size_changed, ended or stopped."""
        if self.state is StreamState.CONNECTED:
            if self.previous is StreamState.RECONNECTING:
                return "reconnected"
            if self.previous is StreamState.CONNECTED:
                return "size_changed"
        return self.state.value


@dataclass(frozen=True)
class SourceStats:
    """Counters of one source (a snapshot). ``dropped`` maps a cause to a frame count."""

    stream_id: str
    state: StreamState
    frames_read: int            # frames decoded (delivered, buffered or dropped by the buffer)
    frames_delivered: int       # frames handed to the consumer
    dropped: dict[str, int]
    reconnects: int
    fps_measured: float | None  # frames read per second, over the last frames
    buffered: int
    size: tuple[int, int] | None

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


# --------------------------------------------------------------------------- clocks

@runtime_checkable
class Clock(Protocol):
    """Where a source gets its time from and how it waits."""

    def monotonic_ns(self) -> int: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """``time.monotonic_ns`` and ``time.sleep`` (a source waits on its stop event instead,
    so that ``stop()`` interrupts a backoff or pacing wait at once)."""

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"


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


# --------------------------------------------------------------------------- specs

@dataclass(frozen=True)
class SourceSpec:
    """A parsed source spec. ``target`` is what the opener gets (an int for cameras, a
    string otherwise); ``display`` is the redacted form used in every message."""

    kind: str            # "webcam", "network", "file", "folder" or "image"
    target: int | str
    display: str

    @property
    def live(self) -> bool:
        return self.kind in _LIVE_KINDS

    def __repr__(self) -> str:
        return f"SourceSpec(kind={self.kind!r}, display={self.display!r})"


_SPEC_HELP = ("expected a camera index (0), an rtsp:// or http(s):// URL, a video file or a "
              "folder of images")


def parse_spec(spec: Any) -> SourceSpec:
    """Classify a source spec; raises :class:`MicrogestureError` for one that cannot be a
    source (wrong type, empty, unknown URL scheme). Existence is checked when opening."""
    if isinstance(spec, bool) or spec is None:
        raise MicrogestureError(f"source must be a camera index, a URL or a path, got {spec!r}; "
                                f"{_SPEC_HELP}.")
    if isinstance(spec, (int, np.integer)):
        if spec < 0:
            raise MicrogestureError(f"camera index must be >= 0, got {spec}.")
        return SourceSpec("webcam", int(spec), f"camera {int(spec)}")
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str):
        raise MicrogestureError(f"source must be a camera index, a URL or a path, got "
                                f"{type(spec).__name__}; {_SPEC_HELP}.")
    text = spec.strip()
    if not text:
        raise MicrogestureError(f"source is empty; {_SPEC_HELP}.")
    if text.isdigit() and not os.path.exists(text):
        return SourceSpec("webcam", int(text), f"camera {int(text)}")
    scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.\-]*)://", text)
    if scheme:
        name = scheme.group(1).lower()
        if name in NETWORK_SCHEMES:
            return SourceSpec("network", text, redact(text))
        if name == "file":
            text = unquote(urlsplit(text).path)
        else:
            known = (*NETWORK_SCHEMES, "file")
            raise MicrogestureError(
                f"unknown URL scheme {name!r} in {redact(text)}.{did_you_mean(name, known)} "
                f"Supported schemes: {', '.join(known)}; or give a camera index or a path.")
    if re.fullmatch(r"/dev/video\d+", text):
        return SourceSpec("webcam", text, text)
    path = Path(text)
    if path.is_dir():
        return SourceSpec("folder", text, text)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return SourceSpec("image", text, text)
    return SourceSpec("file", text, text)


# --------------------------------------------------------------------------- captures

class ImageFolderCapture:
    """A folder of images (or one image) behind the ``cv2.VideoCapture`` interface:
    ``read()`` decodes the next file in natural order (``(False, None)`` for an image
    that cannot be decoded, and after the last one); ``get(CAP_PROP_FRAME_COUNT)`` is
    the number of files."""

    def __init__(self, path: str | Path, fps: float | None = None):
        path = Path(path)
        if path.is_dir():
            self._files = sorted((p for p in path.iterdir()
                                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
                                 key=lambda p: natural_key(p.name))
        else:
            self._files = [path]
        self._fps = float(fps) if fps else DEFAULT_VIDEO_FPS
        self._pos = 0
        self._size = (0, 0)

    def isOpened(self) -> bool:  # noqa: N802 - cv2's name
        return bool(self._files)

    def read(self):
        if self._pos >= len(self._files):
            return False, None
        path = self._files[self._pos]
        self._pos += 1
        try:
            data = np.fromfile(str(path), dtype=np.uint8)
        except OSError:
            return False, None
        bgr = _cv2().imdecode(data, _cv2().IMREAD_COLOR) if data.size else None
        if bgr is None or not bgr.size:
            return False, None
        self._size = (bgr.shape[1], bgr.shape[0])
        return True, bgr

    def get(self, prop: int) -> float:
        return {CAP_PROP_FPS: self._fps, CAP_PROP_FRAME_COUNT: float(len(self._files)),
                CAP_PROP_POS_FRAMES: float(self._pos), CAP_PROP_FRAME_WIDTH: float(self._size[0]),
                CAP_PROP_FRAME_HEIGHT: float(self._size[1])}.get(prop, 0.0)

    def release(self) -> None:
        self._pos = len(self._files)


class OpenCVOpener:
    """The default opener: ``cv2.VideoCapture`` for cameras, files and URLs (FFmpeg, with
    open and read timeouts so that a dead camera cannot block a read for long), and
    :class:`ImageFolderCapture` for folders and images. RTSP uses TCP unless the user set
    ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` (UDP loses packets, which smears H.264 frames)."""

    def __init__(self, open_timeout_s: float = 10.0, read_timeout_s: float = 5.0,
                 fps: float | None = None):
        self.open_timeout_s, self.read_timeout_s, self.fps = open_timeout_s, read_timeout_s, fps

    def __call__(self, target: int | str):
        if isinstance(target, str) and (Path(target).is_dir()
                                        or Path(target).suffix.lower() in IMAGE_EXTENSIONS):
            return ImageFolderCapture(target, self.fps)
        cv2 = _cv2()
        if isinstance(target, int) or target.startswith("/dev/video"):
            cap = cv2.VideoCapture(target)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)   # newest frame first, where the backend allows
            return cap
        if "://" in target:
            if target.lower().startswith(("rtsp://", "rtsps://")):
                os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.open_timeout_s * 1000),
                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.read_timeout_s * 1000)]
            return cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
        return cv2.VideoCapture(target, cv2.CAP_FFMPEG)

    def __repr__(self) -> str:
        return f"OpenCVOpener(open_timeout_s={self.open_timeout_s}, read_timeout_s={self.read_timeout_s})"


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


# --------------------------------------------------------------------------- backoff

@dataclass(frozen=True)
class Backoff:
    """Reconnect delays: attempt ``k`` (from 1) waits ``min(max_s, base_s * factor**(k-1))``
    seconds, reduced by up to ``jitter`` (a fraction, 0 = none) at random, before trying.
    ``max_attempts``: give up (ENDED) after that many failed attempts; None = forever."""

    base_s: float = 0.5
    max_s: float = 30.0
    factor: float = 2.0
    jitter: float = 0.0
    max_attempts: int | None = None

    def __post_init__(self):
        if not self.base_s > 0 or not self.max_s >= self.base_s:
            raise MicrogestureError(f"backoff needs 0 < base_s <= max_s, got base_s={self.base_s}, "
                                    f"max_s={self.max_s}.")
        if not self.factor >= 1:
            raise MicrogestureError(f"backoff factor must be >= 1, got {self.factor}.")
        if not 0 <= self.jitter < 1:
            raise MicrogestureError(f"backoff jitter is a fraction in [0, 1), got {self.jitter}.")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise MicrogestureError(f"backoff max_attempts must be >= 1 or None (forever), "
                                    f"got {self.max_attempts}.")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        d = min(self.max_s, self.base_s * self.factor ** (attempt - 1))
        if self.jitter:
            d *= 1.0 - self.jitter * (rng or random).random()
        return d


# --------------------------------------------------------------------------- buffer

class _Buffer:
    """Frames (bounded, with a policy) and status records (never dropped), in order."""

    def __init__(self, capacity: int, policy: BufferPolicy):
        self.capacity, self.policy = capacity, policy
        self._items: deque[Frame | SourceStatus] = deque()
        self._frames = 0
        self._cond = threading.Condition()
        self._closed = False     # the producer has finished: nothing more will come
        self._stopping = False   # stop(): a waiting producer gives up

    def put_frame(self, frame: Frame) -> tuple[Frame | None, str]:
        """Buffer ``frame``; returns the frame that was dropped instead (or None) and why."""
        with self._cond:
            if self._frames >= self.capacity:
                if self.policy is BufferPolicy.DROP_LATEST:
                    return frame, "buffer_full"
                if self.policy is BufferPolicy.DROP_OLDEST:
                    for i, item in enumerate(self._items):
                        if isinstance(item, Frame):
                            del self._items[i]
                            self._frames -= 1
                            self._append(frame)
                            return item, "buffer_full"
                while self._frames >= self.capacity and not self._stopping:
                    self._cond.wait(0.1)
                if self._stopping:
                    return frame, "stopped"
            self._append(frame)
            return None, ""

    def _append(self, item) -> None:
        self._items.append(item)
        if isinstance(item, Frame):
            self._frames += 1
        self._cond.notify_all()

    def put_status(self, status: SourceStatus) -> None:
        with self._cond:
            self._append(status)

    def get(self, timeout: float | None, frames_only: bool):
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                while frames_only and self._items and isinstance(self._items[0], SourceStatus):
                    self._items.popleft()   # delivered to the callbacks and the history already
                if self._items:
                    item = self._items.popleft()
                    if isinstance(item, Frame):
                        self._frames -= 1
                        self._cond.notify_all()
                    return item
                if self._closed:
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def frames(self) -> int:
        return self._frames

    @property
    def drained(self) -> bool:
        with self._cond:
            return self._closed and not self._items


class _OpenFailed(Exception):
    pass


def _good(ok, image) -> bool:
    return bool(ok) and image is not None and getattr(image, "size", 0) > 0


def _to_rgb(image: np.ndarray) -> np.ndarray | None:
    """RGB uint8 (H, W, 3) from what a capture returns (BGR, BGRA or gray); None if unusable."""
    if image.dtype != np.uint8:
        return None
    cv2 = _cv2()
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    if image.ndim == 3 and image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    return None


def _sane_fps(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) and 0 < value < 1000 else None


def _fmt_size(size) -> str:
    return f"{size[0]}x{size[1]}" if size else "unknown"


# --------------------------------------------------------------------------- the source

StatusCallback = Callable[[SourceStatus], Any]


class VideoSource:
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
                f"spec={self.spec!r}, state={self._state.name}, size={_fmt_size(self._size)}, "
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
                         f"({_fmt_size(self._size)}, {self.fps:g} fps)", size=self._size)
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

    # ----------------------------------------------------------------- connecting

    def _connect(self) -> list[tuple[np.ndarray, int, int]]:
        """Open the capture and read its first frame(s): ``[(rgb, frame_id, read_ns)]``."""
        try:
            cap = self._opener(self._spec.target)
        except Exception as exc:  # noqa: BLE001 - any opener failure is a failed open
            raise _OpenFailed(self._scrub(exc if isinstance(exc, MicrogestureError)
                                          else f"{type(exc).__name__}: {exc}")) from None
        if cap is None or (hasattr(cap, "isOpened") and not cap.isOpened()):
            if cap is not None:
                cap.release()
            raise _OpenFailed({"webcam": "the camera could not be opened",
                               "network": "the stream could not be opened",
                               "folder": "the folder has no image files"}.get(
                                   self.kind, "the file could not be opened"))
        self._cap = cap
        if self._stall_s:  # live: a read that hangs longer than the stall limit is a loss
            self._reader = TimedReader(cap, name=f"microgesture-read-{self.stream_id}")
        fps = self._fps_override or _sane_fps(cap.get(CAP_PROP_FPS))
        if fps:
            self._fps = fps
        elif not self.live:
            self._fps = DEFAULT_VIDEO_FPS
        if not self.live:
            self._frame_count = max(0, int(cap.get(CAP_PROP_FRAME_COUNT) or 0))
            self._t0_ns = self._clock.monotonic_ns()
        for _ in range(self._max_failed):
            if self._stop_event.is_set():
                break
            try:
                ok, image = self._read_frame(cap)
            except Stalled as exc:
                self._release()
                raise _OpenFailed(f"connected but {exc} (the stall limit)") from None
            read_ns = self._clock.monotonic_ns()
            frame_id = self._next_id
            self._next_id += 1
            rgb = _to_rgb(image) if _good(ok, image) else None
            if rgb is not None:
                if not self.live and self._fail_from is not None:
                    self._drop("read_failed", frame_id - self._fail_from)
                    self._fail_from = None
                old_size, self._size = self._size, (rgb.shape[1], rgb.shape[0])
                self._connect_prev_size = old_size
                first = [(rgb, frame_id, read_ns)]
                if not self.live:
                    return first
                try:
                    return self._skip_backlog(cap, first)
                except Stalled as exc:
                    self._release()
                    raise _OpenFailed(f"connected but {exc} (the stall limit)") from None
            if self.live:
                self._next_id -= 1     # a camera not yet delivering is not a gap
            elif self._fail_from is None:
                self._fail_from = frame_id
            if self._frame_count and frame_id + 1 >= self._frame_count:
                break
        self._release()
        what = ("opened but delivered no frame" if self.live
                else "no frame could be decoded")
        raise _OpenFailed(f"{what} ({self._max_failed} attempts)")

    def _skip_backlog(self, cap, frames: list) -> list:
        """Catch up with a live stream that was just (re)connected.

        FFmpeg buffers a second or two of an RTSP stream while it opens it; those frames
        then come out of ``read()`` at once, stale, with capture times squeezed together.
        A frame is stale when the next one is already waiting: its read returns in less
        than half the interval the stream's own timestamps (``CAP_PROP_POS_MSEC``)
        advanced by. Stale frames are dropped (cause ``stale``) until two reads in a row
        wait for their frame (one slow decode on a busy machine is not the live edge), for
        at most about 4 s of frames. Without stream timestamps nothing is dropped
        (webcams, fakes)."""
        pending, prev_pos = frames, cap.get(CAP_PROP_POS_MSEC) or 0.0
        unknown = waited = stale = 0
        for _ in range(10 + int(4 * (self._fps or DEFAULT_VIDEO_FPS))):
            if self._stop_event.is_set():
                break
            t0 = self._clock.monotonic_ns()
            ok, image = self._read_frame(cap)
            t1 = self._clock.monotonic_ns()
            pos = cap.get(CAP_PROP_POS_MSEC) or 0.0
            frame_id = self._next_id
            self._next_id += 1
            rgb = _to_rgb(image) if _good(ok, image) else None
            if rgb is None:
                self._drop("read_failed")
                self._fail_run = 1
                break
            step_ns, prev_pos = (pos - prev_pos) * 1e6, pos
            if step_ns > 0 and t1 - t0 < step_ns / 2:       # it was waiting: the rest is stale
                self._drop("stale", len(pending))
                stale += len(pending)
                pending, unknown, waited = [(rgb, frame_id, t1)], 0, 0
                continue
            pending.append((rgb, frame_id, t1))
            if step_ns > 0:
                waited += 1
                if waited >= 2:                             # two reads waited: we are live
                    break
            else:
                unknown += 1
                if unknown >= 3:                            # no stream timestamps: keep all
                    break
        if stale:
            log.debug("%s: skipped %d stale frames after connecting", self.stream_id, stale)
        return pending

    def _read_frame(self, cap):
        """``cap.read()``, within the stall limit for live sources (:class:`Stalled`)."""
        if self._reader is None:
            return cap.read()
        return self._reader.read(self._stall_s, cancel=self._stop_event)

    def _release(self) -> None:
        reader, self._reader = self._reader, None
        cap, self._cap = self._cap, None
        if reader is not None:  # its thread releases the capture (after a stuck read returns)
            reader.close()
            return
        if cap is not None:
            try:
                cap.release()
            except Exception as exc:  # noqa: BLE001 - releasing must not fail the caller
                log.warning("%s: releasing the capture failed: %s", self._display, self._scrub(exc))

    # ----------------------------------------------------------------- thread

    def _run(self) -> None:
        try:
            while not self._stop_event.is_set():
                state = self._state
                if state is StreamState.CONNECTED:
                    self._step_live() if self.live else self._step_file()
                elif state is StreamState.LOST:
                    self._release()
                    if self._backoff is None:
                        self._transition(StreamState.ENDED,
                                         "connection lost and reconnecting is off (reconnect=False)")
                        break
                    if not self._reconnect():
                        break
                else:
                    break
        except Exception as exc:  # noqa: BLE001 - report, never die silently
            message = self._scrub(f"{type(exc).__name__}: {exc}")
            log.error("%s: the capture thread failed: %s", self._display, message)
            self._transition(StreamState.ENDED, f"capture failed: {message}")
        finally:
            self._release()
            if self._stop_event.is_set():
                self._transition(StreamState.STOPPED, "stopped by stop()")
            self._buffer.close()

    def _step_live(self) -> None:
        t0 = self._clock.monotonic_ns()
        try:
            ok, image = self._read_frame(self._cap)
        except Stalled:
            self._stalled(t0)
            return
        read_ns = self._clock.monotonic_ns()
        frame_id = self._next_id
        self._next_id += 1
        rgb = _to_rgb(image) if _good(ok, image) else None
        if rgb is None:
            self._drop("read_failed")
            self._fail_run += 1
            if self._fail_run == 1:
                log.debug("%s: read failed (frame %d)", self._display, frame_id)
            stalled_s = (read_ns - self._last_frame_ns) / 1e9 if self._last_frame_ns else 0.0
            if self._fail_run >= self._max_failed or stalled_s >= (self._stall_s or LIVE_STALL_S):
                self._transition(StreamState.LOST, f"{self._fail_run} failed reads in a row "
                                 f"(frames {frame_id - self._fail_run + 1}-{frame_id}), "
                                 f"{stalled_s:.1f} s without a frame")
                self._fail_run = 0
            return
        self._fail_run = 0
        if self._stall_s and read_ns - t0 > max(0.5, 3 / (self._fps or DEFAULT_VIDEO_FPS)) * 1e9:
            # the camera paused and came back: what it buffered meanwhile comes out at
            # once and is stale, not live; skip it as after a connect
            try:
                frames = self._skip_backlog(self._cap, [(rgb, frame_id, read_ns)])
            except Stalled:
                self._stalled(read_ns)
                return
            for frame in frames:
                self._deliver(*frame)
            return
        self._deliver(rgb, frame_id, read_ns)

    def _stalled(self, since_ns: int) -> None:
        """A read hung past the stall limit: the source is LOST (and reconnects)."""
        if self._stop_event.is_set():
            return
        last = self._last_frame_ns or since_ns
        quiet_s = (self._clock.monotonic_ns() - last) / 1e9
        self._transition(StreamState.LOST, f"the source stopped sending: no frame for "
                         f"{quiet_s:.1f} s (stall limit {self._stall_s:g} s)")
        self._fail_run = 0

    def _step_file(self) -> None:
        ok, image = self._cap.read()
        frame_id = self._next_id
        self._next_id += 1
        rgb = _to_rgb(image) if _good(ok, image) else None
        if rgb is None:
            if self._fail_from is None:
                self._fail_from = frame_id
            count = self._frame_count
            if (count and frame_id >= count) or frame_id - self._fail_from + 1 >= self._max_failed:
                end = self._fail_from
                detail = f"end of {self._display} after {end} frames"
                if count and end < count:
                    self._drop("truncated", count - end)
                    detail += (f"; its header announces {count} (truncated or damaged file: "
                               f"{count - end} frames missing)")
                self._transition(StreamState.ENDED, detail)
            return
        if self._fail_from is not None:
            self._drop("read_failed", frame_id - self._fail_from)
            self._fail_from = None
        self._deliver(rgb, frame_id, self._clock.monotonic_ns())

    def _reconnect(self) -> bool:
        """Retry with backoff until connected (True), given up or stopped (False)."""
        backoff = self._backoff
        lost_ns = self._last_frame_ns or self._clock.monotonic_ns()
        attempt, last_error = 0, ""
        while not self._stop_event.is_set():
            attempt += 1
            if backoff.max_attempts is not None and attempt > backoff.max_attempts:
                self._transition(StreamState.ENDED, f"gave up reconnecting after "
                                 f"{backoff.max_attempts} attempts (last error: {last_error})")
                return False
            delay = backoff.delay(attempt, self._rng)
            of = f"/{backoff.max_attempts}" if backoff.max_attempts else ""
            detail = f"attempt {attempt}{of} in {delay:.2f} s"
            if last_error:
                detail += f" (previous attempt: {last_error})"
            self._transition(StreamState.RECONNECTING, detail, attempt=attempt)
            self._sleep(delay)
            if self._stop_event.is_set():
                return False
            try:
                first = self._connect()
            except _OpenFailed as exc:
                last_error = str(exc)
                log.debug("%s: reconnect attempt %d failed: %s", self._display, attempt, last_error)
                continue
            with self._counts_lock:
                self._reconnects += 1
            old, new = self._connect_prev_size, self._size
            gap_s = (self._clock.monotonic_ns() - lost_ns) / 1e9
            plural = "s" * (attempt > 1)
            detail = f"reconnected after {attempt} attempt{plural} ({gap_s:.1f} s without frames)"
            if old is not None and old != new:
                detail += f"; the frame size changed from {_fmt_size(old)} to {_fmt_size(new)}"
            self._transition(StreamState.CONNECTED, detail, attempt=attempt, size=new,
                             previous_size=old)
            for frame in first:
                self._deliver(*frame)
            return True
        return False

    def _sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        if isinstance(self._clock, SystemClock):
            self._stop_event.wait(seconds)   # stop() interrupts the wait
        else:
            self._clock.sleep(seconds)

    def _deliver(self, rgb: np.ndarray, frame_id: int, read_ns: int) -> None:
        size = (rgb.shape[1], rgb.shape[0])
        if size != self._size:
            old, self._size = self._size, size
            self._transition(StreamState.CONNECTED, f"the frame size changed from "
                             f"{_fmt_size(old)} to {_fmt_size(size)} at frame {frame_id}",
                             size=size, previous_size=old)
        if self.live:
            capture_ns = read_ns
        else:
            capture_ns = self._t0_ns + round(frame_id * 1e9 / self._fps)
            if self.realtime:
                wait_ns = capture_ns - self._clock.monotonic_ns()
                if wait_ns > 0:
                    self._sleep(wait_ns / 1e9)
                capture_ns = max(capture_ns, self._clock.monotonic_ns())
            read_ns = self._clock.monotonic_ns() if self.realtime else read_ns
        frame = Frame(rgb, frame_id, capture_ns,
                      self._wall0 + (capture_ns - self._mono0) / 1e9, self.stream_id, read_ns)
        with self._counts_lock:
            self._read += 1
            self._read_times.append(read_ns)
        self._last_frame_ns = capture_ns
        dropped, cause = self._buffer.put_frame(frame)
        if dropped is not None:
            self._drop(cause)

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


def default_stream_id(spec: SourceSpec) -> str:
    """``camera0`` for cameras, the redacted URL for streams, the path for files."""
    if spec.kind == "webcam":
        return f"camera{spec.target}" if isinstance(spec.target, int) else Path(spec.target).name
    return spec.display


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
