"""VCLIP temporal attention and token decay over an open_clip ViT, with no new parameters.

:func:`vclip_encode` runs an open_clip ``VisionTransformer`` on the frames of
a clip with two changes inside every block (DESIGN.md, "The MiGA 2024 model"):

- **Temporal attention** (Open-VCLIP): the queries of frame t attend to the
  keys and values of frames t+1, t-1 and t, concatenated along the token axis
  in that order. Past the ends of the clip the missing neighbour is a block of
  zero keys and values (after the projection, bias included): it is not
  masked, so each zero key still takes ``exp(0)`` of the softmax mass and
  dilutes the attention of the first and last frames, as the public code does.
  The order of the three blocks does not change the result (attention is a sum
  over keys); it is kept as published.
- **Token decay** (the MiGA 2024 paper): in the blocks of ``decay`` (0-based
  index -> keep fraction), after the attention and before the MLP, each frame
  keeps the ``ceil(keep * P)`` of its P patch tokens with the highest
  similarity ``S(q_cls, K_c) = softmax(q_cls K_c^T / sqrt(d))`` (averaged over
  heads) between its CLS query and its own frame's keys; CLS is never dropped.
  Kept tokens stay in their original order, so keeping all of them is exactly
  the full computation. Later blocks see the kept tokens only.

The frame feature is the CLS token after ``ln_post`` and ``proj``, as CLIP's
image feature. With ``temporal=False`` and no decay this is open_clip's own
``encode_image`` (tested).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from microgesture.core.errors import MicrogestureError


def check_vit(visual: nn.Module) -> None:
    """Refuse an open_clip image tower this module cannot run (not a plain CLS-pooled ViT)."""
    needed = ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer", "ln_post")
    missing = [n for n in needed if not hasattr(visual, n)]
    if missing or getattr(visual, "attn_pool", None) is not None \
            or getattr(visual, "pool_type", "tok") != "tok":
        raise MicrogestureError(f"VCLIP needs an open_clip ViT with a CLS token and no attention pooling "
                                f"(e.g. ViT-B-16-quickgelu); {type(visual).__name__} is not one"
                                + (f" (no {', '.join(missing)})" if missing else ""))
    for block in visual.transformer.resblocks:
        if not isinstance(getattr(block, "attn", None), nn.MultiheadAttention):
            raise MicrogestureError("VCLIP needs open_clip's standard ResidualAttentionBlock "
                                    "(nn.MultiheadAttention); this CLIP uses custom attention blocks")


def kept_count(patches: int, keep: float) -> int:
    """How many of ``patches`` tokens a frame keeps at a decay block: ``ceil(keep * patches)``, at least 1."""
    return max(1, min(patches, math.ceil(keep * patches - 1e-9)))


def embed(visual: nn.Module, images: Tensor) -> Tensor:
    """Images (N, 3, S, S) -> tokens (N, 1 + P, W) as the ViT's first block sees them."""
    x = visual.conv1(images).flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    return visual.ln_pre(visual.patch_dropout(x))


def neighbour_blocks(z: Tensor, frames: int) -> Tensor:
    """Keys or values (B*T, H, L, d) -> (B*T, H, 3L, d): frame t's [t+1 | t-1 | t], zero blocks past the ends."""
    z = z.unflatten(0, (-1, frames))  # (B, T, H, L, d)
    zero = torch.zeros_like(z[:, :1])
    following = torch.cat([z[:, 1:], zero], dim=1)
    previous = torch.cat([zero, z[:, :-1]], dim=1)
    return torch.cat([following, previous, z], dim=3).flatten(0, 1)


def decay_tokens(x: Tensor, q_cls: Tensor, k_own: Tensor, keep: float) -> tuple[Tensor, Tensor]:
    """Keep CLS and the top patch tokens of each frame.

    x (N, L, W) tokens, q_cls (N, H, 1, d) the CLS query, k_own (N, H, L, d) the
    frame's own keys -> tokens (N, 1 + k, W) and their indices (N, 1 + k) into L
    (CLS first, then ascending).
    """
    scores = torch.softmax(q_cls @ k_own.transpose(-1, -2) * q_cls.shape[-1] ** -0.5, dim=-1)
    scores = scores.mean(1)[:, 0, 1:]  # (N, P): heads averaged, CLS's own score left out
    k = kept_count(scores.shape[-1], keep)
    top = scores.topk(k, dim=-1).indices.sort(dim=-1).values + 1
    index = torch.cat([torch.zeros_like(top[:, :1]), top], dim=1)
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1])), index


def vclip_block(block: nn.Module, x: Tensor, frames: int, temporal: bool = True,
                keep: float | None = None) -> tuple[Tensor, Tensor | None]:
    """One open_clip ``ResidualAttentionBlock`` on tokens x (B*T, L, W), batch first.

    Returns the new tokens and, at a decay block, the kept indices (else None).
    """
    attn = block.attn
    h = block.ln_1(x)
    heads = attn.num_heads
    q, k, v = (z.unflatten(-1, (heads, -1)).transpose(1, 2)
               for z in F.linear(h, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1))
    own = k
    if temporal:
        k, v = neighbour_blocks(k, frames), neighbour_blocks(v, frames)
    y = F.scaled_dot_product_attention(q, k, v, dropout_p=attn.dropout if attn.training else 0.0)
    x = x + block.ls_1(attn.out_proj(y.transpose(1, 2).flatten(2)))
    index = None
    if keep is not None:
        x, index = decay_tokens(x, q[:, :, :1], own, keep)
    x = x + block.ls_2(block.mlp(block.ln_2(x)))
    return x, index


def vclip_encode(visual: nn.Module, frames: Tensor, temporal: bool = True,
                 decay: dict[int, float] | None = None, kept: list | None = None) -> Tensor:
    """Frames (B, T, 3, S, S) -> per-frame features (B, T, D) (CLIP's image feature of each frame).

    ``decay``: 0-based block index -> keep fraction. ``kept``: a list that
    receives the kept indices (B*T, 1 + k) of each decay block, in block order.
    """
    b, t = frames.shape[:2]
    x = embed(visual, frames.flatten(0, 1))
    decay = decay or {}
    for i, block in enumerate(visual.transformer.resblocks):
        x, index = vclip_block(block, x, t, temporal, decay.get(i))
        if index is not None and kept is not None:
            kept.append(index)
    x = visual.ln_post(x[:, 0])
    if getattr(visual, "proj", None) is not None:
        x = x @ visual.proj
    return x.unflatten(0, (b, t))
