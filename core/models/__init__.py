"""Building models from their configs, and example inputs of the right shapes.

Every model family is declared in one module of this package (``clip_mg.py``:
CLIP-MG) and registered in ``core.family.FAMILY_MODULES``; these two functions
go through the registry, so they build any family's model.
"""

from __future__ import annotations

from typing import Any

from microgesture.core.family import family_of


def create_model(name_or_config, overrides: dict[str, Any] | None = None, *,
                 clip_weights: str | None = None, seed: int | None = None, **kwargs):
    """Build a model from a registered name (``microgesture models``) or a config.

    ``clip_weights``: None (random), ``"pretrained"`` (the config's open_clip
    tag, downloads), another tag, or a local file. ``seed`` makes the random
    initialisation reproducible.
    """
    from microgesture.core.config import ModelConfig, get_config

    config = (name_or_config.replace(overrides, **kwargs) if isinstance(name_or_config, ModelConfig)
              else get_config(name_or_config, overrides, **kwargs))
    family = family_of(config)
    if seed is not None:
        import torch

        torch.manual_seed(seed)
    return family.build(config, clip_weights)


def example_inputs(config, batch: int = 2, seed: int = 0) -> dict[str, Any]:
    """Random inputs with the model's names and shapes (for tests and export)."""
    return family_of(config).example_batch(config, batch, seed)
