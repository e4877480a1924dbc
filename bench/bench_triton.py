"""Scale-out: N camera streams through one Triton server against N in-process streams.

    python bench/bench_triton.py [--bundle demo_bundle] [--streams 1,2,4] [--duration 20]
                                 [--precision int8] [--json FILE]

Each stream is its own ``microgesture stream`` process (a camera worker) replaying
the same synthetic video paced like a camera (``--realtime``, recorded skeletons so
MediaPipe does not dominate), with its windows published. Mode ``in-process``: every
worker runs the bundle's stages itself with ONNX Runtime. Mode ``triton``: one pip
``tritonserver`` (``microgesture serve``'s CPU repository) runs them for all workers,
``--triton http://...``. Per mode and N: windows per second (all streams), window
latency (last frame captured -> scores, p50/p99), windows skipped, CPU seconds of the
workers and of the server, and the batches Triton formed per model (its statistics
API: executions by batch size).

Then the same on paper for a GPU: the per-stage work of the CLIP-MG configurations
(GFLOP per frame or window, from DESIGN.md's measured per-stage costs), the bytes a
worker sends per second, and how many cameras one GPU and one 10 GbE link carry.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# DESIGN.md, "Facts measured on the 2-core CPU machine": per-stage work. ViT GFLOP per
# frame are the models' counts; the pose CNN's from its measured time at its measured
# share of the int8 ceiling (B/16: 113 ms at 45 % of 370 GOP/s = 19 GOP; B/32's heatmaps
# are 64 px against 256 px: 1/16 of it); the head's from 18 ms at 84 % of 370 GOP/s.
PAPER = {
    "clip-mg-b16": {"visual_gflop": 35.1, "pose_gflop": 19.0, "head_gflop": 5.6,
                    "cpu_ms": {"visual": 114, "pose": 113, "head": 18},
                    "frames": (3, 224, 224), "heatmaps": (18, 32, 256, 256), "tokens": (197, 512)},
    "clip-mg-b32": {"visual_gflop": 8.8, "pose_gflop": 19.0 / 16, "head_gflop": 5.6 / 4,
                    "cpu_ms": {"visual": 32, "pose": 24, "head": 18},
                    "frames": (3, 224, 224), "heatmaps": (18, 32, 64, 64), "tokens": (50, 512)},
}


def percentile(values, q):
    return round(float(np.percentile(values, q)), 2) if len(values) else None


def batch_histogram(before, after) -> dict[str, dict[int, int]]:
    """Executions per batch size and model, between two statistics snapshots."""
    def table(stats):
        return {m["name"]: {int(b["batch_size"]): int(b["compute_infer"]["count"])
                            for b in m.get("batch_stats", [])} for m in stats}
    a, b = table(before), table(after)
    return {name: {size: n - a.get(name, {}).get(size, 0) for size, n in sorted(sizes.items())
                   if n - a.get(name, {}).get(size, 0)} for name, sizes in b.items()}


def request_counts(before, after) -> dict[str, dict[str, int]]:
    """Per model: requests received, batches executed, rows run. requests > executions
    means Triton combined requests (of one or several workers) into one batch."""
    def table(stats):
        return {m["name"]: (int(m["inference_stats"]["success"]["count"]),
                            int(m.get("execution_count", 0)), int(m.get("inference_count", 0)))
                for m in stats}
    a, b = table(before), table(after)
    out = {}
    for name, now in b.items():
        then = a.get(name, (0, 0, 0))
        requests, executions, rows = (x - y for x, y in zip(now, then))
        if requests:
            out[name] = {"requests": requests, "executions": executions, "rows": rows}
    return out


def process_cpu_s(pid: int) -> float:
    """CPU seconds of ``pid`` and its live descendants (tritonserver runs each Python-backend
    model instance in a stub process of its own)."""
    stats = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        stats[int(stat.parent.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    tree, ticks = {pid}, 0
    for _ in range(4):  # server -> stubs (-> their threads' processes, if any)
        tree |= {p for p, (ppid, _) in stats.items() if ppid in tree}
    ticks = sum(stats[p][1] for p in tree if p in stats)
    return ticks / os.sysconf("SC_CLK_TCK")


def run_workers(n, args, video, skeleton, out: Path, triton: str | None) -> dict:
    """Start ``n`` stream processes at once, wait for them, read their events."""
    procs, logs = [], []
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    for k in range(n):
        log = out / f"{'triton' if triton else 'local'}-{n}-{k}.jsonl"
        log.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "microgesture", "stream", "--bundle", str(args.bundle),
               "--source", str(video), "--pose", f"recorded:{skeleton}",
               *([] if args.fast else ["--realtime"]), "--publish", "tcp://127.0.0.1:*", "--events-log", str(log), "--publish-windows",
               "--precision", args.precision, "--stream-id", f"cam{k}", "--quiet",
               "--heartbeat", "60"]
        if triton:
            cmd += ["--triton", triton]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
        logs.append(log)
    summaries = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=args.duration * 10 + 120)
        if p.returncode != 0:
            raise SystemExit(f"a stream failed ({p.returncode}): {stderr[-1500:]}")
        summaries.append(json.loads(stdout.strip().splitlines()[-1]))
    wall = time.monotonic() - t0
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    total, window, batch = [], [], []
    for log in logs:
        for line in log.read_text().splitlines():
            e = json.loads(line)
            if e["type"] == "window":
                total.append(e["latency_ms"]["total"])
                window.append(e["latency_ms"]["window"])
                batch.append(e["latency_ms"]["batch"])
    streams = [next(iter(s["streams"].values())) for s in summaries]
    return {"streams": n, "mode": "triton" if triton else "in-process", "wall_s": round(wall, 2),
            "windows": len(total), "windows_per_s": round(len(total) / wall, 2),
            "windows_skipped": sum(s["windows_skipped"] for s in streams),
            "frames_dropped": sum(s["frames_dropped"] for s in streams),
            "latency_ms": ({"p50": None, "p99": None} if args.fast else  # no capture clock
                           {"p50": percentile(total, 50), "p99": percentile(total, 99)}),
            "window_ms": {"p50": percentile(window, 50), "p99": percentile(window, 99)},
            "client_batch_mean": round(float(np.mean(batch)), 2) if batch else None,
            "workers_cpu_s": round(used.ru_utime + used.ru_stime
                                   - children.ru_utime - children.ru_stime, 2)}


def on_paper(fps: float, hop: int, span_frames: int, rgb_frames: int, tflops: float,
             efficiency: float, link_gbit: float) -> dict:
    """Per camera at ``fps``: work and bytes for the server (frames to ``visual``, the
    32 pose frames' heatmaps to ``pose``, the window's tokens to ``head``, fp32); cameras
    per GPU and per link."""
    out = {}
    windows_s = fps / hop
    frames_s = fps * rgb_frames / span_frames  # on the sampling grid: each encoded once
    for name, p in PAPER.items():
        gflop_s = frames_s * p["visual_gflop"] + windows_s * (p["pose_gflop"] + p["head_gflop"])
        cpu_cores = (frames_s * p["cpu_ms"]["visual"]
                     + windows_s * (p["cpu_ms"]["pose"] + p["cpu_ms"]["head"])) / 1e3
        sent = 4 * (frames_s * math.prod(p["frames"])
                    + windows_s * (math.prod(p["heatmaps"]) + rgb_frames * math.prod(p["tokens"])))
        gpu = tflops * 1e3 * efficiency
        out[name] = {"frames_encoded_per_s": round(frames_s, 2), "windows_per_s": round(windows_s, 2),
                     "server_gflop_per_s": round(gflop_s, 1),
                     "cpu_cores_int8_measured_costs": round(cpu_cores, 2),
                     "cameras_per_gpu": int(gpu // gflop_s),
                     "mbyte_per_s_sent": round(sent / 1e6, 1),
                     "cameras_per_link": int(link_gbit * 1e9 / 8 // sent)}
    return {"fps": fps, "hop": hop, "span_frames": span_frames, "gpu_tflops_fp16": tflops, "gpu_efficiency": efficiency,
            "link_gbit": link_gbit, "models": out}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = Path(__file__).resolve().parents[1]
    ap.add_argument("--bundle", default=str(here / "demo_bundle"))
    ap.add_argument("--streams", default="1,2,4", help="comma-separated numbers of streams")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of video per stream")
    ap.add_argument("--precision", default="int8")
    ap.add_argument("--fast", action="store_true",
                    help="replay as fast as possible (throughput and batching; no latency)")
    ap.add_argument("--max-queue-delay-us", type=int, default=2000)
    ap.add_argument("--gpu-tflops", type=float, default=65.0,
                    help="GPU fp16 tensor peak for the paper estimate (T4: 65, L4: 121)")
    ap.add_argument("--gpu-efficiency", type=float, default=0.3,
                    help="share of the peak batched inference reaches")
    ap.add_argument("--fps", type=float, default=30.0, help="camera rate for the paper estimate")
    ap.add_argument("--hop", type=int, default=4, help="frames between windows, on paper")
    ap.add_argument("--span-frames", type=int, default=32,
                    help="frames a window spans, on paper (32 at 30 fps: 8 RGB frames 4 apart)")
    ap.add_argument("--link-gbit", type=float, default=10.0)
    ap.add_argument("--skip-measure", action="store_true", help="only the paper estimate")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)

    from microgesture.core.bundle import read_manifest

    window = read_manifest(args.bundle)["window"]
    report = {"machine": f"{os.cpu_count()} cores (shared: numbers vary)",
              "bundle": str(args.bundle), "precision": args.precision,
              "paced": "as fast as possible" if args.fast else "like a camera", "runs": [],
              "paper": on_paper(args.fps, args.hop, args.span_frames, 8, args.gpu_tflops, args.gpu_efficiency,
                                args.link_gbit)}
    if not args.skip_measure:
        from microgesture.core.triton_backend import TritonConnection
        from microgesture.export.triton_serve import free_ports, serve_bundle
        from microgesture.training.synth import make_long_video

        out = Path(tempfile.mkdtemp(prefix="bench-triton-"))
        info = make_long_video(out / "video.mp4", args.duration, seed=1, size=(128, 128),
                               fps=window.get("fps", 15.0), progress=False)
        video, skeleton = Path(info["video"]), Path(info["video"]).with_suffix(".jsonl")
        counts = [int(n) for n in args.streams.split(",") if n]
        for n in counts:
            report["runs"].append(run_workers(n, args, video, skeleton, out, None))
            print(json.dumps(report["runs"][-1]), flush=True)
        server = serve_bundle(args.bundle, precision=args.precision, ports=free_ports(),
                              max_queue_delay_us=args.max_queue_delay_us)
        try:
            conn = TritonConnection(server.http_url)
            for n in counts:
                before, cpu0 = conn.statistics(), process_cpu_s(server.process.pid)
                run = run_workers(n, args, video, skeleton, out, server.http_url)
                run["server_cpu_s"] = round(process_cpu_s(server.process.pid) - cpu0, 2)
                after = conn.statistics()
                run["triton_batches"] = batch_histogram(before, after)
                run["triton_requests"] = request_counts(before, after)
                report["runs"].append(run)
                print(json.dumps(run), flush=True)
        finally:
            server.stop()
            server.cleanup()
    print_table(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    print(json.dumps(report))
    return 0


def print_table(report: dict) -> None:
    if report["runs"]:
        print(f"\n{'mode':<11}{'N':>3}{'win/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'skipped':>9}"
              f"{'cpu s':>8}  Triton batches (size: executions); {report['paced']}")
        for r in report["runs"]:
            cpu = r["workers_cpu_s"] + r.get("server_cpu_s", 0.0)
            # paced: capture -> scores; as fast as possible: the window stages alone
            lat = r["latency_ms"] if r["latency_ms"]["p50"] is not None else r["window_ms"]
            batches = "; ".join(f"{m} {h} ({r['triton_requests'][m]['requests']} requests)"
                                for m, h in r.get("triton_batches", {}).items() if h)
            print(f"{r['mode']:<11}{r['streams']:>3}{r['windows_per_s']:>8}"
                  f"{lat['p50']:>9}{lat['p99']:>9}"
                  f"{r['windows_skipped']:>9}{cpu:>8.1f}  {batches}")
    p = report["paper"]
    print(f"\nOn paper, {p['fps']:.0f} fps cameras, a window every {p['hop']} frames, a GPU of "
          f"{p['gpu_tflops_fp16']:.0f} fp16 TFLOP/s at {p['gpu_efficiency']:.0%}:")
    for name, m in p["models"].items():
        print(f"  {name}: {m['server_gflop_per_s']} GFLOP/s per camera -> {m['cameras_per_gpu']} "
              f"cameras per GPU ({m['cpu_cores_int8_measured_costs']} CPU cores each at the "
              f"measured int8 costs); {m['mbyte_per_s_sent']} MB/s sent per camera -> "
              f"{m['cameras_per_link']} cameras per {p['link_gbit']:.0f} GbE link")


if __name__ == "__main__":
    sys.exit(main())
