"""Verification that FAILS: exported graphs against the PyTorch model, with stated tolerances.

Every precision is checked on two sets of inputs:

- ``random``: fresh random windows (``core.models.example_inputs`` with a seed the
  export never used): frames, heatmaps and joints of the right shapes;
- ``real``: clips from a dataset folder (``core.dataset_index`` and
  ``core.windowing``, as training's evaluation reads them), or, when
  no dataset is given, :func:`synthetic_windows`: Gaussian heatmaps of smoothly
  moving random joints, shaped like real ones (the report says which).

For each set we measure, per stage (ONNX Runtime against the PyTorch stage on
the SAME inputs) and for the whole window (the ONNX stages chained -- ``visual``
per frame, ``pose`` per window, then ``head`` on their outputs -- against
``model.forward``): max absolute error, max relative error (over values with
|ref| > 1e-3), cosine similarity (per sample, mean and min) and, for logits,
top-1 agreement. :data:`TOLERANCES` states what must hold; anything outside it
raises ``MicrogestureError("export failed verification: ...")``. Reduced
precisions are held to their tolerances on the ``real`` set only (random
uniform heatmaps lie outside the calibrated int8 ranges); their random-input
numbers are reported.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from microgesture.core.errors import MicrogestureError
from microgesture.core.family import family_of
from microgesture.core.models import example_inputs

REL_FLOOR = 1e-3
"""Relative errors are taken over reference values with |ref| above this."""

TOLERANCES: dict[str, dict[str, Any]] = {
    # ONNX Runtime fp32 must reproduce PyTorch: same top-1 everywhere, errors at float32 noise.
    "fp32": {"stage_max_abs": 1e-4, "logits_max_abs": 1e-4, "top1_agreement": 1.0,
             "on": ("random", "real")},
    # fp16 weights/activations with LayerNorm and Softmax kept in fp32.
    "fp16": {"stage_cosine": 0.999, "logits_cosine": 0.999, "top1_agreement": 0.95, "on": ("real",)},
    # int8: dynamic (transformers) and static QDQ (3D CNN); judged on the window.
    "int8": {"stage_cosine": 0.98, "logits_cosine": 0.99, "top1_agreement": 0.9, "on": ("real",)},
}
"""Per precision: what must hold for every stage (``stage_*``) and for the chained
window's logits (``logits_*``, ``top1_agreement``), on the input sets in ``on``.
``*_max_abs`` are upper bounds on the max absolute error; ``*_cosine`` lower
bounds on the mean per-sample cosine similarity; ``top1_agreement`` a lower
bound on the fraction of windows whose arg-max class matches PyTorch fp32."""

class VerificationError(MicrogestureError):
    """Raised when an exported graph is outside its tolerance; ``report`` holds the numbers."""

    def __init__(self, message: str, report: dict[str, Any] | None = None):
        super().__init__(message)
        self.report = report


# ----------------------------------------------------------------------------- metrics

def compare(ref, out, logits: bool = False) -> dict[str, float]:
    """Errors of ``out`` against ``ref`` (same shape, batch first)."""
    ref = np.asarray(ref, dtype=np.float64)
    out = np.asarray(out, dtype=np.float64)
    if ref.shape != out.shape:
        raise VerificationError(f"export failed verification: output shape {out.shape} != "
                                f"PyTorch's {ref.shape}")
    if not np.isfinite(out).all():
        return {"max_abs": math.inf, "max_rel": math.inf, "cosine": -1.0, "cosine_min": -1.0,
                "samples": int(len(ref)), **({"top1_agreement": 0.0} if logits else {})}
    err = np.abs(out - ref)
    big = np.abs(ref) > REL_FLOOR
    a, b = ref.reshape(len(ref), -1), out.reshape(len(out), -1)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = np.where(norms > 0, (a * b).sum(1) / np.maximum(norms, 1e-300), 1.0)
    result = {"max_abs": float(err.max(initial=0.0)),
              "max_rel": float((err[big] / np.abs(ref[big])).max(initial=0.0)),
              "cosine": float(cos.mean()), "cosine_min": float(cos.min()),
              "samples": int(len(ref))}
    if logits:
        result["top1_agreement"] = float((ref.argmax(-1) == out.argmax(-1)).mean())
    return result


def check(metrics: dict[str, float], tolerance: Mapping[str, float] | float, what: str) -> list[str]:
    """The violations of ``tolerance`` (keys ``max_abs``, ``cosine``, ``top1_agreement``;
    a bare number means ``max_abs``) by ``metrics``, as messages naming ``what``."""
    if not isinstance(tolerance, Mapping):
        tolerance = {"max_abs": float(tolerance)}
    problems = []
    if "max_abs" in tolerance and not metrics["max_abs"] <= tolerance["max_abs"]:
        problems.append(f"{what} max abs error {metrics['max_abs']:.3g} > {tolerance['max_abs']:.3g}")
    if "cosine" in tolerance and not metrics["cosine"] >= tolerance["cosine"]:
        problems.append(f"{what} cosine {metrics['cosine']:.6f} < {tolerance['cosine']}")
    if "top1_agreement" in tolerance and not metrics.get("top1_agreement", 1.0) >= tolerance["top1_agreement"]:
        problems.append(f"{what} top-1 agreement {metrics['top1_agreement']:.3f} < "
                        f"{tolerance['top1_agreement']}")
    return problems


def _stage_tolerance(precision: str) -> dict[str, float]:
    t = TOLERANCES[precision]
    return {k.removeprefix("stage_"): v for k, v in t.items() if k.startswith("stage_")}


def _window_tolerance(precision: str) -> dict[str, float]:
    t = TOLERANCES[precision]
    out = {k.removeprefix("logits_"): v for k, v in t.items() if k.startswith("logits_")}
    if "top1_agreement" in t:
        out["top1_agreement"] = t["top1_agreement"]
    return out


# ----------------------------------------------------------------------------- running

def _session(path: str | Path, threads: int | None = None, precision: str = "fp32"):
    from microgesture.core.backends import FP16_DISABLED_OPTIMIZERS
    from microgesture.export.onnx_export import ort_session

    try:
        return ort_session(path, threads or min(2, os.cpu_count() or 1),
                           FP16_DISABLED_OPTIMIZERS if precision == "fp16" else ())
    except Exception as exc:  # onnxruntime's own exception types
        raise VerificationError(f"export failed verification: ONNX Runtime cannot load {path}: "
                                f"{exc}") from exc


def probe_load(path: str | Path, timeout: float = 300.0) -> None:
    """Load ``path`` in ONNX Runtime in a child process first: a graph that crashes
    ONNX Runtime (a segmentation fault, as some fp16 graphs do on the CPU) becomes
    an error here instead of killing the export."""
    import subprocess
    import sys

    from microgesture.core.backends import FP16_DISABLED_OPTIMIZERS

    code = ("import sys, onnxruntime as ort; ort.InferenceSession(sys.argv[1], "
            "providers=['CPUExecutionProvider'], disabled_optimizers=sys.argv[2:])")
    try:
        done = subprocess.run([sys.executable, "-c", code, str(path), *FP16_DISABLED_OPTIMIZERS], capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise VerificationError(f"export failed verification: ONNX Runtime took over {timeout:.0f} s "
                                f"to load {Path(path).name}") from exc
    if done.returncode != 0:
        why = (f"crashed (signal {-done.returncode})" if done.returncode < 0 else
               "failed: " + (done.stderr.strip().splitlines() or ["?"])[-1][:300])
        raise VerificationError(f"export failed verification: ONNX Runtime {why} loading "
                                f"{Path(path).name} on the CPU")


def _run_ort(session, inputs: Mapping[str, Any], chunk: int = 32) -> np.ndarray:
    """The first output of ``session`` on ``inputs`` (numpy or tensors), in batch chunks."""
    return _run_ort_all(session, inputs, chunk)[0]


def _run_ort_all(session, inputs: Mapping[str, Any], chunk: int = 32) -> list[np.ndarray]:
    """Every output of ``session`` on ``inputs`` (numpy or tensors), in batch chunks."""
    arrays = {k: _as_numpy(v) for k, v in inputs.items()}
    n = len(next(iter(arrays.values())))
    parts = [session.run(None, {k: np.ascontiguousarray(v[i:i + chunk]) for k, v in arrays.items()})
             for i in range(0, n, chunk)]
    return [np.concatenate([p[j] for p in parts]) for j in range(len(parts[0]))]


@torch.no_grad()
def _run_torch_all(fn: Callable, inputs: Mapping[str, Any], chunk: int = 32) -> list[np.ndarray]:
    """Every output of ``fn(**inputs)`` (a tuple of tensors), in batch chunks."""
    tensors = {k: torch.as_tensor(np.asarray(v) if not isinstance(v, torch.Tensor) else v).float()
               for k, v in inputs.items()}
    n = len(next(iter(tensors.values())))
    parts = [fn(**{k: v[i:i + chunk] for k, v in tensors.items()}) for i in range(0, n, chunk)]
    return [torch.cat([p[j] for p in parts]).numpy() for j in range(len(parts[0]))]


def _run_torch(fn: Callable, inputs: Mapping[str, Any], chunk: int = 32) -> np.ndarray:
    """``fn(**inputs)`` (one tensor), in batch chunks."""
    return _run_torch_all(lambda **kw: (fn(**kw),), inputs, chunk)[0]


def verify_stage(torch_fn: Callable, onnx_path: str | Path, inputs: Mapping[str, Any],
                 tolerance: Mapping[str, float] | float, name: str | None = None) -> dict[str, float]:
    """Run ``torch_fn(**inputs)`` and the ONNX file on the same ``inputs`` (batch first),
    compare, and raise :class:`VerificationError` when ``tolerance`` does not hold
    (``{"max_abs": 1e-4}``, ``{"cosine": 0.99}``, ``{"top1_agreement": 0.9}``, or a
    bare max-abs number). Returns the metrics of :func:`compare` plus ``passed``."""
    name = name or Path(onnx_path).stem
    ref = _run_torch(torch_fn, inputs)
    out = _run_ort(_session(onnx_path), inputs)
    metrics = compare(ref, out, logits=ref.ndim == 2)
    problems = check(metrics, tolerance, f"stage {name}")
    metrics["passed"] = not problems
    if problems:
        raise VerificationError("export failed verification: " + "; ".join(problems),
                                {name: metrics})
    return metrics


# ----------------------------------------------------------------------------- inputs

def random_windows(config, windows: int = 2, seed: int = 12345) -> dict[str, torch.Tensor]:
    """Fresh random windows (frames, heatmaps, joints), ``windows`` of them."""
    return example_inputs(config, batch=windows, seed=seed)


def synthetic_windows(config, windows: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """Windows shaped like real ones without a dataset: joints drifting smoothly
    around the crop (some missing), their heatmaps (``core.heatmaps``, the functions
    training and streaming use: joint or limb maps, as the family's window asks) and
    noise frames, with the keys of the family's window. For calibration and
    reduced-precision checks when no clips are given."""
    from microgesture.core.heatmaps import joint_heatmaps, limb_heatmaps
    from microgesture.core.layouts import get_layout

    spec = family_of(config).window(config)
    rng = np.random.default_rng(seed)
    layout = get_layout(spec.layout)
    v, r, s = layout.num_joints, spec.rgb_frames, spec.image_size
    p = spec.pose_frames or r
    out: dict[str, list] = {k: [] for k in spec.keys()}
    for _ in range(windows):
        start = rng.uniform(0.2, 0.8, (1, v, 2))
        drift = np.cumsum(rng.normal(0, 0.01, (p, v, 2)), axis=0)
        xy = np.clip(start + drift, 0.0, 1.0)
        score = rng.uniform(0.4, 1.0, (1, v)) * (rng.random((1, v)) > 0.15)
        score = np.repeat(score, p, 0)
        if spec.heatmaps is not None:
            hm = spec.heatmaps.size
            if spec.heatmaps.kind == "limbs":
                maps = limb_heatmaps(xy * hm - 0.5, score, layout.limb_set(spec.heatmaps.limbs), (hm, hm),
                                     spec.heatmaps.sigma)
            else:
                maps = joint_heatmaps(xy * hm - 0.5, score, (hm, hm), spec.heatmaps.sigma)
            out["heatmaps"].append(maps)
        if spec.joints:
            step = p // r
            at = np.arange(r) * step + step // 2
            out["joints"].append(np.concatenate([xy[at], score[at, :, None]], -1) * (score[at, :, None] > 0))
        if r:
            out["frames"].append(rng.normal(0, 1, (r, 3, s, s)))
    return {k: torch.tensor(np.stack(x), dtype=torch.float32) for k, x in out.items()}


def load_clips(data: str | Path, config, verify_clips: int = 8, calibration_clips: int = 16,
               test_subjects=None, seed: int = 0) -> tuple[dict, dict, dict[str, Any]]:
    """Clips of a dataset folder as model inputs: ``(verification, calibration, info)``.

    Verification clips come from ``test_subjects`` (a run's held-out subjects) when
    given, calibration clips from the others; when a side has no clips both draw
    from every clip (``info["overlap"]``). Each batch is a dict of stacked
    ``frames``, ``heatmaps``, ``joints`` and ``labels`` (None when the dataset's
    classes are not the model's); a clip that cannot be read is left out. Windows
    come from ``core.windowing`` as training's evaluation reads them.
    """
    from microgesture.core.dataset_index import open_dataset
    from microgesture.core.windowing import WindowReader

    index = open_dataset(data)
    if len(index.classes) != config.num_classes:
        raise MicrogestureError(
            f"the dataset at {data} has {len(index.classes)} classes but the model "
            f"{config.name!r} has {config.num_classes}: give the data the model was trained on "
            "(--data DIR), or export without verification clips")
    labels_match = tuple(index.classes) == tuple(config.labels)
    everything = [int(i) for i in np.random.default_rng(seed).permutation(len(index))]
    held = set(test_subjects or ())
    if held:
        verify_pool = [i for i in everything if index.records[i].subject in held]
        calib_pool = [i for i in everything if index.records[i].subject not in held]
    else:  # no split known: calibrate on the clips not verified on, when there are any
        verify_pool, calib_pool = everything, everything[verify_clips:]
    verify_pool, calib_pool = verify_pool or everything, calib_pool or everything
    verify_pool, calib_pool = verify_pool[:verify_clips], calib_pool[:calibration_clips]
    reader = WindowReader(family_of(config).window(config))

    def batch(pool):
        if not pool:
            return None
        items, labels = [], []
        for i in pool:
            try:
                items.append(reader.read(index.records[i]))
            except (MicrogestureError, OSError, ValueError):  # an unreadable clip: the others still verify
                continue
            labels.append(index.records[i].label)
        if not items:
            raise MicrogestureError(f"none of the clips of {data} chosen for verification could be read: "
                                    "check the dataset (microgesture data-check), or export without --data")
        out = {k: torch.from_numpy(np.stack([it[k] for it in items])) for k in items[0]}
        out["labels"] = np.asarray(labels, dtype=np.int64) if labels_match else None
        out["source"] = str(data)
        return out

    lengths = [r.num_frames for r in index.records if r.num_frames]
    info = {"data": str(data), "verification_clips": len(verify_pool),
            "median_clip_frames": float(np.median(lengths)) if lengths else None,
            "calibration_clips": len(calib_pool), "overlap": bool(set(verify_pool) & set(calib_pool)),
            "held_out_subjects": sorted(held) if held else None, "labels_match": labels_match}
    return batch(verify_pool), batch(calib_pool), info


# ----------------------------------------------------------------------------- the bundle

def _as_numpy(x) -> np.ndarray:
    return (x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)).astype(
        np.float32, copy=False)


def _ort_runner(sessions: Mapping[str, Any]) -> Callable[[str, dict], dict[str, np.ndarray]]:
    """``run(stage, feeds) -> {output: array}`` on ONNX Runtime sessions, in batch chunks."""

    def run(name: str, feeds: dict[str, Any]) -> dict[str, np.ndarray]:
        session = sessions[name]
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, _run_ort_all(session, feeds)))

    return run


def _torch_runner(specs: Mapping[str, Any]) -> Callable[[str, dict], dict[str, np.ndarray]]:
    """``run(stage, feeds) -> {output: array}`` on the family's PyTorch stage wrappers."""

    def run(name: str, feeds: dict[str, Any]) -> dict[str, np.ndarray]:
        spec = specs[name]

        def fn(**kw):
            out = spec.module(*(kw[n] for n in spec.inputs))
            return out if isinstance(out, (tuple, list)) else (out,)

        return dict(zip(spec.outputs, _run_torch_all(fn, feeds)))

    return run


def _flat(out: Mapping[str, np.ndarray], spec) -> np.ndarray:
    """A stage's outputs as one (samples, features) array; per-frame and per-segment
    stages are compared per frame or segment, as they run."""
    per_item = spec.role in ("per-frame", "per-segment")
    arrays = [np.asarray(out[n]) for n in spec.outputs]
    if len(arrays) == 1 and not per_item:
        return arrays[0]
    n = arrays[0].shape[0] * (arrays[0].shape[1] if per_item else 1)
    return np.concatenate([a.reshape(n, -1) for a in arrays], axis=1)


def _chain(model: nn.Module, sessions: dict[str, Any], window: Mapping[str, torch.Tensor],
           cache: dict[str, Any] | None = None):
    """Torch reference outputs per stage and the ONNX outputs, composed as streaming runs
    them (``core.family.run_stages``).

    Returns ``{stage: (ref, ort)}`` with each stage fed the PyTorch values of its inputs
    (so a stage's error is its own; a stage that replaces others is run on the window too,
    its outputs compared with the PyTorch stages it replaces), and ``(logits_ref,
    logits_chained)`` with ``logits_ref`` the family's whole-window forward
    (``ModelFamily.predict``) and ``logits_chained`` the ONNX stages composed. ``cache``
    keeps the PyTorch values for this window between calls (one per precision)."""
    from microgesture.core.family import run_stages

    family = family_of(model)
    specs = {s.name: s for s in family.stages(model) if s.name in sessions}
    segments = family.window(model.config).segments
    cache = {} if cache is None else cache
    inputs = {k: _as_numpy(v) for k, v in window.items() if k != "labels"}
    if "values" not in cache:  # the PyTorch stages composed (the reference values)
        cache["values"] = run_stages(list(specs.values()), inputs, _torch_runner(specs), segments)
    ref_values = cache["values"]
    ort, torch_run = _ort_runner(sessions), _torch_runner(specs)
    per_stage = {}
    for name, spec in specs.items():
        feeds = {n: ref_values[n] for n in spec.inputs}
        key = f"stage:{name}"
        if key not in cache:
            cache[key] = run_stages([spec], feeds, torch_run, segments, use=[name])
        ref = {n: cache[key][n] for n in spec.outputs}
        got = run_stages([spec], feeds, ort, segments, use=[name])
        if spec.replaces:  # it must give what the stages it replaces give
            ref = {n: ref_values[n] for n in spec.outputs}
        per_stage[name] = (_flat(ref, spec), _flat(got, spec), spec.outputs == ("logits",))
    logits_chained = run_stages(list(specs.values()), inputs, ort, segments)["logits"]
    if "forward" not in cache:
        cache["forward"] = _run_torch(lambda **kw: family.predict(model, kw),
                                      {k: v for k, v in window.items() if k != "labels"})
    return per_stage, (cache["forward"], logits_chained)


def verify_bundle(model: nn.Module, bundle_dir: str | Path, stages: Mapping[str, Mapping[str, Any]],
                  precision: str = "fp32", real_inputs=None, random_seed: int = 12345,
                  random_count: int = 2, raise_on_failure: bool = True,
                  cache: dict | None = None) -> dict[str, Any]:
    """Check the ``precision`` files of ``stages`` (stage manifests, ``core/bundle.py``)
    in ``bundle_dir`` against ``model``; returns the report stored in the manifest's
    ``verification[precision]`` and raises :class:`VerificationError` (the report
    attached) when a tolerance of :data:`TOLERANCES` does not hold.

    ``real_inputs``: a dataset folder (8 clips are read), a dict of stacked
    ``frames``/``heatmaps``/``joints`` (and optional ``labels``), or None
    (:func:`synthetic_windows` stand in; the report says so). ``cache``: a dict kept
    between calls on the same model and inputs (one per precision) so the PyTorch
    reference runs once."""
    if precision not in TOLERANCES:
        raise MicrogestureError(f"no tolerances for precision {precision!r}; known: "
                                f"{', '.join(TOLERANCES)}")
    model = model.eval()
    bundle_dir = Path(bundle_dir)
    missing = [n for n, s in stages.items() if precision not in s.get("files", {})]
    if missing:
        raise MicrogestureError(f"the bundle has no {precision} file for stage(s) {', '.join(missing)}")
    if precision not in ("fp32", "int8"):  # reduced-precision graphs can crash ONNX Runtime
        for s in stages.values():
            probe_load(bundle_dir / s["files"][precision])
    sessions = {n: _session(bundle_dir / s["files"][precision], precision=precision) for n, s in stages.items()}

    source = "synthetic"
    if real_inputs is None:
        real = synthetic_windows(model.config, windows=8, seed=random_seed + 1)
    elif isinstance(real_inputs, (str, os.PathLike)):
        real, _, _ = load_clips(real_inputs, model.config, verify_clips=8, calibration_clips=0)
        source = str(real_inputs)
    else:
        real, source = dict(real_inputs), real_inputs.get("source", "clips")
    labels = real.get("labels")
    random = random_windows(model.config, random_count, random_seed)
    keys = set(random) | set(family_of(model).window(model.config).keys())
    sets = {"random": random,
            "real": {k: torch.as_tensor(v) for k, v in real.items() if k in keys and v is not None}}

    tol = TOLERANCES[precision]
    report: dict[str, Any] = {
        "tolerance": {k: (list(v) if isinstance(v, tuple) else v) for k, v in tol.items()},
        "inputs": {"random": {"windows": random_count, "seed": random_seed},
                   "real": {"windows": int(len(next(iter(sets["real"].values())))), "source": source}},
        "stages": {n: {} for n in stages}, "window": {}}
    problems: list[str] = []
    for set_name, window in sets.items():
        per_stage, (logits_ref, logits_got) = _chain(
            model, sessions, window, None if cache is None else cache.setdefault(set_name, {}))
        judged = set_name in tol["on"]
        for name, (ref, got, is_logits) in per_stage.items():
            metrics = compare(ref, got, logits=is_logits)
            report["stages"][name][set_name] = metrics
            if judged:
                problems += check(metrics, _stage_tolerance(precision),
                                  f"stage {name} ({precision}, {set_name} inputs)")
        metrics = compare(logits_ref, logits_got, logits=True)
        report["window"][set_name] = metrics
        if judged:
            problems += check(metrics, _window_tolerance(precision),
                              f"window logits ({precision}, {set_name} inputs)")
        if set_name == "real" and labels is not None:
            labels = np.asarray(labels)
            report["accuracy"] = {
                "clips": int(len(labels)),
                "top1_pytorch_fp32": float((logits_ref.argmax(-1) == labels).mean()),
                f"top1_onnx_{precision}": float((logits_got.argmax(-1) == labels).mean()),
                "top1_agreement": metrics["top1_agreement"]}
    report["passed"] = not problems
    if problems and raise_on_failure:
        raise VerificationError("export failed verification: " + "; ".join(problems), report)
    if problems:
        report["problems"] = problems
    return report
