"""PoseC3D of the MiGA 2024 paper as a model family (``arch = "miga24-posec3d"``).

The model is :class:`microgesture.core.posec3d.PoseC3D` (ResNet3dSlowOnly-50 on
joint or limb heatmaps, classification from a projection into the CLIP
text-embedding space). What this module declares:

- configs ``miga24-posec3d-joint``, ``-limb`` (the paper) and ``-joint-tiny``,
  ``-limb-tiny`` (tests);
- ``window``: 48 pose frames, no RGB; heatmaps of kind ``joints`` or ``limbs``
  (the layout's anatomical limbs), 64 px (evaluation and streaming), 56 px in
  training, sigma 0.6, cropped to the skeleton's box over the window;
- text alignment needs targets, the normalised prompt-averaged class embeddings
  of a trained RGB student named by the config's ``text_from`` (``train
  --text-from RUN``). ``build`` only builds the network (evaluation and export
  load the targets with the weights: they travel in the state dict); the first
  :meth:`PoseC3DFamily.loss` of a fresh model reads them from the run, so the
  trainer needs no hook. Without ``text_from``, training runs with
  cross-entropy only and says so once on stderr (the checkpoint's targets stay
  zero: ``PoseC3D.has_text_targets`` is False);
- ``loss``: ``loss_ce`` and, with targets, ``loss_text`` (gamma x mean squared distance);
- ``stages``: one ``per-window`` stage named ``window`` (as the student's: the one stage of a
  single-stage model) ``heatmaps (B, C, P, H, W) -> logits (B, classes)``.
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
        """The network alone: the text targets are read at the first training step
        (:meth:`loss`) or loaded with a checkpoint's weights, never here."""
        from microgesture.core.posec3d import PoseC3D

        return PoseC3D(config)

    def prepare_text_targets(self, model) -> bool:
        """Set the model's text targets from its config's ``text_from`` run if it needs them and
        has none yet (a fresh model; resumed or loaded ones carry theirs). Returns whether text
        alignment is on; off (no ``text_from``) is said once per model on stderr."""
        cfg = model.config
        if model.project is None or cfg.text_weight <= 0:
            return False
        if model.has_text_targets:
            return True
        if not cfg.text_from:
            if not getattr(model, "_said_text_off", False):
                print(f"{cfg.name}: text alignment is off (no --text-from RUN naming a trained miga24-vclip "
                      "run): training with cross-entropy only", file=sys.stderr)
                model._said_text_off = True
            return False
        targets = text_targets_from(cfg.text_from, cfg.labels)
        if targets.shape[-1] != cfg.text_dim:
            raise MicrogestureError(
                f"the text embeddings of {cfg.text_from} have {targets.shape[-1]} dimensions but {cfg.name} "
                f"projects to text_dim {cfg.text_dim}: add --set text_dim={targets.shape[-1]}")
        model.set_text_targets(targets)
        return True

    def window(self, config) -> WindowSpec:
        kind = "joints" if config.heatmap == "joint" else "limbs"
        heatmaps = HeatmapSpec(kind=kind, size=config.test_size, train_size=config.heatmap_size,
                               sigma=config.sigma, crop="skeleton")
        return WindowSpec(rgb_frames=0, pose_frames=config.pose_frames, layout=config.layout, heatmaps=heatmaps)

    def predict(self, model, batch: Mapping[str, Any]):
        return model(batch["heatmaps"])

    def loss(self, model, batch: Mapping[str, Any]) -> dict[str, Any]:
        if self.prepare_text_targets(model) or model.project is None or model.config.text_weight <= 0:
            return model.loss(batch)
        import torch.nn.functional as F

        return {"loss_ce": F.cross_entropy(model(batch["heatmaps"]), batch["label"])}

    def stages(self, model, batch: int = 2, seed: int = 0) -> list[StageSpec]:
        example = self.example_batch(model.config, batch, seed)
        return [StageSpec("window", "per-window", ("heatmaps",), ("logits",), module=model,
                          example={"heatmaps": example["heatmaps"]})]


FAMILY = PoseC3DFamily()
