"""Configurations of the MiGA 2024 family (papers/miga24-clip-multimodal.md), declared once.

Two architectures, each a frozen dataclass like CLIP-MG's (core/config.py):

- ``miga24-vclip``: the FROSTER-distilled video CLIP student with VCLIP
  temporal attention and token decay (core/miga24.py);
- ``miga24-posec3d``: PoseC3D's ResNet3dSlowOnly-50 on joint or limb heatmaps,
  optionally aligned to CLIP text embeddings (core/posec3d.py).

The named configurations live with their family (``core/models/miga24_vclip.py``,
``core/models/miga24_posec3d.py``); :func:`get_miga24_config` looks a name up in both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from microgesture.core.config import ClipConfig, ModelConfig, TrainRecipe, _build
from microgesture.core.errors import MicrogestureError, lookup
from microgesture.core.prompts import TEMPLATES, check_templates


@dataclass(frozen=True)
class VClipConfig(ModelConfig):
    """The video CLIP student (DESIGN.md, "The MiGA 2024 model")."""

    pose_frames: int = 0
    """No pose input."""
    clip: ClipConfig = field(default_factory=lambda: ClipConfig(trainable_blocks=-1))
    """The open_clip model (image and text towers); both towers are fine-tuned (-1)."""
    temporal: bool = True
    """VCLIP temporal attention in every block (False: per-frame attention, the ablation)."""
    decay_blocks: tuple[int, ...] = (3, 6, 9)
    """0-based blocks after whose attention each frame keeps ``decay_keep`` of its patch tokens."""
    decay_keep: float = 0.7
    templates: tuple[str, ...] = TEMPLATES
    """Prompt templates (``{}`` is the class name); training uses one at random plus the bare name."""
    projector_alpha: float = 0.1
    """FROSTER's residual projectors: ``f + alpha * MLP(f)``."""
    distill_visual: float = 2.0
    """Weight of (1 - cos) between projected student and teacher frame features (0: off)."""
    distill_text: float = 2.0
    """Weight of (1 - cos) between projected student and teacher class text features (0: off)."""

    def __post_init__(self):
        check_templates(self.templates)
        if not 0 < self.decay_keep <= 1:
            raise MicrogestureError(f"decay_keep must be in (0, 1], got {self.decay_keep!r}")
        if len(set(self.decay_blocks)) != len(self.decay_blocks) or any(b < 0 for b in self.decay_blocks):
            raise MicrogestureError(f"decay_blocks must be distinct 0-based block indices, got {self.decay_blocks!r}")
        if self.distill_visual < 0 or self.distill_text < 0:
            raise MicrogestureError("distillation weights must be >= 0")


@dataclass(frozen=True)
class PoseC3DConfig(ModelConfig):
    """PoseC3D (ResNet3dSlowOnly-50) on heatmaps, with optional CLIP text alignment."""

    rgb_frames: int = 0
    pose_frames: int = 48
    layout: str = "imigue22"
    heatmap: str = "joint"
    """``joint`` (one channel per joint) or ``limb`` (one per limb of the layout)."""
    heatmap_size: int = 56
    """Training crop size; PoseC3D tests at 64 px (the network is fully convolutional)."""
    test_size: int = 64
    sigma: float = 0.6
    base_channels: int = 32
    stage_blocks: tuple[int, ...] = (4, 6, 3)
    inflate: tuple[int, ...] = (0, 1, 1)
    spatial_strides: tuple[int, ...] = (2, 2, 2)
    temporal_strides: tuple[int, ...] = (1, 1, 2)
    dropout: float = 0.5
    text_dim: int = 512
    """Size of the CLIP text embedding the pooled feature is projected to (0: no text alignment,
    the plain PoseC3D head)."""
    text_weight: float = 20.0
    """gamma: weight of the mean squared distance to the class's text embedding."""
    text_from: str = ""
    """The trained RGB student (run folder or checkpoint) whose class text embeddings are the
    alignment targets (``train --text-from RUN``); empty: text alignment is off in training."""
    train: TrainRecipe = field(default_factory=lambda: TrainRecipe(
        optimizer="sgd", lr=0.1, backbone_lr_scale=1.0, weight_decay=3e-4, momentum=0.9, epochs=24,
        warmup_epochs=0.0, batch_size=32, grad_clip=40.0))

    def __post_init__(self):
        if self.heatmap not in ("joint", "limb"):
            raise MicrogestureError(f"heatmap must be 'joint' or 'limb', got {self.heatmap!r}")
        n = len(self.stage_blocks)
        if not (len(self.inflate) == len(self.spatial_strides) == len(self.temporal_strides) == n):
            raise MicrogestureError("stage_blocks, inflate, spatial_strides and temporal_strides need one "
                                    f"entry per stage ({n})")

    @property
    def in_channels(self) -> int:
        from microgesture.core.layouts import get_layout

        layout = get_layout(self.layout)
        return layout.num_joints if self.heatmap == "joint" else len(layout.limbs)


def get_miga24_config(name: str, overrides: dict[str, Any] | None = None, **kwargs) -> ModelConfig:
    """The named configuration of either MiGA 2024 family (``core/models/miga24_*.py`` own them)
    with ``overrides`` applied (dotted keys reach nested configs)."""
    from microgesture.core.models.miga24_posec3d import CONFIGS as POSE
    from microgesture.core.models.miga24_vclip import CONFIGS as RGB

    return lookup({**RGB, **POSE}, name, "model").replace(overrides, **kwargs)


MIGA24_ARCHS: dict[str, type[ModelConfig]] = {"miga24-vclip": VClipConfig, "miga24-posec3d": PoseC3DConfig}


def miga24_config_from_dict(data: dict[str, Any]) -> ModelConfig:
    """Rebuild a config from ``to_dict()`` output, strictly."""
    if not isinstance(data, dict) or "arch" not in data:
        raise MicrogestureError("model config must be a JSON object with an 'arch' field")
    return _build(lookup(MIGA24_ARCHS, data["arch"], "architecture"), data, "config")
