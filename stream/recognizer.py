"""The bundle's stages, shared by every stream, and the window thread.

```
frame threads --(windows, control messages)--> jobs queue (bounded) --> window thread
encoder thread: per-frame stages (visual tokens) of sampled frames     batches windows of
                                                                        all streams, runs the
                                                                        window stages -> results
                                                                        (scores, flush, source,
                                                                        counts) -> Dispatcher
```

The window thread owns inference only: it never touches a stream's state. It posts each
window's probabilities to the :class:`~stream.dispatch.Dispatcher`, and forwards the
control messages a frame thread queued behind its windows (a flush, a source status) in
the same order, so a gesture's ``end`` always precedes the ``ended`` that caused it.

Stages are composed with :func:`microgesture.core.family.run_stages` from the bundle's
``stages`` (``stream.stages``): per-frame stages run once per sampled frame on the encoder
thread (their outputs cached per frame), per-segment stages once per pose segment
(``stream.segments``), per-window and whole-window stages on each window. An ensemble
bundle's members (``stream.models``) run one after the other on each batch, each on its
own part of the window; the probabilities are ``sum_i w_i softmax(logits_i)``.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from microgesture.core.bundle import read_manifest
from microgesture.core.errors import MicrogestureError
from microgesture.core.manifest_schema import require_window
from microgesture.core.tuned import read_tuned
from microgesture.stream.dispatch import smoothing_for
from microgesture.stream.models import StreamModel, member_bundles, open_models, pose_layout
from microgesture.stream.records import WindowInfo
from microgesture.stream.stages import StagePlan

log = logging.getLogger(__name__)


@dataclass
class WindowPart:
    """One model's inputs for a window (an ensemble's window has one part per member)."""

    feeds: dict[str, np.ndarray]           # the window's inputs (1, ...) assembled by the frame thread
    cached: dict[str, list] | None = None  # per-frame outputs: name -> per frame value or Future
    segments: Any = None                   # a stream.segments.SegmentJob

    def resolve(self) -> float:
        """Wait for the frames still being encoded and stack the per-frame outputs; the
        last encode's milliseconds."""
        last_ms = 0.0
        for name, items in (self.cached or {}).items():
            values = []
            for item in items:
                if isinstance(item, Future):
                    item, last_ms = item.result()
                values.append(item[name] if isinstance(item, dict) else item)
            self.feeds[name] = np.stack(values)[None]
        self.cached = None
        return last_ms


@dataclass
class WindowJob:
    """One window of one stream, on its way to the window thread."""

    stream_id: str
    live: bool
    info: WindowInfo
    parts: list[WindowPart]
    queued_ns: int
    latency: dict[str, float]


_WindowJob = WindowJob  # the name older callers used


def newest_only(batch: list) -> tuple[list, collections.Counter]:
    """Inference fell behind: of a live stream's queued windows keep only the newest (files
    lose none); returns the kept items and, per stream id, how many windows were dropped."""
    keep, has_newer, superseded = [], set(), collections.Counter()
    for item in reversed(batch):
        if isinstance(item, WindowJob) and item.live:
            if item.stream_id in has_newer:
                superseded[item.stream_id] += 1
                continue
            has_newer.add(item.stream_id)
        elif isinstance(item, tuple) and len(item) > 1:  # windows before a flush: its segment
            has_newer.discard(item[1])
        keep.append(item)
    return keep[::-1], superseded


class Recognizer:
    """The bundle's stages, shared by every stream, and the window thread.

    ``precision``: ``int8``, ``fp32``, ``fp16`` or ``engine`` (``auto``: int8 when the
    bundle has it, else fp32). ``threads``: intra-op threads per session. ``dispatcher``:
    where results go (``stream.dispatch.Dispatcher``).
    """

    def __init__(self, bundle: str, dispatcher, precision: str = "auto", device: str = "cpu",
                 threads: int = 1, max_batch: int = 8, smoothing=None, model_id: str | None = None,
                 triton: str | None = None, segment_cache: bool = True):
        self.manifest = read_manifest(bundle)
        self.dispatcher = dispatcher
        self.stream_ids: list[str] = []  # told when a Triton server goes away
        stages = {k: v for m in self._manifests(bundle) for k, v in m["stages"].items()}
        if precision == "auto":
            have = {p for s in stages.values() for p in s.get("files", {})}
            precision = "int8" if "int8" in have else "fp32"
        self.precision = precision
        if precision == "engine" and device == "cpu":
            device = None  # a TensorRT engine runs on its GPU
        if triton:  # the stages run on a Triton server (core.triton_backend)
            from microgesture.core.triton_backend import open_triton_stages
            if self.manifest.get("members"):
                raise MicrogestureError("an ensemble bundle cannot run on Triton yet; stream it locally")
            require_window(self.manifest, bundle)
            sessions = open_triton_stages(triton, self.manifest, precision, on_status=self._server_status)
            self.models = [StreamModel(self.manifest["model"]["name"], self.manifest, sessions,
                                       StagePlan(self.manifest, sessions), 1.0)]
        else:
            self.models = open_models(self.manifest, bundle, precision, segment_cache,
                                      device=device, threads=threads)
        first = self.models[0]
        self.sessions = (first.sessions if len(self.models) == 1 else
                         {f"{m.name}/{k}": v for m in self.models for k, v in m.sessions.items()})
        self.plan = first.plan
        # the span and frame rate are the bundle's; the frame counts the first model's
        self.window = {**first.window, **{k: self.manifest["window"][k] for k in ("span_s", "fps")
                                          if k in self.manifest["window"]}}
        self.mean, self.std = first.mean, first.std
        self.labels = list(self.manifest["labels"])
        self.layout = pose_layout(self.models)  # the pose-reading members' (an ensemble's student reads none)
        self.smoothing = smoothing or smoothing_for(bundle)
        self.tuned_hop_s = (read_tuned(bundle) or {}).get("hop_s")  # eval-online --tune's hop
        self.model_id = model_id or f"{self.manifest['model']['name']}-{precision}"
        self.max_batch = max_batch
        # a queued window holds its heatmaps (151 MB for B/16's 32x18x256x256): few are queued
        self.jobs: queue.Queue = queue.Queue(maxsize=max_batch)
        self._counts = collections.Counter()
        self._lock = threading.Lock()
        # frames are encoded on their own thread: the frame thread goes on with pose
        # estimation meanwhile, so the per-frame stages use both cores of a 2-core CPU
        self._encoder = (ThreadPoolExecutor(1, thread_name_prefix="encode")
                         if any(m.plan.per_frame for m in self.models) else None)
        self._thread = threading.Thread(target=self._loop, name="windows", daemon=True)
        self._thread.start()

    @property
    def windows_run(self) -> int:
        return self.stats()["windows_run"]

    @property
    def batches(self) -> int:
        return self.stats()["batches"]

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"windows_run": self._counts["windows_run"], "batches": self._counts["batches"]}

    def _server_status(self, status: str, detail: str, attempt: int | None) -> None:
        """The Triton server went away or came back: a ``source`` event on every stream."""
        server = "triton " + next(iter(self.sessions.values())).connection.url
        for sid in list(self.stream_ids):
            self.dispatcher.post(("source", sid, status, detail, server, {"attempt": attempt}))

    def _manifests(self, bundle) -> list[dict]:
        if not self.manifest.get("members"):
            return [self.manifest]
        return [read_manifest(path) for path, _ in member_bundles(self.manifest, bundle)]

    # ------------------------------------------------------------ per-frame stages
    def encode(self, crops: np.ndarray, model: int = 0) -> np.ndarray:
        """RGB crops (N, S, S, 3) uint8 -> a model's per-frame outputs; the output itself
        (``tokens``) when there is one."""
        m = self.models[model]
        out = m.plan.per_frame_outputs(crops, m.mean, m.std)
        return out if len(out) > 1 else next(iter(out.values()))

    def encode_later(self, crop: np.ndarray, model: int = 0) -> Future:
        """Encode one crop (S, S, 3) on the encoder thread: a Future of (outputs, ms)."""
        m = self.models[model]

        def work():
            t = time.perf_counter()
            out = m.plan.per_frame_outputs(crop[None], m.mean, m.std)
            return {k: v[0] for k, v in out.items()}, (time.perf_counter() - t) * 1e3
        return self._encoder.submit(work)

    # ------------------------------------------------------------ frame threads' side
    def submit(self, job: WindowJob, wait: bool) -> bool:
        """Queue a window; live streams never wait (a full queue drops the window)."""
        try:
            self.jobs.put(job, block=wait, timeout=None if wait else 0)
            return True
        except queue.Full:
            return False

    def control(self, message: tuple, timeout: float = 120.0) -> bool:
        """Queue a control message behind the stream's windows (``("flush", sid)``,
        ``("source", sid, ...)``, ``("done", sid, event)``); False if the window thread is gone."""
        deadline = time.monotonic() + timeout
        while self._thread.is_alive() and time.monotonic() < deadline:
            try:
                self.jobs.put(message, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def alive(self) -> bool:
        return self._thread.is_alive()

    # ------------------------------------------------------------ window thread
    def _loop(self) -> None:
        while True:
            batch = [self.jobs.get()]
            while batch[-1] is not None:  # everything queued now
                try:
                    batch.append(self.jobs.get_nowait())
                except queue.Empty:
                    break
            batch, superseded = newest_only(batch)
            for sid, n in superseded.items():
                self.dispatcher.post(("count", sid, "superseded", n))
            jobs: list[WindowJob] = []
            for item in batch + [None]:  # in order: a control message comes after its windows
                if isinstance(item, WindowJob):
                    jobs.append(item)
                    if len(jobs) < self.max_batch:
                        continue
                if jobs:
                    self._run_safely(jobs)
                    jobs = []
                if isinstance(item, tuple):
                    if item[0] == "done":  # ("done", sid, event): dispatched up to here
                        self.dispatcher.post(("done", item[2]))
                    else:
                        self.dispatcher.post(item)
            if batch[-1] is None:
                return

    def _run_safely(self, jobs: list[WindowJob]) -> None:
        try:
            self._run(jobs)
        except Exception as exc:  # one failing batch must not stop the process
            log.exception("window inference failed: %s", exc)
            for job in jobs:
                self.dispatcher.post(("count", job.stream_id, "inference_errors", 1))

    def _run(self, jobs: list[WindowJob]) -> None:
        t0 = time.perf_counter()
        probs, waited = None, 0.0
        for m, model in enumerate(self.models):  # an ensemble: sum_i w_i softmax(logits_i)
            logits, wait, encode_ms = model.plan.run_windows([j.parts[m] for j in jobs])
            waited += wait
            for job, ms in zip(jobs, encode_ms):
                job.latency["tokens"] = job.latency.get("tokens", 0.0) + ms
            z = logits - logits.max(1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(1, keepdims=True)
            probs = p if len(self.models) == 1 else (0 if probs is None else probs) + model.weight * p
        window_ms = (time.perf_counter() - t0 - waited) * 1e3
        now = time.monotonic_ns()
        with self._lock:
            self._counts["batches"] += 1
            self._counts["windows_run"] += len(jobs)
        for job, p in zip(jobs, probs):
            latency = {**job.latency, "queue": (now - job.queued_ns) / 1e6 - window_ms,
                       "window": window_ms, "batch": float(len(jobs))}
            info = WindowInfo(**{**job.info.__dict__, "latency_ms": latency})
            self.dispatcher.post(("scores", job.stream_id, p, info))

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
        for m in self.models:
            m.close()
