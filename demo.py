"""``microgesture demo``: the whole product on a fresh install, with no arguments.

1. A model: the small CLIP-MG bundle shipped in the package (``demo_bundle/``: a
   ``clip-mg-tiny`` trained on our synthetic micro-gesture set by ``microgesture
   train`` and exported by ``microgesture export``; ``--rebuild`` makes it again
   from scratch, which needs the ``train`` extra).
2. A synthetic long video of one subject performing several gestures with idle
   gaps, with its recorded skeletons and the ground truth (built once, cached).
3. The streaming pipeline on that video, paced at its frame rate like a camera,
   pose replayed from the recorded skeletons, events published over ZeroMQ.
4. A ZeroMQ subscriber that receives the events, as any client would.
5. A summary: gestures performed against gestures detected, scored with the MiGA
   online-track rule that ``microgesture eval-online`` uses (``core.online_metric``:
   the class matches and the detection's interval, from its events, overlaps the
   performed gesture with IoU > 0.3; detections of 15 frames or fewer do not count),
   the delay from each gesture's start to its first event, event latency p50/p99.

This module orchestrates training (the synthetic video), streaming and the client;
it lives at the top of the package so that those subpackages never import each other.
"""

from __future__ import annotations

import csv
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from microgesture.core.errors import MicrogestureError
from microgesture.core.paths import DEMO_BUNDLE
from microgesture.core.paths import cache_dir as paths_cache_dir

SHIPPED_BUNDLE = DEMO_BUNDLE


def cache_dir() -> Path:
    return paths_cache_dir("demo")


def demo_video(cache: Path, duration_s: float, seed: int) -> dict[str, Path]:
    """The long synthetic video, its skeleton JSONL and ground truth (cached)."""
    from microgesture.training.synth import make_long_video

    video = cache / f"long_{int(duration_s)}s_seed{seed}.mp4"
    paths = {"video": video, "skeleton": video.with_suffix(".jsonl"),
             "truth": video.with_name(video.stem + "_gt.csv")}
    if not all(p.is_file() for p in paths.values()):
        make_long_video(video, duration_s, seed=seed, progress=False)
    return paths


def build_bundle(out: Path, progress: bool = True, epochs: int = 12) -> Path:
    """Train clip-mg-tiny on a synthetic set and export it (needs the train extra)."""
    try:
        from microgesture.export.exporter import export_bundle
        from microgesture.training.synth import write_synthetic
        from microgesture.training.trainer import TrainOptions, train
    except ImportError as exc:
        raise MicrogestureError(f"--rebuild trains a model and needs the train extra "
                                f"(pip install 'microgesture[train]'): {exc}") from exc
    work = out.parent / (out.name + ".work")
    data, run = work / "synth", work / "run"
    if not (data / "clips.csv").is_file():
        write_synthetic(data, subjects=12, clips_per_class=12, classes=32, seed=0,
                        progress=progress, workers=2)
    # the recipe of the shipped bundle (demo_bundle/README.md): default split, 4 held-out subjects
    train(TrainOptions(model="clip-mg-tiny", data=str(data), out=str(run), epochs=epochs,
                       workers=2, seed=0),
          resume=(run / "last.pt").exists(), progress=progress)
    export_bundle(run, out, formats=("onnx", "int8"), verify=True, progress=progress)
    return out


def read_truth(path: Path) -> list:
    """The performed gestures of the demo video's ``_gt.csv`` (``end_frame`` exclusive) as
    inclusive frame intervals (``core.online_metric.Interval``)."""
    from microgesture.core.online_metric import Interval

    with open(path, newline="") as f:
        return [Interval(r["label"], int(r["start_frame"]), int(r["end_frame"]) - 1) for r in csv.DictReader(f)]


def match(truth: list, detections: list, fps: float) -> dict[str, Any]:
    """Score the detections as ``microgesture eval-online`` does (MiGA online track) and
    lay the result out per performed gesture, in seconds."""
    from microgesture.core.online_metric import match_video, score_online

    m = match_video(truth, detections, fps=fps)
    hit = {t: m.kept[d] for d, t, _ in m.pairs}
    rows = [{"label": g.label, "start_s": g.start / fps, "end_s": (g.end + 1) / fps, "detected": j in hit,
             "delay_s": (hit[j].announced - g.start) / fps if j in hit and hit[j].announced is not None
             else None} for j, g in enumerate(m.truth)]
    used = m.matched_detections()
    score = score_online({"demo": m})
    return {"performed": len(truth), "detected": len(detections), "matched": m.tp,
            "recall": score["recall"], "precision": score["precision"], "f1": score["f1"],
            "dropped": len(m.dropped), "gestures": rows,
            "false_detections": [{"label": d.label, "start_s": d.start / fps, "end_s": (d.end + 1) / fps}
                                 for i, d in enumerate(m.kept) if i not in used],
            "online": {k: v for k, v in score.items() if k != "per_video"}}


def run_demo(duration_s: float = 60.0, seed: int = 0, bundle: str | None = None,
             rebuild: bool = False, realtime: bool = True, precision: str = "auto",
             out: str | None = None, progress: bool = True) -> dict[str, Any]:
    from microgesture.stream.client import Subscriber
    from microgesture.stream.pipeline import StreamOptions, run_stream

    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    if bundle is None:
        bundle_path = SHIPPED_BUNDLE
        if rebuild or not (bundle_path / "manifest.json").is_file():
            bundle_path = build_bundle(cache / "bundle", progress)
    else:
        bundle_path = Path(bundle)
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if progress else (lambda *a: None)
    say(f"demo: model bundle {bundle_path}")
    paths = demo_video(cache, duration_s, seed)
    say(f"demo: video {paths['video']} ({duration_s:.0f} s), skeletons replayed from "
        f"{paths['skeleton'].name}")

    received: list[dict] = []
    ready = threading.Event()
    endpoint: dict[str, str] = {}

    def on_ready(address: str, workers) -> None:
        endpoint["address"] = address
        ready.set()

    def subscribe() -> None:
        ready.wait(60)
        with Subscriber(endpoint["address"], types=("gesture", "source"), timeout=1.0) as sub:
            sub_ready.set()
            while not done.is_set():
                event = sub.recv(timeout=0.2)
                if event is not None:
                    received.append(event)
                    if progress and event.get("type") == "gesture" and event["phase"] != "update":
                        lat = f"  latency {event['latency_ms']['total']:.0f} ms" if realtime else ""
                        say(f"  {event['phase']:>5}  {event['label']:<40} score {event['score']:.2f}{lat}")
            while (event := sub.recv(timeout=0.5)) is not None:
                received.append(event)

    done, sub_ready = threading.Event(), threading.Event()
    listener = threading.Thread(target=subscribe, name="demo-subscriber", daemon=True)
    listener.start()
    events_log = Path(out or cache) / "demo_events.jsonl"
    if events_log.exists():
        events_log.unlink()
    options = StreamOptions(bundle=str(bundle_path), sources=[str(paths["video"])],
                            stream_ids=["demo"], publish="tcp://127.0.0.1:*",
                            pose=f"recorded:{paths['skeleton']}", precision=precision,
                            realtime=realtime, events_log=str(events_log))
    say("demo: streaming (paced at the video's frame rate, like a camera)...")
    summary = run_stream(options, on_ready=on_ready)
    time.sleep(0.3)
    done.set()
    listener.join(10)

    gestures = [e for e in received if e.get("type") == "gesture"]
    from microgesture.stream.online_eval import detections_from_events, video_fps

    fps = video_fps(paths["video"])
    result = match(read_truth(paths["truth"]), detections_from_events(gestures), fps)
    latencies = np.array([e["latency_ms"]["total"] for e in gestures if e["phase"] == "start"])
    all_lat = np.array([e["latency_ms"]["total"] for e in gestures])
    result.update({
        "events_received": len(received), "gesture_events": len(gestures),
        # replayed faster than its frame rate, a file's "capture" times are not wall-clock
        "latency_ms": ({"p50": _pct(all_lat, 50), "p99": _pct(all_lat, 99), "n": int(all_lat.size),
                        "start_p50": _pct(latencies, 50)} if realtime else None),
        "stream": summary, "bundle": str(bundle_path), "video": str(paths["video"]),
        "events_log": str(events_log)})
    return result


def _pct(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if values.size else None


def format_summary(result: dict[str, Any]) -> str:
    lines = ["", "gesture performed                         start    end   detected  delay"]
    for g in result["gestures"]:
        delay = f"{g['delay_s']:+.1f} s" if g["delay_s"] is not None else ""
        lines.append(f"{g['label'][:40]:<40} {g['start_s']:6.1f} {g['end_s']:6.1f}   "
                     f"{'yes' if g['detected'] else 'no':<8}  {delay}")
    for d in result["false_detections"]:
        lines.append(f"  extra detection: {d['label']} at {d['start_s']:.1f}-{d['end_s']:.1f} s")
    lat = result["latency_ms"]
    lines += ["",
              f"performed {result['performed']}, detected {result['detected']}, matched "
              f"{result['matched']}: recall {result['recall']:.2f}, precision "
              f"{result['precision']:.2f}, F1 {result['f1']:.2f} (MiGA online track: same class, "
              f"IoU > 0.3; detections of <= 15 frames dropped: {result['dropped']})",
              "event latency: not measured (--fast replays faster than a camera)" if lat is None else
              f"event latency (last frame captured -> event published): p50 "
              f"{_ms(lat['p50'])}, p99 {_ms(lat['p99'])} over {lat['n']} events",
              f"events received over ZeroMQ: {result['events_received']}; log: {result['events_log']}"]
    return "\n".join(lines)


def _ms(value) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def write_summary(result: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(result, indent=2, default=str))
