"""Building models from their configs, and example inputs of the right shapes."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from microgesture.core.config import ClipMGConfig, ModelConfig, get_config
from microgesture.core.errors import lookup
from microgesture.core.layouts import get_layout


def _clip_mg(config: ModelConfig, clip_weights: str | None) -> nn.Module:
    from microgesture.core.clip_mg import ClipMG

    return ClipMG(config, clip_weights)


BUILDERS = {"clip-mg": _clip_mg}
"""Architecture name -> builder(config, clip_weights). One explicit table."""


def create_model(name_or_config: str | ModelConfig, overrides: dict[str, Any] | None = None, *,
                 clip_weights: str | None = None, seed: int | None = None, **kwargs) -> nn.Module:
    """Build a model from a registered name (``microgesture models``) or a config.

    ``clip_weights``: None (random), ``"pretrained"`` (the config's open_clip
    tag, downloads), another tag, or a local file. ``seed`` makes the random
    initialisation reproducible.
    """
    config = (name_or_config.replace(overrides, **kwargs) if isinstance(name_or_config, ModelConfig)
              else get_config(name_or_config, overrides, **kwargs))
    builder = lookup(BUILDERS, config.arch, "architecture")
    if seed is not None:
        torch.manual_seed(seed)
    return builder(config, clip_weights)


def example_inputs(config: ModelConfig, batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random inputs with the model's names and shapes (for tests and export)."""
    if not isinstance(config, ClipMGConfig):  # pragma: no cover - one family so far
        raise TypeError(f"no example inputs for {type(config).__name__}")
    g = torch.Generator().manual_seed(seed)
    v = get_layout(config.pose.layout).num_joints
    s, hm = config.clip.image_size, config.pose.heatmap_size
    joints = torch.rand(batch, config.rgb_frames, v, 3, generator=g)
    joints[..., 2] = (joints[..., 2] > 0.2).float() * joints[..., 2]
    return {
        "frames": torch.randn(batch, config.rgb_frames, 3, s, s, generator=g),
        "heatmaps": torch.rand(batch, v, config.pose_frames, hm, hm, generator=g),
        "joints": joints,
    }
