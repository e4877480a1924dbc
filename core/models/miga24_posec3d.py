"""PoseC3D of the MiGA 2024 paper as a model family (``arch = "miga24-posec3d"``).

The model is :class:`microgesture.core.posec3d.PoseC3D` (ResNet3dSlowOnly-50 on
joint or limb heatmaps, classification from a projection into the CLIP
text-embedding space). What this module declares:

- configs ``miga24-posec3d-joint``, ``-limb`` (the paper) and ``-joint-tiny``,
  ``-limb-tiny`` (tests);
- ``window``: 48 pose frames, no RGB; heatmaps of kind ``joints`` or ``limbs``
  (the layout's anatomical limbs), 64 px (evaluation and streaming), 56 px in
  training, sigma 0.6, cropped to the skeleton's box over the window;
- ``build``: text alignment needs targets, the normalised prompt-averaged class
  embeddings of a trained RGB student, named by the config's ``text_from``
  (``train --text-from RUN``; the targets then travel in the checkpoint's state).
  Without it, training runs with text alignment off (``text_weight`` 0 in the
  model's config, so its checkpoint says so) and prints why;
  :meth:`PoseC3DFamily.build_for_inference` (evaluation, export) never reads
  ``text_from``;
- ``loss``: ``loss_ce`` and, with targets, ``loss_text`` (gamma x mean squared distance);
- ``stages``: one ``per-window`` stage ``heatmaps (B, C, P, H, W) -> logits (B, classes)``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from microgesture.core.errors import MicrogestureError
from microgesture.core.family import HeatmapSpec, ModelFamily, StageSpec, WindowSpec
from microgesture.core.miga24_config import PoseC3DConfig
from microgesture.core.models.miga24_vclip import TINY_RECIPE

_TINY = dict(pose_frames=8, heatmap_size=16, test_size=16, sigma=0.6, base_channels=8,
             stage_blocks=(1, 1, 1), text_dim=32, dropout=0.1)

CONFIGS: dict[str, PoseC3DConfig] = {c.name: c for c in (
    PoseC3DConfig(name="miga24-posec3d-joint", arch="miga24-posec3d",
                  description="PoseC3D SlowOnly-50 on 22 joint heatmaps, 48x56x56, text-aligned"),
    PoseC3DConfig(name="miga24-posec3d-limb", arch="miga24-posec3d", heatmap="limb",
                  description="PoseC3D SlowOnly-50 on limb heatmaps, 48x56x56, text-aligned"),
    PoseC3DConfig(name="miga24-posec3d-joint-tiny", arch="miga24-posec3d", train=TINY_RECIPE, **_TINY,
                  description="PoseC3D at test size: 8 base channels, one block per stage, 8x16x16"),
    PoseC3DConfig(name="miga24-posec3d-limb-tiny", arch="miga24-posec3d", heatmap="limb", train=TINY_RECIPE,
                  **_TINY, description="PoseC3D on limbs at test size"),
)}


def text_targets_from(run: str | Path, labels: Sequence[str]):
    """The class text embeddings (C, D) of the trained model in ``run`` (a run folder or a
    checkpoint) for ``labels``, in that order: the RGB student's own when it was trained on
    these classes, else computed by its text tower from the names (open vocabulary)."""
    from microgesture.core.checkpoint import load_checkpoint, run_checkpoint
    from microgesture.core.family import family_of

    path = Path(run)
    if not path.exists():
        raise MicrogestureError(f"--text-from {run}: no such run folder or checkpoint; pass a trained "
                                "miga24-vclip run")
    model, _ = load_checkpoint(run_checkpoint(path) if path.is_dir() else path)
    return family_of(model).text_embeddings(model, labels)


class PoseC3DFamily(ModelFamily):
    arch = "miga24-posec3d"
    config_type = PoseC3DConfig
    configs = CONFIGS
    tiny = "miga24-posec3d-joint-tiny"

    def build(self, config, clip_weights: str | None = None):
        from microgesture.core.posec3d import PoseC3D

        aligned = config.text_dim > 0 and config.text_weight > 0
        if aligned and not config.text_from:
            print(f"{config.name}: text alignment is off (no --text-from RUN naming a trained miga24-vclip "
                  "run): training with cross-entropy only", file=sys.stderr)
            config = config.replace(text_weight=0.0)
        model = PoseC3D(config)
        if aligned and config.text_from:
            targets = text_targets_from(config.text_from, config.labels)
            if targets.shape[-1] != config.text_dim:
                raise MicrogestureError(
                    f"the text embeddings of {config.text_from} have {targets.shape[-1]} dimensions but "
                    f"{config.name} projects to text_dim {config.text_dim}: add --set text_dim="
                    f"{targets.shape[-1]}")
            model.set_text_targets(targets)
        return model

    def build_for_inference(self, config):
        from microgesture.core.posec3d import PoseC3D

        return PoseC3D(config)

    def window(self, config) -> WindowSpec:
        kind = "joints" if config.heatmap == "joint" else "limbs"
        heatmaps = HeatmapSpec(kind=kind, size=config.test_size, train_size=config.heatmap_size,
                               sigma=config.sigma, crop="skeleton")
        return WindowSpec(rgb_frames=0, pose_frames=config.pose_frames, layout=config.layout, heatmaps=heatmaps)

    def predict(self, model, batch: Mapping[str, Any]):
        return model(batch["heatmaps"])

    def loss(self, model, batch: Mapping[str, Any]) -> dict[str, Any]:
        return model.loss(batch)

    def stages(self, model, batch: int = 2, seed: int = 0) -> list[StageSpec]:
        example = self.example_batch(model.config, batch, seed)
        return [StageSpec("posec3d", "per-window", ("heatmaps",), ("logits",), module=model,
                          example={"heatmaps": example["heatmaps"]})]


FAMILY = PoseC3DFamily()
