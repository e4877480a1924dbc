"""Cache the frozen CLIP blocks' per-frame tokens, so a training step runs only the
trainable part (``microgesture train --token-cache VIEWS``).

CLIP-MG freezes its ViT but the last ``clip.trainable_blocks`` blocks. Everything
before them (patch embedding, positions, ``ln_pre``, the frozen blocks) gives the
same tokens for the same image in every epoch, and it is most of a step's cost. The
cache runs it once per clip and *view*: view ``v`` is exactly the training item of
epoch ``v`` (``ClipDataset``'s random sampling, crop and flip come from (seed,
epoch, clip)), and epoch ``e`` trains on view ``e % VIEWS``. Items then carry
heatmaps and joints but no frames (``ClipDataset.decode_frames = False``; the same
random draws, so they match the cached view), and the step runs the trainable
blocks, the pose encoder and the head. The validation clips are cached too (one
view: validation has no augmentation), so validation is exact and cheap.

The trade: augmentation is limited to VIEWS crops and samplings per clip (a view
repeats every VIEWS epochs). Tokens are stored as float16 in a memory-mapped file
(``RUN/token_cache/``): (views, clips, frames, tokens, width), e.g. 0.6 MB per clip
and view for ViT-B/32 at 224 px. A run resumed with ``--resume`` reuses its cache.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from microgesture.core.errors import MicrogestureError
from microgesture.core.family import family_of
from microgesture.core.paths import atomic_write
from microgesture.core.progress import Progress
from microgesture.training.transforms import ClipDataset, make_loader

CACHE_DIR = "token_cache"


# ----------------------------------------------------------------------------- the split ViT

def frozen_blocks(visual: nn.Module) -> int:
    """How many leading transformer blocks of an open_clip ViT are frozen, checking that
    everything before them is frozen too (else nothing can be cached)."""
    blocks = visual.transformer.resblocks
    count = next((i for i, b in enumerate(blocks) if any(p.requires_grad for p in b.parameters())),
                 len(blocks))
    stem = [n for n, p in visual.named_parameters()
            if p.requires_grad and not n.startswith(("transformer.", "ln_post", "proj"))]
    if stem or count == 0:
        raise MicrogestureError("the token cache needs frozen early CLIP blocks; this model trains "
                                "the whole tower (clip.trainable_blocks = -1): train without "
                                "--token-cache")
    if not isinstance(visual.patch_dropout, nn.Identity):
        raise MicrogestureError("the token cache cannot be used with CLIP patch dropout")
    return count


@torch.no_grad()
def frozen_tokens(visual: nn.Module, frames: Tensor, count: int) -> Tensor:
    """Images (N, 3, S, S) -> the hidden tokens after the ``count`` frozen blocks
    (N, 1 + patches, width), as ``VisionTransformer.forward`` computes them."""
    x = visual._embeds(frames)
    batch_first = getattr(visual.transformer, "batch_first", True)
    if not batch_first:
        x = x.transpose(0, 1)
    for block in visual.transformer.resblocks[:count]:
        x = block(x)
    return x if batch_first else x.transpose(0, 1)


def tokens_from_hidden(model: nn.Module, hidden: Tensor, count: int) -> Tensor:
    """The trainable rest of the model's per-frame CLIP encoding (CLIP-MG's ``encode_frames``): hidden tokens (N, T, width) ->
    (N, 1 + patches, D), CLS first, projected into the CLIP embedding."""
    visual = model.visual
    batch_first = getattr(visual.transformer, "batch_first", True)
    x = hidden if batch_first else hidden.transpose(0, 1)
    for block in visual.transformer.resblocks[count:]:
        x = block(x)
    x = x if batch_first else x.transpose(0, 1)
    pooled, tokens = visual._pool(x)
    if visual.proj is not None:
        pooled = pooled @ visual.proj
    return torch.cat([pooled.unsqueeze(1), tokens @ visual.proj], dim=1)


def forward(model: nn.Module, batch: dict[str, Tensor], count: int | None = None) -> Tensor:
    """Logits for a batch: from cached ``hidden`` tokens when the batch has them (only
    the trainable part runs), else the whole model."""
    if "hidden" not in batch:
        return family_of(model).predict(model, batch)
    hidden = batch["hidden"].to(torch.float32)
    b, r = hidden.shape[:2]
    count = frozen_blocks(model.visual) if count is None else count
    tokens = tokens_from_hidden(model, hidden.flatten(0, 1), count).unflatten(0, (b, r))
    return family_of(model).predict_from_tokens(model, tokens, batch)


# ----------------------------------------------------------------------------- the cache

class CachedClips(torch.utils.data.Dataset):
    """A :class:`ClipDataset` whose items carry the cached ``hidden`` tokens of the
    current epoch's view instead of frames."""

    def __init__(self, base: ClipDataset, path: Path, shape: tuple[int, ...]):
        self.base, self.path, self.shape = base, Path(path), tuple(shape)
        self.views = shape[0]
        base.decode_frames = False
        self._tokens = None

    def __len__(self) -> int:
        return len(self.base)

    @property
    def seed(self) -> int:
        return self.base.seed

    @property
    def bad(self) -> int:
        return self.base.bad

    def __getstate__(self):   # workers open the memory map themselves
        return {**self.__dict__, "_tokens": None}

    @property
    def epoch(self) -> int:
        return self.base.epoch

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(int(epoch) % self.views)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        if self._tokens is None:
            self._tokens = np.load(self.path, mmap_mode="r")
        item = self.base[i]
        j = int(item["index"])
        item["hidden"] = torch.from_numpy(np.array(self._tokens[self.base.epoch % self.views, j]))
        item.pop("frames", None)
        return item


def _meta(model: nn.Module, dataset: ClipDataset, views: int, count: int) -> dict[str, Any]:
    visual = model.visual
    digest = float(sum(p.detach().double().sum() for p in visual.parameters() if not p.requires_grad))
    return {"views": views, "clips": len(dataset), "frozen_blocks": count, "train": dataset.train,
            "seed": dataset.seed, "clip_ids": [r.clip_id for r in dataset.index.records],
            "config": model.config.to_dict(), "frozen_weights_sum": digest}


def build(model: nn.Module, dataset: ClipDataset, folder: Path, name: str, views: int,
          batch_size: int = 8, workers: int = 0, device: torch.device | str = "cpu",
          progress: bool = True) -> CachedClips:
    """Cache ``views`` views of every clip of ``dataset`` (a fixed number of augmented
    views for training, 1 for validation) in ``folder/name.npy``; a cache written
    before for the same clips, views and frozen weights is reused."""
    if views < 1:
        raise MicrogestureError(f"token_cache views must be at least 1, got {views}")
    if not family_of(model).token_cache_supported(model):
        raise MicrogestureError(f"--token-cache caches CLIP tokens; model {model.config.name!r} has "
                                "none to cache (no RGB input, e.g. modality pose, or a family "
                                "without the cache): train without --token-cache")
    count = frozen_blocks(model.visual)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path, meta_path = folder / f"{name}.npy", folder / f"{name}.json"
    meta = json.loads(json.dumps(_meta(model, dataset, views, count)))   # as read back
    spec = family_of(model).window(model.config)
    r, size = spec.rgb_frames, spec.image_size
    probe = frozen_tokens(model.visual, torch.zeros(1, 3, size, size, device=device), count)
    shape = (views, len(dataset), r) + tuple(probe.shape[1:])
    if meta_path.is_file() and path.is_file():
        try:
            old = json.loads(meta_path.read_text())
        except ValueError:
            old = None
        if old is not None and old.get("meta") == meta and tuple(old.get("shape", ())) == shape:
            return CachedClips(dataset, path, shape)
    meta_path.unlink(missing_ok=True)   # written last: a half-built cache is never reused
    tokens = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=shape)
    filled = np.zeros(shape[:2], bool)
    model.eval()
    done, bar = 0, Progress(f"token cache {name}", views * len(dataset), "clips", rate="clips/s",
                            enabled=progress)
    for v in range(views):
        dataset.set_epoch(v)
        loader = make_loader(dataset, batch_size, train=False, workers=workers)
        for batch in loader:
            frames = batch["frames"].to(device)
            b = frames.shape[0]
            hidden = frozen_tokens(model.visual, frames.flatten(0, 1), count).unflatten(0, (b, r))
            idx = batch["index"].numpy()
            tokens[v, idx] = hidden.to(torch.float16).cpu().numpy()
            filled[v, idx] = True
            done += b
            bar.update(done, f"view {v + 1}/{views}")
    bar.finish(done, f"view {views}/{views}")
    tokens.flush()
    del tokens
    missing = int((~filled).sum())
    if missing == filled.size:
        raise MicrogestureError(f"the token cache for {name} is empty: no clip could be loaded")
    record = {"meta": meta, "shape": shape, "seconds": round(time.monotonic() - bar.t0, 2),
              "unreadable_clip_views": missing}   # bad clips are replaced by good ones, as in training
    atomic_write(meta_path, lambda tmp: tmp.write_text(json.dumps(record)))
    return CachedClips(dataset, path, shape)
