"""Model configurations, declared once.

Every model is a small frozen dataclass with an explicit architecture name
(``arch``); the same config builds the module that trains, exports and
serves. Configs travel inside checkpoints and bundles as JSON
(:meth:`ModelConfig.to_dict` / :func:`config_from_dict`), so a checkpoint
describes itself.

The shared dataclasses live here; each family's config class and named
configurations are declared with the family (``core/models/<family>.py``,
registered in ``core.family.FAMILY_MODULES``). ``MODELS`` reads every family's
named configurations; :func:`get_config` returns one with overrides applied
(``{"num_classes": 10, "pose.sigma": 1.0}``).
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


def __getattr__(name: str):
    """``MODELS``: every registered family's named configurations (read from the
    registry, ``core.family.all_configs``, when asked; ``microgesture models``)."""
    if name == "MODELS":
        from microgesture.core.family import all_configs

        return all_configs()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_config(name: str, overrides: dict[str, Any] | None = None, **kwargs) -> ModelConfig:
    """The named configuration (any registered family's) with ``overrides`` applied."""
    from microgesture.core.family import all_configs

    return lookup(all_configs(), name, "model").replace(overrides, **kwargs)


def config_from_dict(data: dict[str, Any]) -> ModelConfig:
    """Rebuild a config from :meth:`ModelConfig.to_dict` output, strictly (its family
    upgrades fields written by older versions)."""
    if not isinstance(data, dict) or "arch" not in data:
        raise MicrogestureError("model config must be a JSON object with an 'arch' field")
    from microgesture.core.family import get_family

    return get_family(data["arch"]).config_from_dict(data)


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
