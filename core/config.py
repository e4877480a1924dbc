"""Model configurations, declared once.

Every model is a small frozen dataclass with an explicit architecture name
(``arch``); the same config builds the module that trains, exports and
serves. Configs travel inside checkpoints and bundles as JSON
(:meth:`ModelConfig.to_dict` / :func:`config_from_dict`), so a checkpoint
describes itself.

``MODELS`` names the ready-made configurations; :func:`get_config` returns one
with overrides applied (``{"num_classes": 10, "pose.sigma": 1.0}``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from typing import Any

from microgesture.core.errors import MicrogestureError, did_you_mean, lookup
from microgesture.core.labels import IMIGUE_CLASSES

POSE_WINDOWS = ("segments", "strided")
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ClipConfig:
    """The CLIP image tower, built by open_clip from its model name."""

    arch: str = "ViT-B-16-quickgelu"
    """open_clip model name (``open_clip.list_models()``), or our ``mg-tiny-vit``."""
    pretrained: str | None = "openai"
    """open_clip pretrained tag used when a user asks for pretrained weights (downloads)."""
    image_size: int = 224
    trainable_blocks: int = 2
    """Transformer blocks left trainable at the end of the tower (-1: all, 0: none)."""
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    weights_source: str | None = None
    """Where a trained model's CLIP weights started, recorded by ``train`` (so run.json,
    checkpoints and bundles say it): ``random``, ``open_clip:<tag>`` or
    ``file:<name> sha256:<hex> (<format>)``. Informational: loading never uses it."""


@dataclass(frozen=True)
class PoseConfig:
    """Skeleton input: joint layout, Gaussian heatmaps and the 3D-CNN encoder."""

    layout: str = "coco18"
    heatmap_size: int = 256
    sigma: float = 2.5
    """Gaussian sigma in heatmap pixels."""
    channels: tuple[int, ...] = (64, 128, 256)
    spatial_strides: tuple[int, ...] = (4, 2, 2)
    temporal_strides: tuple[int, ...] = (1, 2, 2)
    windows: str = "segments"
    """How the P pose frames become one feature per RGB frame. ``segments`` (the paper's
    aligned windows): the 3D CNN runs on each RGB frame's own segment of P/R pose frames
    (zero-padded at its edges), so that frame's feature sees exactly the pose frames around
    it. ``strided``: the CNN runs over all P frames and its strided output is pooled to R
    windows (each window's receptive field starts 1.5 pose frames early and reaches into the
    previous segment); configs written before this field existed read as ``strided``."""

    def __post_init__(self):
        if self.windows not in POSE_WINDOWS:
            raise MicrogestureError(f"pose.windows must be one of {', '.join(POSE_WINDOWS)}, got {self.windows!r}")


@dataclass(frozen=True)
class TrainRecipe:
    """How a model is trained by default (``microgesture train`` options override it)."""

    optimizer: str = "adamw"
    """``adamw`` or ``sgd``."""
    lr: float = 1e-4
    backbone_lr_scale: float = 0.1
    """Learning-rate factor for the pretrained CLIP blocks left trainable."""
    weight_decay: float = 0.05
    momentum: float = 0.9
    """SGD only."""
    epochs: int = 30
    warmup_epochs: float = 1.0
    batch_size: int = 16
    grad_clip: float = 1.0
    """Maximum gradient norm (0: no clipping)."""
    label_smoothing: float = 0.0

    def __post_init__(self):
        if self.optimizer not in ("adamw", "sgd"):
            raise MicrogestureError(f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")


@dataclass(frozen=True)
class ModelConfig:
    """Fields every architecture shares: name, classes and the sampled window."""

    name: str
    arch: str
    description: str = ""
    labels: tuple[str, ...] = IMIGUE_CLASSES
    rgb_frames: int = 8
    pose_frames: int = 32
    train: TrainRecipe = field(default_factory=TrainRecipe)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def replace(self, overrides: dict[str, Any] | None = None, **kwargs) -> ModelConfig:
        """A copy with ``overrides`` applied; dotted keys reach nested configs."""
        return _replace(self, {**(overrides or {}), **kwargs})


@dataclass(frozen=True)
class ClipMGConfig(ModelConfig):
    """CLIP-MG (papers/clip-mg-summary.md): pose-guided semantic query, gated
    fusion and cross-attention over CLIP ViT patch tokens."""

    clip: ClipConfig = field(default_factory=ClipConfig)
    pose: PoseConfig = field(default_factory=PoseConfig)
    relevance_sigma: float = 1.5
    """Width of a joint's influence on patch relevance, in patches."""
    attention_heads: int = 8
    hidden: int = 512
    dropout: float = 0.5
    # Ablation switches (the paper's Table 2 and its single-modality baselines).
    pose_guidance: bool = True
    cross_attention: bool = True
    gate: bool = True
    modality: str = "both"
    """``both``, ``visual`` (no skeleton input) or ``pose`` (no RGB input)."""

    def __post_init__(self):
        if self.modality not in ("both", "visual", "pose"):
            raise MicrogestureError(
                f"modality must be 'both', 'visual' or 'pose', got {self.modality!r}")
        if self.pose_frames % self.rgb_frames:
            raise MicrogestureError(
                f"pose_frames ({self.pose_frames}) must be a multiple of rgb_frames "
                f"({self.rgb_frames}): pose frames are averaged into one window per RGB frame")


ABLATIONS: dict[str, dict[str, Any]] = {
    "full": {},
    "no-pose-guidance": {"pose_guidance": False},
    "no-cross-attention": {"cross_attention": False},
    "no-gate": {"gate": False},
    "visual-only": {"modality": "visual"},
    "pose-only": {"modality": "pose"},
}
"""CLIP-MG's ablation set (the paper's Table 2 and its single-modality baselines)."""

ARCHS: dict[str, type[ModelConfig]] = {"clip-mg": ClipMGConfig}
"""Architecture name -> config class (the model class is chosen in core.models)."""

_TINY_CLIP = ClipConfig(arch="mg-tiny-vit", pretrained=None, image_size=32, trainable_blocks=1)
_TINY_POSE = PoseConfig(heatmap_size=16, sigma=1.0, channels=(8, 16, 32),
                        spatial_strides=(2, 2, 1), temporal_strides=(1, 2, 1))

MODELS: dict[str, ModelConfig] = {
    c.name: c
    for c in (
        ClipMGConfig(
            name="clip-mg-b16", arch="clip-mg",
            description="CLIP-MG as the paper: ViT-B/16 on 8x224 frames, 18 joints at 256 px"),
        ClipMGConfig(
            name="clip-mg-b32", arch="clip-mg",
            description="CLIP-MG for CPUs: ViT-B/32, 18 joints at 64 px",
            clip=ClipConfig(arch="ViT-B-32-quickgelu"),
            pose=PoseConfig(heatmap_size=64, sigma=0.625, spatial_strides=(2, 2, 2))),
        ClipMGConfig(
            name="clip-mg-tiny", arch="clip-mg",
            description="CLIP-MG at test size: 2-layer ViT of width 64 on 32 px, 4 frames",
            rgb_frames=4, pose_frames=8, clip=_TINY_CLIP, pose=_TINY_POSE,
            attention_heads=4, hidden=32, dropout=0.1,
            train=TrainRecipe(lr=2e-3, backbone_lr_scale=1.0, weight_decay=0.01, epochs=10,
                              warmup_epochs=0.5, batch_size=8)),
    )
}


def get_config(name: str, overrides: dict[str, Any] | None = None, **kwargs) -> ModelConfig:
    """The named configuration with ``overrides`` applied."""
    return lookup(MODELS, name, "model").replace(overrides, **kwargs)


def config_from_dict(data: dict[str, Any]) -> ModelConfig:
    """Rebuild a config from :meth:`ModelConfig.to_dict` output, strictly."""
    if not isinstance(data, dict) or "arch" not in data:
        raise MicrogestureError("model config must be a JSON object with an 'arch' field")
    cls = lookup(ARCHS, data["arch"], "architecture")
    if cls is ClipMGConfig and isinstance(data.get("pose"), dict) and "windows" not in data["pose"]:
        data = {**data, "pose": {**data["pose"], "windows": "strided"}}  # written before the field existed
    return _build(cls, data, "config")


def _build(cls, data: dict[str, Any], where: str):
    names = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise MicrogestureError(
            f"unknown field {unknown[0]!r} in {where}.{did_you_mean(unknown[0], names)} "
            f"(was it written by a newer microgesture?)")
    values = {}
    for key, value in data.items():
        sub = _nested_type(cls, key)
        if sub is not None and isinstance(value, dict):
            value = _build(sub, value, f"{where}.{key}")
        elif isinstance(value, list):
            value = tuple(value)
        values[key] = value
    return cls(**values)


def _nested_type(cls, key: str):
    default = next((f for f in fields(cls) if f.name == key), None)
    if default is None or default.default_factory is dataclasses.MISSING:
        return None
    return type(default.default_factory())


def _replace(cfg, overrides: dict[str, Any]):
    nested: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    names = {f.name for f in fields(cfg)}
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if key == "num_classes":  # convenience: generic class names
            top["labels"] = tuple(f"class {i}" for i in range(int(value)))
            continue
        if head not in names:
            raise MicrogestureError(
                f"unknown config field {key!r} for {type(cfg).__name__}."
                f"{did_you_mean(head, names | {'num_classes'})}")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            top[head] = tuple(value) if isinstance(value, list) else value
    for head, sub in nested.items():
        top[head] = _replace(getattr(cfg, head), sub)
    return dataclasses.replace(cfg, **top)
