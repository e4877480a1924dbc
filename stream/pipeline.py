"""The streaming recognizer: sources -> per-frame work -> windows -> one dispatcher.

```
source thread (per stream, stream.sources)
  -> pose thread (per stream, stream.worker): pose estimation, a frame ahead
  -> frame thread (per stream, stream.worker): crop box, heatmap, joints, RGB crop;
     the per-frame stages of the frames windows will sample go to the encoder thread;
     a due window (stream.scheduler / stream.grid) is assembled and queued
  -> window thread (shared, stream.recognizer): the window stages, batched across
     streams (stream.stages composes them with core.family.run_stages)
  -> results queue -> dispatcher thread (shared, stream.dispatch): smoothing per
     stream, then the sinks: ZeroMQ PUB and the JSONL log (stream.publisher), the
     overlay / video writer (stream.overlay), any other; a failing sink is turned off
```

Messages flow one way; nothing reaches back into another thread's state, and counters
are read as copies. Everything runs from an exported bundle through ``core.backends``
(ONNX Runtime, or TensorRT engines on a GPU): no torch. Per-frame work that depends on
one frame only is done once, as the frame arrives, and cached in rings keyed by frame
id; a window only runs what mixes frames. A window samples its frames exactly as
evaluation samples a clip (``core.sampling``), and frames are cropped, normalised and
turned into heatmaps by the same functions training uses (``core.preprocess``,
``core.heatmaps``).

Threads and cores: MediaPipe and ONNX Runtime release the GIL; sessions use one
intra-op thread each and no spinning: the stages are pipelined across the two cores
rather than each stage using both. A heartbeat timer thread (stream.publisher)
publishes each stream's stats every ``heartbeat_s``.

This module keeps the entry points (:class:`StreamOptions`, :func:`run_stream`) and
re-exports the parts for existing callers.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from microgesture.core.errors import MicrogestureError
from microgesture.stream.dispatch import (Dispatcher, PublisherSink, SmoothingOptions,  # noqa: F401
                                          smoothing_for)
from microgesture.stream.events import EventPublisher
from microgesture.stream.frame_work import BoxTracker, FrameData  # noqa: F401
from microgesture.stream.frame_work import Estimator as _Estimator  # noqa: F401
from microgesture.stream.overlay import Overlay
from microgesture.stream.recognizer import Recognizer, WindowJob, _WindowJob  # noqa: F401
from microgesture.stream.segments import pose_stages  # noqa: F401
from microgesture.stream.worker import StreamWorker

log = logging.getLogger(__name__)


def event_stream_id(spec: Any) -> str:
    """A valid event stream id for a source spec: ``camera0``, a file's stem, a URL's
    host and path (credentials never included); ``core.stream_ids.stream_id_for``."""
    from microgesture.stream.sources import default_stream_id, parse_spec

    return default_stream_id(parse_spec(spec))


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
    sinks: list = field(default_factory=list)  # more dispatcher sinks (stream.dispatch)


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
    dispatcher = Dispatcher([PublisherSink(publisher), *options.sinks])
    recognizer = workers = overlay = None
    started = time.monotonic()
    try:
        recognizer = Recognizer(options.bundle, dispatcher, options.precision, options.device,
                                options.threads, smoothing=options.smoothing,
                                triton=options.triton, segment_cache=not options.naive)
        if options.save_video or options.show:
            overlay = Overlay(options.save_video, options.show, recognizer.layout, 30.0)
            dispatcher.add_sink(overlay)
        workers = []
        for spec, sid in zip(options.sources, ids):
            workers.append(StreamWorker(recognizer, spec, sid, pose=options.pose,
                                        realtime=options.realtime, hop=options.hop,
                                        span_s=options.span_s,
                                        publish_windows=options.publish_windows,
                                        overlay=overlay is not None, max_frames=options.max_frames,
                                        silence_report_s=options.silence_report_s,
                                        sampling=options.sampling, **options.source_options))
        for w in workers:
            w.reuse_tokens = not options.naive
            w.on_stop = publisher.stop_heartbeats
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
        dispatcher.close()  # dispatches what is queued, closes the sinks (the overlay)
        for w in workers or []:
            w.estimator.close()
        publisher.close()
    elapsed = time.monotonic() - started
    silent, stats = {}, {w.stream_id: w.stats() for w in workers or []}
    for w in workers or []:
        if not stats[w.stream_id]["events_published"]:
            silent[w.stream_id] = w.no_events_report()
            log.warning("stream %s ended with no gesture event: %s", w.stream_id,
                        silent[w.stream_id]["message"])
    rec = recognizer.stats()
    return {"seconds": elapsed, "bundle": options.bundle,
            "precision": recognizer.precision,
            "providers": {k: list(v.providers) for k, v in recognizer.sessions.items()},
            "publish": publisher.endpoint, "events_log": options.events_log,
            "streams": {w.stream_id: {**stats[w.stream_id], "events": stats[w.stream_id]["events_published"],
                                      "fatal": w.fatal,
                                      **({"no_events": silent[w.stream_id]} if w.stream_id in silent else {})}
                        for w in workers},
            "windows_run": rec["windows_run"], "batches": rec["batches"],
            "sink_errors": dispatcher.stats()["sink_errors"],
            "smoothing": {**recognizer.smoothing.__dict__, "tuned_hop_s": recognizer.tuned_hop_s},
            **({"video": overlay.writer.summary()} if overlay is not None and overlay.writer else {})}
