"""CLIP-MG's stages for export and streaming (the wrappers ``ClipMGFamily.stages`` lists).

- ``visual`` (per frame): ``frames (batch, 3, S, S) -> tokens (batch, 1 + patches, D)``
- ``pose`` (per window): ``heatmaps (batch, V, P, H, W) -> pose (batch, R, D)``
- ``pose_segment`` (per segment, models with ``pose.windows="segments"`` only):
  ``heatmaps (batch, V, P/R, H, W) -> pose (batch, D)``: one RGB frame's segment of
  pose frames; streaming runs it once per segment and stacks a window's R features,
  which equals ``pose`` on the whole window (it replaces ``pose`` where a runtime
  caches segments; ``pose`` stays in the bundle for the others and the verification)
- ``head`` (per window): ``tokens (batch, R, 1 + patches, D)``, ``pose (batch, R, D)``,
  ``joints (batch, R, V, 3) -> logits (batch, C)``

A modality exports only its stages, and the head takes only the inputs it uses:
a visual-only model has no ``pose`` stage and its head takes ``tokens``; a
pose-only model has no ``visual`` stage and its head takes ``pose``; without
pose guidance the head does not take ``joints``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from microgesture.core.family import StageSpec, window_segments


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


class HeadStage(_Stage):
    """Per window: the inputs of :func:`head_inputs` (in that order) -> ``logits (B, C)``."""

    output_names = ("logits",)

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self.input_names = head_inputs(model)

    def forward(self, *inputs: Tensor) -> Tensor:
        given = dict(zip(self.input_names, inputs))
        return self.model.fuse(given.get("tokens"), given.get("pose"), given.get("joints"))


def has_segments(model: nn.Module) -> bool:
    """True when the model's pose features come per segment (``pose.windows="segments"``)."""
    return bool(model.use_pose and getattr(model.pose_encoder, "segments", False))


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


ROLES = {"visual": "per-frame", "pose": "per-window", "pose_segment": "per-segment",
         "head": "per-window"}


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
def stage_examples(model: nn.Module, window: dict[str, Tensor]) -> dict[str, dict[str, Tensor]]:
    """Example inputs of every stage (``{stage: {input: tensor}}``) from an example
    ``window`` (batch along axis 0); the head's tokens and pose are the model's own
    outputs for that window."""
    batch = len(next(iter(window.values())))
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
        segments = window_segments(window["heatmaps"], model.config.rgb_frames)
        out["pose_segment"] = {"heatmaps": segments[:batch]}
    head["joints"] = window["joints"]
    out["head"] = {name: head[name] for name in head_inputs(model)}
    return out


def stage_specs(model: nn.Module, window: dict[str, Tensor]) -> list[StageSpec]:
    """The model's stages in run order, with wrappers (eval mode) and example inputs."""
    examples = stage_examples(model, window)
    specs = []
    for name, module in stage_modules(model).items():
        specs.append(StageSpec(name, ROLES[name], tuple(examples[name]), tuple(module.output_names),
                               module=module, example=examples[name],
                               replaces=("pose",) if name == "pose_segment" else ()))
    return specs
