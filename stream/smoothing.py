"""Per-window class probabilities in, gesture start / update / end events out
(:class:`GestureSmoother`; the rules are in :mod:`microgesture.stream.events`)."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from microgesture.core.errors import MicrogestureError, UnknownNameError
from microgesture.stream.records import GestureEvent, VideoInterval, WindowInfo, _top_k


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
