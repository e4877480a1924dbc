"""The MiGA 2024 video CLIP student as a model family (``arch = "miga24-vclip"``).

The model is :class:`microgesture.core.miga24.VClipStudent` (VCLIP temporal
attention, token decay, FROSTER distillation from a frozen CLIP teacher). What
this module declares for the trainer, evaluation, export and streaming:

- configs ``miga24-vclip-b16`` (the paper), ``-b32`` (for CPUs), ``-tiny`` (tests);
- ``build(config, clip_weights, teacher=True)``: ``clip_weights`` as CLIP-MG's
  (an open_clip tag or a local file; None: random). The teacher is a frozen copy
  of the same initial CLIP; its weights are never saved in checkpoints
  (``VClipStudent.state_dict``), so evaluation and export load through
  :meth:`VClipFamily.build_for_inference` (no teacher) and resuming training
  rebuilds the teacher from the same ``clip_weights``;
- ``window``: ``rgb_frames`` RGB frames (8), no pose, ``text=True`` (classes come
  from text prompts: :meth:`VClipFamily.set_classes` changes them without retraining);
- ``loss``: the student's terms (``loss_ce``, ``loss_distill_visual``, ``loss_distill_text``);
- ``stages``: one ``whole-window`` stage ``frames (B, T, 3, S, S) -> logits (B, C)``
  (frames mix inside every block, nothing can be cached per frame), with the
  class text embeddings baked in as a constant (refreshed from the text tower
  when the stages are made, so classes set with ``set_classes`` are exported).

Torch is imported inside the methods that need it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from microgesture.core.config import ClipConfig, TrainRecipe
from microgesture.core.family import ModelFamily, StageSpec, WindowSpec
from microgesture.core.miga24_config import VClipConfig

_RECIPE = TrainRecipe(lr=3.33e-6, backbone_lr_scale=1.0, weight_decay=0.01, epochs=22,
                      warmup_epochs=2.0, batch_size=64, grad_clip=1.0)
_TINY_CLIP = ClipConfig(arch="mg-tiny-vit", pretrained=None, image_size=32, trainable_blocks=-1)
TINY_RECIPE = TrainRecipe(lr=1e-3, backbone_lr_scale=1.0, weight_decay=0.01, epochs=10,
                          warmup_epochs=0.5, batch_size=8)
"""The tiny configs' recipe (shared with the tiny PoseC3D configs)."""

CONFIGS: dict[str, VClipConfig] = {c.name: c for c in (
    VClipConfig(name="miga24-vclip-b16", arch="miga24-vclip", train=_RECIPE,
                description="MiGA'24 video CLIP student as the paper: ViT-B/16, 8x224 frames, token decay"),
    VClipConfig(name="miga24-vclip-b32", arch="miga24-vclip", train=_RECIPE,
                clip=ClipConfig(arch="ViT-B-32-quickgelu", trainable_blocks=-1),
                description="MiGA'24 video CLIP student for CPUs: ViT-B/32, 8x224 frames, token decay"),
    VClipConfig(name="miga24-vclip-tiny", arch="miga24-vclip", rgb_frames=4, clip=_TINY_CLIP,
                decay_blocks=(1,), train=TINY_RECIPE,
                description="MiGA'24 video CLIP at test size: 2-layer ViT of width 64 on 32 px, 4 frames"),
)}


def _window_stage(student):
    """The export wrapper: frames -> logits with the current class embeddings as a constant."""
    from torch import nn

    class VClipWindowStage(nn.Module):
        input_names = ("frames",)
        output_names = ("logits",)

        def __init__(self, model):
            super().__init__()
            self.model = model
            self.register_buffer("class_embeddings", model.class_text_embeddings())

        def forward(self, frames):
            return self.model.logits(self.model.encode_video(frames), self.class_embeddings)

    return VClipWindowStage(student)


class VClipFamily(ModelFamily):
    arch = "miga24-vclip"
    config_type = VClipConfig
    configs = CONFIGS
    tiny = "miga24-vclip-tiny"
    backbone_prefixes = ("clip.",)

    def build(self, config, clip_weights: str | None = None, teacher: bool = True):
        """The student; ``teacher=False`` leaves out the frozen teacher (evaluation, export)."""
        from microgesture.core.miga24 import VClipStudent

        return VClipStudent(config, clip_weights, teacher=teacher)

    def build_for_inference(self, config):
        return self.build(config, teacher=False)

    def uses_clip_weights(self, config) -> bool:
        return True

    def with_clip_source(self, config, source: str):
        return config.replace({"clip.weights_source": source})

    def window(self, config) -> WindowSpec:
        return WindowSpec(rgb_frames=config.rgb_frames, pose_frames=0, image_size=config.clip.image_size,
                          mean=tuple(config.clip.mean), std=tuple(config.clip.std), text=True)

    def predict(self, model, batch: Mapping[str, Any]):
        return model(batch["frames"])

    def loss(self, model, batch: Mapping[str, Any]) -> dict[str, Any]:
        return model.loss(batch)

    def stages(self, model, batch: int = 2, seed: int = 0) -> list[StageSpec]:
        example = self.example_batch(model.config, batch, seed)
        return [StageSpec("window", "whole-window", ("frames",), ("logits",), module=_window_stage(model),
                          example={"frames": example["frames"]})]

    def set_classes(self, model, labels: Sequence[str], templates: Sequence[str] | None = None) -> None:
        model.set_classes(labels, templates)
        model.refresh_text()

    def text_embeddings(self, model, labels: Sequence[str] | None = None):
        if labels is not None and tuple(labels) != tuple(model.labels):
            self.set_classes(model, labels)
        return model.class_text_embeddings()


FAMILY = VClipFamily()
