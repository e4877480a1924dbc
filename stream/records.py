"""Event records: what the pipeline knows about a window (:class:`WindowInfo`), the
smoother's decisions (:class:`GestureEvent`, :class:`VideoInterval`) and their JSON
bodies on the wire (the format is described in :mod:`microgesture.stream.events`)."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from microgesture.core.stream_ids import check_stream_id  # noqa: F401 (one rule, core.stream_ids)

SCHEMA = "microgesture.event/1"
EVENT_TYPES = ("gesture", "heartbeat", "source", "window")
PHASES = ("start", "update", "end")
END_REASONS = ("below_threshold", "takeover", "flush")
# As ``SourceStatus.event`` of stream.sources names them.
SOURCE_STATUSES = ("connecting", "connected", "lost", "reconnecting", "reconnected", "size_changed", "ended",
                   "stopped")


@dataclass(frozen=True)
class WindowInfo:
    """What the pipeline knows about one window, carried into its events.

    Times are monotonic nanoseconds (``time.monotonic_ns()``) taken at capture.
    ``latency_ms`` maps a stage name (pose, heatmaps, tokens, window, ...) to its
    milliseconds for this window; the publisher adds ``total``. Treat it as read-only.
    """

    stream_id: str
    index: int                            # window number in the stream, from 0
    first_frame: int                      # id of the first frame the window spans
    last_frame: int
    first_capture_ns: int
    last_capture_ns: int                  # the window's time
    frame_ids: tuple[int, ...] = ()       # RGB-sampled frame ids
    pose_frame_ids: tuple[int, ...] = ()  # pose-sampled frame ids
    latency_ms: Mapping[str, float] = field(default_factory=dict)
    model_id: str = ""
    paced: bool = True                    # capture times are real (live, or a file at its frame rate)

    @classmethod
    def from_window(cls, window, stream_id: str, latency_ms: Mapping[str, float] | None = None,
                    model_id: str = "", paced: bool = True) -> WindowInfo:
        """From a ``stream.scheduler.Window`` (read by attribute: ``index``, ``rgb_ids``,
        ``pose_ids``, ``start_ns``, ``last_frame_id``, ``last_capture_ns``). The first
        frame is the earliest sampled one; ``first_capture_ns`` the start of the span."""
        sampled = tuple(window.pose_ids) + tuple(window.rgb_ids)
        return cls(stream_id, int(window.index), int(min(sampled, default=window.last_frame_id)),
                   int(window.last_frame_id), int(window.start_ns), int(window.last_capture_ns),
                   tuple(int(i) for i in window.rgb_ids), tuple(int(i) for i in window.pose_ids),
                   dict(latency_ms or {}), model_id, bool(paced))


@dataclass(frozen=True)
class VideoInterval:
    """The part of the video a gesture event describes (see "Where the gesture was")."""

    first_frame: int
    last_frame: int
    first_capture_ns: int
    last_capture_ns: int
    windows: int                          # windows that voted for the gesture


@dataclass(frozen=True)
class GestureEvent:
    """One phase of one gesture, as the smoother decided it (before publishing)."""

    phase: str                                # "start", "update" or "end"
    gesture_id: int                           # per smoother, the same for all phases of a gesture
    class_id: int
    label: str
    score: float                              # smoothed probability of the class
    top_k: tuple[tuple[str, float], ...]      # smoothed, best first
    start_ns: int
    end_ns: int | None                        # set for "end" only
    window: WindowInfo                        # the window that produced the event
    reason: str | None = None                 # why it ended ("end" only)
    interval: VideoInterval | None = None     # where in the video the gesture was

    @property
    def stream_id(self) -> str:
        return self.window.stream_id

    @property
    def duration_s(self) -> float:
        """From the start to the end (or to this window, before the end)."""
        stop = self.end_ns if self.end_ns is not None else self.window.last_capture_ns
        return max(0, stop - self.start_ns) / 1e9


def wall_time(mono_ns: int, offset_ns: int | None = None) -> str:
    """ISO 8601 UTC wall-clock time of a monotonic time, for humans (microseconds, ``Z``)."""
    global _iso_second
    if offset_ns is None:
        offset_ns = time.time_ns() - time.monotonic_ns()
    second, ns = divmod(int(mono_ns) + int(offset_ns), 1_000_000_000)
    cached_second, prefix = _iso_second   # one tuple: safe to read and replace from any thread
    if second != cached_second:
        prefix = datetime.fromtimestamp(second, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        _iso_second = (second, prefix)
    return f"{prefix}.{ns // 1000:06d}Z"


_iso_second: tuple[int, str] = (-1, "")


def _jsonable(value):
    """Numbers, strings, lists and dicts only; NaN and infinities become None."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in value]
    return value if value is None or isinstance(value, str) else str(value)


def _window_json(w: WindowInfo, offset: int) -> dict:
    return {"index": int(w.index), "first_frame": int(w.first_frame), "last_frame": int(w.last_frame),
            "frame_ids": [int(i) for i in w.frame_ids],
            "pose_frame_ids": [int(i) for i in w.pose_frame_ids],
            "first_capture_ns": int(w.first_capture_ns), "last_capture_ns": int(w.last_capture_ns),
            "first_capture": wall_time(w.first_capture_ns, offset),
            "last_capture": wall_time(w.last_capture_ns, offset)}


def _latency_json(w: WindowInfo, now: int) -> dict:
    lat = {str(k): round(float(v), 3) for k, v in w.latency_ms.items() if math.isfinite(v)}
    lat["total"] = round((now - w.last_capture_ns) / 1e6, 3)
    return lat


def _top_k_json(top_k) -> list:
    return [[label, round(float(score), 4)] for label, score in top_k]


def _gesture_body(ev: GestureEvent, now: int, offset: int) -> dict:
    return {"phase": ev.phase, "gesture_id": int(ev.gesture_id), "label": ev.label,
            "class_id": int(ev.class_id), "score": round(float(ev.score), 4),
            "top_k": _top_k_json(ev.top_k),
            "start_ns": int(ev.start_ns), "start_time": wall_time(ev.start_ns, offset),
            "end_ns": None if ev.end_ns is None else int(ev.end_ns),
            "end_time": None if ev.end_ns is None else wall_time(ev.end_ns, offset),
            "duration_ms": round(ev.duration_s * 1e3, 3), "reason": ev.reason,
            "window": _window_json(ev.window, offset), "latency_ms": _latency_json(ev.window, now),
            "model": ev.window.model_id, "paced": bool(ev.window.paced),
            "interval": None if ev.interval is None else _interval_json(ev.interval, offset)}


def _interval_json(iv: VideoInterval, offset: int) -> dict:
    return {"first_frame": int(iv.first_frame), "last_frame": int(iv.last_frame),
            "first_capture_ns": int(iv.first_capture_ns), "last_capture_ns": int(iv.last_capture_ns),
            "first_capture": wall_time(iv.first_capture_ns, offset),
            "last_capture": wall_time(iv.last_capture_ns, offset), "windows": int(iv.windows)}


def _top_k(scores: np.ndarray, labels: Sequence[str], k: int) -> tuple[tuple[str, float], ...]:
    order = np.argsort(-scores, kind="stable")[:k]
    return tuple((labels[i], float(scores[i])) for i in order)
