"""PyTorch -> ONNX, one graph per stage of the staged forward pass.

A model is exported as the stages streaming runs (``core/bundle.py``):

- ``visual`` (per frame): ``frames (batch, 3, S, S) -> tokens (batch, 1 + patches, D)``
- ``pose`` (per window): ``heatmaps (batch, V, P, H, W) -> pose (batch, R, D)``
- ``pose_segment`` (per segment, models with ``pose.windows="segments"`` only):
  ``heatmaps (batch, V, P/R, H, W) -> pose (batch, D)``: one RGB frame's segment of
  pose frames; streaming runs it once per segment and stacks a window's R features,
  which equals ``pose`` on the whole window (``pose`` stays in the bundle: the
  verification and runtimes without a segment cache use it)
- ``head`` (per window): ``tokens (batch, R, 1 + patches, D)``, ``pose (batch, R, D)``,
  ``joints (batch, R, V, 3) -> logits (batch, C)``

A modality exports only its stages, and the head takes only the inputs it uses:
a visual-only model has no ``pose`` stage and its head takes ``tokens``; a
pose-only model has no ``visual`` stage and its head takes ``pose``; without
pose guidance the head does not take ``joints``.

Every graph has a symbolic ``batch`` axis and concrete other dims. We export
with ``torch.onnx.export(..., dynamo=True)`` from a batch-2 example (a batch of
1 would be specialised away, DESIGN.md) and ``dynamic_shapes``; if the dynamo
exporter fails, the TorchScript exporter (``dynamo=False``, ``dynamic_axes``)
is tried and the stage records which one was used. Each file passes
``onnx.checker.check_model`` and ONNX Runtime must run it at batch 1 and 3
before it is accepted. Metadata travels inside each file (``metadata_props``:
stage, model name, config, labels, preprocessing).
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from microgesture.core.checkpoint import preprocessing
from microgesture.core.errors import MicrogestureError
from microgesture.core.models import example_inputs

BATCH = "batch"
MAX_BATCH = 4096
STAGE_ORDER = ("visual", "pose", "pose_segment", "head")
ROLES = {"visual": "per-frame", "pose": "per-window", "pose_segment": "per-segment",
         "head": "per-window"}


# ----------------------------------------------------------------------------- stage wrappers

class _Stage(nn.Module):
    """One stage of ``model`` to export; subclasses name its inputs and outputs."""

    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model


class VisualStage(_Stage):
    """Per frame: ``frames (N, 3, S, S) -> tokens (N, 1 + patches, D)``."""

    input_names = ("frames",)
    output_names = ("tokens",)

    def forward(self, frames: Tensor) -> Tensor:
        return self.model.encode_frames(frames)


class PoseStage(_Stage):
    """Per window: ``heatmaps (B, V, P, H, W) -> pose (B, R, D)``."""

    input_names = ("heatmaps",)
    output_names = ("pose",)

    def forward(self, heatmaps: Tensor) -> Tensor:
        return self.model.encode_pose(heatmaps)


class PoseSegmentStage(_Stage):
    """Per segment: ``heatmaps (N, V, P/R, H, W) -> pose (N, D)``."""

    input_names = ("heatmaps",)
    output_names = ("pose",)

    def forward(self, heatmaps: Tensor) -> Tensor:
        return self.model.encode_pose_segment(heatmaps)


def has_segments(model: nn.Module) -> bool:
    """True when the model's pose features come per segment (``pose.windows="segments"``)."""
    return bool(model.use_pose and getattr(model.pose_encoder, "segments", False))


def window_segments(heatmaps, rgb_frames: int):
    """A window's heatmaps (B, V, P, H, W) cut into its segments (B * R, V, P/R, H, W), in
    window-major, time order (works on tensors and numpy arrays)."""
    b, v, p, h, w = heatmaps.shape
    x = heatmaps.reshape(b, v, rgb_frames, p // rgb_frames, h, w).swapaxes(1, 2)
    return x.reshape(b * rgb_frames, v, p // rgb_frames, h, w)


class HeadStage(_Stage):
    """Per window: the inputs of :func:`head_inputs` (in that order) -> ``logits (B, C)``."""

    output_names = ("logits",)

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self.input_names = head_inputs(model)

    def forward(self, *inputs: Tensor) -> Tensor:
        given = dict(zip(self.input_names, inputs))
        return self.model.fuse(given.get("tokens"), given.get("pose"), given.get("joints"))


def head_inputs(model: nn.Module) -> tuple[str, ...]:
    """The inputs the model's head uses, in order: ``tokens`` (RGB), ``pose``
    (skeleton) and ``joints`` (only for pose-guided relevance, which needs both)."""
    names = []
    if model.use_visual:
        names.append("tokens")
    if model.use_pose:
        names.append("pose")
    if model.use_visual and model.use_pose and model.config.pose_guidance:
        names.append("joints")
    return tuple(names)


def stage_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The export wrappers of the model's stages, in eval mode, keyed by stage name."""
    stages: dict[str, nn.Module] = {}
    if model.use_visual:
        stages["visual"] = VisualStage(model)
    if model.use_pose:
        stages["pose"] = PoseStage(model)
    if has_segments(model):
        stages["pose_segment"] = PoseSegmentStage(model)
    stages["head"] = HeadStage(model)
    return {k: v.eval() for k, v in stages.items()}


@torch.no_grad()
def stage_examples(model: nn.Module, batch: int = 2, seed: int = 0) -> dict[str, dict[str, Tensor]]:
    """Example inputs of every stage (``{stage: {input: tensor}}``), ``batch`` along axis 0;
    the head's tokens and pose are the model's own outputs for the example window."""
    cfg = model.config
    window = example_inputs(cfg, batch=batch, seed=seed)
    out: dict[str, dict[str, Tensor]] = {}
    head: dict[str, Tensor] = {}
    if model.use_visual:
        frames = window["frames"]
        out["visual"] = {"frames": frames[:, 0]}  # one frame of each window: batch frames
        head["tokens"] = model.encode_frames(frames.flatten(0, 1)).unflatten(0, frames.shape[:2])
    if model.use_pose:
        out["pose"] = {"heatmaps": window["heatmaps"]}
        head["pose"] = model.encode_pose(window["heatmaps"])
    if has_segments(model):  # two segments: the batch axis stays dynamic
        out["pose_segment"] = {"heatmaps": window_segments(window["heatmaps"], cfg.rgb_frames)[:batch]}
    head["joints"] = window["joints"]
    out["head"] = {name: head[name] for name in head_inputs(model)}
    return out


# ----------------------------------------------------------------------------- export

def _spec(shape, dtype=torch.float32) -> dict[str, Any]:
    return {"shape": [BATCH, *[int(d) for d in shape[1:]]], "dtype": str(dtype).removeprefix("torch.")}


@contextlib.contextmanager
def _quiet():
    """Silence the exporters' chatter (warnings and onnxscript's optimizer logs)."""
    loggers = [logging.getLogger(n) for n in ("onnxscript", "torch.onnx", "torch.export",
                                               "torch._export", "torch.fx.experimental.symbolic_shapes")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def _export_file(module: nn.Module, inputs: dict[str, Tensor], path: Path, opset: int,
                 exporter: str) -> None:
    names = list(inputs)
    args = tuple(inputs.values())
    out_names = list(module.output_names)
    with _quiet(), torch.no_grad():
        if exporter == "dynamo":
            batch = torch.export.Dim(BATCH, min=1, max=MAX_BATCH)
            axes = tuple({0: batch} for _ in names)
            # HeadStage takes *inputs: its dynamic shapes are one nested tuple
            dynamic = (axes,) if isinstance(module, HeadStage) else axes
            torch.onnx.export(module, args, str(path), input_names=names, output_names=out_names,
                              opset_version=opset, dynamo=True, dynamic_shapes=dynamic,
                              external_data=False, verbose=False)
        else:  # TorchScript cannot export nn.MultiheadAttention's fused fast path
            fastpath = torch.backends.mha.get_fastpath_enabled()
            torch.backends.mha.set_fastpath_enabled(False)
            try:
                torch.onnx.export(module, args, str(path), input_names=names,
                                  output_names=out_names, opset_version=opset, dynamo=False,
                                  dynamic_axes={n: {0: BATCH} for n in names + out_names})
            finally:
                torch.backends.mha.set_fastpath_enabled(fastpath)


def _set_metadata(path: Path, metadata: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path))
    for prop in [p for p in model.metadata_props if p.key in metadata]:
        model.metadata_props.remove(prop)
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def file_metadata(model: nn.Module, stage: str) -> dict[str, str]:
    """What each ONNX file carries about itself (``metadata_props``)."""
    cfg = model.config
    return {"microgesture.stage": stage, "microgesture.role": ROLES[stage],
            "microgesture.model": cfg.name, "microgesture.config": cfg.to_json(),
            "microgesture.labels": json.dumps(list(cfg.labels)),
            "microgesture.preprocessing": json.dumps(preprocessing(cfg))}


def check_onnx(path: str | Path, stage: str = "") -> None:
    """``onnx.checker.check_model`` on a file, as a MicrogestureError when it fails."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise MicrogestureError(f"the exported {stage or Path(path).name} graph {path} fails the ONNX "
                                f"checker: {exc}. Try another --opset") from exc


def ort_session(path: str | Path, threads: int = 1, disabled_optimizers: tuple[str, ...] = ()):
    """A CPU ONNX Runtime session on ``path`` (``threads`` intra-op threads, no spinning;
    ``disabled_optimizers``: ONNX Runtime optimisers to skip, see
    :data:`core.backends.FP16_DISABLED_OPTIMIZERS`)."""
    from microgesture.core.backends import cpu_session

    return cpu_session(path, threads, disabled_optimizers)


def check_dynamic_batch(path: str | Path, inputs: dict[str, Tensor], stage: str = "",
                        batches=(1, 3)) -> None:
    """Run the file at each batch size of ``batches`` (rows of ``inputs`` repeated) and
    check that every output has that batch: a specialised batch axis fails here."""
    session = ort_session(path)
    for b in batches:
        feeds = {n: np.ascontiguousarray(
            np.resize(t.numpy(), (b, *t.shape[1:])).astype(np.float32)) for n, t in inputs.items()}
        try:
            outputs = session.run(None, feeds)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise MicrogestureError(f"the exported {stage} graph does not run at batch {b} in ONNX "
                                    f"Runtime ({type(exc).__name__}: {exc}); its batch axis is not "
                                    "dynamic") from exc
        for out in outputs:
            if out.shape[0] != b:
                raise MicrogestureError(f"the exported {stage} graph returned batch {out.shape[0]} "
                                        f"for an input of batch {b}; its batch axis is not dynamic")


def export_stage(module: nn.Module, inputs: dict[str, Tensor], path: str | Path, opset: int = 18,
                 exporters=("dynamo", "torchscript")) -> dict[str, Any]:
    """Export one stage wrapper to ``path``, check it and its dynamic batch axis.

    Tries each exporter of ``exporters`` in turn; returns ``{"exporter": name}``
    plus ``"fallback_reason"`` when the first one failed.
    """
    path = Path(path)
    failures = []
    for exporter in exporters:
        try:
            _export_file(module, inputs, path, opset, exporter)
            check_onnx(path, path.stem)
            check_dynamic_batch(path, inputs, path.stem)
        except Exception as exc:  # any exporter failure: try the next one
            failures.append(f"{exporter}: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}")
            path.unlink(missing_ok=True)
            continue
        info: dict[str, Any] = {"exporter": exporter}
        if failures:
            info["fallback_reason"] = failures[0]
        return info
    raise MicrogestureError(f"could not export the {path.stem} stage to ONNX (opset {opset}): "
                            + "; ".join(failures) + ". Try another --opset or report the model")


def export_onnx(model: nn.Module, out_dir: str | Path, opset: int = 18,
                log: Callable[[str], None] | None = None) -> dict[str, dict[str, Any]]:
    """Export every stage of ``model`` to ``out_dir/<stage>.onnx``.

    Returns the stage manifests (``core/bundle.py``): role, inputs and outputs
    (shape with a symbolic ``"batch"`` axis, dtype), ``files`` (``{"fp32": name}``)
    and the ``exporter`` used (``dynamo`` or ``torchscript``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    examples = stage_examples(model, batch=2)
    stages: dict[str, dict[str, Any]] = {}
    for name, module in stage_modules(model).items():
        inputs = examples[name]
        if log:
            log(f"exporting the {name} stage to ONNX (opset {opset})")
        with torch.no_grad():
            outputs = module(*inputs.values())
        path = out_dir / f"{name}.onnx"
        info = export_stage(module, inputs, path, opset)
        _set_metadata(path, file_metadata(model, name))
        stages[name] = {
            "role": ROLES[name],
            "inputs": {n: _spec(t.shape, t.dtype) for n, t in inputs.items()},
            "outputs": {module.output_names[0]: _spec(outputs.shape, outputs.dtype)},
            "files": {"fp32": path.name},
            **info,
        }
    return stages
