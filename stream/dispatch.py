"""The end of the one-way pipeline: ONE dispatcher thread owns smoothing and the sinks.

```
window thread --(scores, flush, source, counts)--> results queue --> dispatcher thread
frame threads --(frames for the overlay)---------/                   smoothing per stream
                                                                      -> sinks: ZeroMQ + JSONL log
                                                                         (EventPublisher), overlay /
                                                                         video writer, any other
```

Messages are tuples (see :meth:`Dispatcher.post`); nothing outside this thread touches a
stream's smoother, silence watch or event records. Others read them as copies taken
under a lock (:meth:`Dispatcher.snapshot`).

Sinks are isolated: a sink method that raises is logged once with its traceback, the
sink is turned off (``sink_errors`` in :meth:`Dispatcher.stats` says which and why) and
the stream goes on with the other sinks. A sink has any of the methods ``gesture(event)``
(returns the record it published, or None), ``window(info, scores, labels)``,
``source(stream_id, status, detail, source, **fields)``, ``frame(view, frame, kp, sc)``
(``view``: a :class:`StreamView`), ``close()``; and a ``name``.

State is bounded for a process that runs for months: per stream, the last
:data:`RECENT_EVENTS` gesture records and counters; the smoother and silence watch keep
a fixed number of windows.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from microgesture.core.tuned import read_tuned
from microgesture.stream.records import GestureEvent, WindowInfo
from microgesture.stream.silence import SilenceWatch
from microgesture.stream.smoothing import GestureSmoother

log = logging.getLogger(__name__)

RECENT_EVENTS = 256
"""Gesture records kept per stream (the newest; older ones are only counted)."""


@dataclass(frozen=True)
class SmoothingOptions:
    window: int = 4
    start_threshold: float = 0.5
    end_threshold: float = 0.3
    min_duration_s: float = 0.3
    update_every: int = 4


def smoothing_for(bundle: str, **given) -> SmoothingOptions:
    """The smoothing a stream of ``bundle`` uses: the options ``given`` (None: not given),
    else the bundle's tuned settings (``core.tuned``: eval-online --tune), else the defaults."""
    from dataclasses import fields, replace

    names = {f.name for f in fields(SmoothingOptions)}
    tuned = read_tuned(bundle) or {}
    return replace(SmoothingOptions(), **{k: v for k, v in {**tuned, **given}.items()
                                          if k in names and v is not None})


@dataclass(frozen=True)
class StreamView:
    """What a sink may know of a stream when it draws a frame (a copy)."""

    stream_id: str
    labels: tuple[str, ...]
    smoothed: np.ndarray | None
    active: dict | None


class PublisherSink:
    """Gesture, window and source events on the :class:`~stream.publisher.EventPublisher`
    (ZeroMQ and its JSONL log)."""

    name = "publisher"

    def __init__(self, publisher):
        self.publisher = publisher

    def gesture(self, event: GestureEvent) -> dict:
        return self.publisher.publish(event)

    def window(self, info: WindowInfo, scores: np.ndarray, labels: Sequence[str]) -> None:
        self.publisher.publish_window(info, scores, labels)

    def source(self, stream_id: str, status: str, detail: str, source: str | None, **fields) -> None:
        self.publisher.publish_source(stream_id, status, detail, source, **fields)


class _Stream:
    """One stream's smoothing state (the dispatcher thread's alone)."""

    def __init__(self, stream_id: str, labels: Sequence[str], smoothing, span_s: float, fps: float,
                 live: bool, publish_windows: bool, silence_report_s: float,
                 stats: Callable[[], dict] | None):
        self.stream_id, self.live, self.labels = stream_id, live, tuple(labels)
        self.smoother = GestureSmoother(labels, window=smoothing.window,
                                        start_threshold=smoothing.start_threshold,
                                        end_threshold=smoothing.end_threshold,
                                        min_duration_s=smoothing.min_duration_s,
                                        update_every=smoothing.update_every)
        self.silence = SilenceWatch(labels, smoothing.start_threshold, smoothing.min_duration_s,
                                    span_s, fps)
        self.publish_windows, self.silence_report_s = publish_windows, silence_report_s
        self.stats = stats
        self.recent: collections.deque[dict] = collections.deque(maxlen=RECENT_EVENTS)
        self.gestures = 0            # gesture events decided (all phases)
        self.active: dict | None = None
        self.last_scores: tuple[np.ndarray, WindowInfo] | None = None
        self.counts: collections.Counter = collections.Counter()


class Dispatcher:
    """The dispatcher thread: smoothing per stream, then every sink, in message order."""

    def __init__(self, sinks: Sequence[Any] = (), maxsize: int = 64):
        self.sinks = list(sinks)
        self._off: dict[str, str] = {}   # sink name -> why it was turned off
        self._streams: dict[str, _Stream] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self._thread = threading.Thread(target=self._loop, name="dispatch", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ any thread
    def add_sink(self, sink) -> None:
        """Add a sink (before any stream starts)."""
        self.sinks.append(sink)

    def add_stream(self, stream_id: str, labels: Sequence[str], smoothing, span_s: float, fps: float,
                   live: bool, publish_windows: bool = False, silence_report_s: float = 60.0,
                   stats: Callable[[], dict] | None = None) -> None:
        state = _Stream(stream_id, labels, smoothing, span_s, fps, live, publish_windows,
                        silence_report_s, stats)
        with self._lock:
            self._streams[stream_id] = state

    def post(self, message: tuple) -> None:
        """Queue a message: ``("scores", sid, probs, info)``, ``("flush", sid)``,
        ``("source", sid, status, detail, source, fields)``, ``("frame", sid, frame, kp, sc)``,
        ``("count", sid, name, n)``, ``("done", threading.Event)`` (set once everything
        before it is dispatched). Blocks while the queue is full (backpressure)."""
        self._queue.put(message)

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Wait until every message posted before this call has been dispatched."""
        if not self._thread.is_alive():
            return False
        done = threading.Event()
        self.post(("done", done))
        return done.wait(timeout)

    def snapshot(self, stream_id: str) -> dict[str, Any]:
        """A copy of a stream's dispatcher-side state: ``events`` (the recent gesture records),
        ``gestures``, ``active``, ``last_scores``, ``smoothed``, ``suppressed`` and counters."""
        with self._lock:
            s = self._streams[stream_id]
            return {"events": list(s.recent), "gestures": s.gestures, "active": s.active,
                    "last_scores": s.last_scores, "smoothed": s.smoother.smoothed,
                    "suppressed": s.smoother.suppressed, **s.counts}

    def no_events_report(self, stream_id: str, stats: dict, now_ns: int | None = None) -> dict:
        """Why a stream published no gesture event since its last one (``stream.silence``)."""
        with self._lock:
            s = self._streams[stream_id]
            return s.silence.report(stats, s.smoother.suppressed, now_ns)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"sink_errors": dict(self._off), "queue": self._queue.qsize()}

    def close(self, timeout: float = 60.0) -> None:
        """Dispatch what is queued, then close the sinks."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)
        for sink in self.sinks:
            self._call(sink, "close")

    # ------------------------------------------------------------ dispatcher thread
    def _call(self, sink, method: str, *args, **kwargs) -> Any:
        if sink.name in self._off or not hasattr(sink, method):
            return None
        try:
            return getattr(sink, method)(*args, **kwargs)
        except Exception as exc:  # one sink failing must not stop the others or the stream
            log.exception("sink %s failed in %s; it is turned off, the stream goes on", sink.name, method)
            with self._lock:
                self._off[sink.name] = f"{type(exc).__name__}: {exc}"
            return None

    def _loop(self) -> None:
        while True:
            message = self._queue.get()
            if message is None:
                return
            try:
                self._dispatch(message)
            except Exception:  # a bug here must not stop every stream's events
                log.exception("dispatching %s failed", message[0])

    def _dispatch(self, message: tuple) -> None:
        kind = message[0]
        if kind == "done":
            message[1].set()
            return
        with self._lock:
            s = self._streams.get(message[1])
        if s is None:
            return
        if kind == "scores":
            self._scores(s, message[2], message[3])
        elif kind == "flush":
            for event in s.smoother.flush():
                self._gesture(s, event)
            with self._lock:
                s.active = None
        elif kind == "source":
            _, sid, status, detail, source, fields = message
            for sink in self.sinks:
                self._call(sink, "source", sid, status, detail, source, **fields)
        elif kind == "frame":
            view = StreamView(s.stream_id, s.labels, s.smoother.smoothed, s.active)
            for sink in self.sinks:
                self._call(sink, "frame", view, *message[2:])
        elif kind == "count":
            with self._lock:
                s.counts[message[2]] += message[3]

    def _gesture(self, s: _Stream, event: GestureEvent) -> None:
        record = None
        for sink in self.sinks:
            got = self._call(sink, "gesture", event)
            record = record if record is not None else got
        if record is None:  # no sink published it: what the stream still knows of it
            record = {"type": "gesture", "stream": s.stream_id, "phase": event.phase,
                      "gesture_id": event.gesture_id, "label": event.label,
                      "class_id": event.class_id, "score": round(float(event.score), 4)}
        with self._lock:
            s.recent.append(record)
            s.gestures += 1
            s.active = None if event.phase == "end" else record

    def _scores(self, s: _Stream, probs: np.ndarray, info: WindowInfo) -> None:
        with self._lock:
            s.last_scores = (probs, info)
            s.counts["windows_published"] += 1
        if s.publish_windows:
            for sink in self.sinks:
                self._call(sink, "window", info, probs, s.labels)
        events = s.smoother.feed(probs, info)
        for event in events:
            self._gesture(s, event)
        with self._lock:
            s.silence.window(s.smoother.smoothed, info.last_frame)
            if events:
                s.silence.gesture(s.smoother.suppressed)
        if not events and s.live and s.silence.due(info.last_capture_ns, s.silence_report_s):
            report = self.no_events_report(s.stream_id, s.stats() if s.stats else {},
                                           info.last_capture_ns)
            log.warning("stream %s: no gesture event for %.0f s: %s", s.stream_id,
                        report["seconds"] or 0, report["message"])

    def frame_seen(self, stream_id: str, capture_ns: int, person: bool) -> None:
        """The silence watch's per-frame count (called from the frame thread)."""
        with self._lock:
            self._streams[stream_id].silence.frame(capture_ns, person)
