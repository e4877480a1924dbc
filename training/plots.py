"""PNG pictures of a run: confusion matrix, training curves, per-class accuracy,
and CLIP-MG's own checks (pose relevance over the frames, the gate's distribution)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def confusion(cm: np.ndarray, classes: Sequence[str], path: Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (rows: true class)."""
    plt = _plt()
    cm = np.asarray(cm, np.float64)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    n = len(classes)
    size = max(5.0, 0.32 * n + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), [c[:22] for c in classes], rotation=90, fontsize=7)
    ax.set_yticks(range(n), [c[:22] for c in classes], fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix (row-normalised)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, path)


def curves(metrics_jsonl: Path, path: Path) -> Path | None:
    """Training loss, validation loss and top-1 per epoch from ``metrics.jsonl``."""
    if not Path(metrics_jsonl).is_file():
        return None
    rows = [json.loads(line) for line in Path(metrics_jsonl).read_text().splitlines() if line]
    if not rows:
        return None
    plt = _plt()
    epochs = [r["epoch"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train")
    a.plot(epochs, [r["val_loss"] for r in rows], "o-", label="validation")
    a.set_xlabel("epoch")
    a.set_ylabel("cross-entropy")
    a.legend()
    b.plot(epochs, [r["val_top1"] for r in rows], "o-", color="C2")
    b.set_xlabel("epoch")
    b.set_ylabel("validation top-1")
    b.set_ylim(0, 1)
    b.grid(alpha=0.3)
    return _save(fig, path)


def per_class(report: dict, path: Path) -> Path:
    """Accuracy per class, with each class's number of test clips."""
    plt = _plt()
    items = list(report["per_class"].items())
    names = [f"{n[:28]} ({v['support']})" for n, v in items]
    acc = [v["accuracy"] for _, v in items]
    fig, ax = plt.subplots(figsize=(8, max(3.0, 0.25 * len(items) + 1)))
    ax.barh(range(len(items)), acc, color="C0")
    ax.set_yticks(range(len(items)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.axvline(report["top1"], color="C3", ls="--", label=f"top-1 {report['top1']:.3f}")
    ax.set_xlabel("accuracy")
    ax.legend(loc="lower right")
    return _save(fig, path)


def relevance(frames: np.ndarray, weights: np.ndarray, grid: tuple[int, int], path: Path,
              title: str = "") -> Path:
    """Pose relevance over the RGB frames of one clip: frames (R, H, W, 3) uint8,
    weights (R, patches) on a (rows, cols) patch grid."""
    plt = _plt()
    r = len(frames)
    fig, axes = plt.subplots(1, r, figsize=(2.2 * r, 2.6))
    for ax, img, w in zip(np.atleast_1d(axes), frames, weights):
        ax.imshow(img)
        heat = w.reshape(grid)
        ax.imshow(heat, cmap="jet", alpha=0.45, extent=(0, img.shape[1], img.shape[0], 0),
                  interpolation="bilinear")
        ax.axis("off")
    fig.suptitle(title or "pose-guided patch relevance")
    return _save(fig, path)


def gate_histogram(gates: np.ndarray, path: Path) -> Path:
    """Distribution of the confidence gate's values over clips, frames and channels."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(np.asarray(gates).ravel(), bins=50, range=(0, 1), color="C4")
    ax.set_xlabel("gate value (1: pose-guided query, 0: CLS token)")
    ax.set_ylabel("count")
    mean = float(np.mean(gates))
    ax.set_title(f"confidence gate, mean {mean:.3f}")
    return _save(fig, path)


def ablation_bars(rows: list[dict], path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = [r["ablation"] for r in rows]
    ax.bar(names, [r["top1"] for r in rows], color="C0", label="top-1")
    ax.plot(names, [r["macro_f1"] for r in rows], "o", color="C3", label="macro-F1")
    ax.set_ylim(0, 1)
    ax.set_ylabel("held-out subjects")
    ax.tick_params(axis="x", rotation=20)
    ax.legend()
    return _save(fig, path)
