"""Verification that FAILS: exported graphs against the PyTorch model, with stated tolerances.

Every precision is checked on two sets of inputs:

- ``random``: fresh random windows (``core.models.example_inputs`` with a seed the
  export never used): frames, heatmaps and joints of the right shapes;
- ``real``: clips from a dataset folder (loaded through
  ``microgesture.training.datasets/transforms``, imported lazily inside
  :func:`load_clips` -- the one place ``export`` touches ``training``), or, when
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
    arrays = {k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v))
              .astype(np.float32, copy=False) for k, v in inputs.items()}
    n = len(next(iter(arrays.values())))
    outs = [session.run(None, {k: np.ascontiguousarray(v[i:i + chunk]) for k, v in arrays.items()})[0]
            for i in range(0, n, chunk)]
    return np.concatenate(outs)


@torch.no_grad()
def _run_torch(fn: Callable, inputs: Mapping[str, Any], chunk: int = 32) -> np.ndarray:
    tensors = {k: torch.as_tensor(np.asarray(v) if not isinstance(v, torch.Tensor) else v).float()
               for k, v in inputs.items()}
    n = len(next(iter(tensors.values())))
    return torch.cat([fn(**{k: v[i:i + chunk] for k, v in tensors.items()})
                      for i in range(0, n, chunk)]).numpy()


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
    around the crop (some missing), their Gaussian heatmaps (``core.heatmaps``, the
    function training and streaming use) and noise frames. For calibration and
    reduced-precision checks when no clips are given."""
    from microgesture.core.heatmaps import joint_heatmaps
    from microgesture.core.layouts import get_layout

    rng = np.random.default_rng(seed)
    v = get_layout(config.pose.layout).num_joints
    p, r, hm = config.pose_frames, config.rgb_frames, config.pose.heatmap_size
    step = p // r
    frames, heatmaps, joints = [], [], []
    for _ in range(windows):
        start = rng.uniform(0.2, 0.8, (1, v, 2))
        drift = np.cumsum(rng.normal(0, 0.01, (p, v, 2)), axis=0)
        xy = np.clip(start + drift, 0.0, 1.0)
        score = rng.uniform(0.4, 1.0, (1, v)) * (rng.random((1, v)) > 0.15)
        score = np.repeat(score, p, 0)
        heatmaps.append(joint_heatmaps(xy * hm - 0.5, score, (hm, hm), config.pose.sigma))
        at = np.arange(r) * step + step // 2
        joints.append(np.concatenate([xy[at], score[at, :, None]], -1) * (score[at, :, None] > 0))
        s = config.clip.image_size
        frames.append(rng.normal(0, 1, (r, 3, s, s)))
    return {"frames": torch.tensor(np.stack(frames), dtype=torch.float32),
            "heatmaps": torch.tensor(np.stack(heatmaps), dtype=torch.float32),
            "joints": torch.tensor(np.stack(joints), dtype=torch.float32)}


def load_clips(data: str | Path, config, verify_clips: int = 8, calibration_clips: int = 16,
               test_subjects=None, seed: int = 0) -> tuple[dict, dict, dict[str, Any]]:
    """Clips of a dataset folder as model inputs: ``(verification, calibration, info)``.

    Verification clips come from ``test_subjects`` (a run's held-out subjects) when
    given, calibration clips from the others; when a side has no clips both draw
    from every clip (``info["overlap"]``). Each batch is a dict of stacked
    ``frames``, ``heatmaps``, ``joints`` and ``labels`` (None when the dataset's
    classes are not the model's). Imports ``microgesture.training`` lazily: the
    only place the exporter reads datasets.
    """
    from microgesture.training.datasets import open_dataset
    from microgesture.training.transforms import ClipDataset

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
    dataset = ClipDataset(index, config, train=False, seed=seed)

    def batch(pool):
        if not pool:
            return None
        items = [dataset[i] for i in pool]
        out = {k: torch.stack([it[k] for it in items]) for k in ("frames", "heatmaps", "joints")}
        out["labels"] = torch.stack([it["label"] for it in items]).numpy() if labels_match else None
        out["source"] = str(data)
        return out

    lengths = [r.num_frames for r in index.records if r.num_frames]
    info = {"data": str(data), "verification_clips": len(verify_pool),
            "median_clip_frames": float(np.median(lengths)) if lengths else None,
            "calibration_clips": len(calib_pool), "overlap": bool(set(verify_pool) & set(calib_pool)),
            "held_out_subjects": sorted(held) if held else None, "labels_match": labels_match}
    return batch(verify_pool), batch(calib_pool), info


# ----------------------------------------------------------------------------- the bundle

def _chain(model: nn.Module, sessions: dict[str, Any], window: Mapping[str, torch.Tensor],
           cache: dict[str, np.ndarray] | None = None):
    """Torch reference outputs per stage and the ONNX outputs, chained as streaming runs them.

    Returns ``{stage: (ref, ort)}`` with each stage fed the PyTorch outputs of the
    stage before (so a stage's error is its own), and ``(logits_ref,
    logits_chained)`` with ``logits_ref = model.forward`` and ``logits_chained``
    the head run on the ONNX visual and pose outputs. ``cache`` keeps the PyTorch
    outputs for this window between calls (one per precision)."""
    from microgesture.export.onnx_export import head_inputs

    cache = {} if cache is None else cache

    def torch_out(key, fn, inputs):
        if key not in cache:
            cache[key] = _run_torch(fn, inputs)
        return cache[key]

    def fuse(**kw):
        return model.fuse(kw.get("tokens"), kw.get("pose"), kw.get("joints"))

    frames, heatmaps, joints = window["frames"], window["heatmaps"], window["joints"]
    b, r = frames.shape[:2]
    per_stage, ref_out, ort_out = {}, {}, {}
    if "visual" in sessions:
        flat = {"frames": frames.flatten(0, 1)}
        ref = torch_out("visual", model.encode_frames, flat)
        got = _run_ort(sessions["visual"], flat)
        per_stage["visual"] = (ref, got)
        ref_out["tokens"] = ref.reshape(b, r, *ref.shape[1:])
        ort_out["tokens"] = got.reshape(b, r, *got.shape[1:])
    if "pose" in sessions:
        ref = torch_out("pose", model.encode_pose, {"heatmaps": heatmaps})
        got = _run_ort(sessions["pose"], {"heatmaps": heatmaps})
        per_stage["pose"] = (ref, got)
        ref_out["pose"], ort_out["pose"] = ref, got
    if "pose_segment" in sessions:  # the window's segments one by one, against the whole window
        from microgesture.export.onnx_export import window_segments

        ref = torch_out("pose", model.encode_pose, {"heatmaps": heatmaps})
        got = _run_ort(sessions["pose_segment"], {"heatmaps": window_segments(heatmaps, r)})
        per_stage["pose_segment"] = (ref.reshape(b * r, -1), got)
    ref_out["joints"] = ort_out["joints"] = joints.numpy()
    names = head_inputs(model)
    head_ref_inputs = {n: ref_out[n] for n in names}
    ref = torch_out("head", fuse, head_ref_inputs)
    per_stage["head"] = (ref, _run_ort(sessions["head"], head_ref_inputs))
    logits_chained = _run_ort(sessions["head"], {n: ort_out[n] for n in names})
    logits_ref = torch_out("forward", lambda **kw: model(**kw),
                           {"frames": frames, "heatmaps": heatmaps, "joints": joints})
    return per_stage, (logits_ref, logits_chained)


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
    sets = {"random": random_windows(model.config, random_count, random_seed),
            "real": {k: torch.as_tensor(real[k]) for k in ("frames", "heatmaps", "joints")}}

    tol = TOLERANCES[precision]
    report: dict[str, Any] = {
        "tolerance": {k: (list(v) if isinstance(v, tuple) else v) for k, v in tol.items()},
        "inputs": {"random": {"windows": random_count, "seed": random_seed},
                   "real": {"windows": int(len(sets["real"]["frames"])), "source": source}},
        "stages": {n: {} for n in stages}, "window": {}}
    problems: list[str] = []
    for set_name, window in sets.items():
        per_stage, (logits_ref, logits_got) = _chain(
            model, sessions, window, None if cache is None else cache.setdefault(set_name, {}))
        judged = set_name in tol["on"]
        for name, (ref, got) in per_stage.items():
            metrics = compare(ref, got, logits=name == "head")
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
