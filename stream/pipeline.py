"""The streaming recognizer: sources -> per-frame work -> windows -> events.

```
source thread -> frame thread (per stream): pose, crop box, heatmap, joints, and the
                 visual tokens of the frames windows will sample (once per frame)
              -> window thread (shared by all streams): pose encoder + head, batched
                 across streams -> smoothing -> ZeroMQ PUB (and the JSONL log)
```

Everything runs from an exported bundle through ``core.backends`` (ONNX Runtime, or
TensorRT engines on a GPU): no torch. Per-frame work that depends on one frame only
is done once, as the frame arrives, and cached in rings keyed by frame id; a window
only runs what mixes frames. A window samples its frames exactly as evaluation
samples a clip (``core.sampling``), and frames are cropped, normalised and turned
into heatmaps by the same functions training uses (``core.preprocess``,
``core.heatmaps``).

The crop box. Training crops a clip with the box around the person over the whole
clip; live, the box of frame t is the same box computed over the frames of the last
window span (so it follows the person, and a window's frames share nearly the same
box). The frame's RGB crop, its heatmap and its joints all use that frame's box.

Threads and cores: one thread per stream for per-frame work (MediaPipe and the
visual encoder release the GIL), one window thread, ONNX Runtime sessions with one
intra-op thread each and spinning off: the stages are pipelined across the two
cores rather than each stage using both.
"""

from __future__ import annotations

import collections
import logging
import re
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from microgesture.stream.startup import open_stages
from microgesture.core.bundle import read_manifest
from microgesture.core.manifest_schema import require_window
from microgesture.core.errors import MicrogestureError
from microgesture.core.tuned import read_tuned
from microgesture.core.heatmaps import compact_box, joint_heatmaps
from microgesture.core.layouts import FINGERS, convert, get_layout, missing_joints
from microgesture.core.pose import RecordedPose, create_estimator
from microgesture.core.preprocess import (BOX_PADDING, crop_resize, joints_in_box,
                                          normalize_frames, square_box)
from microgesture.stream.events import EventPublisher, GestureSmoother, WindowInfo
from microgesture.stream.presence import drop_far_joints, person_in_window
from microgesture.stream.rings import Ring
from microgesture.stream.scheduler import WindowScheduler
from microgesture.stream.grid import GridStreamScheduler
from microgesture.stream.segments import SegmentCache, pose_stages, segment_pose
from microgesture.stream.silence import SilenceWatch
from microgesture.stream.sources import Frame, SourceStatus, open_source

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrameData:
    """What the frame thread keeps of one frame (in the frame ring)."""

    frame_id: int
    capture_ns: int
    keypoints: np.ndarray      # (V, 2) px in the model's layout, NaN where missing
    scores: np.ndarray         # (V,)
    box: tuple[int, int, int, int]
    heatmap: np.ndarray        # (V, H, W) float32
    joints: np.ndarray         # (V, 3) in [0, 1] of the box, score
    crop: np.ndarray | None    # (S, S, 3) uint8, kept for encode-on-demand
    pose_ms: float
    heatmap_ms: float


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


def event_stream_id(spec: Any) -> str:
    """A valid event stream id for a source spec: ``camera0``, a file's stem, a URL's
    host and path (credentials never included)."""
    from microgesture.stream.sources import parse_spec, redact

    parsed = parse_spec(spec)
    if parsed.kind == "webcam":
        text = f"camera{parsed.target}" if isinstance(parsed.target, int) else Path(str(parsed.target)).name
    elif parsed.kind in ("file", "folder", "image"):
        text = Path(str(parsed.target)).stem or Path(str(parsed.target)).name
    else:
        text = re.sub(r"^[a-z]+://(\*\*\*@)?", "", redact(str(spec)))
    text = re.sub(r"[^A-Za-z0-9_.:-]+", "-", text).strip("-._:")[:64]
    return text if text and text[0].isalnum() else f"stream-{text}"[:64].rstrip("-") or "stream"


class BoxTracker:
    """The square crop box of the person over the last ``span_ns`` (training's clip box)."""

    def __init__(self, span_ns: int):
        self.span_ns = span_ns
        self._history: collections.deque[tuple[int, np.ndarray, np.ndarray]] = collections.deque()

    def update(self, capture_ns: int, keypoints: np.ndarray, scores: np.ndarray,
               size: tuple[int, int]) -> tuple[int, int, int, int]:
        self._history.append((capture_ns, keypoints, scores))
        while self._history and self._history[0][0] < capture_ns - self.span_ns:
            self._history.popleft()
        kp = np.stack([h[1] for h in self._history])
        sc = np.stack([h[2] for h in self._history])
        return square_box(compact_box(kp, sc, size, padding=BOX_PADDING))


class _Estimator:
    """The pose estimator of one stream; recorded skeletons are looked up by frame id."""

    def __init__(self, spec: str, layout: str):
        self.layout = layout
        fingers = any(f in c for c in get_layout(layout).canonical for f in FINGERS)
        if spec == "mediapipe" and not fingers and not missing_joints("mediapipe33", layout):
            # the model's layout has no finger joints: Pose alone, about half Holistic's cost
            spec = "mediapipe-pose"
        self.spec = spec
        self.estimator = create_estimator(spec)
        self.by_frame = isinstance(self.estimator, RecordedPose)

    def __call__(self, frame: Frame) -> tuple[np.ndarray, np.ndarray]:
        if self.by_frame:
            pose = self.estimator.get(frame.frame_id)
        else:
            pose = self.estimator.estimate(frame.image, frame.capture_ns)
        kp, sc = convert(pose.keypoints, pose.scores, pose.layout, self.layout)
        if self.by_frame and (pose.width, pose.height) != (frame.image.shape[1], frame.image.shape[0]):
            scale = np.array([frame.image.shape[1] / pose.width, frame.image.shape[0] / pose.height],
                             np.float32)
            kp = kp * scale
        # absurd coordinates are dropped before any box, crop or heatmap is sized by them
        return drop_far_joints(kp, sc, (frame.image.shape[1], frame.image.shape[0]))

    def close(self) -> None:
        self.estimator.close()


@dataclass
class _WindowJob:
    stream: StreamWorker
    info: WindowInfo
    feeds: dict[str, np.ndarray]
    queued_ns: int
    latency: dict[str, float]
    tokens: list | None = None  # per RGB frame: tokens, or a Future of (tokens, encode ms)
    segments: Any = None  # a stream.segments.SegmentJob: the window's pose segments, cached or new

    def resolve_tokens(self) -> None:
        """Wait for the frames still being encoded and stack the window's tokens."""
        if self.tokens is None:
            return
        values, last_ms = [], 0.0
        for item in self.tokens:
            if isinstance(item, Future):
                item, last_ms = item.result()
            values.append(item)
        self.feeds["tokens"] = np.stack(values)[None]
        self.latency["tokens"] = self.latency.get("tokens", 0.0) + last_ms
        self.tokens = None


class Recognizer:
    """The bundle's stages, shared by every stream, and the window thread.

    ``precision``: ``int8``, ``fp32``, ``fp16`` or ``engine`` (``auto``: int8 when the
    bundle has it, else fp32). ``threads``: intra-op threads per session.
    """

    def __init__(self, bundle: str, publisher: EventPublisher, precision: str = "auto",
                 device: str = "cpu", threads: int = 1, max_batch: int = 8,
                 smoothing: SmoothingOptions | None = None, model_id: str | None = None,
                 triton: str | None = None, segment_cache: bool = True):
        self.manifest = read_manifest(bundle)
        self.streams: list[StreamWorker] = []  # told when a Triton server goes away
        stages = self.manifest["stages"]
        if "window" in stages:
            raise MicrogestureError(
                f"bundle {bundle} has a whole-window stage (a model whose encoder mixes "
                "frames); this streaming pipeline serves per-frame bundles (CLIP-MG) so far")
        if precision == "auto":
            have = {p for s in stages.values() for p in s.get("files", {})}
            precision = "int8" if "int8" in have else "fp32"
        self.precision = precision
        if precision == "engine" and device == "cpu":
            device = None  # a TensorRT engine runs on its GPU
        require_window(self.manifest, bundle)
        if triton:  # the stages run on a Triton server (core.triton_backend)
            from microgesture.core.triton_backend import open_triton_stages
            self.sessions = open_triton_stages(triton, self.manifest, precision,
                                               on_status=self._server_status)
        else:
            self.sessions = open_stages(self.manifest, pose_stages(self.manifest, segment_cache),
                                        bundle, precision=precision, device=device, threads=threads)
        self.head_inputs = tuple(stages["head"]["inputs"])
        self.window = self.manifest["window"]
        pre = self.manifest["preprocessing"]
        self.mean, self.std = pre.get("mean"), pre.get("std")
        self.labels = list(self.manifest["labels"])
        self.layout = self.window["layout"]
        self.num_joints = get_layout(self.layout).num_joints
        self.smoothing = smoothing or smoothing_for(bundle)
        self.tuned_hop_s = (read_tuned(bundle) or {}).get("hop_s")  # eval-online --tune's hop
        self.model_id = model_id or f"{self.manifest['model']['name']}-{precision}"
        self.publisher = publisher
        self.max_batch = max_batch
        # a queued window holds its heatmaps (151 MB for B/16's 32x18x256x256): few are queued
        self.jobs: queue.Queue[_WindowJob | tuple[str, StreamWorker] | None] = queue.Queue(
            maxsize=max_batch)
        self.windows_run = 0
        self.batches = 0
        # frames are encoded on their own thread: the frame thread goes on with pose
        # estimation meanwhile, so the per-frame stages use both cores of a 2-core CPU
        self._encoder = (ThreadPoolExecutor(1, thread_name_prefix="encode")
                         if "visual" in self.sessions else None)
        self._thread = threading.Thread(target=self._loop, name="windows", daemon=True)
        self._thread.start()

    def _server_status(self, status: str, detail: str, attempt: int | None) -> None:
        """The Triton server went away or came back: a ``source`` event on every stream."""
        server = "triton " + next(iter(self.sessions.values())).connection.url
        for worker in list(self.streams):
            self.publisher.publish_source(worker.stream_id, status, detail, server,
                                          attempt=attempt)

    # ------------------------------------------------------------ per-frame stage
    def encode(self, crops: np.ndarray) -> np.ndarray:
        """RGB crops (N, S, S, 3) uint8 -> tokens (N, 1 + patches, D)."""
        frames = normalize_frames(crops, self.mean, self.std)
        return self.sessions["visual"].run({"frames": frames})["tokens"]

    def encode_later(self, crop: np.ndarray) -> Future:
        """Encode one crop (S, S, 3) on the encoder thread: a Future of (tokens, ms)."""
        def work():
            t = time.perf_counter()
            return self.encode(crop[None])[0], (time.perf_counter() - t) * 1e3
        return self._encoder.submit(work)

    # ------------------------------------------------------------ window thread
    def submit(self, job: _WindowJob, wait: bool) -> bool:
        """Queue a window; live streams never wait (a full queue drops the window)."""
        try:
            self.jobs.put(job, block=wait, timeout=None if wait else 0)
            return True
        except queue.Full:
            return False

    def _loop(self) -> None:
        while True:
            batch = [self.jobs.get()]
            while batch[-1] is not None:  # everything queued now
                try:
                    batch.append(self.jobs.get_nowait())
                except queue.Empty:
                    break
            batch = self._newest_only(batch)
            jobs: list[_WindowJob] = []
            for item in batch + [None]:  # in order: a flush comes after its stream's windows
                if isinstance(item, _WindowJob):
                    jobs.append(item)
                    if len(jobs) < self.max_batch:
                        continue
                if jobs:
                    self._run_safely(jobs)
                    jobs = []
                if isinstance(item, tuple):  # ("flush", stream[, done]): ended, lost, left
                    item[1].flush_events()
                    if len(item) > 2:  # someone waits to publish what comes after the end
                        item[2].set()
            if batch[-1] is None:
                return

    @staticmethod
    def _newest_only(batch: list) -> list:
        """Inference fell behind: of a live stream's queued windows run only the newest
        (the stream counts the others as skipped); files lose no window."""
        keep, has_newer = [], set()  # ids of the streams whose newer window is kept
        for item in reversed(batch):
            if isinstance(item, _WindowJob) and item.stream.live:
                if id(item.stream) in has_newer:
                    item.stream.superseded += 1
                    continue
                has_newer.add(id(item.stream))
            elif isinstance(item, tuple):  # windows before a flush belong to its segment
                has_newer.discard(id(item[1]))
            keep.append(item)
        return keep[::-1]

    def _run_safely(self, jobs: list[_WindowJob]) -> None:
        try:
            self._run(jobs)
        except Exception as exc:  # one failing batch must not stop the process
            log.exception("window inference failed: %s", exc)
            for job in jobs:
                job.stream.errors += 1

    def _run(self, jobs: list[_WindowJob]) -> None:
        # the pose stage runs while the encoder thread may still finish the window's
        # last RGB frames; the tokens are awaited only for the head
        t0 = time.perf_counter()
        head_feeds = {}
        if "pose_segment" in self.sessions:  # new segments only; the others are cached
            head_feeds["pose"] = segment_pose(self.sessions["pose_segment"], jobs)
        elif "pose" in self.sessions:
            heatmaps = np.concatenate([j.feeds["heatmaps"] for j in jobs])
            head_feeds["pose"] = self.sessions["pose"].run({"heatmaps": heatmaps})["pose"]
        wait = time.perf_counter()
        for job in jobs:
            job.resolve_tokens()
        waited = time.perf_counter() - wait
        head_feeds.update({k: np.concatenate([j.feeds[k] for j in jobs])
                           for k in ("tokens", "joints") if k in self.head_inputs})
        logits = self.sessions["head"].run(head_feeds)["logits"]
        window_ms = (time.perf_counter() - t0 - waited) * 1e3
        self.batches += 1
        z = logits - logits.max(1, keepdims=True)
        probs = np.exp(z)
        probs /= probs.sum(1, keepdims=True)
        now = time.monotonic_ns()
        for job, p in zip(jobs, probs):
            latency = {**job.latency, "queue": (now - job.queued_ns) / 1e6 - window_ms,
                       "window": window_ms, "batch": float(len(jobs))}
            info = WindowInfo(**{**job.info.__dict__, "latency_ms": latency})
            job.stream.on_scores(p, info)
            self.windows_run += 1

    def close(self, timeout: float = 120.0) -> None:
        for s in self.sessions.values():  # a Triton server away: stop waiting for it
            getattr(s, "interrupt", lambda: None)()
        self.jobs.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():  # never close a session under a running window
            log.warning("window inference still running after %.0f s; leaving it to the exit", timeout)
            return
        if self._encoder is not None:
            self._encoder.shutdown(wait=True)
        for s in self.sessions.values():
            s.close()


class StreamWorker:
    """One source: its thread does the per-frame work and queues windows."""

    def __init__(self, recognizer: Recognizer, source_spec: str, stream_id: str | None = None,
                 pose: str = "mediapipe", realtime: bool = False, hop: int | None = None,
                 span_s: float | None = None, publish_windows: bool = False,
                 frame_sink=None, max_frames: int | None = None, silence_report_s: float = 60.0,
                 sampling: str = "frames", **source_options):
        self.rec = recognizer
        win = recognizer.window
        self.source = open_source(source_spec, stream_id=stream_id or event_stream_id(source_spec),
                                  realtime=realtime, **source_options)
        self.stream_id = self.source.stream_id
        recognizer.streams.append(self)
        self.live = self.source.live or realtime
        fps = self.source.fps or 30.0
        span_ns = int((span_s or win["span_s"]) * 1e9)
        span_frames = max(win["rgb_frames"], round(span_ns * fps / 1e9))
        if not hop and recognizer.tuned_hop_s:
            hop = max(1, round(recognizer.tuned_hop_s * fps))
        if sampling not in ("frames", "grid"):
            self.source.stop()
            raise MicrogestureError(f"sampling must be 'frames' or 'grid', got {sampling!r}")
        if sampling == "grid":  # a grid fixed in stream time; pose only on sampled frames
            self.scheduler = GridStreamScheduler(span_frames, win["rgb_frames"], win["pose_frames"],
                                                 hop, fps)
        else:
            self.scheduler = WindowScheduler(
                span_ns, win["rgb_frames"], win["pose_frames"],
                hop or max(1, span_frames // win["rgb_frames"]), fps=fps)
        self._last_pose: tuple | None = None
        try:
            self.estimator = _Estimator(pose, recognizer.layout)
        except BaseException:  # the source's capture thread is running: stop it first
            self.source.stop()
            raise
        self.boxes = BoxTracker(span_ns)
        # a live stream that dropped a frame a window samples as RGB takes the encoded
        # frame nearest in time within half an RGB interval instead of encoding anew
        self.substitute_ns = span_ns // (2 * win["rgb_frames"]) if self.live else 0
        capacity = span_frames * 2 + 16
        self.frames = Ring(capacity)
        self.tokens = Ring(capacity)
        self.segments = SegmentCache(4 * win["rgb_frames"])  # pose features per segment
        self.reuse_tokens = True  # False: the naive baseline (stream.bench) encodes per window
        self.smoother = GestureSmoother(recognizer.labels, window=recognizer.smoothing.window,
                                        start_threshold=recognizer.smoothing.start_threshold,
                                        end_threshold=recognizer.smoothing.end_threshold,
                                        min_duration_s=recognizer.smoothing.min_duration_s,
                                        update_every=recognizer.smoothing.update_every)
        self.silence = SilenceWatch(recognizer.labels, recognizer.smoothing.start_threshold,
                                    recognizer.smoothing.min_duration_s, span_ns / 1e9, fps)
        self.silence_report_s = silence_report_s
        self.publish_windows = publish_windows
        self.frame_sink = frame_sink
        self.max_frames = max_frames
        self.events: list[dict] = []
        self.counts = collections.Counter()
        self.errors = 0
        self.superseded = 0  # queued windows replaced by a newer one (window thread)
        self._encodes: collections.deque[Future] = collections.deque()  # this stream's, pending
        self.last_scores: tuple[np.ndarray, WindowInfo] | None = None
        self.active: dict | None = None
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
            self.counts["fatal"] += 1
            self.fatal = str(exc)
        except Exception as exc:  # a bug: logged with its traceback, and the run fails
            log.exception("stream %s stopped on an internal error", self.stream_id)
            self.counts["fatal"] += 1
            self.fatal = (f"internal error {type(exc).__name__}: {exc} (please report it with the "
                          "log above)")
        finally:
            self._stop.set()
            self.source.stop()
            self._pose_thread.join(10)
            self._flush_and_wait()  # the last gesture's end goes out before `stopped`
            self.rec.publisher.stop_heartbeats(self.stream_id)
            if self._last_status not in ("ended", "stopped"):  # stopped by us: say so last
                self.rec.publisher.publish_source(self.stream_id, "stopped", "the pipeline stopped",
                                                  source=self.source.spec)
            self._done.set()

    def _status(self, status: SourceStatus) -> None:
        if status.event in ("lost", "ended", "stopped"):
            # the active gesture ends first: a client that stops on `ended` has its `end`
            self._flush_and_wait()
            self.scheduler.reset()
        self._last_status = status.event
        self.rec.publisher.publish_source(self.stream_id, status.event, status.detail,
                                          source=self.source.spec, attempt=status.attempt,
                                          size=status.size, previous_size=status.previous_size)

    def _flush_and_wait(self, timeout: float = 120.0) -> None:
        """Run this stream's queued windows and end its active gesture (window thread)."""
        done = threading.Event()
        self.rec.jobs.put(("flush", self, done))
        deadline = time.monotonic() + timeout
        while not done.wait(0.2):
            if not self.rec._thread.is_alive() or time.monotonic() > deadline:
                log.warning("stream %s: the window thread did not flush; going on", self.stream_id)
                return

    def _frame(self, frame: Frame, kp: np.ndarray, sc: np.ndarray, pose_ms: float) -> None:
        rec = self.rec
        if kp is None:  # the grid samples nothing here: no pose, heatmap, crop or ring entry
            self.counts["frames"] += 1
            self.counts["pose_skipped"] += 1
            self.scheduler.tick(frame.frame_id, frame.capture_ns)
            if self.frame_sink is not None and self._last_pose is not None:
                self.frame_sink(self, frame, *self._last_pose)
            self._run_due()
            return
        self._last_pose = (kp, sc)
        self.counts["frames"] += 1
        self.silence.frame(frame.capture_ns, bool((sc > 0).any()))
        image = frame.image
        size = (image.shape[1], image.shape[0])
        t1 = time.perf_counter()
        box = self.boxes.update(frame.capture_ns, kp, sc, size)
        hm = rec.window["heatmap_size"]
        heatmap = joint_heatmaps(kp[None], sc[None], (hm, hm), rec.window["sigma"], box=box)[:, 0]
        joints = joints_in_box(kp, sc, box)
        crop = crop_resize(image, box, rec.window["image_size"]) if "visual" in rec.sessions else None
        t2 = time.perf_counter()
        self.frames.append(frame.capture_ns, frame.frame_id,
                           FrameData(frame.frame_id, frame.capture_ns, kp, sc, box, heatmap, joints,
                                     crop, pose_ms, (t2 - t1) * 1e3))
        predicted = self.scheduler.add(frame.frame_id, frame.capture_ns)
        if predicted and crop is not None and self.reuse_tokens and self._encoder_ready():
            self._encodes.append(rec.encode_later(crop))
            self.tokens.append(frame.capture_ns, frame.frame_id, self._encodes[-1])
            self.counts["encoded"] += 1
        if self.frame_sink is not None:
            self.frame_sink(self, frame, kp, sc)
        self._run_due()

    def _run_due(self) -> None:
        if self.scheduler.due():
            if self.live:
                skipped = self.scheduler.skip_to_latest()
                self.counts["windows_skipped"] += skipped
            self._window(self.scheduler.select())

    def _encoder_ready(self) -> bool:
        """Backpressure on the encoder thread: at most one window's RGB frames pending per
        stream. Behind it, a file waits for its oldest encode; a live stream skips the
        encode (its window takes the nearest encoded frame, or encodes on demand)."""
        pending = self._encodes
        while pending and pending[0].done():
            pending.popleft()
        if len(pending) >= self.rec.window["rgb_frames"]:
            if self.live:
                self.counts["encodes_skipped"] += 1
                return False
            pending[0].result()
            pending.popleft()
        return True

    def _window(self, window) -> None:
        rec = self.rec
        t0 = time.perf_counter()
        entries = {e.frame_id: e.value for e in self.frames.entries()}
        missing = [i for i in set(window.pose_ids) | set(window.rgb_ids) if i not in entries]
        if missing:  # frames evicted (should not happen): skip the window, count it
            self.counts["windows_incomplete"] += 1
            return
        if not person_in_window((entries[i].keypoints, entries[i].scores) for i in window.pose_ids):
            self.counts["windows_no_person"] += 1  # nobody there: nothing to classify
            if self._had_person:  # the person left: the active gesture ends
                rec.jobs.put(("flush", self))
            self._had_person = False
            return
        self._had_person = True
        feeds: dict[str, np.ndarray] = {}
        segments = None
        if "pose_segment" in rec.sessions:
            segments = self.segments.prepare(window.pose_ids, rec.window["rgb_frames"],
                                             lambda i: entries[i].heatmap)
        elif "pose" in rec.sessions:
            feeds["heatmaps"] = np.stack([entries[i].heatmap for i in window.pose_ids], 1)[None]
        if "joints" in rec.head_inputs:
            feeds["joints"] = np.stack([entries[i].joints for i in window.rgb_ids])[None]
        encode_ms = 0.0
        if "visual" in rec.sessions:
            tokens, taken = [], set(window.rgb_ids)
            for i in window.rgb_ids:
                cached = self.tokens.get(i) if self.reuse_tokens else None  # naive: every window
                if cached is None and self.substitute_ns and self.reuse_tokens:
                    cached = self._nearest_encoded(entries[i].capture_ns, taken)
                if cached is None:  # not predicted: encode on demand, once
                    t = time.perf_counter()
                    value = rec.encode(entries[i].crop[None])[0]
                    encode_ms += (time.perf_counter() - t) * 1e3
                    if self.reuse_tokens:
                        self.tokens.insert(entries[i].capture_ns, i, value)
                    self.counts["encoded_on_demand"] += 1
                else:
                    value = cached.value  # tokens, or a Future while the encoder works
                tokens.append(value)
        last = entries[window.last_frame_id]
        latency = {"pose": last.pose_ms, "heatmaps": last.heatmap_ms, "tokens": encode_ms,
                   "assemble": (time.perf_counter() - t0) * 1e3}
        info = WindowInfo.from_window(window, self.stream_id, latency, rec.model_id, paced=self.live)
        job = _WindowJob(self, info, feeds, time.monotonic_ns(), latency,
                         tokens if "visual" in rec.sessions else None, segments)
        if rec.submit(job, wait=not self.live):
            self.counts["windows"] += 1
        else:
            self.counts["windows_dropped"] += 1

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
            self.counts["rgb_substituted"] += 1
        return best

    # ------------------------------------------------------------ window thread side
    def on_scores(self, scores: np.ndarray, info: WindowInfo) -> None:
        self.last_scores = (scores, info)
        if self.publish_windows:
            self.rec.publisher.publish_window(info, scores, self.rec.labels)
        published = len(self.events)
        for event in self.smoother.feed(scores, info):
            self.events.append(self.rec.publisher.publish(event))
            self.active = None if event.phase == "end" else self.events[-1]
        self.silence.window(self.smoother.smoothed, info.last_frame)
        if len(self.events) > published:
            self.silence.gesture(self.smoother.suppressed)
        elif self.live and self.silence.due(info.last_capture_ns, self.silence_report_s):
            report = self.no_events_report(info.last_capture_ns)
            log.warning("stream %s: no gesture event for %.0f s: %s", self.stream_id,
                        report["seconds"] or 0, report["message"])

    def flush_events(self) -> None:
        for event in self.smoother.flush():
            self.events.append(self.rec.publisher.publish(event))
        self.active = None

    def no_events_report(self, now_ns: int | None = None) -> dict:
        """Why this stream published no gesture event since its last one (``stream.silence``)."""
        return self.silence.report(self.stats(), self.smoother.suppressed, now_ns)

    # ------------------------------------------------------------ control
    def stop(self) -> None:
        self._stop.set()
        self.source.stop()

    def wait(self, timeout: float | None = None) -> bool:
        if not self._started:  # never started (a later source failed to open): nothing runs
            return True
        return self._done.wait(timeout)

    def stats(self) -> dict[str, Any]:
        src = self.source.stats()
        sched = self.scheduler.stats()
        return {"fps": src.fps_measured, "frames_captured": src.frames_read,
                "frames_processed": self.counts["frames"], "frames_dropped": src.dropped_total,
                "dropped": src.dropped, "reconnects": src.reconnects,
                "windows_run": self.counts["windows"] - self.superseded,  # published
                "windows_skipped": (self.counts["windows_skipped"] + self.counts["windows_dropped"]
                                    + self.superseded),
                "frames_encoded": self.counts["encoded"] + self.counts["encoded_on_demand"],
                "encoded_on_demand": self.counts["encoded_on_demand"],
                "rgb_substituted": self.counts["rgb_substituted"],
                "encodes_skipped": self.counts["encodes_skipped"],
                "pose_skipped": self.counts["pose_skipped"],
                "windows_no_person": self.counts["windows_no_person"],
                "scheduler_misses": sched.misses, "inference_errors": self.errors,
                **self.segments.stats(),
                "queue_depths": {"frames": src.buffered, "windows": self.rec.jobs.qsize()}}

    def close(self) -> None:
        self.stop()
        self.estimator.close()


@dataclass
class StreamOptions:
    """What ``microgesture stream`` was asked."""

    bundle: str
    sources: list[str]
    stream_ids: list[str] | None = None
    publish: str = "tcp://127.0.0.1:5555"
    allow_remote: bool = False
    curve_secret_key: str | None = None  # CurveZMQ (stream.curve): server key pair
    curve_clients: str | None = None     # folder of the admitted subscribers' public keys
    pose: str = "mediapipe"
    precision: str = "auto"
    device: str = "cpu"
    threads: int = 1
    hop: int | None = None
    span_s: float | None = None
    realtime: bool = False
    events_log: str | None = None
    heartbeat_s: float = 1.0
    publish_windows: bool = False
    smoothing: SmoothingOptions | None = None   # None: the bundle's tuned settings, else the defaults
    silence_report_s: float = 60.0              # live: say why every this many seconds without events
    max_frames: int | None = None
    save_video: str | None = None
    show: bool = False
    triton: str | None = None  # run the stages on this Triton server (http:// or grpc://)
    naive: bool = False  # the bench's baseline: whole-window forward per window, nothing reused
    sampling: str = "frames"  # "grid": windows on a grid fixed in stream time (stream.grid)
    source_options: dict = field(default_factory=dict)  # open_source's: stall_s, reconnect


class Overlay:
    """Draws the skeleton, the current top class and its score (every frame) and the
    reported gesture on frames, for ``--show`` and ``--save-video`` (a file browsers
    play, ``stream.video_out``)."""

    def __init__(self, save_video: str | None, show: bool, layout: str, fps: float):
        import cv2

        from microgesture.stream.video_out import check_path

        if save_video:
            check_path(save_video)
        self.cv2, self.show, self.fps = cv2, show, fps
        self.limbs = get_layout(layout).limbs
        self.path = save_video
        self.writer = None
        self.lock = threading.Lock()

    def __call__(self, worker: StreamWorker, frame: Frame, kp: np.ndarray, sc: np.ndarray) -> None:
        cv2 = self.cv2
        image = np.ascontiguousarray(frame.image[:, :, ::-1])
        scale = max(1, image.shape[0] // 240)
        for a, b in self.limbs:
            if sc[a] > 0 and sc[b] > 0:
                cv2.line(image, tuple(int(v) for v in kp[a]), tuple(int(v) for v in kp[b]),
                         (0, 255, 255), scale, cv2.LINE_AA)
        for (x, y), s in zip(kp, sc):
            if s > 0:
                cv2.circle(image, (int(x), int(y)), 2 * scale, (0, 128, 255), -1, cv2.LINE_AA)
        from microgesture.stream.video_out import VideoFile, caption

        for row, (text, event) in enumerate(caption(worker)):
            origin = (4, (14 + 16 * row) * scale)
            cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.45 * scale,
                        (0, 0, 0), 3 * max(1, scale), cv2.LINE_AA)       # outline: readable anywhere
            cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.45 * scale,
                        (0, 255, 0) if event else (255, 255, 255), max(1, scale), cv2.LINE_AA)
        with self.lock:
            if self.path:
                if self.writer is None:
                    self.writer = VideoFile(self.path, self.fps)
                self.writer.write(image)
            if self.show:
                cv2.imshow(f"microgesture {worker.stream_id}", image)
                cv2.waitKey(1)

    def close(self) -> None:
        with self.lock:
            if self.writer is not None:
                self.writer.close()
            if self.show:
                self.cv2.destroyAllWindows()


def run_stream(options: StreamOptions, stop: threading.Event | None = None,
               on_ready=None) -> dict[str, Any]:
    """Run until every source ends or ``stop`` is set (SIGINT/SIGTERM set it from the
    CLI); flush the events, release the sources, and return a summary."""
    import os

    stop = stop or threading.Event()
    if options.show and not os.environ.get("DISPLAY"):
        raise MicrogestureError("--show needs a display (DISPLAY is not set); use --save-video OUT.mp4")
    ids = options.stream_ids or [None] * len(options.sources)
    if len(ids) != len(options.sources):
        raise MicrogestureError(f"{len(options.sources)} sources but {len(ids)} stream ids: give one "
                                "--stream-id per --source, or none")
    publisher = EventPublisher(options.publish, log_path=options.events_log,
                               allow_remote=options.allow_remote, heartbeat_s=options.heartbeat_s,
                               curve_secret_key=options.curve_secret_key,
                               curve_clients=options.curve_clients)
    recognizer = workers = overlay = None
    started = time.monotonic()
    try:
        recognizer = Recognizer(options.bundle, publisher, options.precision, options.device,
                                options.threads, smoothing=options.smoothing,
                                triton=options.triton, segment_cache=not options.naive)
        if options.save_video or options.show:
            overlay = Overlay(options.save_video, options.show, recognizer.layout, 30.0)
        workers = []
        for spec, sid in zip(options.sources, ids):
            workers.append(StreamWorker(recognizer, spec, sid, pose=options.pose,
                                        realtime=options.realtime, hop=options.hop,
                                        span_s=options.span_s,
                                        publish_windows=options.publish_windows,
                                        frame_sink=overlay, max_frames=options.max_frames,
                                        silence_report_s=options.silence_report_s,
                                        sampling=options.sampling, **options.source_options))
        for w in workers:
            w.reuse_tokens = not options.naive
        if overlay is not None:
            overlay.fps = workers[0].source.fps or 30.0
        if on_ready is not None:  # before any event: a subscriber can connect first
            on_ready(publisher.endpoint, workers)
        for w in workers:
            publisher.start_heartbeats(w.stream_id, w.stats)
            w.start()
        while not stop.is_set() and not all(w.wait(0) for w in workers):
            stop.wait(0.1)
    finally:
        for w in workers or []:
            w.stop()
        for w in workers or []:
            w.wait(30)
        if recognizer is not None:
            recognizer.close()  # runs the queued windows and flushes, then stops
        if overlay is not None:
            overlay.close()
        for w in workers or []:
            w.estimator.close()
        publisher.close()
    elapsed = time.monotonic() - started
    silent = {}
    for w in workers or []:
        if not any(e.get("type") == "gesture" for e in w.events):
            silent[w.stream_id] = w.no_events_report()
            log.warning("stream %s ended with no gesture event: %s", w.stream_id,
                        silent[w.stream_id]["message"])
    return {"seconds": elapsed, "bundle": options.bundle,
            "precision": recognizer.precision,
            "providers": {k: list(v.providers) for k, v in recognizer.sessions.items()},
            "publish": publisher.endpoint, "events_log": options.events_log,
            "streams": {w.stream_id: {**w.stats(), "events": len(w.events),
                                      "fatal": getattr(w, "fatal", None),
                                      **({"no_events": silent[w.stream_id]} if w.stream_id in silent else {})}
                        for w in workers},
            "windows_run": recognizer.windows_run, "batches": recognizer.batches,
            "smoothing": {**recognizer.smoothing.__dict__, "tuned_hop_s": recognizer.tuned_hop_s},
            **({"video": overlay.writer.summary()} if overlay is not None and overlay.writer else {})}
