"""CLIP-MG: pose-guided semantic attention over CLIP ViT tokens (papers/clip-mg-summary.md).

Inputs and outputs are plain tensors with fixed names, so the same module
trains, exports and serves:

- ``frames``   (B, R, 3, S, S)  R RGB frames, normalised with the config's mean/std
- ``heatmaps`` (B, V, P, H, W)  Gaussian joint heatmaps of P pose frames
- ``joints``   (B, R, V, 3)     joints at the R RGB frames: x, y in [0, 1] of the
  RGB crop, and a score (0 = missing)
- ``logits``   (B, C)

The forward pass is split in stages so that streaming encodes every frame once:
:meth:`ClipMG.encode_frames` (per frame: CLIP tokens), :meth:`ClipMG.encode_pose`
(per window: 3D CNN over the heatmaps) and :meth:`ClipMG.fuse` (per window:
query, gate, cross-attention, head). :meth:`ClipMG.forward` chains them.

The paper leaves the exact fusion equations open; ours, per RGB frame t:

    w_t,p   = normalise_p( 1e-6 + sum_v s_v exp(-|c_p - j_v|^2 / 2 sigma^2) )   patch relevance
    q_t     = LN( sum_p w_t,p x_t,p + W_q f_t )        pose-guided semantic query
    g_t     = sigmoid( W_g [f_t ; x_t,cls] )           confidence gate (per channel)
    q^_t    = g_t * q_t + (1 - g_t) * x_t,cls          fall back on the CLS token
    z_t,p   = x_t,p + g_t * W_q f_t                    gated fusion of pose into tokens
    h       = mean_t LN( q^_t + MHA(q^_t, z, z) )      cross-attention over all frames' tokens
    logits  = MLP(h)

with x the CLIP tokens projected to the embedding, f_t the pose feature of
frame t's own segment of pose frames (:class:`SkeletonEncoder3D`: the P pose
frames are cut into R segments and each is encoded on its own, so f_t sees
exactly the pose frames centred on RGB frame t), c_p a patch centre and j_v, s_v
the joints.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from microgesture.core.clip import clip_visual
from microgesture.core.config import ClipMGConfig
from microgesture.core.layouts import get_layout


class SkeletonEncoder3D(nn.Module):
    """3D CNN over joint heatmaps (B, V, P, H, W) -> one feature per RGB frame (B, R, D).

    Each stage is a 3x3x3 convolution (strided as configured), batch norm and
    ReLU; the output is averaged over space and time and projected to D.

    ``segments=True`` (the paper's aligned windows, ``pose.windows="segments"``):
    the P pose frames are cut into R segments of P/R frames and the CNN runs on
    each segment on its own (zero padding at the segment's edges), so RGB frame
    r's feature comes from exactly pose frames [r P/R, (r + 1) P/R), whose span
    is centred on the RGB frame the sampler takes (``core.sampling``).
    ``segments=False`` (``strided``, the first version, kept for checkpoints and
    bundles made with it): the CNN runs over all P frames and its remaining time
    axis is pooled into R parts; with temporal strides (1, 2, 2) and P = 32 each
    part's receptive field is centred 1.5 pose frames before its segment's centre
    and half of it lies in the previous segment.
    """

    def __init__(self, in_channels: int, channels, spatial_strides, temporal_strides,
                 out_dim: int, windows: int, segments: bool = True):
        super().__init__()
        layers = []
        for cout, s, t in zip(channels, spatial_strides, temporal_strides):
            layers += [nn.Conv3d(in_channels, cout, 3, stride=(t, s, s), padding=1, bias=False),
                       nn.BatchNorm3d(cout), nn.ReLU(inplace=True)]
            in_channels = cout
        self.stages = nn.Sequential(*layers)
        self.proj = nn.Linear(in_channels, out_dim)
        self.windows = windows
        self.segments = segments

    def forward(self, heatmaps: Tensor) -> Tensor:
        if self.segments:
            _, v, p, h, w = heatmaps.shape
            r = self.windows
            x = heatmaps.reshape(-1, v, r, p // r, h, w).transpose(1, 2).reshape(-1, v, p // r, h, w)
            return self.encode_segment(x).reshape(-1, r, self.proj.out_features)
        x = self.stages(heatmaps).mean(dim=(3, 4))  # (B, C, T')
        if x.shape[-1] != self.windows:
            x = nn.functional.adaptive_avg_pool1d(x, self.windows)
        return self.proj(x.transpose(1, 2))  # (B, R, D)

    def encode_segment(self, segments: Tensor) -> Tensor:
        """One segment of P/R pose frames (N, V, P/R, H, W) -> its feature (N, D) (``segments``
        only). A segment's feature depends on its own frames alone, so streaming computes
        it once, when the segment's last pose frame has arrived, and every window that
        holds the segment reuses it: ``forward`` is these features stacked in time order."""
        if not self.segments:
            raise ValueError("encode_segment needs pose.windows='segments' (a 'strided' encoder "
                             "mixes neighbouring segments)")
        return self.proj(self.stages(segments).mean(dim=(2, 3, 4)))


class ClipMG(nn.Module):
    """CLIP-MG with the paper's ablation switches (``config.modality``,
    ``pose_guidance``, ``cross_attention``, ``gate``)."""

    def __init__(self, config: ClipMGConfig, clip_weights: str | None = None):
        super().__init__()
        self.config = config
        cfg = config
        self.use_visual = cfg.modality in ("both", "visual")
        self.use_pose = cfg.modality in ("both", "pose")
        num_joints = get_layout(cfg.pose.layout).num_joints
        if self.use_visual:
            self.visual = clip_visual(cfg.clip, clip_weights)
            dim = self.visual.output_dim
            gh, gw = self.visual.grid_size
            ys, xs = torch.meshgrid((torch.arange(gh) + 0.5) / gh, (torch.arange(gw) + 0.5) / gw,
                                    indexing="ij")
            self.register_buffer("patch_centres", torch.stack([xs, ys], -1).reshape(-1, 2),
                                 persistent=False)
            self.register_buffer("grid", torch.tensor([gw, gh], dtype=torch.float32),
                                 persistent=False)
        else:
            dim = cfg.hidden
        self.dim = dim
        if self.use_pose:
            p = cfg.pose
            self.pose_encoder = SkeletonEncoder3D(num_joints, p.channels, p.spatial_strides,
                                                  p.temporal_strides, dim, cfg.rgb_frames,
                                                  segments=p.windows == "segments")
        if self.use_visual and self.use_pose:
            self.pose_to_query = nn.Linear(dim, dim)
            self.gate = nn.Linear(2 * dim, dim) if cfg.gate else None
        self.query_norm = nn.LayerNorm(dim)
        if self.use_visual and cfg.cross_attention:
            self.attention = nn.MultiheadAttention(dim, cfg.attention_heads, batch_first=True)
        self.out_norm = nn.LayerNorm(dim)
        self.head = nn.Sequential(nn.Linear(dim, cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout),
                                  nn.Linear(cfg.hidden, cfg.num_classes))

    # ---------------------------------------------------------------- stages
    def encode_frames(self, frames: Tensor) -> Tensor:
        """Per-frame stage: images (N, 3, S, S) -> tokens (N, 1 + patches, D), CLS first,
        all projected into the CLIP embedding."""
        pooled, tokens = self.visual(frames)
        return torch.cat([pooled.unsqueeze(1), tokens @ self.visual.proj], dim=1)

    def encode_pose(self, heatmaps: Tensor) -> Tensor:
        """Per-window stage: heatmaps (B, V, P, H, W) -> pose features (B, R, D)."""
        return self.pose_encoder(heatmaps)

    def encode_pose_segment(self, segments: Tensor) -> Tensor:
        """Per-segment stage (``pose.windows="segments"``): the heatmaps of one segment of
        P/R pose frames (N, V, P/R, H, W) -> its pose feature (N, D); ``encode_pose`` of a
        window equals its R segments' features stacked (B, R, D)."""
        return self.pose_encoder.encode_segment(segments)

    def relevance(self, joints: Tensor) -> Tensor:
        """Patch relevance (B, R, patches) from joints (B, R, V, 3); sums to 1 over
        patches, uniform where no joint is present."""
        xy, score = joints[..., :2], joints[..., 2]
        valid = torch.isfinite(xy).all(-1) & torch.isfinite(score) & (score > 0)
        score = torch.where(valid, score, torch.zeros_like(score))
        xy = torch.where(valid.unsqueeze(-1), xy, torch.zeros_like(xy))
        # distances in patch units: (B, R, patches, V)
        diff = (self.patch_centres[:, None, :] - xy[:, :, None, :, :]) * self.grid
        d2 = (diff * diff).sum(-1)
        sigma = self.config.relevance_sigma
        w = (score[:, :, None, :] * torch.exp(-d2 / (2 * sigma * sigma))).sum(-1) + 1e-6
        return w / w.sum(-1, keepdim=True)

    def fuse(self, tokens: Tensor | None, pose: Tensor | None, joints: Tensor | None,
             return_aux: bool = False):
        """Per-window stage: tokens (B, R, 1 + patches, D), pose features (B, R, D),
        joints (B, R, V, 3) -> logits (B, C); with ``return_aux`` also a dict with
        the patch ``relevance`` (B, R, patches) and the ``gate`` (B, R, D)."""
        cfg, aux = self.config, {}
        if not self.use_visual:  # pose-only baseline
            h = self.out_norm(pose).mean(1)
            return (self.head(h), aux) if return_aux else self.head(h)
        cls, patches = tokens[:, :, 0], tokens[:, :, 1:]
        if self.use_pose and cfg.pose_guidance:
            weights = self.relevance(joints)
        else:
            weights = torch.full(patches.shape[:3], 1.0 / patches.shape[2],
                                 dtype=patches.dtype, device=patches.device)
        aux["relevance"] = weights
        query = (weights.unsqueeze(-1) * patches).sum(2)
        if self.use_pose:
            pose_q = self.pose_to_query(pose)
            query = self.query_norm(query + pose_q)
            if self.gate is not None:
                g = torch.sigmoid(self.gate(torch.cat([pose, cls], -1)))
                aux["gate"] = g
                query = g * query + (1 - g) * cls
                patches = patches + (g * pose_q).unsqueeze(2)
            else:
                patches = patches + pose_q.unsqueeze(2)
        else:
            query = self.query_norm(query)
        if cfg.cross_attention:
            b, r, p, d = patches.shape
            keys = patches.reshape(b, r * p, d)
            attended, _ = self.attention(query, keys, keys, need_weights=False)
            query = query + attended
        h = self.out_norm(query).mean(1)
        logits = self.head(h)
        return (logits, aux) if return_aux else logits

    # ---------------------------------------------------------------- whole window
    def forward(self, frames: Tensor, heatmaps: Tensor, joints: Tensor) -> Tensor:
        """Whole window: frames (B, R, 3, S, S), heatmaps (B, V, P, H, W),
        joints (B, R, V, 3) -> logits (B, C). Inputs a modality does not use
        are ignored (pass zeros)."""
        tokens = pose = None
        if self.use_visual:
            b, r = frames.shape[:2]
            tokens = self.encode_frames(frames.flatten(0, 1)).unflatten(0, (b, r))
        if self.use_pose:
            pose = self.encode_pose(heatmaps)
        return self.fuse(tokens, pose, joints)
