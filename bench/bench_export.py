"""fp32 vs int8 latency of the exported stages on this CPU, side by side.

For CLIP-MG B/16 and B/32 (random weights), each stage is exported to ONNX
(``export.onnx_export``) and quantized (``export.quantize``: dynamic int8 for the
visual and head transformers, static QDQ int8 calibrated on synthetic heatmap
windows for the 3D-CNN pose stage), then timed in ONNX Runtime on the CPU:

- visual: one frame (batch 1) -- streaming encodes each sampled frame once;
- pose: one window's heatmaps (batch 1);
- head: one window (batch 1);

with 1 and 2 intra-op threads (no spinning), median and p90 over repeats, plus
the cosine similarity of the int8 outputs to fp32 on the same inputs.
Exported models are cached in a temporary folder (``--cache``) across runs of
the script, so only the first run pays for the export (B/16 takes minutes).

    python bench/bench_export.py                   # B/16 and B/32, 1 and 2 threads
    python bench/bench_export.py --quick           # fewer repeats
    python bench/bench_export.py --models clip-mg-b32 --json export.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _log(message: str) -> None:
    print(f"[bench_export] {message}", file=sys.stderr, flush=True)


def _cache_key(name: str) -> str:
    from importlib.metadata import version

    from microgesture.core.config import get_config

    text = json.dumps([get_config(name).to_json(), version("torch"), version("onnx"),
                       version("onnxruntime"), 18])
    return f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def exported(name: str, cache: Path, calibration_windows: int) -> tuple[Path, dict, object]:
    """The model's stage folder (fp32 and int8 files) and stage manifests, from the
    cache or freshly exported; and the model's config."""
    from microgesture.core.config import get_config

    folder = cache / _cache_key(name)
    stages_file = folder / "stages.json"
    config = get_config(name)
    if stages_file.is_file():
        _log(f"{name}: using the cached export in {folder}")
        return folder, json.loads(stages_file.read_text()), config
    import torch

    from microgesture.core.models import create_model
    from microgesture.export.onnx_export import export_onnx
    from microgesture.export.quantize import quantize_stages
    from microgesture.export.verify import synthetic_windows

    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    model = create_model(name, seed=0).eval()
    with torch.no_grad():
        stages = export_onnx(model, folder, log=lambda m: _log(f"{name}: {m}"))
    del model
    calib = synthetic_windows(config, windows=calibration_windows, seed=1)["heatmaps"].numpy()
    quantize_stages(folder, stages, calib, log=lambda m: _log(f"{name}: {m}"))
    stages_file.write_text(json.dumps(stages, indent=1))
    _log(f"{name}: exported and quantized in {time.monotonic() - t0:.0f} s")
    return folder, stages, config


def stage_inputs(folder: Path, stages: dict, config) -> dict[str, dict[str, np.ndarray]]:
    """Batch-1 inputs per stage: a synthetic window's frame, heatmaps, and the head's
    inputs computed by the fp32 stages (so the head sees realistic tokens)."""
    from microgesture.export.onnx_export import ort_session
    from microgesture.export.verify import synthetic_windows

    window = {k: v.numpy() for k, v in synthetic_windows(config, windows=1, seed=2).items()}
    feeds: dict[str, dict[str, np.ndarray]] = {}
    head: dict[str, np.ndarray] = {"joints": window["joints"]}
    if "visual" in stages:
        feeds["visual"] = {"frames": window["frames"][:, 0]}
        session = ort_session(folder / stages["visual"]["files"]["fp32"], threads=2)
        tokens = session.run(None, {"frames": window["frames"][0]})[0]
        head["tokens"] = tokens[None]
    if "pose" in stages:
        feeds["pose"] = {"heatmaps": window["heatmaps"]}
        session = ort_session(folder / stages["pose"]["files"]["fp32"], threads=2)
        head["pose"] = session.run(None, feeds["pose"])[0]
    feeds["head"] = {n: head[n] for n in stages["head"]["inputs"]}
    return feeds


def time_session(session, feeds: dict[str, np.ndarray], repeats: int, warmup: int = 2) -> dict:
    for _ in range(warmup):
        session.run(None, feeds)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)),
            "repeats": repeats}


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def bench_model(name: str, cache: Path, threads: list[int], repeats: dict[str, int],
                calibration_windows: int) -> list[dict]:
    from microgesture.export.onnx_export import ort_session

    folder, stages, config = exported(name, cache, calibration_windows)
    feeds = stage_inputs(folder, stages, config)
    rows = []
    for stage, manifest in stages.items():
        files = manifest["files"]
        outputs = {p: ort_session(folder / files[p], threads=2).run(None, feeds[stage])[0]
                   for p in ("fp32", "int8")}
        cos = cosine(outputs["fp32"], outputs["int8"])
        for n in threads:
            row = {"model": name, "stage": stage, "threads": n, "int8_cosine": cos,
                   "int8_method": manifest.get("quantization", {}).get("int8", {}).get("method")}
            for precision in ("fp32", "int8"):
                session = ort_session(folder / files[precision], threads=n)
                row[precision] = time_session(session, feeds[stage], repeats[stage])
                del session
            row["speedup"] = row["fp32"]["median_ms"] / row["int8"]["median_ms"]
            rows.append(row)
            _log(f"{name} {stage} {n} thread(s): fp32 {row['fp32']['median_ms']:.2f} ms, "
                 f"int8 {row['int8']['median_ms']:.2f} ms")
    return rows


def table(rows: list[dict]) -> str:
    head = (f"{'model':<12} {'stage':<7} {'thr':>3} {'fp32 med':>9} {'fp32 p90':>9} {'int8 med':>9} "
            f"{'int8 p90':>9} {'speedup':>7} {'cosine':>9}  int8 method")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['model']:<12} {r['stage']:<7} {r['threads']:>3} "
                     f"{r['fp32']['median_ms']:>9.2f} {r['fp32']['p90_ms']:>9.2f} "
                     f"{r['int8']['median_ms']:>9.2f} {r['int8']['p90_ms']:>9.2f} "
                     f"{r['speedup']:>6.2f}x {r['int8_cosine']:>9.5f}  {r['int8_method']}")
    return "\n".join(lines) + "\n(ms per call at batch 1: visual = one frame, pose and head = one window)"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="clip-mg-b16,clip-mg-b32",
                        help="comma-separated model names (default: %(default)s)")
    parser.add_argument("--threads", default="1,2", help="intra-op thread counts (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs per measurement (default 20, 5 with --quick)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--calibration-windows", type=int, default=8,
                        help="synthetic heatmap windows calibrating the static int8 pose stage")
    parser.add_argument("--cache", type=Path,
                        default=Path(tempfile.gettempdir()) / "microgesture-bench-export",
                        help="folder caching the exported models across runs (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    args = parser.parse_args(argv)
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    n = args.repeats or (5 if args.quick else 20)
    repeats = {"visual": n, "pose": n, "head": max(n, 50 if not args.quick else 10)}
    threads = [int(t) for t in args.threads.split(",") if t.strip()]
    rows, load = [], {"start": os.getloadavg()[0]}
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        rows += bench_model(name, args.cache, threads, repeats, args.calibration_windows)
    load["end"] = os.getloadavg()[0]
    import onnxruntime

    print(table(rows))
    print(f"1-minute load average: {load['start']:.1f} at the start, {load['end']:.1f} at the end "
          f"({os.cpu_count()} CPUs): other work on the machine slows every number")
    if args.json:
        info = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                "onnxruntime": onnxruntime.__version__, "load_average": load, "rows": rows}
        args.json.write_text(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
