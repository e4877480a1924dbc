"""The CLIP-MG family (papers/clip-mg-summary.md): its configurations, window,
ablations, stages and the evaluation pictures only it has.

Torch is imported inside the methods that need it (the model in
``core.clip_mg``, the export wrappers in ``core.models.clip_mg_stages``), so
reading the configurations and the window stays torch-free.
"""

from __future__ import annotations

from typing import Any

from microgesture.core.config import ClipConfig, ClipMGConfig, PoseConfig, TrainRecipe, _build
from microgesture.core.family import HeatmapSpec, ModelFamily, StageSpec, WindowSpec

_TINY_CLIP = ClipConfig(arch="mg-tiny-vit", pretrained=None, image_size=32, trainable_blocks=1)
_TINY_POSE = PoseConfig(heatmap_size=16, sigma=1.0, channels=(8, 16, 32),
                        spatial_strides=(2, 2, 1), temporal_strides=(1, 2, 1))

CONFIGS: dict[str, ClipMGConfig] = {
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

ABLATIONS: dict[str, dict[str, Any]] = {
    "full": {},
    "no-pose-guidance": {"pose_guidance": False},
    "no-cross-attention": {"cross_attention": False},
    "no-gate": {"gate": False},
    "visual-only": {"modality": "visual"},
    "pose-only": {"modality": "pose"},
}
"""The paper's Table 2 and its single-modality baselines."""


def _uses(config: ClipMGConfig) -> tuple[bool, bool]:
    """(RGB, skeleton) inputs the config's modality uses."""
    return config.modality in ("both", "visual"), config.modality in ("both", "pose")


class ClipMGFamily(ModelFamily):
    arch = "clip-mg"
    config_type = ClipMGConfig
    configs = CONFIGS
    tiny = "clip-mg-tiny"
    backbone_prefixes = ("visual.",)
    ablations = ABLATIONS

    # ------------------------------------------------------------ building
    def build(self, config, clip_weights=None):
        from microgesture.core.clip_mg import ClipMG

        return ClipMG(config, clip_weights)

    def uses_clip_weights(self, config) -> bool:
        return config.modality != "pose"

    def with_clip_source(self, config, source: str):
        return config.replace({"clip.weights_source": source})

    def config_from_dict(self, data: dict[str, Any]):
        if isinstance(data.get("pose"), dict) and "windows" not in data["pose"]:
            data = {**data, "pose": {**data["pose"], "windows": "strided"}}  # written before the field existed
        return _build(ClipMGConfig, data, "config")

    # ------------------------------------------------------------ data
    def window(self, config) -> WindowSpec:
        visual, pose = _uses(config)
        heatmaps = (HeatmapSpec(kind="joints", size=config.pose.heatmap_size, sigma=config.pose.sigma,
                                crop="person") if pose else None)
        return WindowSpec(
            rgb_frames=config.rgb_frames if visual else 0,
            pose_frames=config.pose_frames if pose else 0,
            image_size=config.clip.image_size, mean=tuple(config.clip.mean), std=tuple(config.clip.std),
            layout=config.pose.layout, heatmaps=heatmaps,
            joints=visual and pose and config.pose_guidance,
            segments=config.rgb_frames if pose and config.pose.windows == "segments" else 0)

    def example_batch(self, config, batch: int = 2, seed: int = 0) -> dict[str, Any]:
        """CLIP-MG's whole input contract (frames, heatmaps and joints, whatever the
        modality: a modality ignores the inputs it does not use), as before the registry."""
        import torch

        from microgesture.core.layouts import get_layout

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

    def window_manifest(self, config) -> dict[str, Any]:
        # today's keys, also for single-modality models (old runtimes read them)
        return {"layout": config.pose.layout, "heatmap_size": config.pose.heatmap_size,
                "sigma": config.pose.sigma, "image_size": config.clip.image_size}

    # ------------------------------------------------------------ training and evaluation
    def predict(self, model, batch):
        visual, pose = _uses(model.config)
        return model(batch["frames"] if visual else None, batch["heatmaps"] if pose else None,
                     batch.get("joints"))

    def evaluation_extras(self, model, batch, collect: dict) -> Any:
        """Logits, collecting the first test clip with a person in every RGB frame with
        its patch relevance (``frames``, ``relevance``, ``clip``; ``no_person`` when no
        such clip comes) and every gate value (``gates``)."""
        if not model.use_visual:
            return self.predict(model, batch)
        b, r = batch["frames"].shape[:2]
        tokens = model.encode_frames(batch["frames"].flatten(0, 1)).unflatten(0, (b, r))
        pose = model.encode_pose(batch["heatmaps"]) if model.use_pose else None
        joints = batch.get("joints")
        logits, aux = model.fuse(tokens, pose, joints, return_aux=True)
        if "frames" not in collect:   # the first clip with a person in every RGB frame
            if joints is not None:
                person = (joints[..., 2] > 0).any(-1).all(-1)
            else:
                person = batch["frames"].new_zeros(b, dtype=bool)
            if person.any():
                i = int(person.nonzero()[0, 0])
                collect.update(frames=batch["frames"][i], relevance=aux["relevance"][i],
                               clip=len(collect.get("seen", ())) + i, person=True)
            else:
                collect.setdefault("no_person", (batch["frames"][0], aux["relevance"][0]))
            collect.setdefault("seen", []).extend([None] * len(person))
        if "gate" in aux:
            collect.setdefault("gates", []).append(aux["gate"].numpy())
        return logits

    def token_cache_supported(self, model) -> bool:
        return bool(model.use_visual)

    def predict_from_tokens(self, model, tokens, batch):
        pose = model.encode_pose(batch["heatmaps"]) if model.use_pose else None
        return model.fuse(tokens, pose, batch.get("joints"))

    # ------------------------------------------------------------ export and streaming
    def stages(self, model, batch: int = 2, seed: int = 0) -> list[StageSpec]:
        from microgesture.core.models.clip_mg_stages import stage_specs

        return stage_specs(model, self.example_batch(model.config, batch, seed))


FAMILY = ClipMGFamily()
