"""``microgesture bench``: latency, throughput and memory of the streaming pipeline.

Each configuration (a precision of the bundle: ``int8`` against the ``fp32``
baseline by default) streams the same live-like source in its own fresh process,
one after the other, so memory and warm caches do not leak between them:

* a video file is first rendered once to a cached file of the asked size, frame
  rate and duration (looped back and forth), then replayed paced at its frame rate
  with the live buffer policy (drop the oldest frame when behind), exactly as a
  camera would be; a camera or a network source is streamed as is for
  ``duration`` seconds;
* every window's scores are published (``window`` events) and logged, so every
  window's latency is known: from its last frame captured to its scores published;
* a sampler reads the process's resident memory and CPU time every second.

Reported per configuration: frames captured, processed and dropped, windows run
and skipped, latency p50/p90/p99 (total and per stage), CPU use, memory at start
and end and its slope after warm-up, and whether the run kept up in real time
(nothing dropped). ``bench.json`` holds everything, ``bench.png`` shows the
latency distribution and memory over time side by side.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from microgesture.core.errors import MicrogestureError
from microgesture.core.paths import DEMO_BUNDLE, cache_dir
from microgesture.core.redact import redact, redact_text, redact_value, secrets_of
from microgesture.core.video import open_capture

WARMUP_FRACTION = 0.2
"""Share of the run left out of the memory slope (model loading, first allocations)."""


@dataclass
class BenchConfig:
    """One benchmarked configuration (what varies between runs is ``precision``)."""

    bundle: str
    source: str
    precision: str
    pose: str = "mediapipe"
    duration_s: float = 60.0
    hop: int | None = None
    threads: int = 1
    name: str = ""
    sample_s: float = 1.0
    sampling: str = "grid"
    """``grid`` (ours: pose only on sampled frames) or ``frames`` (pose on every frame)."""
    naive: bool = False
    """The naive baseline: every window re-runs its whole forward (all its RGB frames
    through the visual stage, the whole-window 3D CNN, the head); nothing is reused."""


# --------------------------------------------------------------------------- the source

def parse_size(text: str | None) -> tuple[int, int] | None:
    """``"640x480"`` to ``(640, 480)``."""
    if text in (None, ""):
        return None
    try:
        w, h = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise MicrogestureError(f"--size must be WIDTHxHEIGHT such as 640x480, got {text!r}") from None
    if not (16 <= w <= 8192 and 16 <= h <= 8192):
        raise MicrogestureError(f"--size {text} is out of range: width and height from 16 to 8192")
    return w, h


def render_source(source: str | os.PathLike, size: tuple[int, int] | None, fps: float | None,
                  duration_s: float, cache: Path | None = None, progress=None) -> tuple[Path, dict]:
    """Render a video file to ``size`` at ``fps`` for ``duration_s`` seconds, playing it
    forwards then backwards as often as needed (no jump at the seams). Cached by the
    source's path, size and modification time and the asked parameters."""
    import cv2

    src = Path(source)
    cap = open_capture(src)
    if not cap.isOpened():
        raise MicrogestureError(f"cannot read the video {src}; give a video file OpenCV can open")
    fps = float(fps or cap.get(cv2.CAP_PROP_FPS) or 30.0)
    width, height = size or (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                             int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    total = max(1, int(round(duration_s * fps)))
    stat = src.stat()
    key = hashlib.sha256(json.dumps([str(src.absolute()), stat.st_size, stat.st_mtime_ns,
                                     width, height, fps, total]).encode()).hexdigest()[:12]
    cache = cache or cache_dir("bench")
    cache.mkdir(parents=True, exist_ok=True)
    out = cache / f"{src.stem}_{width}x{height}_{fps:g}fps_{total}f_{key}.mp4"
    info = {"from": str(src), "size": [width, height], "fps": fps, "frames": total,
            "source_frames": int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), "rendered": str(out)}
    if out.is_file():
        cap.release()
        return out, info
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame if size is None else cv2.resize(frame, size, interpolation=cv2.INTER_AREA))
    cap.release()
    if not frames:
        raise MicrogestureError(f"{src} has no readable frames")
    info["source_frames"] = len(frames)
    if progress:
        progress(f"rendering {src.name} to {width}x{height} at {fps:g} fps for {duration_s:g} s")
    # back and forth: 0 1 .. n-1 n-2 .. 1 0 1 ..
    cycle = list(range(len(frames))) + list(range(len(frames) - 2, 0, -1)) or [0]
    tmp = out.with_suffix(".partial.mp4")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise MicrogestureError(f"cannot write {tmp}: OpenCV has no mp4v encoder here")
    try:
        for i in range(total):
            writer.write(frames[cycle[i % len(cycle)]])
    finally:
        writer.release()
    os.replace(tmp, out)
    return out, info


# --------------------------------------------------------------------------- one run

def _rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource  # not Linux: peak instead of current

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def _percentiles(values, qs=(50, 90, 99)) -> dict[str, float | None]:
    a = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    return {f"p{q}": (round(float(np.percentile(a, q)), 2) if a.size else None) for q in qs} | \
        {"mean": round(float(a.mean()), 2) if a.size else None, "n": int(a.size)}


def _slope_mb_per_min(samples: list[dict]) -> float | None:
    if len(samples) < 4:
        return None
    t = np.array([s["t"] for s in samples])
    keep = t >= t[-1] * WARMUP_FRACTION
    if keep.sum() < 3:
        return None
    return round(float(np.polyfit(t[keep] / 60.0, np.array([s["rss_mb"] for s in samples])[keep], 1)[0]), 3)


def run_config(config: BenchConfig, progress: bool = True) -> dict[str, Any]:
    """Stream ``config.source`` with ``config.precision`` for ``config.duration_s``
    and measure it (in this process; :func:`run_bench` gives each its own)."""
    from microgesture.stream.pipeline import StreamOptions, run_stream

    name = config.name or config.precision
    say = (lambda m: print(f"bench {name}: {m}", file=sys.stderr, flush=True)) if progress else (lambda m: None)
    with tempfile.TemporaryDirectory(prefix="microgesture-bench-") as tmp:
        log = Path(tmp) / "events.jsonl"
        options = StreamOptions(bundle=config.bundle, sources=[config.source], stream_ids=["bench"],
                                publish="tcp://127.0.0.1:*", pose=config.pose,
                                precision=config.precision, threads=config.threads, hop=config.hop,
                                realtime=True, events_log=str(log), publish_windows=True,
                                naive=config.naive, sampling=config.sampling)
        stop = threading.Event()
        samples: list[dict] = []
        workers_box: list = []
        t0 = time.monotonic()
        cpu0 = _cpu_s()

        def sampler() -> None:
            next_report = 10.0
            while not stop.wait(config.sample_s):
                t = time.monotonic() - t0
                row = {"t": round(t, 2), "rss_mb": round(_rss_mb(), 1), "cpu_s": round(_cpu_s() - cpu0, 2)}
                if workers_box:
                    st = workers_box[0].stats()
                    row.update(frames=st["frames_processed"], dropped=st["frames_dropped"],
                               windows=st["windows_run"], skipped=st["windows_skipped"])
                samples.append(row)
                if t >= next_report:
                    next_report += 10.0
                    say(f"{t:5.0f}/{config.duration_s:.0f} s  rss {row['rss_mb']:.0f} MB  "
                        f"frames {row.get('frames', 0)} (dropped {row.get('dropped', 0)})  "
                        f"windows {row.get('windows', 0)} (skipped {row.get('skipped', 0)})")
                if t >= config.duration_s + 5:  # live sources never end by themselves
                    stop.set()

        def ready(address, workers) -> None:
            workers_box.extend(workers)

        say(f"streaming {redact(config.source)} ({config.pose} pose) for {config.duration_s:g} s")
        watcher = threading.Thread(target=sampler, name="bench-sampler", daemon=True)
        watcher.start()
        try:
            summary = run_stream(options, stop=stop, on_ready=ready)
        finally:
            stop.set()
            watcher.join(5)
        wall = time.monotonic() - t0
        cpu = _cpu_s() - cpu0
        windows = [e for e in map(json.loads, log.read_text().splitlines()) if e["type"] == "window"]
    stream = summary["streams"]["bench"]
    if stream.get("fatal"):
        raise MicrogestureError(f"bench {name}: the stream failed: {stream['fatal']}")
    stages = sorted({k for w in windows for k in w["latency_ms"]} - {"total", "batch"})
    latency = {"total": _percentiles([w["latency_ms"]["total"] for w in windows])}
    latency.update({k: _percentiles([w["latency_ms"].get(k) for w in windows]) for k in stages})
    rss = [s["rss_mb"] for s in samples]
    dropped, skipped = stream["frames_dropped"], stream["windows_skipped"]
    result = {
        "config": redact_value(asdict(config)), "name": name, "precision": summary["precision"],
        "providers": summary["providers"], "seconds": round(wall, 2),
        "frames": {"captured": stream["frames_captured"], "processed": stream["frames_processed"],
                   "dropped": dropped, "encoded": stream["frames_encoded"],
                   "posed": stream["frames_processed"] - stream.get("pose_skipped", 0),
                   "fps_processed": round(stream["frames_processed"] / max(wall, 1e-9), 2)},
        "naive": config.naive,
        "pose_segments": {"computed": stream.get("pose_segments_computed", 0),
                          "reused": stream.get("pose_segments_reused", 0)},
        "windows": {"run": stream["windows_run"], "skipped": skipped,
                    "per_s": round(stream["windows_run"] / max(wall, 1e-9), 2)},
        "realtime": dropped == 0 and skipped == 0,
        "latency_ms": latency,
        "cpu": {"seconds": round(cpu, 2), "cores_busy": round(cpu / max(wall, 1e-9), 2),
                "cores": os.cpu_count()},
        "memory_mb": {"start": rss[0] if rss else None, "end": rss[-1] if rss else None,
                      "max": max(rss) if rss else None,
                      "slope_mb_per_min_after_warmup": _slope_mb_per_min(samples)},
        "samples": samples,
        "window_latencies_ms": [w["latency_ms"]["total"] for w in windows],
    }
    say(f"done: {'real time' if result['realtime'] else 'NOT real time'}, latency p50 "
        f"{latency['total']['p50']} ms p99 {latency['total']['p99']} ms")
    return result


def _child(config: BenchConfig, progress: bool, queue) -> None:
    try:
        queue.put(("ok", run_config(config, progress)))
    except MicrogestureError as exc:
        queue.put(("error", redact_text(exc, secrets_of(config.source))))
    except BaseException as exc:  # reported to the parent with its type
        queue.put(("error", redact_text(f"{type(exc).__name__}: {exc}", secrets_of(config.source))))


def run_isolated(config: BenchConfig, progress: bool = True) -> dict[str, Any]:
    """:func:`run_config` in a fresh process (spawned: no state shared with the parent)."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(config, progress, queue), name=f"bench-{config.name}")
    proc.start()
    try:
        status, payload = queue.get(timeout=config.duration_s * 3 + 600)
    except Exception:
        proc.terminate()
        raise MicrogestureError(f"bench {config.name}: the run did not finish "
                                f"(exit code {proc.exitcode})") from None
    finally:
        proc.join(30)
    if status != "ok":
        raise MicrogestureError(f"bench {config.name}: {payload}")
    return payload


# --------------------------------------------------------------------------- the comparison

def run_bench(bundle: str | None = None, source: str | None = None, precisions=None,
              pose: str = "mediapipe", duration_s: float = 60.0, size=None, fps: float | None = None,
              hop: int | None = None, threads: int = 1, out: str | None = None,
              progress: bool = True, isolate: bool = True, naive: bool = True,
              rates: bool = True) -> dict[str, Any]:
    """Benchmark ``precisions`` of ``bundle`` side by side on ``source``; writes
    ``bench.json`` and ``bench.png`` into ``out`` (when given) and returns the report.
    ``naive``: also run the last precision as the naive baseline (``BenchConfig.naive``).
    ``rates``: measure each stage's GFLOP/s against the matmul ceiling first
    (``stream.stage_rates``)."""
    from microgesture.core.bundle import read_manifest, stage_precisions
    from microgesture.stream.sources import parse_spec

    if bundle is None:
        bundle = str(DEMO_BUNDLE)
    if source is None:
        raise MicrogestureError("give --source: a camera index, an rtsp:// URL or a video file "
                                "(for example a clip of a person, rendered to --size 640x480 --fps 30)")
    if not duration_s > 0:
        raise MicrogestureError(f"--duration must be positive, got {duration_s}")
    manifest = read_manifest(bundle)
    have = sorted(set.intersection(*(set(stage_precisions(manifest, s)) for s in manifest["stages"])))
    wanted = list(precisions) if precisions else [p for p in ("fp32", "int8") if p in have]
    missing = [p for p in wanted if p not in have]
    if missing:
        raise MicrogestureError(f"the bundle {bundle} has no {', '.join(missing)} stages; it has "
                                f"{', '.join(have)} (export with --formats to add them)")
    say = (lambda m: print(f"bench: {m}", file=sys.stderr, flush=True)) if progress else (lambda m: None)
    spec = parse_spec(source)
    rendered = None
    size = parse_size(size) if isinstance(size, str) else size
    if spec.kind == "file":
        if pose.startswith("recorded:") and (size or fps):
            raise MicrogestureError("recorded pose matches the source frame by frame: drop --size and "
                                    "--fps, or use --pose mediapipe")
        if not pose.startswith("recorded:"):
            path, rendered = render_source(spec.target, size, fps, duration_s, progress=say)
            source = str(path)
    elif size or fps:
        raise MicrogestureError(f"--size and --fps re-render video files only; {spec.display} is "
                                "streamed as it comes")
    configs = [BenchConfig(bundle=str(bundle), source=str(source), precision=p, pose=pose,
                           duration_s=duration_s, hop=hop, threads=threads, name=p) for p in wanted]
    main = wanted[-1]  # int8 when there is one
    if naive:
        configs.append(BenchConfig(bundle=str(bundle), source=str(source), precision=main, pose=pose,
                                   duration_s=duration_s, hop=hop, threads=threads,
                                   name=f"{main}-naive", naive=True, sampling="frames"))
    stages = None
    if rates:
        from microgesture.stream.segments import pose_stages
        from microgesture.stream.stage_rates import matmul_ceiling, stage_rates

        say("measuring the matmul ceiling and each stage alone (one thread, batch 1)")
        ceiling = matmul_ceiling()
        names = tuple(dict.fromkeys(pose_stages(manifest) + pose_stages(manifest, False)))
        stages = {"matmul_ceiling_gflop_per_s": ceiling,
                  **stage_rates(bundle, names, main, ceiling)}
    results = []
    for config in configs:
        say(f"configuration {config.name}: {config.precision} stages, {threads} thread(s) per session")
        results.append(run_isolated(config, progress) if isolate else run_config(config, progress))
    report = {"bundle": str(bundle), "model": manifest["model"]["name"], "source": redact(source),
              "rendered_from": rendered, "span_s": manifest["window"]["span_s"],
              "span_source": manifest["window"].get("span_source"),
              **headline(results, main, stages),
              "pose": pose, "duration_s": duration_s, "hop": hop, "cpu_count": os.cpu_count(),
              "results": results, "baseline": wanted[0]}
    if out:
        out_dir = Path(out)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "bench.json").write_text(json.dumps(report, indent=1, default=str))
        report["files"] = [str(out_dir / "bench.json")]
        try:
            report["files"].append(str(plot_bench(report, out_dir / "bench.png")))
        except ImportError:
            say("matplotlib is not installed: no bench.png (pip install matplotlib)")
    return report


def _model_cpu_s(result: dict[str, Any], stages: dict[str, Any] | None) -> float | None:
    """Seconds of one core the model stages took per second of video, from the stage
    counts of a run and each stage's isolated time."""
    if not stages:
        return None
    ms = {k: v["ms"] for k, v in stages.items() if isinstance(v, dict) and "ms" in v}
    windows = result["windows"]["run"]
    total = result["frames"]["encoded"] * ms.get("visual", 0.0) + windows * ms.get("head", 0.0)
    if result["naive"] or "pose_segment" not in ms:
        total += windows * ms.get("pose", 0.0)
    else:
        total += result["pose_segments"]["computed"] * ms["pose_segment"]
    return round(total / 1e3 / max(float(result["config"]["duration_s"]), 1e-9), 3)


def _model_ms_per_window(result: dict[str, Any], stages: dict[str, Any] | None) -> float | None:
    """Milliseconds of model stages one window costs (stage counts per window x isolated
    times): what a run that keeps up pays per window, whether or not this run kept up."""
    windows = result["windows"]["run"]
    if not stages or not windows:
        return None
    ms = {k: v["ms"] for k, v in stages.items() if isinstance(v, dict) and "ms" in v}
    total = result["frames"]["encoded"] / windows * ms.get("visual", 0.0) + ms.get("head", 0.0)
    if result["naive"] or "pose_segment" not in ms:
        total += ms.get("pose", 0.0)
    else:
        total += result["pose_segments"]["computed"] / windows * ms["pose_segment"]
    return round(total, 1)


def headline(results: list[dict[str, Any]], main: str, stages: dict[str, Any] | None
             ) -> dict[str, Any]:
    """The report's top-level numbers: ours (``main`` precision) against the naive baseline."""
    ours = next((r for r in results if r["name"] == main and not r["naive"]), None)
    naive = next((r for r in results if r["naive"]), None)
    out: dict[str, Any] = {"stages": stages}
    if ours:
        out.update(throughput_fps=ours["frames"]["fps_processed"], cpu_cores=ours["cpu"]["cores_busy"],
                   event_latency_ms={k: ours["latency_ms"]["total"][k] for k in ("p50", "p90", "p99")},
                   model_cpu_cores=_model_cpu_s(ours, stages),
                   model_ms_per_window=_model_ms_per_window(ours, stages))
    if naive:
        out.update(naive_throughput_fps=naive["frames"]["fps_processed"],
                   naive_cpu_cores=naive["cpu"]["cores_busy"],
                   naive_event_latency_ms={k: naive["latency_ms"]["total"][k] for k in ("p50", "p90", "p99")},
                   naive_model_cpu_cores=_model_cpu_s(naive, stages),
                   naive_model_ms_per_window=_model_ms_per_window(naive, stages))
    return out


def format_report(report: dict[str, Any]) -> str:
    res = report["results"]
    rows = [("", *[r["name"] for r in res]),
            ("precision run", *[r["precision"] for r in res]),
            ("real time (nothing dropped)", *["yes" if r["realtime"] else "NO" for r in res]),
            ("frames captured", *[r["frames"]["captured"] for r in res]),
            ("frames dropped", *[r["frames"]["dropped"] for r in res]),
            ("frames processed per s", *[r["frames"]["fps_processed"] for r in res]),
            ("frames with pose estimated", *[r["frames"].get("posed", "-") for r in res]),
            ("frames encoded (visual)", *[r["frames"]["encoded"] for r in res]),
            ("pose segments computed", *[r.get("pose_segments", {}).get("computed", "-") for r in res]),
            ("windows run", *[r["windows"]["run"] for r in res]),
            ("windows skipped", *[r["windows"]["skipped"] for r in res]),
            ("latency p50 ms", *[r["latency_ms"]["total"]["p50"] for r in res]),
            ("latency p90 ms", *[r["latency_ms"]["total"]["p90"] for r in res]),
            ("latency p99 ms", *[r["latency_ms"]["total"]["p99"] for r in res])]
    for stage in ("pose", "heatmaps", "tokens", "window", "queue"):
        if all(stage in r["latency_ms"] for r in res):
            rows.append((f"  {stage} p50 ms", *[r["latency_ms"][stage]["p50"] for r in res]))
    rows += [("CPU cores busy", *[r["cpu"]["cores_busy"] for r in res]),
             ("memory start MB", *[r["memory_mb"]["start"] for r in res]),
             ("memory end MB", *[r["memory_mb"]["end"] for r in res]),
             ("memory slope MB/min", *[r["memory_mb"]["slope_mb_per_min_after_warmup"] for r in res])]
    width = max(len(str(r[0])) for r in rows) + 2
    cols = [max(len(str(v)) for v in col) + 2 for col in zip(*[r[1:] for r in rows])]
    src = report["source"]
    if report.get("rendered_from"):
        r = report["rendered_from"]
        src = f"{Path(r['from']).name} rendered to {r['size'][0]}x{r['size'][1]} at {r['fps']:g} fps"
    lines = [f"{report['model']} on {src} ({report['pose']} pose, "
             f"{report['duration_s']:g} s each, {report['cpu_count']} cores, window span "
             f"{report.get('span_s', '?')} s)"]
    for r in rows:
        lines.append(f"{str(r[0]):<{width}}" + "".join(f"{str('-' if v is None else v):>{c}}"
                                                     for v, c in zip(r[1:], cols)))
    stages = report.get("stages") or {}
    ceiling = stages.get("matmul_ceiling_gflop_per_s")
    if ceiling:
        lines.append(f"each stage alone, one thread, batch 1 (matmul ceiling: fp32 {ceiling['fp32']} "
                     f"GFLOP/s, int8 {ceiling['int8']} GOP/s):")
        for name, s in stages.items():
            if isinstance(s, dict) and "ms" in s:
                lines.append(f"  {name:<13} {s['ms']:>8} ms  {s['gflop']:>8} GFLOP  "
                             f"{s['gflop_per_s']:>7} GFLOP/s  {100 * (s['share_of_ceiling'] or 0):5.1f} % of ceiling")
    if report.get("naive_cpu_cores") is not None and report.get("cpu_cores"):
        ratio = report["naive_cpu_cores"] / max(report["cpu_cores"], 1e-9)
        lines.append(f"naive / ours, CPU cores: {report['naive_cpu_cores']} / {report['cpu_cores']} "
                     f"= {ratio:.2f}x (while the naive run could not keep up the ratio understates it)")
        if report.get("model_cpu_cores") and report.get("naive_model_cpu_cores"):
            lines.append(f"naive / ours, model stages alone (stage counts x isolated times): "
                         f"{report['naive_model_cpu_cores']} / {report['model_cpu_cores']} cores = "
                         f"{report['naive_model_cpu_cores'] / report['model_cpu_cores']:.2f}x")
    if report.get("model_ms_per_window") and report.get("naive_model_ms_per_window"):
        lines.append(f"model stages per window (counts per window x isolated times): naive "
                     f"{report['naive_model_ms_per_window']} ms, ours {report['model_ms_per_window']} ms "
                     f"= {report['naive_model_ms_per_window'] / report['model_ms_per_window']:.2f}x")
    for f in report.get("files", []):
        lines.append(f"wrote {f}")
    return "\n".join(lines)


def plot_bench(report: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for r in report["results"]:
        lat = np.sort(np.asarray(r["window_latencies_ms"], dtype=float))
        if lat.size:
            ax1.plot(lat, np.arange(1, lat.size + 1) / lat.size, label=f"{r['name']} "
                     f"(p50 {r['latency_ms']['total']['p50']} ms)")
        t = [s["t"] for s in r["samples"]]
        ax2.plot(t, [s["rss_mb"] for s in r["samples"]], label=r["name"])
    for limit, style in ((100, ":"), (200, "--")):
        ax1.axvline(limit, color="grey", linestyle=style, linewidth=0.8)
    ax1.set_xscale("log")
    ax1.set_xlabel("window latency: last frame captured to scores published (ms)")
    ax1.set_ylabel("fraction of windows")
    ax1.legend()
    ax2.set_xlabel("seconds")
    ax2.set_ylabel("resident memory (MB)")
    ax2.legend()
    fig.suptitle(f"microgesture bench: {report['model']}, {Path(str(report['source'])).name}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = ["BenchConfig", "format_report", "parse_size", "plot_bench", "render_source",
           "run_bench", "run_config", "run_isolated"]
