"""Gesture events: smoothing window scores, the JSON wire format, the ZeroMQ publisher.

Three parts, each usable alone:

- :class:`GestureSmoother` (pure logic, no clock of its own) turns the class
  probabilities of successive windows into :class:`GestureEvent` records with a
  phase ``start``, ``update`` or ``end``.
- The wire format: one versioned JSON object per event, described by the JSON
  Schema (draft 2020-12) ``stream/event.schema.json`` beside this file
  (:data:`SCHEMA_PATH`, :func:`load_schema`; the tests check records against it).
- :class:`EventPublisher`: a ZeroMQ PUB socket that never blocks inference, with
  an optional JSONL log and heartbeats.

Smoothing
---------
The smoothed score of a class is the plain mean of its probability over the last
``window`` windows (fewer at the start of a stream or after :meth:`flush`). A
moving average rather than an exponential one: a window older than ``window``
has no influence at all, so the end of a gesture is seen within a known number
of windows, and the same settings mean the same lag at any score.

The time of a window is the capture time of its last frame (monotonic ns): the
moment all its evidence existed. For one gesture:

- it becomes a *candidate* at the first window where its class is the top
  smoothed class and its smoothed score is above ``start_threshold``; that
  window's time is the gesture's ``start_ns``;
- ``start`` is published at the first window where the candidate has lasted
  ``min_duration_s`` (``time - start_ns >= min_duration_s``); with
  ``min_duration_s=0`` that is the first window. The event carries the true
  ``start_ns``, so only the publication is late. A candidate that ends sooner is
  suppressed: no event at all (counted in ``suppressed``);
- while active, an ``update`` every ``update_every`` windows after the start,
  with the current smoothed score (0 turns updates off);
- ``end`` at the first window where its smoothed score falls below
  ``end_threshold`` (reason ``below_threshold``), or where another class is the
  top class above ``start_threshold`` (reason ``takeover``, which wins when both
  hold: the old gesture's ``end`` comes first, then the new class becomes a
  candidate in the same window), or at :meth:`GestureSmoother.flush` (reason
  ``flush``). ``end_ns`` is the time of that window (of the last window seen,
  for a flush).

Where the gesture was. A window covers the last few seconds, so a gesture is
announced well after it began. Each event therefore also carries the interval
of video it describes (:class:`VideoInterval`), from the windows that voted for
it: a window votes when its own (unsmoothed) score for the class is at least
``end_threshold``; the votes are the windows averaged when the candidate
appeared and every window after it while the gesture holds (not the one that
ends it). A window stands for the moment ``interval_anchor`` (0.5: its middle)
of the way through its span; the interval runs from the first voter's moment to
the last one's, in frame ids and capture times. ``start`` and ``update`` carry the
interval so far, ``end`` the final one. A window is positive once the gesture
fills a good part of it, so its middle, not its last frame, is the better guess
of when the movement happened; online evaluation (``microgesture eval-online``)
scores these intervals.

Hysteresis: between the two thresholds nothing changes, so a score hovering
around ``start_threshold`` cannot make a gesture flap. A ``background`` class
(a "no gesture" label) never produces events but takes over like any class.

Wire format
-----------
Every message is two ZeroMQ frames: the topic ``<type>.<stream id>`` (UTF-8) and
the event as compact UTF-8 JSON. Subscribe to ``gesture.`` for every stream's
gestures, ``gesture.cam0`` for one stream (the topic frame is the whole first
frame: compare it exactly, ZeroMQ only matches prefixes, so ``gesture.cam1``
also matches ``gesture.cam10``). Fields common to every type:

``schema`` (``"microgesture.event/1"``; a new major number means an incompatible
change, new fields may be added without one: ignore the ones you do not know),
``type`` (``gesture``, ``heartbeat``, ``source``, ``window``), ``stream``,
``seq`` (per stream, across all types, from 0: a gap means lost messages),
``type_seq`` (per stream and type, from 0: what a subscriber to some types only
checks for gaps), ``time_ns`` (publish time, monotonic ns of the publishing
machine), ``time`` (the same instant, wall clock, ISO 8601 UTC, for humans).

Monotonic times (``*_ns``) compare with each other on the publishing machine
only; latencies are differences of monotonic times, never of wall clocks.

``gesture`` adds ``phase``, ``gesture_id`` (per stream; the same for the start,
updates and end of one gesture), ``label``, ``class_id``, ``score`` (smoothed),
``top_k`` (``[[label, score], ...]``, smoothed, best first), ``start_ns`` /
``start_time``, ``end_ns`` / ``end_time`` (null until the end), ``duration_ms``
(so far, for start and update), ``reason`` (end only), ``window`` (the window
that produced the event: ``index``, ``first_frame``, ``last_frame``,
``frame_ids`` (RGB-sampled), ``pose_frame_ids``, ``first_capture_ns``,
``last_capture_ns``, ``first_capture``, ``last_capture``), ``latency_ms``
(stage -> ms as the pipeline measured them, plus ``total`` = publish time - last
frame's capture time), ``model``, ``paced`` and ``interval`` (the part of the
video the gesture occupied, see above: ``first_frame``, ``last_frame``,
``first_capture_ns``, ``last_capture_ns``, ``first_capture``, ``last_capture``,
``windows``; null if unknown). ``paced`` is false for a file streamed faster than
its frame rate: its capture times are then the video's own time (frame / fps from
the moment it was opened), not when the frame was read, so ``latency_ms.total``
says how far ahead of (negative) or behind the video's clock the pipeline ran,
not how long a camera user waits. Example (``start``)::

    {"schema": "microgesture.event/1", "type": "gesture", "stream": "cam0",
     "seq": 12, "type_seq": 3, "time_ns": 5123456789012,
     "time": "2025-06-01T10:15:02.512345Z", "phase": "start", "gesture_id": 1,
     "label": "touching jaw", "class_id": 10, "score": 0.8123,
     "top_k": [["touching jaw", 0.8123], ["touching or scratching neck", 0.0712]],
     "start_ns": 5123100000000, "start_time": "2025-06-01T10:15:02.155556Z",
     "end_ns": null, "end_time": null, "duration_ms": 266.667, "reason": null,
     "window": {"index": 40, "first_frame": 129, "last_frame": 160,
                "frame_ids": [131, 135, 139, 143, 147, 151, 155, 159],
                "pose_frame_ids": [129, 130, "...", 160],
                "first_capture_ns": 5122333333333, "last_capture_ns": 5123366666667,
                "first_capture": "2025-06-01T10:15:01.388889Z",
                "last_capture": "2025-06-01T10:15:02.422222Z"},
     "latency_ms": {"pose": 11.8, "heatmaps": 0.7, "tokens": 38.2, "window": 61.3,
                    "total": 90.122},
     "model": "clip-mg-b16-int8"}

``heartbeat`` (every ``heartbeat_s`` per registered stream) adds ``interval_s``,
``uptime_s``, ``stats`` (what the pipeline reports; by convention ``fps``,
``frames_captured``, ``frames_dropped``, ``windows_run``, ``windows_skipped``,
``queue_depths`` {queue: depth}; non-finite numbers become null), ``publisher``
(``sent``, ``dropped``, ``logged`` counts) and, if the stats callback failed,
``stats_error``. A stream whose heartbeats stop for a few intervals is gone.

``source`` adds ``status`` (``connecting``, ``connected``, ``lost``,
``reconnecting``, ``reconnected``, ``size_changed``, ``ended``, ``stopped``),
``detail`` (free text), ``source`` (the URL or path, with any ``user:password@``
replaced by ``***@``), ``attempt`` (reconnect attempt), ``size`` and
``previous_size`` (``[width, height]``); null when unknown.

``window`` (off unless the pipeline publishes it) adds ``window``, ``scores``
(the raw probabilities, one per class id), ``top_k``, ``latency_ms``, ``model``, ``paced``.

Publisher
---------
Binds a PUB socket to loopback unless ``allow_remote=True``; beyond the machine,
``curve_secret_key`` and ``curve_clients`` encrypt every event with CurveZMQ and
admit only the subscribers whose public keys are in the clients folder
(:mod:`stream.curve`); without them remote publishing is plain text and warned
about. IPv6 addresses (``tcp://[::1]:5555``) work. Sends never block: ``zmq.NOBLOCK`` and a send high-water mark
``hwm`` per subscriber; a subscriber that cannot keep up loses messages (ZeroMQ
drops them for that subscriber alone) and sees the gap in ``seq``. A send the
socket refuses is counted in ``dropped``. With ``log_path`` every event is first
appended to a JSONL file with one unbuffered ``write`` per line, so it is on disk
(in the OS cache) before it is sent and a crash of the process never loses a
recorded event; ``log_fsync=True`` also survives a power cut, at a cost per event.

Heartbeats: :meth:`EventPublisher.start_heartbeats` registers a stream and a
stats callable; one timer thread publishes a heartbeat for each registered
stream every ``heartbeat_s`` seconds, so heartbeats keep coming (and their stats
show the stall) while the pipeline's loop waits on a reconnecting source. A pipeline that prefers
to drive them can call :meth:`EventPublisher.publish_heartbeat` itself. The
publisher is thread-safe (one lock around the socket, sequence numbers and log).

Use::

    smoother = GestureSmoother(labels, window=4, min_duration_s=0.25)
    with EventPublisher("tcp://127.0.0.1:5555", log_path="events.jsonl") as pub:
        pub.start_heartbeats("cam0", pipeline_stats)    # a callable returning a dict
        pub.publish_source("cam0", "connected", "640x480 at 30 fps", source=url)
        for probs, info in windows:                     # info: a WindowInfo
            for event in smoother.feed(probs, info):
                pub.publish(event)
        for event in smoother.flush():
            pub.publish(event)
        pub.publish_source("cam0", "ended", "end of file")
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import math
import os
import re
import socket
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import zmq

from microgesture.core.errors import MicrogestureError, UnknownNameError
from microgesture.core.redact import redact_text

_log = logging.getLogger(__name__)
SCHEMA = "microgesture.event/1"
SCHEMA_PATH = Path(__file__).with_name("event.schema.json")
EVENT_TYPES = ("gesture", "heartbeat", "source", "window")
PHASES = ("start", "update", "end")
END_REASONS = ("below_threshold", "takeover", "flush")
# As ``SourceStatus.event`` of stream.sources names them.
SOURCE_STATUSES = ("connecting", "connected", "lost", "reconnecting", "reconnected", "size_changed", "ended",
                   "stopped")
DEFAULT_ADDRESS = "tcp://127.0.0.1:5555"

_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)
_STREAM_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")


def check_stream_id(stream_id) -> str:
    """``stream_id`` unchanged if it can name a stream in topics and on the command line."""
    if not isinstance(stream_id, str) or not _STREAM_ID.fullmatch(stream_id):
        raise MicrogestureError(
            f"stream id {stream_id!r} is not valid: use 1 to 64 letters, digits, '_', '-', '.' "
            f"or ':', starting with a letter or digit (e.g. cam0).")
    return stream_id


# --------------------------------------------------------------------------- records

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


def load_schema() -> dict:
    """The event JSON Schema (draft 2020-12) shipped beside this module."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- smoothing

@dataclass
class _Track:
    class_id: int
    start_ns: int
    gesture_id: int | None = None   # set when the start is published
    windows: int = 0                # windows since the start was published
    first: WindowInfo | None = None  # the earliest and latest windows that voted for it
    last: WindowInfo | None = None
    votes: int = 0


class GestureSmoother:
    """Per-window class probabilities in, gesture start / update / end events out.

    One smoother per stream. ``labels``: the class names, by class id.
    ``window``: how many windows the moving average spans. ``start_threshold`` /
    ``end_threshold``: hysteresis, ``0 <= end < start <= 1``. ``min_duration_s``:
    how long a candidate must last before its ``start`` is published.
    ``update_every``: an ``update`` every k windows while active (0: none).
    ``top_k``: how many classes the events list. ``background``: a label or class
    id that never produces events. See the module docstring for the exact rules.

    Feed it with :meth:`feed` in window order; call :meth:`flush` at the end of the
    stream, on shutdown, or when the source is lost (it ends the active gesture and
    forgets the average, so scores never mix across a gap).
    """

    def __init__(self, labels: Sequence[str], window: int = 4, start_threshold: float = 0.6,
                 end_threshold: float = 0.4, min_duration_s: float = 0.25, update_every: int = 4,
                 top_k: int = 5, background: str | int | None = None, interval_anchor: float = 0.5):
        self.labels = tuple(str(label) for label in labels)
        if not self.labels:
            raise MicrogestureError("GestureSmoother needs at least one class label.")
        if not isinstance(window, (int, np.integer)) or window < 1:
            raise MicrogestureError(f"the smoothing window must be a whole number of windows >= 1, got {window!r}.")
        if not 0 <= end_threshold < start_threshold <= 1:
            raise MicrogestureError(
                f"thresholds must satisfy 0 <= end_threshold < start_threshold <= 1 (hysteresis), got "
                f"start_threshold={start_threshold!r}, end_threshold={end_threshold!r}; e.g. 0.6 and 0.4.")
        if not min_duration_s >= 0:
            raise MicrogestureError(f"min_duration_s must be >= 0 seconds, got {min_duration_s!r}.")
        if not isinstance(update_every, (int, np.integer)) or update_every < 0:
            raise MicrogestureError(f"update_every must be a whole number of windows >= 0 (0: no updates), "
                                    f"got {update_every!r}.")
        if not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise MicrogestureError(f"top_k must be >= 1, got {top_k!r}.")
        self.window = int(window)
        self.start_threshold = float(start_threshold)
        self.end_threshold = float(end_threshold)
        self.min_duration_ns = round(float(min_duration_s) * 1e9)
        self.update_every = int(update_every)
        self.top_k = min(int(top_k), len(self.labels))
        self.background = self._class_id(background) if background is not None else None
        if not 0 <= interval_anchor <= 1:
            raise MicrogestureError(f"interval_anchor must be in [0, 1] (0: a window's first frame, 1: its "
                                    f"last), got {interval_anchor!r}.")
        self.interval_anchor = float(interval_anchor)
        self._history: deque[np.ndarray] = deque(maxlen=self.window)
        self._infos: deque[WindowInfo] = deque(maxlen=self.window)
        self._track: _Track | None = None
        self._last_window: WindowInfo | None = None
        self._last_time: int | None = None
        self._smoothed: np.ndarray | None = None
        self._next_id = 0
        self.windows = 0        # windows fed
        self.started = 0        # gestures whose start was published
        self.suppressed = 0     # candidates that ended before min_duration_s

    def _class_id(self, name) -> int:
        if isinstance(name, (int, np.integer)) and not isinstance(name, bool):
            if not 0 <= name < len(self.labels):
                raise MicrogestureError(f"background class id {name} is out of range 0..{len(self.labels) - 1}.")
            return int(name)
        if name not in self.labels:
            raise UnknownNameError("background label", str(name), self.labels)
        return self.labels.index(name)

    @property
    def smoothed(self) -> np.ndarray | None:
        """The current smoothed scores (C,), or None before the first window."""
        return None if self._smoothed is None else self._smoothed.copy()

    @property
    def active(self) -> tuple[int, str, int] | None:
        """``(class_id, label, start_ns)`` of the published, not yet ended gesture."""
        t = self._track
        if t is None or t.gesture_id is None:
            return None
        return t.class_id, self.labels[t.class_id], t.start_ns

    def feed(self, scores, window: WindowInfo) -> list[GestureEvent]:
        """Add one window's probabilities (C,); return the events it causes (often none)."""
        p = np.asarray(scores, dtype=np.float64)
        if p.shape != (len(self.labels),):
            raise ValueError(f"scores must have shape ({len(self.labels)},) (one per label), got {p.shape}")
        if not np.isfinite(p).all() or p.min() < -1e-6 or p.max() > 1 + 1e-6:
            raise ValueError("scores must be probabilities in [0, 1] (apply softmax to logits first)")
        t = int(window.last_capture_ns)
        if self._last_time is not None and t < self._last_time:
            raise ValueError(f"windows must come in capture order: window {window.index} at {t} ns "
                             f"is earlier than the previous one at {self._last_time} ns")
        if self._last_window is not None and window.stream_id != self._last_window.stream_id:
            raise ValueError(f"one smoother per stream: got {window.stream_id!r} after "
                             f"{self._last_window.stream_id!r}")
        self._last_time, self._last_window = t, window
        self.windows += 1
        self._history.append(p)
        self._infos.append(window)
        avg = np.mean(self._history, axis=0) if len(self._history) > 1 else p
        self._smoothed = avg
        top = int(np.argmax(avg))
        top_qualifies = avg[top] > self.start_threshold
        topk = _top_k(avg, self.labels, self.top_k)

        events: list[GestureEvent] = []
        track = self._track
        if track is not None:
            score = float(avg[track.class_id])
            if top_qualifies and top != track.class_id:
                events += self._end(track, score, topk, window, t, "takeover")
            elif score < self.end_threshold:
                events += self._end(track, score, topk, window, t, "below_threshold")
            else:
                self._vote(track, p, window)
                if track.gesture_id is None:
                    events += self._maybe_start(track, score, topk, window, t)
                else:
                    track.windows += 1
                    if self.update_every and track.windows % self.update_every == 0:
                        events.append(self._event("update", track, score, topk, window))
        if self._track is None and top_qualifies and top != self.background:
            self._track = _Track(top, t)
            for old_p, old_window in zip(self._history, self._infos):   # the windows averaged
                self._vote(self._track, old_p, old_window)
            if self._track.first is None:   # none on its own above end_threshold: the newest
                self._track.first = self._track.last = window
                self._track.votes = 1
            events += self._maybe_start(self._track, float(avg[top]), topk, window, t)
        return events

    def flush(self) -> list[GestureEvent]:
        """End the active gesture (reason ``flush``) and forget the moving average."""
        events: list[GestureEvent] = []
        if self._track is not None and self._last_window is not None:
            score = float(self._smoothed[self._track.class_id])
            topk = _top_k(self._smoothed, self.labels, self.top_k)
            events = self._end(self._track, score, topk, self._last_window, self._last_time, "flush")
        self._track = None
        self._history.clear()
        self._infos.clear()
        self._smoothed = None
        return events

    def _vote(self, track: _Track, p: np.ndarray, window: WindowInfo) -> None:
        """A window votes for the gesture when its own score for the class is at least
        ``end_threshold`` (the level at which the gesture holds)."""
        if p[track.class_id] >= self.end_threshold:
            if track.first is None:
                track.first = window
            track.last = window
            track.votes += 1

    def _point(self, w: WindowInfo) -> tuple[int, int]:
        """The frame and capture time ``interval_anchor`` of the way through a window's span."""
        a = self.interval_anchor
        frame = w.first_frame + a * (w.last_frame - w.first_frame)
        ns = w.first_capture_ns + a * (w.last_capture_ns - w.first_capture_ns)
        return int(round(frame)), int(round(ns))

    def _interval(self, track: _Track) -> VideoInterval | None:
        if track.first is None:
            return None
        (f0, t0), (f1, t1) = self._point(track.first), self._point(track.last)
        return VideoInterval(f0, max(f0, f1), t0, max(t0, t1), track.votes)

    def _event(self, phase, track, score, topk, window, end_ns=None, reason=None) -> GestureEvent:
        return GestureEvent(phase, track.gesture_id, track.class_id, self.labels[track.class_id], score,
                            topk, track.start_ns, end_ns, window, reason, self._interval(track))

    def _maybe_start(self, track, score, topk, window, t) -> list[GestureEvent]:
        if t - track.start_ns < self.min_duration_ns:
            return []
        track.gesture_id = self._next_id
        self._next_id += 1
        self.started += 1
        return [self._event("start", track, score, topk, window)]

    def _end(self, track, score, topk, window, t, reason) -> list[GestureEvent]:
        self._track = None
        if track.gesture_id is None:
            self.suppressed += 1
            return []
        return [self._event("end", track, score, topk, window, end_ns=t, reason=reason)]


# --------------------------------------------------------------------------- publishing

def _is_loopback_host(host: str) -> bool:
    if host in ("localhost", "lo"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind_address(address: str, allow_remote: bool = False) -> str:
    """``address`` unchanged if it is a valid bind address that we may use.

    tcp on a loopback address (127.0.0.0/8, ::1, localhost, lo), ipc and inproc
    are local; anything else (``tcp://*:5555``, ``tcp://0.0.0.0:5555``, a LAN
    address, other transports) needs ``allow_remote=True``.
    """
    example = "e.g. tcp://127.0.0.1:5555 or ipc:///tmp/microgesture.sock"
    if not isinstance(address, str) or "://" not in address:
        raise MicrogestureError(f"invalid ZeroMQ address {address!r}: expected TRANSPORT://ENDPOINT, {example}.")
    transport, rest = address.split("://", 1)
    if transport in ("ipc", "inproc"):
        if not rest:
            raise MicrogestureError(f"invalid ZeroMQ address {address!r}: the {transport} name is empty, {example}.")
        return address
    if transport == "tcp":
        host, sep, port = rest.rpartition(":")
        if not sep or not host or not (port.isdigit() or port == "*"):
            raise MicrogestureError(f"invalid ZeroMQ address {address!r}: expected tcp://HOST:PORT "
                                    f"(PORT a number, or * for any free port), {example}.")
        local = _is_loopback_host(host.strip("[]"))
    else:
        local = False
    if not local and not allow_remote:
        raise MicrogestureError(
            f"refusing to publish on {address}: it is reachable from other machines. Publish on "
            f"loopback ({DEFAULT_ADDRESS}) or ipc, or allow it explicitly (allow_remote=True; on the "
            f"command line --allow-remote, with --curve-secret-key and --curve-clients to encrypt "
            f"the events and admit only known subscribers).")
    return address


def _check_ipc_free(path: str, address: str) -> None:
    """ZeroMQ silently takes over an ipc path that another process is bound to: refuse instead."""
    if path.startswith("@") or not os.path.lexists(path):   # abstract namespace, or nothing there
        return
    if not stat.S_ISSOCK(os.lstat(path).st_mode):
        raise MicrogestureError(f"cannot publish on {address}: {path} exists and is not a socket; "
                                f"choose another path or remove the file.")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(0.5)
        probe.connect(path)
    except OSError:
        return   # a stale socket file left by a process that died: ZeroMQ replaces it
    finally:
        probe.close()
    raise MicrogestureError(f"cannot publish on {address}: the address is already in use (another "
                            f"process is bound to it). Choose another path, or stop the other process.")


class EventPublisher:
    """Publish events on a ZeroMQ PUB socket without ever blocking the caller.

    ``address``: where to bind (``tcp://127.0.0.1:*`` picks a free port; see
    :attr:`endpoint`). ``hwm``: messages queued per subscriber before ZeroMQ drops
    for it. ``log_path``: append every event to this JSONL file. ``allow_remote``:
    permit a bind reachable from other machines. ``heartbeat_s``: heartbeat period
    of :meth:`start_heartbeats`. ``linger_s``: how long :meth:`close` may wait for
    queued messages. ``context``: a ``zmq.Context`` (default: the shared instance).

    Counters: ``sent`` (handed to ZeroMQ), ``dropped`` (refused by the socket),
    ``logged`` (lines written to the log). Per-subscriber drops at the high-water
    mark happen inside ZeroMQ and show up as gaps in ``seq`` on that subscriber.
    """

    def __init__(self, address: str = DEFAULT_ADDRESS, hwm: int = 1000, log_path: str | os.PathLike | None = None,
                 *, allow_remote: bool = False, heartbeat_s: float = 1.0, linger_s: float = 1.0,
                 log_fsync: bool = False, context: zmq.Context | None = None,
                 curve_secret_key: str | os.PathLike | None = None,
                 curve_clients: str | os.PathLike | None = None):
        check_bind_address(address, allow_remote)
        if address.startswith("ipc://"):
            _check_ipc_free(address[len("ipc://"):], address)
        if not isinstance(hwm, int) or hwm < 1:
            raise MicrogestureError(f"the send high-water mark must be a whole number of messages >= 1, got {hwm!r}.")
        if not heartbeat_s > 0:
            raise MicrogestureError(f"heartbeat_s must be > 0 seconds, got {heartbeat_s!r}.")
        self.address, self.hwm, self.heartbeat_s = address, hwm, float(heartbeat_s)
        self.linger_s, self.log_fsync = float(linger_s), bool(log_fsync)
        self.sent = self.dropped = self.logged = 0
        self._lock = threading.Lock()
        self._seq: dict[str, int] = {}
        self._type_seq: dict[tuple[str, str], int] = {}
        self._known_streams: set[str] = set()
        self._born = time.monotonic_ns()
        self._wall_offset = time.time_ns() - time.monotonic_ns()   # wall = monotonic + offset
        self._closed = False
        self._hb_sources: dict[str, Callable[[], Mapping] | None] = {}
        self._hb_stop = threading.Event()
        self._hb_thread: threading.Thread | None = None

        self._log = None
        if log_path is not None:
            self.log_path = Path(log_path)
            try:
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                self._log = open(self.log_path, "ab", buffering=0)
            except OSError as err:
                raise MicrogestureError(f"cannot open the event log {self.log_path}: {err.strerror}. "
                                        f"Choose a writable path.") from None
        else:
            self.log_path = None

        # CURVE: a context of its own (one ZAP authenticator per context)
        self._own_context = zmq.Context() if curve_secret_key else None
        context = self._own_context or context or zmq.Context.instance()
        self._socket = context.socket(zmq.PUB)
        self._socket.setsockopt(zmq.SNDHWM, hwm)
        self._socket.setsockopt(zmq.LINGER, 0)
        if "://[" in address:   # an IPv6 literal, e.g. tcp://[::1]:5555
            self._socket.setsockopt(zmq.IPV6, 1)
        self._auth = None
        try:
            if curve_secret_key:
                from microgesture.stream.curve import serve
                self._auth = serve(self._socket, context, curve_secret_key, curve_clients)
            self._socket.bind(address)
        except (zmq.ZMQError, MicrogestureError) as err:
            self._close_socket(0)
            if self._log is not None:
                self._log.close()
            if isinstance(err, MicrogestureError):
                raise
            raise MicrogestureError(self._bind_message(address, err)) from None
        self.encrypted = bool(curve_secret_key)
        if not self.encrypted and not address.startswith(("ipc://", "inproc://")) \
                and not _is_loopback_host(address.split("://", 1)[1].rpartition(":")[0].strip("[]")):
            _log.warning("publishing on %s without encryption: anyone who can reach it reads every "
                         "event; add --curve-secret-key and --curve-clients (see microgesture keys)",
                         address)
        self.endpoint: str = self._socket.getsockopt(zmq.LAST_ENDPOINT).decode()

    @staticmethod
    def _bind_message(address: str, err: zmq.ZMQError) -> str:
        if err.errno == zmq.EADDRINUSE:
            return (f"cannot publish on {address}: the address is already in use (another microgesture "
                    f"stream or another program is bound to it). Choose another port, e.g. "
                    f"tcp://127.0.0.1:5556, or stop the other process.")
        if err.errno == errno.EADDRNOTAVAIL:
            return (f"cannot publish on {address}: no network interface of this machine has that "
                    f"address. Use {DEFAULT_ADDRESS} or one of this machine's addresses.")
        if err.errno == zmq.EPROTONOSUPPORT:
            return f"cannot publish on {address}: unknown transport. Use tcp://, ipc:// or inproc://."
        return f"cannot publish on {address}: {err.strerror}. Use e.g. {DEFAULT_ADDRESS}."

    # -- sending

    def _send(self, type_: str, stream_id: str, body: Callable[[int, int], dict]) -> dict:
        if stream_id not in self._known_streams:
            self._known_streams.add(check_stream_id(stream_id))
        with self._lock:
            if self._closed:
                raise RuntimeError("the event publisher is closed")
            seq = self._seq.get(stream_id, 0)
            self._seq[stream_id] = seq + 1
            type_seq = self._type_seq.get((stream_id, type_), 0)
            self._type_seq[(stream_id, type_)] = type_seq + 1
            now = time.monotonic_ns()
            offset = time.time_ns() - now
            if abs(offset - self._wall_offset) > 1_000_000:   # follow clock steps, not call jitter,
                self._wall_offset = offset                    # so one instant always prints the same
            offset = self._wall_offset
            record = {"schema": SCHEMA, "type": type_, "stream": stream_id, "seq": seq,
                      "type_seq": type_seq, "time_ns": now, "time": wall_time(now, offset)}
            record.update(body(now, offset))
            payload = json.dumps(record, separators=(",", ":"), ensure_ascii=False,
                                 allow_nan=False).encode("utf-8")
            if self._log is not None:
                self._write_log(payload + b"\n")
            try:   # a multipart message is atomic: if the topic is queued, so is the payload
                self._socket.send(f"{type_}.{stream_id}".encode(), _SNDMORE_NOBLOCK)
                self._socket.send(payload, _NOBLOCK)
                self.sent += 1
            except zmq.ZMQError:   # EAGAIN at the high-water mark, or a socket in trouble: never block
                self.dropped += 1
            return record

    def _write_log(self, line: bytes) -> None:
        view = memoryview(line)
        while view:
            written = self._log.write(view)
            view = view[written:]
        if self.log_fsync:
            os.fsync(self._log.fileno())
        self.logged += 1

    def publish(self, event: GestureEvent) -> dict:
        """Publish one gesture event from a :class:`GestureSmoother`; return the record sent."""
        if event.phase not in PHASES:
            raise ValueError(f"unknown gesture phase {event.phase!r}: expected one of {PHASES}")
        return self._send("gesture", event.stream_id, lambda now, off: _gesture_body(event, now, off))

    def publish_source(self, stream_id: str, status: str, detail: str = "", source: str | None = None, *,
                       attempt: int | None = None, size: tuple[int, int] | None = None,
                       previous_size: tuple[int, int] | None = None) -> dict:
        """Publish a change of the source's state (:data:`SOURCE_STATUSES`).

        From a ``stream.sources.SourceStatus`` ``st``: ``publish_source(st.stream_id,
        st.event, st.detail, attempt=st.attempt, size=st.size, previous_size=st.previous_size)``.
        """
        if status not in SOURCE_STATUSES:
            raise ValueError(f"unknown source status {status!r}: expected one of {SOURCE_STATUSES}")
        body = {"status": status, "detail": redact_text(detail),
                "source": None if source is None else redact_text(source),
                "attempt": None if attempt is None else int(attempt),
                "size": None if size is None else [int(v) for v in size],
                "previous_size": None if previous_size is None else [int(v) for v in previous_size]}
        return self._send("source", stream_id, lambda now, off: body)

    def publish_heartbeat(self, stream_id: str, stats: Mapping | None = None, stats_error: str | None = None) -> dict:
        """Publish a heartbeat with the stream's ``stats`` (fps, dropped frames, queue depths, ...)."""
        def body(now, off):
            out = {"interval_s": self.heartbeat_s, "uptime_s": round((now - self._born) / 1e9, 3),
                   "stats": _jsonable(dict(stats or {})),
                   "publisher": {"sent": self.sent, "dropped": self.dropped, "logged": self.logged}}
            if stats_error is not None:
                out["stats_error"] = stats_error
            return out
        return self._send("heartbeat", stream_id, body)

    def publish_window(self, window: WindowInfo, scores, labels: Sequence[str], top_k: int = 5) -> dict:
        """Publish one window's raw probabilities (debugging; subscribers opt in to ``window``)."""
        p = np.asarray(scores, dtype=np.float64)
        if p.shape != (len(labels),):
            raise ValueError(f"scores must have shape ({len(labels)},) (one per label), got {p.shape}")
        return self._send("window", window.stream_id, lambda now, off: {
            "window": _window_json(window, off), "scores": [round(float(s), 4) for s in p],
            "top_k": _top_k_json(_top_k(p, list(labels), top_k)),
            "latency_ms": _latency_json(window, now), "model": window.model_id, "paced": bool(window.paced)})

    # -- heartbeats

    def start_heartbeats(self, stream_id: str, stats: Callable[[], Mapping] | None = None) -> None:
        """Publish a heartbeat for ``stream_id`` every ``heartbeat_s`` from a timer thread.

        ``stats`` is called from that thread each time and returns the stream's
        stats dict; if it raises, the heartbeat still goes out, with ``stats_error``.
        """
        check_stream_id(stream_id)
        with self._lock:
            if self._closed:
                raise RuntimeError("the event publisher is closed")
            self._hb_sources[stream_id] = stats
            if self._hb_thread is None:
                self._hb_thread = threading.Thread(target=self._heartbeat_loop, name="microgesture-heartbeat",
                                                   daemon=True)
                self._hb_thread.start()

    def stop_heartbeats(self, stream_id: str | None = None) -> None:
        """Stop the heartbeats of one stream (all streams: None)."""
        with self._lock:
            if stream_id is None:
                self._hb_sources.clear()
            else:
                self._hb_sources.pop(stream_id, None)

    def _heartbeat_loop(self) -> None:
        next_beat = time.monotonic()
        while True:
            next_beat += self.heartbeat_s
            if self._hb_stop.wait(max(0.0, next_beat - time.monotonic())):
                return
            next_beat = max(next_beat, time.monotonic() - self.heartbeat_s)   # no burst after a stall
            with self._lock:
                sources = list(self._hb_sources.items())
            for stream_id, stats_fn in sources:
                stats, error = None, None
                try:
                    stats = stats_fn() if stats_fn is not None else None
                except Exception as err:   # a broken stats callback must not stop the heartbeats
                    error = f"{type(err).__name__}: {err}"
                try:
                    self.publish_heartbeat(stream_id, stats, stats_error=error)
                except RuntimeError:       # closed meanwhile
                    return

    # -- lifetime

    @property
    def stats(self) -> dict:
        """Counters: sent, dropped, logged, and events published per stream."""
        with self._lock:
            return {"sent": self.sent, "dropped": self.dropped, "logged": self.logged,
                    "streams": dict(self._seq)}

    def close(self) -> None:
        """Stop heartbeats, give queued messages up to ``linger_s`` to leave, close the log."""
        self._hb_stop.set()
        if self._hb_thread is not None and self._hb_thread is not threading.current_thread():
            self._hb_thread.join(timeout=2.0)   # bounded even if a stats callback hangs
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._close_socket(max(0, round(self.linger_s * 1000)))
            if self._log is not None:
                self._log.close()

    def _close_socket(self, linger_ms: int) -> None:
        self._socket.close(linger=linger_ms)
        if self._auth is not None:
            self._auth.stop()
        if self._own_context is not None:
            self._own_context.term()

    def __enter__(self) -> EventPublisher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

