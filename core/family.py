"""One home per model family: what every family declares, and the registry.

A model family (CLIP-MG, the MiGA 2024 video CLIP student, PoseC3D, an ensemble)
is declared in one module under ``core/models/`` by a subclass of
:class:`ModelFamily`, registered once in :data:`FAMILY_MODULES`. The trainer,
evaluation, ablations, export, the bundle manifest and streaming use only this
interface: nothing outside a family's module checks a model's class or reads its
family-specific config fields.

What a family declares:

- ``arch`` (the ``arch`` field of its configs), ``config_type``, ``configs``
  (the named configurations, paper-sized and tiny) and ``tiny`` (the name the
  registry tests build);
- :meth:`ModelFamily.build` (config -> ``nn.Module`` carrying ``.config``);
- :meth:`ModelFamily.window` (torch-free :class:`WindowSpec`: what one window
  needs from the video, each input with its own sampling);
- :meth:`ModelFamily.loss` (``{name: tensor}``, the total is their sum; the
  trainer logs each) and :meth:`ModelFamily.predict` (evaluation's forward, logits);
- :meth:`ModelFamily.stages` (export and streaming: :class:`StageSpec` in run
  order, with their export wrappers and example inputs).

This module imports no torch: streaming reads a bundle's stage list and
composes it with :func:`run_stages`, the same rule export verification and the
registry tests use on PyTorch tensors.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from microgesture.core.errors import MicrogestureError, lookup

ROLES = ("per-frame", "per-segment", "per-window", "whole-window")
"""How a stage runs. ``per-frame``: on each sampled RGB frame alone (cached per frame
while streaming). ``per-segment``: on one RGB frame's segment of pose frames (cached
per segment). ``per-window``: on the window's inputs and earlier stages' outputs.
``whole-window``: a stage that mixes frames inside its encoder (streaming runs it
on the whole window, nothing is cached per frame)."""

HEATMAP_KINDS = ("joints", "limbs")


@dataclass(frozen=True)
class HeatmapSpec:
    """Pose heatmaps a window needs: ``kind`` (``joints``: one Gaussian per joint;
    ``limbs``: one map per limb), ``size`` in pixels (square; evaluation and
    streaming), ``train_size`` (training; PoseC3D trains at 56 and tests at 64),
    ``sigma`` in heatmap pixels, ``crop`` (``person``: the clip's person box, as
    CLIP-MG; ``skeleton``: the box around the skeleton over the clip, as PoseC3D)."""

    kind: str = "joints"
    size: int = 64
    train_size: int | None = None
    sigma: float = 0.6
    crop: str = "person"
    limbs: str = "anatomical"
    """The limb set for ``kind="limbs"`` (``core.layouts.limb_set``)."""

    def __post_init__(self):
        if self.kind not in HEATMAP_KINDS:
            raise MicrogestureError(f"heatmap kind must be one of {', '.join(HEATMAP_KINDS)}, got {self.kind!r}")

    def size_for(self, train: bool) -> int:
        return self.train_size if (train and self.train_size) else self.size


@dataclass(frozen=True)
class WindowSpec:
    """What one window of a model needs from the video (torch-free).

    Batch keys (training, evaluation, export examples and streaming alike):
    ``frames`` (B, rgb_frames, 3, S, S) normalised with ``mean``/``std``, when
    ``rgb_frames``; ``heatmaps`` (B, channels, pose_frames, H, W) when ``heatmaps``;
    ``joints`` (B, rgb_frames, V, 3) (x, y in the crop's [0, 1], score) when
    ``joints``; ``label`` (B,) in training and evaluation. RGB and pose frames are
    sampled independently over the same span with ``core.sampling``.
    """

    rgb_frames: int = 0
    pose_frames: int = 0
    image_size: int = 224
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    layout: str = "coco18"
    heatmaps: HeatmapSpec | None = None
    joints: bool = False
    segments: int = 0
    """Pose segments per window for ``per-segment`` stages (one per RGB frame; 0: none)."""
    text: bool = False
    """Whether the model's classes come from text prompts (open vocabulary)."""

    def keys(self) -> tuple[str, ...]:
        out = []
        if self.rgb_frames:
            out.append("frames")
        if self.heatmaps is not None:
            out.append("heatmaps")
        if self.joints:
            out.append("joints")
        return tuple(out)

    def to_dict(self) -> dict[str, Any]:
        import dataclasses

        return dataclasses.asdict(self)


@dataclass
class StageSpec:
    """One exported stage: ``name`` (the ONNX file's stem), ``role`` (:data:`ROLES`),
    ``inputs`` and ``outputs`` (names, in order). ``module``: the export wrapper
    (an ``nn.Module`` whose ``forward`` takes the inputs in order and returns the
    outputs, a tensor or a tuple); ``example``: example inputs ``{name: tensor}`` with
    the batch on axis 0 (batch >= 2); both None when read back from a manifest.
    ``replaces``: stages this one stands in for when a runtime can cache its
    outputs (``pose_segment`` replaces ``pose``); :func:`run_stages` skips it."""

    name: str
    role: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    module: Any = None
    example: Mapping[str, Any] | None = None
    replaces: tuple[str, ...] = ()

    def __post_init__(self):
        if self.role not in ROLES:
            raise MicrogestureError(f"stage {self.name}: role must be one of {', '.join(ROLES)}, got {self.role!r}")


def window_segments(heatmaps, segments: int):
    """A window's heatmaps (B, V, P, H, W) cut into its segments (B * R, V, P/R, H, W), in
    window-major, time order (numpy arrays and torch tensors alike)."""
    b, v, p, h, w = heatmaps.shape
    x = heatmaps.reshape(b, v, segments, p // segments, h, w).swapaxes(1, 2)
    return x.reshape(b * segments, v, p // segments, h, w)


def run_stages(stages: Sequence[StageSpec], window: Mapping[str, Any],
               run: Callable[[str, dict[str, Any]], Mapping[str, Any]], segments: int = 0,
               use: Sequence[str] | None = None) -> dict[str, Any]:
    """Compose a model's stages on one batch of windows; returns every value (the
    window's inputs and all stage outputs; the model's answer is ``logits``).

    ``run(stage_name, feeds) -> {output: array}`` runs one stage (PyTorch wrapper,
    ONNX Runtime session, TensorRT engine). ``per-frame`` stages get each window's
    frames flattened into the batch axis and their outputs are folded back to
    (B, R, ...); ``per-segment`` stages get each window's ``segments`` segments;
    the others get the window as is. A stage whose outputs are all already in
    ``window`` (per-frame tokens cached while streaming) is not run. ``use``:
    the stage names to run (default: all but those that only replace others).
    """
    values = dict(window)
    wanted = set(use) if use is not None else {s.name for s in stages if not s.replaces}
    for stage in stages:
        if stage.name not in wanted or all(o in values for o in stage.outputs):
            continue
        missing = [n for n in stage.inputs if n not in values]
        if missing:
            raise MicrogestureError(f"stage {stage.name} needs {', '.join(missing)}, which neither the "
                                    "window nor an earlier stage provides")
        feeds = {n: values[n] for n in stage.inputs}
        if stage.role == "per-frame":
            b, r = next(iter(feeds.values())).shape[:2]
            feeds = {n: x.reshape(b * r, *x.shape[2:]) for n, x in feeds.items()}
            out = {k: v.reshape(b, r, *v.shape[1:]) for k, v in run(stage.name, feeds).items()}
        elif stage.role == "per-segment":
            if segments < 1:
                raise MicrogestureError(f"stage {stage.name} runs per segment: give the segments per window")
            b = next(iter(feeds.values())).shape[0]
            feeds = {n: window_segments(x, segments) for n, x in feeds.items()}
            out = {k: v.reshape(b, segments, *v.shape[1:]) for k, v in run(stage.name, feeds).items()}
        else:
            out = dict(run(stage.name, feeds))
        for k in stage.replaces:  # a per-segment stage's outputs stand for the stage it replaces
            wanted.discard(k)
        values.update(out)
    return values


class ModelFamily:
    """What a model family declares (subclass it in ``core/models/<family>.py``).

    Torch is imported inside the methods that need it, so reading the registry
    (configs, window specs) stays torch-free.
    """

    arch: str = ""
    config_type: type = object
    configs: dict[str, Any] = {}
    tiny: str = ""
    """The named config the registry tests build (small enough for CI)."""
    backbone_prefixes: tuple[str, ...] = ()
    """Parameter-name prefixes of pretrained weights trained at ``train.backbone_lr_scale``."""
    ablations: dict[str, dict[str, Any]] = {"full": {}}
    """``microgesture ablate``'s set: name -> config overrides (``full``: the config as is)."""

    # ------------------------------------------------------------ building
    def build(self, config, clip_weights: str | None = None):
        """Config -> ``nn.Module`` (with ``.config``), random or from ``clip_weights``."""
        raise NotImplementedError

    def build_for_inference(self, config):
        """The model evaluation, export and checkpoint loading rebuild before loading its
        weights: no training-only parts (a distillation teacher) and no reading of training
        inputs (text-alignment targets come from the checkpoint). Default: :meth:`build`."""
        return self.build(config)

    def uses_clip_weights(self, config) -> bool:
        """Whether ``train --clip-weights`` applies (the model starts from a CLIP)."""
        return False

    def with_clip_source(self, config, source: str):
        """The config recording where its CLIP weights came from."""
        return config

    def clip_tower(self, config):
        """The ``core.config.ClipConfig`` whose weights ``train --clip-weights`` loads
        (when :meth:`uses_clip_weights`); default: the config's ``clip`` field."""
        return getattr(config, "clip", None)

    def config_from_dict(self, data: dict[str, Any]):
        """Rebuild this family's config from ``to_dict`` output (old fields upgraded here)."""
        from microgesture.core.config import _build

        return _build(self.config_type, data, "config")

    # ------------------------------------------------------------ data
    def window(self, config) -> WindowSpec:
        """What one window needs from the video."""
        raise NotImplementedError

    def example_batch(self, config, batch: int = 2, seed: int = 0) -> dict[str, Any]:
        """Random model inputs with the window's keys and shapes (tests, export examples)."""
        import torch

        spec = self.window(config)
        g = torch.Generator().manual_seed(seed)
        out = {}
        from microgesture.core.layouts import get_layout

        layout = get_layout(spec.layout)
        v = layout.num_joints
        if spec.rgb_frames:
            s = spec.image_size
            out["frames"] = torch.randn(batch, spec.rgb_frames, 3, s, s, generator=g)
        if spec.heatmaps is not None:
            hm = spec.heatmaps.size
            ch = v if spec.heatmaps.kind == "joints" else len(layout.limb_set(spec.heatmaps.limbs))
            out["heatmaps"] = torch.rand(batch, ch, spec.pose_frames, hm, hm, generator=g)
        if spec.joints:
            joints = torch.rand(batch, spec.rgb_frames, v, 3, generator=g)
            joints[..., 2] = (joints[..., 2] > 0.2).float() * joints[..., 2]
            out["joints"] = joints
        return out

    # ------------------------------------------------------------ training and evaluation
    def predict(self, model, batch: Mapping[str, Any]):
        """Evaluation's forward: logits (B, C)."""
        raise NotImplementedError

    def loss(self, model, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Named loss terms (their sum is minimised; the trainer logs each). Default:
        cross-entropy of :meth:`predict` with the config's label smoothing."""
        import torch.nn.functional as F

        logits = self.predict(model, batch)
        return {"loss_ce": F.cross_entropy(logits.float(), batch["label"],
                                           label_smoothing=model.config.train.label_smoothing)}

    def evaluation_extras(self, model, batch: Mapping[str, Any], collect: dict) -> Any:
        """Evaluation's forward (logits) that may also collect what the family can show
        into ``collect`` (``training.evaluate`` draws: ``frames`` (R, 3, S, S) normalised
        with ``relevance`` (R, patches) and ``clip``, or ``no_person``: (frames,
        relevance); ``gates``: a list of arrays). Default: :meth:`predict`, nothing collected."""
        return self.predict(model, batch)

    def token_cache_supported(self, model) -> bool:
        """Whether ``train --token-cache`` (``training.token_cache``: the frozen CLIP
        blocks' tokens cached per view) applies to this model."""
        return False

    def predict_from_tokens(self, model, tokens, batch: Mapping[str, Any]):
        """Logits from the per-frame CLIP tokens (B, R, 1 + patches, D) the token cache
        computed and the batch's other inputs (families with :meth:`token_cache_supported`)."""
        raise NotImplementedError(f"{self.arch} has no token cache")

    # ------------------------------------------------------------ export and streaming
    def stages(self, model, batch: int = 2, seed: int = 0) -> list[StageSpec]:
        """The stages, in run order, with export wrappers and example inputs."""
        raise NotImplementedError

    # ------------------------------------------------------------ open vocabulary (optional)
    def set_classes(self, model, labels: Sequence[str], templates: Sequence[str] | None = None) -> None:
        """Recognise ``labels`` from now on, without retraining (only families whose classes
        come from text, ``window(config).text``); ``templates``: prompt templates with ``{}``."""
        raise MicrogestureError(f"{self.arch} models learn their classes in training and cannot take a new "
                                "class list; use a text-prompted model (e.g. miga24-vclip-b16)")

    def text_embeddings(self, model, labels: Sequence[str] | None = None):
        """The normalised class text embeddings (C, D) of ``labels`` (default: the model's own
        classes); PoseC3D's text-alignment targets (``train --text-from RUN``)."""
        raise MicrogestureError(f"{model.config.name} ({self.arch}) has no class text embeddings: "
                                "pass a trained miga24-vclip run")

    def window_manifest(self, config) -> dict[str, Any]:
        """Extra fields of the bundle's ``window`` section (besides the sampling)."""
        return {}


FAMILY_MODULES: dict[str, str] = {
    "clip-mg": "microgesture.core.models.clip_mg",
    "miga24-vclip": "microgesture.core.models.miga24_vclip",
    "miga24-posec3d": "microgesture.core.models.miga24_posec3d",
}
"""Architecture name -> the module declaring its family (imported on first use).
A module declares ``FAMILY = <ModelFamily subclass>()``."""


def get_family(arch: str) -> ModelFamily:
    """The family of an architecture name (``config.arch``)."""
    module = lookup(FAMILY_MODULES, arch, "architecture")
    return importlib.import_module(module).FAMILY


def family_of(config_or_model) -> ModelFamily:
    """The family of a config or of a model carrying ``.config``."""
    config = getattr(config_or_model, "config", config_or_model)
    return get_family(config.arch)


def all_families() -> list[ModelFamily]:
    return [get_family(a) for a in FAMILY_MODULES]


def all_configs() -> dict[str, Any]:
    """Every named configuration of every family (``microgesture models``)."""
    out: dict[str, Any] = {}
    for fam in all_families():
        out.update(fam.configs)
    return out
