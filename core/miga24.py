"""The MiGA 2024 video CLIP student, distilled from a frozen CLIP teacher as FROSTER does.

papers/miga24-clip-multimodal.md; implementation facts in DESIGN.md ("The
MiGA 2024 model"). An open_clip model (image and text towers, both
fine-tuned) runs its image tower with VCLIP temporal attention and token decay
(core/vclip.py) on the frames of a clip:

    f_t      = CLIP image feature of frame t, frames mixing inside every block
    v        = normalise(mean_t f_t)                                   temporal average pooling
    z_c      = normalise(mean_p normalise(text(prompt_p(class c))))    prompt-averaged class embedding
    logits   = min(exp(s), 100) * v . z_c                              s: CLIP's learnable logit scale

Prompts (core/prompts.py): evaluation averages the bare name and all
templates; a training step uses the bare name and one random template.

FROSTER distillation (:meth:`VClipStudent.loss`): a frozen copy of the CLIP
taken when the student is built encodes each frame on its own (no temporal
attention, no decay) and the same prompts. Residual projectors
``P(f) = f + alpha * MLP(f)`` (Linear without bias -> GELU -> Linear, the
last layer zero-initialised, so P is the identity at first) map the
student's normalised frame features and class embeddings towards the
teacher's; they are used only in the distillation terms, never in the logits:

    loss = CE(logits, y) + w_v * mean_{b,t} (1 - cos(P_v(f_bt), F_bt)) + w_t * mean_c (1 - cos(P_t(z_c), Z_c))

with F, Z the teacher's frame features and class embeddings (the paper writes
an L2 distance; FROSTER's code uses the cosine).

Checkpoints: :meth:`VClipStudent.state_dict` leaves the teacher out (it is a
copy of the CLIP the student started from, as large as the student, and
evaluation, export and streaming never use it); loading a state without
teacher weights is not a mismatch. Resuming training rebuilds the teacher from
the same ``clip_weights`` (the config records their source); a student built
with ``teacher=False`` is what evaluation and export load.

Plain tensors in and out for export: ``forward(frames (B, T, 3, S, S)) ->
logits (B, C)`` uses class embeddings cached from the text tower; they are
recomputed after training steps and when :meth:`set_classes` changes the
classes (open vocabulary: new classes need no retraining of the text side).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from microgesture.core.clip import clip_tokenizer, create_clip, lock_visual
from microgesture.core.errors import MicrogestureError
from microgesture.core.miga24_config import VClipConfig
from microgesture.core.prompts import check_templates, class_prompts, training_prompts
from microgesture.core.vclip import check_vit, vclip_encode

LOGIT_SCALE_MAX = 100.0


class ResidualProjector(nn.Module):
    """``f + alpha * MLP(f)``: Linear(dim, dim, no bias) -> GELU -> Linear(dim, dim), the last layer
    zero-initialised, so the projector starts as the identity."""

    def __init__(self, dim: int, alpha: float = 0.1):
        super().__init__()
        self.alpha = alpha
        self.mlp = nn.Sequential(nn.Linear(dim, dim, bias=False), nn.GELU(), nn.Linear(dim, dim))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def forward(self, f: Tensor) -> Tensor:
        return f + self.alpha * self.mlp(f)


def distance(a: Tensor, b: Tensor) -> Tensor:
    """Mean of ``1 - cos`` over all leading positions of (..., D) features."""
    return (1 - F.cosine_similarity(a, b, dim=-1)).mean()


class VClipStudent(nn.Module):
    """The video CLIP student (``miga24-vclip-*``). ``teacher=False`` builds it without the
    frozen teacher (inference and export: :meth:`loss` then has no distillation terms)."""

    input_names = ("frames",)
    output_names = ("logits",)

    def __init__(self, config: VClipConfig, clip_weights: str | None = None, teacher: bool = True,
                 seed: int | None = None):
        super().__init__()
        self.config = config
        self.clip = create_clip(config.clip, clip_weights)
        check_vit(self.clip.visual)
        lock_visual(self.clip.visual, config.clip.trainable_blocks)
        self.tokenizer = clip_tokenizer(config.clip)
        dim = self.clip.text_projection.shape[-1]
        self.dim = dim
        self.visual_projector = ResidualProjector(dim, config.projector_alpha)
        self.text_projector = ResidualProjector(dim, config.projector_alpha)
        distill = config.distill_visual > 0 or config.distill_text > 0
        self.teacher = copy.deepcopy(self.clip).requires_grad_(False).eval() if teacher and distill else None
        self.register_load_state_dict_post_hook(_teacher_not_needed)
        n = len(self.clip.visual.transformer.resblocks)
        late = [b for b in config.decay_blocks if b >= n]
        if late:
            raise MicrogestureError(f"decay_blocks {late} are beyond the {n} blocks of {config.clip.arch}")
        self.decay = {b: config.decay_keep for b in config.decay_blocks}
        self.rng = random.Random(seed)
        self.register_buffer("class_embeddings", torch.zeros(len(config.labels), dim), persistent=False)
        self._stale = True

    # ---------------------------------------------------------------- pieces
    def state_dict(self, *args, **kwargs):
        """The student's weights without the frozen teacher's (module docstring, "Checkpoints")."""
        state = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", args[1] if len(args) > 1 else "")
        for key in [k for k in state if k.startswith(prefix + "teacher.")]:
            del state[key]
        return state

    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # the teacher is frozen: no dropout, ever
        return self

    def encode_video(self, frames: Tensor, kept: list | None = None) -> Tensor:
        """Frames (B, T, 3, S, S) -> the student's per-frame features (B, T, D), not normalised."""
        return vclip_encode(self.clip.visual, frames, self.config.temporal, self.decay, kept)

    def encode_prompts(self, prompts: Sequence[Sequence[str]], clip: nn.Module | None = None) -> Tensor:
        """Class embeddings (C, D): per class, the normalised mean of its prompts' normalised
        text features (``prompts``: C lists of the same length)."""
        clip = clip if clip is not None else self.clip
        per_class = {len(p) for p in prompts}
        if len(per_class) != 1:
            raise ValueError("every class needs the same number of prompts")
        device = self.class_embeddings.device
        tokens = self.tokenizer([p for ps in prompts for p in ps]).to(device)
        text = F.normalize(clip.encode_text(tokens), dim=-1).unflatten(0, (len(prompts), per_class.pop()))
        return F.normalize(text.mean(1), dim=-1)

    def logits(self, frame_features: Tensor, class_embeddings: Tensor) -> Tensor:
        """Per-frame features (B, T, D), class embeddings (C, D) -> scaled cosine logits (B, C)."""
        video = F.normalize(frame_features.mean(1), dim=-1)
        scale = self.clip.logit_scale.exp().clamp(max=LOGIT_SCALE_MAX)
        return scale * video @ class_embeddings.t()

    # ---------------------------------------------------------------- classes
    @property
    def labels(self) -> tuple[str, ...]:
        return self.config.labels

    def set_classes(self, labels: Sequence[str], templates: Sequence[str] | None = None) -> None:
        """Recognise ``labels`` from now on (open vocabulary), optionally with other prompt templates."""
        labels = tuple(labels)
        if not labels or any(not isinstance(n, str) or not n.strip() for n in labels):
            raise MicrogestureError("the class list must hold at least one non-empty class name per line")
        changes = {"labels": labels}
        if templates is not None:
            changes["templates"] = check_templates(templates)
        self.config = self.config.replace(changes)
        self.class_embeddings = self.class_embeddings.new_zeros(len(labels), self.dim)
        self._stale = True

    @torch.no_grad()
    def refresh_text(self) -> Tensor:
        """Recompute the cached evaluation class embeddings (all templates and the bare name)."""
        self.class_embeddings = self.encode_prompts(class_prompts(self.labels, self.config.templates))
        self._stale = False
        return self.class_embeddings

    # ---------------------------------------------------------------- training and inference
    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """``batch["frames"]`` (B, T, 3, S, S), ``batch["label"]`` (B,) -> weighted loss terms
        ``loss_ce``, ``loss_distill_visual``, ``loss_distill_text`` (the total is their sum;
        the distillation terms only with a teacher and a weight > 0)."""
        cfg = self.config
        frames, label = batch["frames"], batch["label"]
        prompts = training_prompts(self.labels, cfg.templates, self.rng)
        features = self.encode_video(frames)
        text = self.encode_prompts(prompts)
        self._stale = True  # the towers are about to change
        terms = {"loss_ce": F.cross_entropy(self.logits(features, text), label)}
        if self.teacher is None:
            return terms
        with torch.no_grad():
            if cfg.distill_visual > 0:
                target = self.teacher.encode_image(frames.flatten(0, 1)).unflatten(0, frames.shape[:2])
            if cfg.distill_text > 0:
                target_text = self.encode_prompts(prompts, self.teacher)
        if cfg.distill_visual > 0:
            projected = self.visual_projector(F.normalize(features, dim=-1))
            terms["loss_distill_visual"] = cfg.distill_visual * distance(projected, target)
        if cfg.distill_text > 0:
            terms["loss_distill_text"] = cfg.distill_text * distance(self.text_projector(text), target_text)
        return terms

    def forward(self, frames: Tensor) -> Tensor:
        """Frames (B, T, 3, S, S), normalised with the config's mean/std -> logits (B, C)."""
        if self._stale:
            self.refresh_text()
        return self.logits(self.encode_video(frames), self.class_embeddings)

    def class_text_embeddings(self) -> Tensor:
        """The normalised, prompt-averaged class embeddings (C, D): PoseC3D's text-alignment targets."""
        return self.refresh_text().clone() if self._stale else self.class_embeddings.clone()


def _teacher_not_needed(module: VClipStudent, incompatible) -> None:
    """A checkpoint holds no teacher weights: their absence is not a mismatch."""
    incompatible.missing_keys[:] = [k for k in incompatible.missing_keys if ".teacher." not in f".{k}"]


def create_vclip(config: VClipConfig, clip_weights: str | None = None, teacher: bool = True,
                 seed: int | None = None) -> VClipStudent:
    """Build the student (random initialisation made reproducible by ``seed``)."""
    if seed is not None:
        torch.manual_seed(seed)
    return VClipStudent(config, clip_weights, teacher, seed)
