"""The records a source hands out and the words it uses: buffer policies, stream states
and their allowed changes, :class:`Frame`, :class:`SourceStatus`, :class:`SourceStats`,
the defaults of live and file sources, and the clock protocol."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from microgesture.core.errors import UnknownNameError

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



def fmt_size(size) -> str:
    return f"{size[0]}x{size[1]}" if size else "unknown"
