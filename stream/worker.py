"""One source's per-frame work: its pose thread and its frame thread.

```
source thread -> pose thread (per stream): pose estimation, a frame ahead (MediaPipe
                 releases the GIL)
              -> frame thread (per stream): crop box, heatmap, joints, the RGB crop; the
                 per-frame stages of the frames windows will sample are queued on the
                 recognizer's encoder thread; a due window is assembled and queued, with
                 the control messages (flush, source status) behind it
              -> stream.recognizer (window thread) -> stream.dispatch (dispatcher thread)
```

A worker only sends messages downstream: it never touches the smoother or a sink. What
it counts it keeps under a lock and reports as a copy (:meth:`StreamWorker.stats`); the
events and the smoothed scores are read from the dispatcher's snapshot.

The crop box. Training crops a clip with the box around the person over the whole
clip; live, the box of frame t is the same box computed over the frames of the last
window span (so it follows the person, and a window's frames share nearly the same
box). The frame's RGB crop, its heatmap and its joints all use that frame's box.

Heatmaps are kept in float16 (:data:`HEATMAP_DTYPE`: half of fp32's 4.7 MB a frame for
B/16's 18 x 256 x 256) and made float32 only when a window is assembled.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import Any

import numpy as np

from microgesture.core.errors import MicrogestureError
from microgesture.core.preprocess import normalize_frames
from microgesture.stream.presence import person_in_window
from microgesture.core.sampling import sample_indices
from microgesture.stream.frame_work import BoxTracker, Estimator, FrameMaker, make_frame
from microgesture.stream.grid import GridStreamScheduler
from microgesture.stream.records import WindowInfo
from microgesture.stream.rings import Ring
from microgesture.stream.scheduler import WindowScheduler
from microgesture.stream.segments import SegmentCache
from microgesture.stream.sources import SourceStatus, open_source

log = logging.getLogger(__name__)

class Counts:
    """Counters one thread adds to and any thread reads as a copy."""

    def __init__(self):
        self._c: collections.Counter = collections.Counter()
        self._lock = threading.Lock()

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._c[name] += n

    def __getitem__(self, name: str) -> int:
        with self._lock:
            return self._c[name]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._c)


class StreamWorker:
    """One source: its threads do the per-frame work and queue windows."""

    def __init__(self, recognizer, source_spec: str, stream_id: str | None = None,
                 pose: str = "mediapipe", realtime: bool = False, hop: int | None = None,
                 span_s: float | None = None, publish_windows: bool = False,
                 frame_sink=None, max_frames: int | None = None, silence_report_s: float = 60.0,
                 sampling: str = "frames", overlay: bool = False, **source_options):
        from microgesture.stream.pipeline import event_stream_id

        self.rec = recognizer
        win = recognizer.window
        self.source = open_source(source_spec, stream_id=stream_id or event_stream_id(source_spec),
                                  realtime=realtime, **source_options)
        self.stream_id = self.source.stream_id
        self.live = self.source.live or realtime
        fps = self.source.fps or 30.0
        span_ns = int((span_s or win["span_s"]) * 1e9)
        # the scheduler samples the first model's frames (at least one of each kind: the
        # window's person check and times); other models resample the span (_ids)
        rgb, pose_frames = max(1, win["rgb_frames"]), max(1, win["pose_frames"])
        span_frames = max(rgb, pose_frames, round(span_ns * fps / 1e9))
        stride = win["rgb_frames"] or 8  # default hop: one RGB stride (pose-only: 8 a span)
        if len(recognizer.models) > 1 and sampling == "grid":
            self.source.stop()
            raise MicrogestureError("an ensemble samples several patterns: stream it with "
                                    "--sampling frames")
        if not hop and recognizer.tuned_hop_s:
            hop = max(1, round(recognizer.tuned_hop_s * fps))
        if sampling not in ("frames", "grid"):
            self.source.stop()
            raise MicrogestureError(f"sampling must be 'frames' or 'grid', got {sampling!r}")
        if sampling == "grid":  # a grid fixed in stream time; pose only on sampled frames
            self.scheduler = GridStreamScheduler(span_frames, rgb, pose_frames, hop, fps)
        else:
            self.scheduler = WindowScheduler(span_ns, rgb, pose_frames,
                                             hop or max(1, span_frames // stride), fps=fps)
        self._last_pose: tuple | None = None
        try:
            self.estimator = Estimator(pose, recognizer.layout)
        except BaseException:  # the source's capture thread is running: stop it first
            self.source.stop()
            raise
        self.boxes = BoxTracker(span_ns)
        self.makers = [FrameMaker(m.window, recognizer.layout,
                                  crops=bool(m.plan.per_frame) or "frames" in m.plan.window_inputs)
                       for m in recognizer.models]
        # a live stream that dropped a frame a window samples as RGB takes the encoded
        # frame nearest in time within half an RGB interval instead of encoding anew
        self.substitute_ns = span_ns // (2 * stride) if self.live else 0
        capacity = span_frames * 2 + 16
        self.frames = Ring(capacity)
        # per model: per-frame stage outputs by frame, per-segment stage outputs by segment
        self.model_tokens = [Ring(capacity) for _ in recognizer.models]
        self.model_segments = [SegmentCache(4 * max(1, m.rgb_frames)) for m in recognizer.models]
        self.tokens, self.segments = self.model_tokens[0], self.model_segments[0]
        self.reuse_tokens = True  # False: the naive baseline (stream.bench) encodes per window
        self.dispatcher = recognizer.dispatcher
        self.dispatcher.add_stream(self.stream_id, recognizer.labels, recognizer.smoothing, span_ns / 1e9, fps, self.live,
                                   publish_windows, silence_report_s, self.stats)
        recognizer.stream_ids.append(self.stream_id)
        self.frame_sink = frame_sink     # called on the frame thread (tests hold frames with it)
        self.overlay = overlay           # frames go to the dispatcher's sinks (the overlay)
        self.max_frames = max_frames
        self.on_stop = None  # called with the stream id when the stream stops (heartbeats)
        self.counts = Counts()
        self.fatal: str | None = None
        self._encodes: collections.deque[Future] = collections.deque()  # this stream's, pending
        self._stop = threading.Event()
        self._done = threading.Event()
        self._last_status = ""
        self._had_person = False
        self._started = False
        self._thread = threading.Thread(target=self._loop, name=f"frames-{self.stream_id}",
                                        daemon=True)
        # pose estimation runs a frame ahead on its own thread (MediaPipe releases the
        # GIL), so it overlaps the frame thread's heatmaps, crop and window assembly
        self._posed: queue.Queue = queue.Queue(maxsize=2)
        self._pose_thread = threading.Thread(target=self._pose_loop, name=f"pose-{self.stream_id}",
                                             daemon=True)

    # ------------------------------------------------------------ read by others (copies)
    def _view(self) -> dict[str, Any]:
        return self.dispatcher.snapshot(self.stream_id)

    @property
    def events(self) -> list[dict]:
        """The stream's recent gesture records (the newest RECENT_EVENTS)."""
        return self._view()["events"]

    @property
    def active(self) -> dict | None:
        return self._view()["active"]

    @property
    def last_scores(self) -> tuple[np.ndarray, WindowInfo] | None:
        return self._view()["last_scores"]

    def no_events_report(self, now_ns: int | None = None) -> dict:
        """Why this stream published no gesture event since its last one (``stream.silence``)."""
        return self.dispatcher.no_events_report(self.stream_id, self.stats(), now_ns)

    # ------------------------------------------------------------ pose thread
    def start(self) -> StreamWorker:
        self._started = True
        self._pose_thread.start()
        self._thread.start()
        return self

    _END = object()

    def _hand_over(self, item) -> bool:
        """Queue ``item`` for the frame thread; False once the worker is stopping."""
        while not self._stop.is_set():
            try:
                self._posed.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _pose_loop(self) -> None:
        frames = 0
        try:
            for item in self.source.items():
                if self._stop.is_set():
                    break
                if isinstance(item, SourceStatus):
                    if not self._hand_over(item):
                        break
                    continue
                t0 = time.perf_counter()
                if isinstance(self.scheduler, GridStreamScheduler) and \
                        not self.scheduler.wants_pose(item.capture_ns):
                    kp = sc = None  # no window samples this frame (stream.grid)
                else:
                    kp, sc = self.estimator(item)
                if not self._hand_over((item, kp, sc, (time.perf_counter() - t0) * 1e3)):
                    break
                frames += 1
                if self.max_frames and frames >= self.max_frames:
                    break
        except BaseException as exc:  # handed to the frame thread, which reports it
            self._hand_over(exc)
        finally:
            self._hand_over(self._END)

    # ------------------------------------------------------------ frame thread
    def _loop(self) -> None:
        try:
            while True:
                try:
                    item = self._posed.get(timeout=0.1)
                except queue.Empty:
                    if self._stop.is_set():  # stopped: the pose thread may not hand over _END
                        break
                    continue
                if item is self._END or self._stop.is_set():
                    break
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, SourceStatus):
                    self._status(item)
                    continue
                self._frame(*item)
        except MicrogestureError as exc:
            log.error("stream %s: %s", self.stream_id, exc)
            self.counts.add("fatal")
            self.fatal = str(exc)
        except Exception as exc:  # a bug: logged with its traceback, and the run fails
            log.exception("stream %s stopped on an internal error", self.stream_id)
            self.counts.add("fatal")
            self.fatal = (f"internal error {type(exc).__name__}: {exc} (please report it with the "
                          "log above)")
        finally:
            self._stop.set()
            self.source.stop()
            self._pose_thread.join(10)
            self.rec.control(("flush", self.stream_id))  # the last gesture's end before `stopped`
            if self.on_stop is not None:  # heartbeats end before `stopped`
                self.on_stop(self.stream_id)
            if self._last_status not in ("ended", "stopped"):  # stopped by us: say so last
                self._source_event("stopped", "the pipeline stopped")
            self._wait_dispatched()
            self._done.set()

    def _source_event(self, status: str, detail: str, **fields) -> None:
        self.rec.control(("source", self.stream_id, status, detail, self.source.spec, fields))

    def _wait_dispatched(self, timeout: float = 120.0) -> None:
        """Wait until everything this stream queued has been dispatched."""
        done = threading.Event()
        if not self.rec.control(("done", self.stream_id, done)) or not done.wait(timeout):
            log.warning("stream %s: the window thread did not flush; going on", self.stream_id)

    def _status(self, status: SourceStatus) -> None:
        if status.event in ("lost", "ended", "stopped"):
            # the active gesture ends first: a client that stops on `ended` has its `end`
            self.rec.control(("flush", self.stream_id))
            self.scheduler.reset()
        self._last_status = status.event
        self._source_event(status.event, status.detail, attempt=status.attempt, size=status.size,
                           previous_size=status.previous_size)

    def _frame(self, frame, kp: np.ndarray, sc: np.ndarray, pose_ms: float) -> None:
        self.counts.add("frames")
        if kp is None:  # the grid samples nothing here: no pose, heatmap, crop or ring entry
            self.counts.add("pose_skipped")
            self.scheduler.tick(frame.frame_id, frame.capture_ns)
            if self._last_pose is not None:
                self._show(frame, *self._last_pose)
            self._run_due()
            return
        self._last_pose = (kp, sc)
        self.dispatcher.frame_seen(self.stream_id, frame.capture_ns, bool((sc > 0).any()))
        box = self.boxes.update(frame.capture_ns, kp, sc, (frame.image.shape[1], frame.image.shape[0]))
        data = make_frame(self.makers, frame, kp, sc, box, pose_ms)
        self.frames.append(frame.capture_ns, frame.frame_id, data)
        predicted = self.scheduler.add(frame.frame_id, frame.capture_ns)
        # the first model's sampled frames are encoded as they arrive (others on demand)
        if predicted and data.crop is not None and self.rec.models[0].plan.per_frame \
                and self.reuse_tokens and self._encoder_ready():
            self._encodes.append(self.rec.encode_later(data.crop))
            self.tokens.append(frame.capture_ns, frame.frame_id, self._encodes[-1])
            self.counts.add("encoded")
        self._show(frame, kp, sc)
        self._run_due()

    def _show(self, frame, kp, sc) -> None:
        if self.frame_sink is not None:
            self.frame_sink(self, frame, kp, sc)
        if self.overlay:
            self.dispatcher.post(("frame", self.stream_id, frame, kp, sc))

    def _run_due(self) -> None:
        if self.scheduler.due():
            if self.live:
                self.counts.add("windows_skipped", self.scheduler.skip_to_latest())
            self._window(self.scheduler.select())

    def _pending_encodes(self) -> int:
        """This stream's encodes queued or running on the encoder thread (predicted and
        on demand)."""
        pending = self._encodes
        while pending and pending[0].done():
            pending.popleft()
        return len(pending)

    def _encoder_full(self) -> bool:
        """At least one window's RGB frames of this stream queued or running on the encoder."""
        return self._pending_encodes() >= max(1, self.rec.window["rgb_frames"])

    def _encoder_ready(self) -> bool:
        """Backpressure on the encoder thread: at most one window's RGB frames pending per
        stream. Behind it, a file waits for its oldest encode; a live stream skips the
        encode (its window takes the nearest encoded frame, or encodes on demand)."""
        pending = self._encodes
        if self._encoder_full():
            if self.live:
                self.counts.add("encodes_skipped")
                return False
            pending[0].result()
            pending.popleft()
        return True

    def _encoder_behind(self) -> bool:
        """Whether at least one window's RGB frames are still queued for the encoder."""
        return bool(self.rec.models[0].plan.per_frame) and self._encoder_full()

    def _window(self, window) -> None:
        from microgesture.stream.recognizer import WindowJob

        rec = self.rec
        t0 = time.perf_counter()
        entries = {e.frame_id: e.value for e in self.frames.entries()}
        missing = [i for i in set(window.pose_ids) | set(window.rgb_ids) if i not in entries]
        if missing:  # frames evicted (should not happen): skip the window, count it
            self.counts.add("windows_incomplete")
            return
        if not person_in_window((entries[i].keypoints, entries[i].scores) for i in window.pose_ids):
            self.counts.add("windows_no_person")  # nobody there: nothing to classify
            if self._had_person:  # the person left: the active gesture ends
                rec.control(("flush", self.stream_id))
            self._had_person = False
            return
        self._had_person = True
        if self.live and self._encoder_behind():
            # a window's worth of frames still waits for the encoder: a new window would queue
            # behind them (its latency growing without bound); skip it, as the scheduler skips
            # the windows that came due while inference was busy
            self.counts.add("windows_skipped")
            self.counts.add("windows_skipped_encoder")
            return
        parts = [self._part(m, window, entries) for m in range(len(rec.models))]
        last = entries[window.last_frame_id]
        latency = {"pose": last.pose_ms, "heatmaps": last.heatmap_ms, "tokens": 0.0,
                   "assemble": (time.perf_counter() - t0) * 1e3}
        info = WindowInfo.from_window(window, self.stream_id, latency, rec.model_id, paced=self.live)
        job = WindowJob(self.stream_id, self.live, info, parts, time.monotonic_ns(), latency)
        if rec.submit(job, wait=not self.live):
            self.counts.add("windows")
        else:
            self.counts.add("windows_dropped")

    def _ids(self, window, entries, count: int, sampled: tuple[int, ...]) -> tuple[int, ...]:
        """``count`` frame ids over the window's span: the scheduler's when it sampled that
        many, else sampled as evaluation samples a clip (``core.sampling``)."""
        if count == len(sampled) or count == 0:
            return sampled if count else ()
        population = sorted(i for i, e in entries.items() if window.start_ns <= e.capture_ns
                            <= window.last_capture_ns and i <= window.last_frame_id)
        return tuple(population[k] for k in sample_indices(len(population), count, False))

    def _part(self, m: int, window, entries):
        """Model ``m``'s inputs for the window (a ``stream.recognizer.WindowPart``)."""
        from microgesture.stream.recognizer import WindowPart

        model, maker = self.rec.models[m], self.makers[m]
        plan = model.plan
        rgb_ids = self._ids(window, entries, model.rgb_frames, window.rgb_ids)
        pose_ids = self._ids(window, entries, model.pose_frames, window.pose_ids)
        feeds: dict[str, np.ndarray] = {}
        segments = None
        if plan.per_segment:
            segments = self.model_segments[m].prepare(
                pose_ids, model.window.get("segments") or model.rgb_frames,
                lambda i: entries[i].part(m)[0].astype(np.float32))
        if "heatmaps" in plan.window_inputs:
            feeds["heatmaps"] = maker.window_heatmaps(entries, pose_ids, m)[None]
        if "joints" in plan.window_inputs:
            feeds["joints"] = np.stack([entries[i].joints for i in rgb_ids])[None]
        if "frames" in plan.window_inputs:
            crops = np.stack([entries[i].part(m)[1] for i in rgb_ids])
            feeds["frames"] = normalize_frames(crops, model.mean, model.std)[None]
        cached = self._frame_outputs(m, rgb_ids, entries) if plan.per_frame else None
        return WindowPart(feeds, cached, segments)

    def _frame_outputs(self, m: int, rgb_ids, entries) -> dict[str, list]:
        """Model ``m``'s per-frame outputs for the window's RGB frames: cached, substituted,
        or encoded on demand on the encoder thread (never here); values or Futures."""
        tokens = self.model_tokens[m]
        items, taken = [], set(rgb_ids)
        for i in rgb_ids:
            cached = tokens.get(i) if self.reuse_tokens else None  # naive: every window
            if cached is None and self.substitute_ns and self.reuse_tokens and m == 0:
                cached = self._nearest_encoded(entries[i].capture_ns, taken)
            if cached is None:  # not predicted: encode on demand, once, on the encoder thread
                value = self.rec.encode_later(entries[i].part(m)[1], m)
                self._encodes.append(value)  # counted by the backpressure like predicted ones
                if self.reuse_tokens:
                    tokens.insert(entries[i].capture_ns, i, value)
                self.counts.add("encoded_on_demand")
            else:
                value = cached.value  # outputs, or a Future while the encoder works
            items.append(value)
        return {name: items for name in self.rec.models[m].plan.frame_outputs}

    def _nearest_encoded(self, capture_ns: int, taken: set[int]) -> Any:
        """The token entry nearest ``capture_ns`` within ``substitute_ns`` that the
        window does not use yet (None if there is none); it joins ``taken``."""
        best = None
        for e in self.tokens.window(capture_ns - self.substitute_ns, capture_ns + self.substitute_ns):
            if e.frame_id not in taken and (
                    best is None or abs(e.capture_ns - capture_ns) < abs(best.capture_ns - capture_ns)):
                best = e
        if best is not None:
            taken.add(best.frame_id)
            self.counts.add("rgb_substituted")
        return best

    # ------------------------------------------------------------ control
    def stop(self) -> None:
        self._stop.set()
        self.source.stop()

    def wait(self, timeout: float | None = None) -> bool:
        if not self._started:  # never started (a later source failed to open): nothing runs
            return True
        return self._done.wait(timeout)

    def stats(self) -> dict[str, Any]:
        """A copy of the stream's counters (any thread)."""
        src = self.source.stats()
        sched = self.scheduler.stats()
        c = collections.Counter(self.counts.snapshot())
        d = self.dispatcher.snapshot(self.stream_id)
        superseded = d.get("superseded", 0)
        return {"fps": src.fps_measured, "frames_captured": src.frames_read,
                "frames_processed": c["frames"], "frames_dropped": src.dropped_total,
                "dropped": src.dropped, "reconnects": src.reconnects,
                "windows_run": c["windows"] - superseded,  # published
                "windows_skipped": c["windows_skipped"] + c["windows_dropped"] + superseded,
                "frames_encoded": c["encoded"] + c["encoded_on_demand"],
                "encoded_on_demand": c["encoded_on_demand"],
                "rgb_substituted": c["rgb_substituted"],
                "encodes_skipped": c["encodes_skipped"],
                "windows_skipped_encoder": c["windows_skipped_encoder"],  # part of windows_skipped
                "pose_skipped": c["pose_skipped"],
                "windows_no_person": c["windows_no_person"],
                "scheduler_misses": sched.misses, "inference_errors": d.get("inference_errors", 0),
                "events_published": d["gestures"],
                "sink_errors": self.dispatcher.stats()["sink_errors"],  # sinks turned off, and why
                **{k: sum(c.stats()[k] for c in self.model_segments) for k in self.segments.stats()},
                "queue_depths": {"frames": src.buffered, "windows": self.rec.jobs.qsize()}}

    def close(self) -> None:
        self.stop()
        self.estimator.close()
