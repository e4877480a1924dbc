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
5. A summary: gestures performed against gestures detected, event latency p50/p99.

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


def read_truth(path: Path, fps: float) -> list[dict[str, Any]]:
    with open(path, newline="") as f:
        return [{"label": r["label"], "start_s": int(r["start_frame"]) / fps,
                 "end_s": int(r["end_frame"]) / fps} for r in csv.DictReader(f)]


def match(truth: list[dict], detected: list[dict], tolerance_s: float = 1.0) -> dict[str, Any]:
    """Pair detections with performed gestures: same label, overlapping in time (a
    detection may end up to ``tolerance_s`` late: windows lag the movement)."""
    used: set[int] = set()
    rows = []
    for g in truth:
        hit = None
        for i, d in enumerate(detected):
            if i in used or d["label"] != g["label"]:
                continue
            if d["start_s"] <= g["end_s"] + tolerance_s and d["end_s"] >= g["start_s"]:
                hit = i
                break
        if hit is not None:
            used.add(hit)
        rows.append({**g, "detected": hit is not None,
                     "delay_s": None if hit is None else detected[hit]["start_s"] - g["start_s"]})
    found = sum(r["detected"] for r in rows)
    return {"performed": len(truth), "detected": len(detected), "matched": found,
            "recall": found / max(1, len(truth)),
            "precision": len(used) / max(1, len(detected)),
            "gestures": rows,
            "false_detections": [d for i, d in enumerate(detected) if i not in used]}


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
    import cv2

    fps = cv2.VideoCapture(str(paths["video"])).get(cv2.CAP_PROP_FPS) or 15.0
    detected = _detections(gestures, _frame0_ns(gestures, fps))
    truth = read_truth(paths["truth"], fps)
    result = match(truth, detected)
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


def _frame0_ns(events: list[dict], fps: float) -> int:
    """When the video's frame 0 was captured (events carry capture times and frame ids;
    the file is paced at its frame rate)."""
    if not events:
        return 0
    w = events[0]["window"]
    return int(w["last_capture_ns"] - w["last_frame"] / fps * 1e9)


def _detections(events: list[dict], origin_ns: int) -> list[dict]:
    """Gestures as (label, start_s, end_s) from start/end events, in seconds from origin."""
    open_: dict[int, dict] = {}
    out = []
    for e in events:
        if e["phase"] == "start":
            open_[e["gesture_id"]] = {"label": e["label"], "score": e["score"],
                                      "start_s": (e["start_ns"] - origin_ns) / 1e9}
        elif e["phase"] == "end" and e["gesture_id"] in open_:
            d = open_.pop(e["gesture_id"])
            d["end_s"] = (e["end_ns"] - origin_ns) / 1e9
            out.append(d)
    return out


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
              f"{result['precision']:.2f}",
              "event latency: not measured (--fast replays faster than a camera)" if lat is None else
              f"event latency (last frame captured -> event published): p50 "
              f"{_ms(lat['p50'])}, p99 {_ms(lat['p99'])} over {lat['n']} events",
              f"events received over ZeroMQ: {result['events_received']}; log: {result['events_log']}"]
    return "\n".join(lines)


def _ms(value) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def write_summary(result: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(result, indent=2, default=str))
