"""Every model's size and CPU cost per streamed window: parameters, and ONNX Runtime ms
per window at fp32 and int8 (one thread, batch 1).

For each model config: build it with random weights (``create_model(name, seed=0)``),
save a checkpoint, export it (``export_bundle(..., formats=("onnx", "int8"),
verify=False)``; an existing bundle under ``--work`` is reused), then time each stage
of the bundle alone on random inputs of the manifest's shapes (median of ``--runs``
calls after ``--warmup``) and compose them as a stream runs one window with nothing
cached: a ``per-frame`` stage once per RGB frame of the window, a ``per-segment``
stage once per pose segment, ``per-window`` and ``whole-window`` stages once; a stage
another one ``replaces`` (CLIP-MG's whole-window ``pose``, replaced by ``pose_segment``
in streaming) is timed but not counted. ``--bundle NAME=DIR`` adds an exported bundle
as is (an ensemble bundle: its members' windows summed, as the stream runs every
member on the same window).

    python bench/bench_models.py --json models.json
    python bench/bench_models.py clip-mg-tiny miga24-vclip-tiny --runs 50
    python bench/bench_models.py --bundle ensemble=ensbundle --models-none

A model that fails to export or time is recorded as "not measured: <why>"; with
``--deadline HH:MM`` (UTC) a model not started by then is recorded so too.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
import traceback
from pathlib import Path

from bench_export import time_session  # the same timer as the export bench (bench/ is on sys.path)

os.environ.setdefault("OMP_NUM_THREADS", "1")

DEFAULT_MODELS = ("clip-mg-tiny", "clip-mg-b32", "clip-mg-b16", "miga24-vclip-tiny", "miga24-vclip-b32",
                  "miga24-vclip-b16", "miga24-posec3d-joint-tiny", "miga24-posec3d-joint",
                  "miga24-posec3d-limb")


def log(msg: str) -> None:
    print(f"[{dt.datetime.now(dt.timezone.utc):%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def load_avg() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"


def count_params(name: str) -> tuple[dict, object]:
    """Parameters of the model (``params``: without a frozen distillation teacher, which
    checkpoints and bundles leave out; ``teacher``: the teacher's, counted apart)."""
    from microgesture.core.models import create_model

    model = create_model(name, seed=0)
    counts = {"params": 0, "teacher": 0}
    for key, p in model.named_parameters():
        counts["teacher" if key.split(".")[0] == "teacher" else "params"] += p.numel()
    return counts, model


def ensure_bundle(name: str, work: Path, model=None) -> Path:
    """The bundle of ``name`` under ``work`` (exported now unless it is already there)."""
    out = work / name
    if (out / "manifest.json").is_file():
        log(f"{name}: reusing the bundle {out}")
        return out
    from microgesture.core.checkpoint import save_checkpoint
    from microgesture.export.exporter import export_bundle

    if model is None:
        from microgesture.core.models import create_model
        model = create_model(name, seed=0)
    ckpt = work / f"{name}.safetensors"
    save_checkpoint(model, ckpt)
    log(f"{name}: exporting to {out} (onnx, int8; load {load_avg()})")
    t0 = time.perf_counter()
    export_bundle(ckpt, out, formats=("onnx", "int8"), verify=False, calibration_clips=4, progress=False)
    log(f"{name}: exported in {time.perf_counter() - t0:.0f} s")
    return out


def random_input(spec: dict, rng):
    import numpy as np

    shape = [1 if not isinstance(d, int) else d for d in spec["shape"]]
    dtype = np.dtype(spec.get("dtype", "float32"))
    if dtype.kind == "f":
        return rng.random(shape, dtype=np.float32).astype(dtype)
    return rng.integers(0, 2, size=shape).astype(dtype)


def time_stage(path: Path, inputs: dict, runs: int, warmup: int, rng) -> float:
    """Median ms of one call of the ONNX file at ``path`` (one thread, batch 1)."""
    from microgesture.core.backends import cpu_session

    session = cpu_session(path, threads=1)
    feeds = {}
    for arg in session.get_inputs():
        spec = inputs.get(arg.name) or {"shape": arg.shape, "dtype": "float32"}
        feeds[arg.name] = random_input(spec, rng)
    return time_session(session, feeds, runs, warmup)["median_ms"]


def stage_count(role: str, window: dict) -> int:
    if role == "per-frame":
        return int(window.get("rgb_frames") or 0)
    if role == "per-segment":
        return int(window.get("segments") or window.get("rgb_frames") or 0)
    return 1


def bench_bundle(bundle: Path, runs: int, warmup: int, rng) -> dict:
    """Per-stage ms and per-window ms at fp32 and int8 of one bundle (members summed for
    an ensemble)."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    if manifest.get("members"):
        members = {}
        for member in manifest["members"]:
            name = Path(member["bundle"]).name
            log(f"  member {name} (weight {member.get('weight')})")
            members[name] = bench_bundle(bundle / member["bundle"], runs, warmup, rng)
        window_ms = {p: sum(m["window_ms"].get(p, float("nan")) for m in members.values())
                     for p in ("fp32", "int8")}
        return {"members": members, "weights": {Path(m["bundle"]).name: m.get("weight")
                                                 for m in manifest["members"]},
                "window_ms": window_ms}
    window = manifest.get("window", {})
    stages = manifest.get("stages", {})
    replaced = {r for s in stages.values() for r in s.get("replaces", [])}
    out_stages, window_ms = {}, {}
    for stage_name, stage in stages.items():
        count = 0 if stage_name in replaced else stage_count(stage["role"], window)
        entry = {"role": stage["role"], "calls_per_window": count, "ms": {}}
        for precision in ("fp32", "int8"):
            file = stage.get("files", {}).get(precision)
            if not file:
                continue
            ms = time_stage(bundle / file, stage.get("inputs", {}), runs, warmup, rng)
            entry["ms"][precision] = ms
            window_ms[precision] = window_ms.get(precision, 0.0) + count * ms
            log(f"  {stage_name} ({stage['role']}, x{count} per window) {precision}: {ms:.2f} ms per call "
                f"(load {load_avg()})")
        out_stages[stage_name] = entry
    return {"stages": out_stages, "window_ms": window_ms,
            "window": {k: window.get(k) for k in ("rgb_frames", "pose_frames", "segments", "image_size",
                                                  "heatmap_size")}}


def fmt_ms(x) -> str:
    return "-" if x is None or x != x else (f"{x:.1f}" if x >= 10 else f"{x:.2f}")


def fmt_params(n) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n / 1e3:.0f} k"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help=f"model configs (default: {' '.join(DEFAULT_MODELS)})")
    parser.add_argument("--models-none", action="store_true", help="no model configs (only --bundle)")
    parser.add_argument("--bundle", action="append", default=[], metavar="NAME=DIR",
                        help="also time an exported bundle as is (an ensemble bundle: members summed)")
    parser.add_argument("--work", default="bench_models_work",
                        help="folder for checkpoints and bundles; existing bundles are reused "
                             "(default: bench_models_work)")
    parser.add_argument("--runs", type=int, default=20, help="timed calls per stage (default: 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls first (default: 3)")
    parser.add_argument("--deadline", help="HH:MM UTC: models not started by then are not measured")
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--append", action="store_true",
                        help="keep the models already in the --json file (a run in several parts)")
    args = parser.parse_args(argv)

    import numpy as np

    models = [] if args.models_none else (args.models or list(DEFAULT_MODELS))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    deadline = None
    if args.deadline:
        hh, mm = map(int, args.deadline.split(":"))
        deadline = dt.datetime.now(dt.timezone.utc).replace(hour=hh, minute=mm, second=0, microsecond=0)
    results = {"started": f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%dT%H:%M:%SZ}", "cpus": os.cpu_count(),
               "load_at_start": load_avg(), "threads": 1, "batch": 1, "runs": args.runs, "models": {}}
    todo = [(m, None) for m in models] + [tuple(b.split("=", 1)) for b in args.bundle]
    for i, (name, bundle_dir) in enumerate(todo, 1):
        entry: dict = {}
        results["models"][name] = entry
        if deadline and dt.datetime.now(dt.timezone.utc) > deadline:
            entry["not_measured"] = f"not started before the deadline {args.deadline} UTC"
            log(f"[{i}/{len(todo)}] {name}: {entry['not_measured']}")
            continue
        log(f"[{i}/{len(todo)}] {name} (load {load_avg()})")
        try:
            model = None
            if bundle_dir is None:
                counts, model = count_params(name)
                entry.update(counts)
                log(f"  {name}: {entry['params']:,} parameters"
                    + (f" (and a frozen teacher of {entry['teacher']:,}, not counted)" if entry["teacher"] else ""))
                bundle = ensure_bundle(name, work, model)
                del model
            else:
                bundle = Path(bundle_dir)
            t0 = time.perf_counter()
            entry.update(bench_bundle(bundle, args.runs, args.warmup, rng))
            entry["bundle"] = str(bundle)
            entry["load_after"] = load_avg()
            log(f"  {name}: window fp32 {fmt_ms(entry['window_ms'].get('fp32'))} ms, "
                f"int8 {fmt_ms(entry['window_ms'].get('int8'))} ms (timed in {time.perf_counter() - t0:.0f} s)")
        except Exception as exc:  # noqa: BLE001 - recorded in the table, the next model goes on
            entry["not_measured"] = f"{type(exc).__name__}: {exc}"
            entry["traceback"] = traceback.format_exc()
            log(f"  {name}: not measured: {entry['not_measured']}")
    results["finished"] = f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%dT%H:%M:%SZ}"
    results["load_at_end"] = load_avg()
    if args.append and args.json and Path(args.json).is_file():
        earlier = json.loads(Path(args.json).read_text())
        parts = earlier.get("parts", [{k: v for k, v in earlier.items() if k not in ("models", "parts")}])
        parts.append({k: v for k, v in results.items() if k != "models"})
        results = {**results, "parts": parts, "models": {**earlier.get("models", {}), **results["models"]}}

    print(f"{'model':28s} {'parameters':>10s} {'int8 ms/window':>15s} {'fp32 ms/window':>15s}")
    for name, entry in results["models"].items():
        if "not_measured" in entry:
            print(f"{name:28s} {fmt_params(entry.get('params')):>10s}  not measured: {entry['not_measured']}")
            continue
        ms = entry["window_ms"]
        print(f"{name:28s} {fmt_params(entry.get('params')):>10s} {fmt_ms(ms.get('int8')):>15s} "
              f"{fmt_ms(ms.get('fp32')):>15s}")
    print(f"(one thread, batch 1, ONNX Runtime CPU, median of {args.runs} calls per stage; "
          f"load average {results['load_at_start']} at start, {results['load_at_end']} at end, "
          f"{results['cpus']} CPUs)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
