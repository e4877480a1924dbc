"""``microgesture eval-online``: gesture events on long videos, scored as the MiGA online track.

Every long video of a dataset (``core.long_videos``) is streamed through the same
code as ``microgesture stream`` (:func:`microgesture.stream.pipeline.run_stream`),
in file mode: as fast as the machine goes, nothing dropped. Each run writes the
usual JSONL event log, with every window's raw scores (``--publish-windows``).
The gesture events' intervals (``interval``: where the gesture was, from the
windows that voted for it) are the detections, scored by
``core.online_metric`` against the labelled intervals. Outputs in ``--out``:
``metrics_online.json``, ``timelines/<video>.png`` and ``events/<video>.jsonl``.

Tuning (``--tune``). The smoothing settings are searched on the validation videos
(split ``val``): for each hop the validation videos are streamed once, and every
combination of the grid below is replayed on their logged window scores through
the same :class:`~microgesture.stream.events.GestureSmoother` the pipeline uses
(scores as logged, to 4 decimals). The best F1 (then precision, then grid order)
is written into the bundle (``core.tuned``), and the evaluation videos are then
streamed with the bundle's new defaults, exactly as ``microgesture stream`` will.

Grid: hop = the default (span / RGB frames) and half of it, in seconds; windows
averaged 1, 2, 4, 6; start threshold 0.3 .. 0.8 by 0.1; end threshold 0.4, 0.6 or
0.8 times the start threshold; minimum duration 0, 0.3, 0.6, 1.0 s.
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from microgesture.core.bundle import read_manifest
from microgesture.core.errors import MicrogestureError
from microgesture.core.long_videos import LongVideo, LongVideoSet, normalize_split, open_long_videos
from microgesture.core.online_metric import (IOU_THRESHOLD, MIN_FRAMES, Detection, describe_match, match_video,
                                             score_online)
from microgesture.core.tuned import read_tuned, write_tuned
from microgesture.stream.events import GestureSmoother, WindowInfo
from microgesture.stream.pipeline import SmoothingOptions, StreamOptions, run_stream, smoothing_for

WINDOWS = (1, 2, 4, 6)
START_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
END_RATIOS = (0.4, 0.6, 0.8)
MIN_DURATIONS = (0.0, 0.3, 0.6, 1.0)
HOP_FACTORS = (1.0, 0.5)
STREAM_ID = "eval"


def grid() -> list[dict[str, Any]]:
    """The smoothing settings ``--tune`` tries for each hop (module docstring)."""
    return [{"window": w, "start_threshold": s, "end_threshold": round(s * r, 3), "min_duration_s": d}
            for w, s, r, d in itertools.product(WINDOWS, START_THRESHOLDS, END_RATIOS, MIN_DURATIONS)]


# --------------------------------------------------------------------------- events -> detections

def detections_from_events(events: list[dict]) -> list[Detection]:
    """Detections from the gesture events of one stream (start + end per ``gesture_id``).

    The interval is the ``end`` event's ``interval`` (from an older publisher without
    it: the start window's first frame to the end window's last); ``announced`` is the
    last frame of the window that published the ``start``.
    """
    starts: dict[int, dict] = {}
    out = []
    for e in events:
        if e.get("type", "gesture") != "gesture":
            continue
        if e["phase"] == "start":
            starts[e["gesture_id"]] = e
        elif e["phase"] == "end" and e["gesture_id"] in starts:
            start = starts.pop(e["gesture_id"])
            iv = e.get("interval")
            first, last = ((iv["first_frame"], iv["last_frame"]) if iv else
                           (start["window"]["first_frame"], e["window"]["last_frame"]))
            out.append(Detection(e["label"], int(first), int(last), int(start["window"]["last_frame"]),
                                 float(start["score"])))
    return out


def _smoother_events(smoother: GestureSmoother, windows) -> list[dict]:
    events = []
    for p, info in windows:
        events += smoother.feed(p, info)
    events += smoother.flush()
    return [{"phase": e.phase, "gesture_id": e.gesture_id, "label": e.label, "score": e.score,
             "window": {"first_frame": e.window.first_frame, "last_frame": e.window.last_frame},
             "interval": None if e.interval is None else asdict(e.interval)} for e in events]


def replay(windows: list[tuple[np.ndarray, WindowInfo]], labels, settings: dict) -> list[Detection]:
    """The detections a stream would publish from these windows with these smoothing settings."""
    smoother = GestureSmoother(labels, window=settings["window"], start_threshold=settings["start_threshold"],
                               end_threshold=settings["end_threshold"],
                               min_duration_s=settings["min_duration_s"], update_every=0)
    return detections_from_events(_smoother_events(smoother, windows))


def read_log(path: Path) -> tuple[list[dict], list[tuple[np.ndarray, WindowInfo]]]:
    """(gesture events, [(raw scores, window)]) of a stream's JSONL event log."""
    gestures, windows = [], []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        e = json.loads(line)
        if e["type"] == "gesture":
            gestures.append(e)
        elif e["type"] == "window":
            w = e["window"]
            windows.append((np.asarray(e["scores"], dtype=np.float64),
                            WindowInfo(e["stream"], w["index"], w["first_frame"], w["last_frame"],
                                       w["first_capture_ns"], w["last_capture_ns"])))
    return gestures, windows


# --------------------------------------------------------------------------- streaming one video

def video_fps(path: Path) -> float:
    """The frame rate a video's header gives, else 30."""
    from microgesture.core.video import DEFAULT_VIDEO_FPS, probe_video

    info = probe_video(path)
    return info.fps if info is not None and info.fps else DEFAULT_VIDEO_FPS


def stream_video(bundle: str, video: LongVideo, log: Path, *, pose: str = "auto", precision: str = "auto",
                 hop: int | None = None, smoothing: SmoothingOptions | None = None) -> dict:
    """Stream one long video as ``microgesture stream --source VIDEO --events-log LOG
    --publish-windows`` would (file mode); return the run's summary."""
    if pose == "auto":
        pose = f"recorded:{video.skeleton}" if video.skeleton else "mediapipe"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.unlink(missing_ok=True)   # the publisher appends
    options = StreamOptions(bundle=str(bundle), sources=[str(video.video)], stream_ids=[STREAM_ID],
                            publish="tcp://127.0.0.1:*", pose=pose, precision=precision, hop=hop,
                            events_log=str(log), heartbeat_s=3600.0, publish_windows=True,
                            smoothing=smoothing, silence_report_s=0.0)
    summary = run_stream(options)
    fatal = summary["streams"][STREAM_ID].get("fatal")
    if fatal:
        raise MicrogestureError(f"streaming {video.video} failed: {fatal}")
    return summary


# --------------------------------------------------------------------------- the command

def _choose(videos: LongVideoSet, split: str, tune: bool, tune_split: str) -> tuple[str | None, list[LongVideo]]:
    have = videos.splits()
    if split not in ("auto", "all"):
        try:
            split = normalize_split(split, "--split")
        except MicrogestureError:
            raise MicrogestureError(f"--split {split!r} is not one of auto, all, train, val (valid, "
                                    "validation) or test.") from None
    if split == "auto":
        name = "test" if "test" in have else ("val" if "val" in have and not tune else None)
    elif split == "all":
        name = None
    else:
        name = split
    chosen = videos.split(name)
    if not chosen:
        raise MicrogestureError(f"{videos.root} has no {name} videos (splits: {', '.join(have) or 'none'}); "
                                "choose --split from those, or --split all.")
    if tune and (name is None or name == tune_split):
        print(f"eval-online: warning: scoring on videos the smoothing is tuned on ({name or 'all'}): "
              "the result is optimistic", file=sys.stderr)
    return name, chosen


def _check_labels(videos: list[LongVideo], labels: list[str], root: Path) -> None:
    unknown = sorted({gt.label for v in videos for gt in v.truth} - set(labels))
    if unknown:
        raise MicrogestureError(f"{root}: labels the bundle does not know: {', '.join(unknown[:5])}; "
                                f"the bundle's labels are {', '.join(labels[:8])}...")


def _default_hop_s(manifest: dict) -> float:
    win = manifest["window"]
    return float(win["span_s"]) / int(win["rgb_frames"])


def _run_videos(bundle, videos, out: Path, tag: str, say, **kwargs) -> dict[str, dict]:
    runs = {}
    for i, v in enumerate(videos, 1):
        t0 = time.monotonic()
        log = out / "events" / f"{v.name}{tag}.jsonl"
        fps = video_fps(v.video)
        summary = stream_video(bundle, v, log, **kwargs)
        gestures, windows = read_log(log)
        runs[v.name] = {"video": v, "fps": fps, "log": log, "gestures": gestures, "windows": windows,
                        "summary": summary}
        say(f"  {i}/{len(videos)} {v.name}: {len(windows)} windows, "
            f"{sum(e['phase'] == 'start' for e in gestures)} gestures ({time.monotonic() - t0:.1f} s)")
    return runs


def _tune(bundle: str, manifest: dict, videos: list[LongVideo], out: Path, say, pose: str,
          precision: str) -> dict:
    labels = list(manifest["labels"])
    default_hop_s = _default_hop_s(manifest)
    current = smoothing_for(bundle)   # what the bundle streams with now (tuned before, or the defaults)
    keys = ("window", "start_threshold", "end_threshold", "min_duration_s")
    trials, defaults = [], None
    for factor in HOP_FACTORS:
        hop_s = default_hop_s * factor
        say(f"eval-online: tuning, hop {hop_s:.3f} s: streaming {len(videos)} validation videos")
        runs = {}
        for v in videos:
            fps = video_fps(v.video)
            log = out / "events" / f"{v.name}.tune-hop{factor:g}.jsonl"
            stream_video(bundle, v, log, pose=pose, precision=precision, hop=max(1, round(hop_s * fps)),
                         smoothing=current)
            runs[v.name] = (v, fps, read_log(log)[1])
        candidates = grid()
        if factor == 1.0:   # the settings before tuning, scored the same way, last
            candidates.append({k: getattr(current, k) for k in keys})
        for settings in candidates:
            matches = {name: match_video(v.truth, replay(windows, labels, settings), fps=fps)
                       for name, (v, fps, windows) in runs.items()}
            s = score_online(matches)
            trials.append({**settings, "hop_s": round(hop_s, 4), "f1": s["f1"], "precision": s["precision"],
                           "recall": s["recall"], "tp": s["tp"], "detections": s["detections"]})
        if factor == 1.0:
            defaults = trials.pop()
    best = max(trials, key=lambda t: (t["f1"], t["precision"]))   # max keeps the first of equals
    settings = {k: best[k] for k in ("window", "start_threshold", "end_threshold", "min_duration_s", "hop_s")}
    tuned = {"split": videos[0].split, "videos": [v.name for v in videos], "f1": best["f1"],
             "precision": best["precision"], "recall": best["recall"], "trials": len(trials),
             "before": {k: defaults[k] for k in ("f1", "precision", "recall")},
             "iou_threshold": IOU_THRESHOLD, "min_frames": MIN_FRAMES}
    write_tuned(bundle, settings, tuned)
    say(f"eval-online: tuned on {len(videos)} validation videos: F1 {defaults['f1']:.3f} -> {best['f1']:.3f} "
        f"with {settings}; stored in {Path(bundle) / 'smoothing.json'}")
    top = sorted(trials, key=lambda t: (-t["f1"], -t["precision"]))[:10]
    return {"settings": settings, **tuned, "top": top}


def evaluate_online(bundle: str, data: str, out: str = "online-eval", *, split: str = "auto",
                    tune: bool = False, tune_split: str = "val", pose: str = "auto", precision: str = "auto",
                    plots: bool = True, progress: bool = True) -> dict:
    """Stream, score and (with ``tune``) tune; write ``metrics_online.json`` and timelines."""
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if progress else (lambda *a: None)
    manifest = read_manifest(bundle)
    labels = list(manifest["labels"])
    videos = open_long_videos(data)
    for path, reason in videos.skipped:
        say(f"eval-online: skipped {path}: {reason}")
    _check_labels(videos.videos, labels, videos.root)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    tuning = None
    if tune:
        from microgesture.core.paths import DEMO_BUNDLE

        if Path(bundle).resolve() == DEMO_BUNDLE.resolve():
            raise MicrogestureError(f"--tune writes into the bundle; the shipped demo bundle {DEMO_BUNDLE} "
                                    "stays as shipped: tune a copy (cp -r ... mine) and pass that.")
        tune_split = normalize_split(tune_split, "--tune-split")
        val = videos.split(tune_split)
        if not val:
            raise MicrogestureError(f"--tune needs validation videos: {videos.root} has no {tune_split!r} split "
                                    f"(splits: {', '.join(videos.splits()) or 'none'}); give each video a split "
                                    "in videos.csv, or choose --tune-split.")
        tuning = _tune(bundle, manifest, val, out_dir, say, pose, precision)
    split_name, chosen = _choose(videos, split, tune, tune_split)
    smoothing = smoothing_for(bundle)
    hop_s = (read_tuned(bundle) or {}).get("hop_s")
    say(f"eval-online: streaming {len(chosen)} {split_name or 'all'} videos of {videos.root} "
        f"({'tuned' if hop_s else 'default'} smoothing {asdict(smoothing)})")
    runs = _run_videos(bundle, chosen, out_dir, "", say, pose=pose, precision=precision)
    matches = {name: match_video(r["video"].truth, detections_from_events(r["gestures"]), fps=r["fps"])
               for name, r in runs.items()}
    result = score_online(matches, labels)
    result["per_class"] = {k: v for k, v in result["per_class"].items()
                           if v["ground_truth"] or v["detections"]}
    report = {"bundle": str(bundle), "data": str(videos.root), "kind": videos.kind, "split": split_name,
              "smoothing": asdict(smoothing), "hop_s": hop_s or _default_hop_s(manifest),
              "tuned_settings": hop_s is not None, "iou_threshold": IOU_THRESHOLD, "min_frames": MIN_FRAMES,
              **result, "tuning": tuning,
              "videos_detail": {name: {**describe_match(m), "fps": m.fps, "events_log": str(runs[name]["log"])}
                                for name, m in matches.items()}}
    if plots:
        from microgesture.stream.timeline import draw_timeline

        report["timelines"] = {
            name: str(draw_timeline(m, out_dir / "timelines" / f"{name}.png", name,
                                    runs[name]["summary"]["streams"][STREAM_ID]["frames_processed"]))
            for name, m in matches.items()}
    (out_dir / "metrics_online.json").write_text(json.dumps(report, indent=2, default=str))
    return report


def format_report(report: dict) -> str:
    lines = [f"{'class':<42} {'gt':>4} {'det':>4} {'tp':>4}  {'P':>5} {'R':>5} {'F1':>5}  delay"]
    for label, c in sorted(report["per_class"].items()):
        delay = c["delay"].get("median_s")
        lines.append(f"{label[:42]:<42} {c['ground_truth']:>4} {c['detections']:>4} {c['tp']:>4}  "
                     f"{c['precision']:5.2f} {c['recall']:5.2f} {c['f1']:5.2f}  "
                     + ("-" if delay is None else f"{delay:+.1f} s"))
    d = report["delay"]
    lines += ["", f"{report['videos']} videos ({report['split'] or 'all'}), {report['ground_truth']} gestures, "
                  f"{report['detections']} detections ({report['dropped']} of <= {report['min_frames']} frames "
                  f"dropped), {report['tp']} true positives",
              f"precision {report['precision']:.3f}  recall {report['recall']:.3f}  F1 {report['f1']:.3f}"
              + (f"  (IoU > {report['iou_threshold']})"),
              "delay from gesture start to its first event: "
              + ("-" if "median_s" not in d else f"median {d['median_s']:.2f} s, mean {d['mean_s']:.2f} s, "
                                                  f"p90 {d['p90_s']:.2f} s over {d['n']} gestures")]
    if report.get("tuning"):
        t = report["tuning"]
        lines.append(f"tuned on {len(t['videos'])} {t['split']} videos: F1 {t['before']['f1']:.3f} -> {t['f1']:.3f}, "
                     f"settings {t['settings']}")
    return "\n".join(lines)
