"""Evaluation of a run on held-out subjects, with test-time augmentation, and the
pictures researchers look at.

``evaluate(RUN)`` loads the run's kept checkpoint (``best.safetensors``, or
``last.safetensors`` after ``train --keep last``), the run's subject split and
its data (or another dataset), scores every test clip as the average softmax
over ``clips`` temporal samplings (each with and without a horizontal flip
when ``flip``), as PoseC3D tests, and writes ``metrics.json`` and PNG plots.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from microgesture.core.checkpoint import atomic_write, describe, load_checkpoint, run_checkpoint
from microgesture.core.errors import MicrogestureError
from microgesture.core.family import family_of
from microgesture.training import plots, splits
from microgesture.training.datasets import open_dataset
from microgesture.training.metrics import classification_report
from microgesture.training.trainer import METRICS_FILE, RUN_FILE
from microgesture.training.transforms import ClipDataset, make_loader


def _resolve(run_or_checkpoint: str | Path) -> tuple[Path, Path, dict | None]:
    """(checkpoint, output folder, run.json or None)."""
    path = Path(run_or_checkpoint)
    if path.is_dir():
        ckpt = run_checkpoint(path)
        info = json.loads((path / RUN_FILE).read_text()) if (path / RUN_FILE).is_file() else None
        return ckpt, path, info
    if path.is_file():
        return path, path.parent, None
    raise MicrogestureError(f"{path} is neither a run folder nor a checkpoint file")


@torch.no_grad()
def predict(model, dataset_views: list[ClipDataset], batch_size: int, workers: int,
            progress: bool = True) -> tuple[np.ndarray, np.ndarray, dict]:
    """Average softmax over the views; returns (scores (N, C), labels (N,), aux) where
    aux holds what the model's family collects on the first view
    (``ModelFamily.evaluation_extras``; CLIP-MG: its first clip with a person and
    its patch relevance, and every gate value)."""
    total = None
    labels = None
    aux: dict = {}
    for v, view in enumerate(dataset_views):
        loader = make_loader(view, batch_size, train=False, workers=workers)
        parts, part_labels = [], []
        for i, batch in enumerate(loader):
            logits = _forward(model, batch, aux if v == 0 else None)
            parts.append(torch.softmax(logits.float(), 1).numpy())
            part_labels.append(batch["label"].numpy())
            if progress:
                print(f"\revaluating view {v + 1}/{len(dataset_views)}: batch {i + 1}/{len(loader)}",
                      end="", file=sys.stderr, flush=True)
        scores = np.concatenate(parts)
        total = scores if total is None else total + scores
        labels = np.concatenate(part_labels)
    if progress:
        print(file=sys.stderr)
    return total / len(dataset_views), labels, aux


def _forward(model, batch, collect: dict | None):
    """The family's evaluation forward; on the first view also what it can show
    (``ModelFamily.evaluation_extras``: CLIP-MG's patch relevance and gate values)."""
    family = family_of(model)
    if collect is None:
        return family.predict(model, batch)
    return family.evaluation_extras(model, batch, collect)


def evaluate(run_or_checkpoint: str | Path, data: str | None = None, clips: int = 1,
             flip: bool = False, all_subjects: bool = False, batch_size: int = 8,
             workers: int = 2, out: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Evaluate and write ``metrics.json`` and plots into the run (or ``out``)."""
    if clips < 1:
        raise MicrogestureError(f"--clips must be at least 1, got {clips}")
    ckpt, out_dir, info = _resolve(run_or_checkpoint)
    out_dir = Path(out) if out else out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    model, meta = load_checkpoint(ckpt)
    if progress:
        print(f"evaluating {describe(ckpt, meta)}", file=sys.stderr, flush=True)
    config = meta["config"]
    data = data or (info and info["options"]["data"])
    if not data:
        raise MicrogestureError(f"{ckpt} is not inside a run folder: pass the data with --data DIR")
    index = open_dataset(data)
    if tuple(index.classes) != config.labels:
        raise MicrogestureError(
            f"the dataset at {data} has {len(index.classes)} classes but the model was trained on "
            f"{config.num_classes}: evaluate on data with the same classes.txt")
    if not all_subjects and info is not None:
        index = splits.eval_part(index, info["split"])
    if len(index.records) == 0:
        raise MicrogestureError(f"no test clips in {data} for this run's test subjects")
    views = [ClipDataset(index, config, train=False, clip=k, num_clips=clips, flip=f)
             for k in range(clips) for f in ((False, True) if flip else (False,))]
    scores, labels, aux = predict(model, views, batch_size, workers, progress)
    subjects = [r.subject for r in index.records]
    report = classification_report(scores, labels, config.labels, subjects)
    report.update(checkpoint=str(ckpt), data=str(data), views=len(views), clips_per_view=clips,
                  flip=flip, model=config.name, trained_epoch=meta["extra"].get("epoch"))
    pictures = _pictures(report, config, out_dir, aux, info is not None)
    report["plots"] = [str(p) for p in pictures]
    atomic_write(out_dir / "metrics.json", lambda tmp: tmp.write_text(json.dumps(report, indent=2)))
    return report


def _pictures(report, config, out_dir: Path, aux: list[dict], in_run: bool) -> list[Path]:
    made = [plots.confusion(np.array(report["confusion_matrix"]), config.labels,
                            out_dir / "confusion.png",
                            f"{config.name}: top-1 {report['top1']:.3f}, macro-F1 {report['macro_f1']:.3f}"),
            plots.per_class(report, out_dir / "per_class.png")]
    if in_run:
        curve = plots.curves(out_dir / METRICS_FILE, out_dir / "curves.png")
        if curve:
            made.append(curve)
    title = ""
    if "frames" not in aux and "no_person" in aux:   # say so rather than show noise
        aux.update(frames=aux["no_person"][0], relevance=aux["no_person"][1])
        title = "no person in any test clip: relevance is uniform (no joints)"
    elif "frames" in aux:
        title = f"pose-guided patch relevance, test clip {aux['clip']} (first with a person)"
    if "frames" in aux:
        spec = family_of(config).window(config)
        mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
        std = torch.tensor(spec.std).view(1, 3, 1, 1)
        frames = ((aux["frames"] * std + mean).clamp(0, 1) * 255).byte()
        frames = frames.permute(0, 2, 3, 1).numpy()
        side = int(round(aux["relevance"].shape[-1] ** 0.5))
        made.append(plots.relevance(frames, aux["relevance"].numpy(), (side, side),
                                    out_dir / "relevance.png", title))
    if aux.get("gates"):
        made.append(plots.gate_histogram(np.concatenate(aux["gates"]), out_dir / "gate.png"))
    return made
