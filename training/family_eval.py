"""Scoring a trained run with its family's own evaluation forward (shared by the ensemble
search and zero-shot evaluation).

Only the model-family interface is used (``core.family``): the run's kept
checkpoint is rebuilt with ``core.checkpoint.load_checkpoint``, its clips come
from ``training.transforms.ClipDataset`` with the model's config, and the
logits from ``family.predict``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from microgesture.core.checkpoint import RUN_FILE, describe, load_checkpoint, run_checkpoint
from microgesture.core.errors import MicrogestureError
from microgesture.core.family import family_of
from microgesture.training import splits
from microgesture.training.transforms import ClipDataset, make_loader


def load_run(run: str | Path, progress: bool = False) -> tuple[Any, dict, Path, dict | None]:
    """(model in eval mode, checkpoint metadata, checkpoint path, run.json or None) of a run
    folder or a checkpoint file."""
    path = Path(run)
    if path.is_dir():
        ckpt = run_checkpoint(path)
        info = json.loads((path / RUN_FILE).read_text()) if (path / RUN_FILE).is_file() else None
    elif path.is_file():
        ckpt, info = path, None
    else:
        raise MicrogestureError(f"{path} is neither a run folder nor a checkpoint file")
    model, meta = load_checkpoint(ckpt)
    if progress:
        print(f"loaded {describe(ckpt, meta)}", file=sys.stderr, flush=True)
    return model.eval(), meta, ckpt, info


def run_data(info: dict | None, data: str | None, what: str) -> str:
    """The dataset folder: ``data`` if given, else the run's."""
    data = data or (info and info["options"]["data"])
    if not data:
        raise MicrogestureError(f"{what} is not inside a run folder: pass the data with --data DIR")
    return str(data)


def validation_part(index, info: dict | None, what: str):
    """The clips a run held out for validation (never its test split)."""
    if info is None:
        raise MicrogestureError(f"{what} is a checkpoint file: pass its run folder (the validation split "
                                "is recorded in run.json)")
    return splits.from_run(index, info["split"])[1]


@torch.no_grad()
def family_logits(model, dataset: ClipDataset, batch_size: int = 8, workers: int = 0,
                  progress: bool = False, what: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Raw logits (N, C) of the family's evaluation forward over ``dataset`` and its labels (N,)."""
    family = family_of(model)
    loader = make_loader(dataset, batch_size, train=False, workers=workers)
    logits, labels = [], []
    for i, batch in enumerate(loader):
        logits.append(family.predict(model, batch).float().numpy())
        labels.append(batch["label"].numpy())
        if progress:
            print(f"\rscoring {what}: batch {i + 1}/{len(loader)}", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return np.concatenate(logits), np.concatenate(labels).astype(np.int64)
