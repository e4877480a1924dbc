"""Weighted late fusion of several models' class scores, and the search for its weights.

Torch-free (numpy only), so streaming can fuse at run time. As the MiGA 2024
paper (Eq. 7, Table 2) with DESIGN.md's precautions: each model's logits go
through a softmax first (the video CLIP's logits sit at 100 x cosine, the
PoseC3D heads' do not), then ``p = sum_m w_m softmax(z_m)`` with ``w_m >= 0``
summing to 1. :func:`search_weights` tries every such weight vector on a grid
(step 0.05: 231 vectors for three models) on a validation split, never on
test; the best top-1 accuracy wins, ties go to the lower log-loss, then to the
first in grid order (weights on the first model first).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from microgesture.core.errors import MicrogestureError

_EPS = 1e-12


def softmax(logits, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax, float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=axis, keepdims=True))
    return z / z.sum(axis=axis, keepdims=True)


def weight_grid(models: int, step: float = 0.05) -> np.ndarray:
    """Every weight vector (G, models) with entries multiples of ``step`` summing to 1, in
    lexicographic order with the first model's weight descending."""
    parts = round(1 / step) if step > 0 else 0
    if models < 1 or parts < 1 or abs(parts * step - 1) > 1e-9:
        raise MicrogestureError(f"the weight step must divide 1 (e.g. 0.05, 0.1), got {step!r}; "
                                f"and at least one model is needed (got {models})")

    def compositions(total: int, n: int):
        if n == 1:
            yield (total,)
            return
        for first in range(total, -1, -1):
            for rest in compositions(total - first, n - 1):
                yield (first, *rest)

    return np.array(list(compositions(parts, models)), dtype=np.float64) / parts


def _stack(logits: Sequence, labels) -> tuple[np.ndarray, np.ndarray]:
    """Per-model probabilities (M, N, C) and labels (N,), checked."""
    if len(logits) == 0:
        raise MicrogestureError("the ensemble needs at least one model's scores")
    shapes = {np.shape(z) for z in logits}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise MicrogestureError(f"every model's scores must be (samples, classes) for the same samples and "
                                f"classes, got shapes {sorted(shapes)}")
    probs = np.stack([softmax(z) for z in logits])
    y = np.asarray(labels)
    n, c = probs.shape[1:]
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer) or n and not (0 <= y.min() and y.max() < c):
        raise MicrogestureError(f"labels must be {n} class ids in [0, {c}), one per sample, got shape {y.shape}")
    if not np.isfinite(probs).all():
        raise MicrogestureError("a model's scores contain NaN or infinity")
    return probs, y.astype(np.int64)


def fuse(logits: Sequence, weights: Sequence[float]) -> np.ndarray:
    """Fused probabilities (N, C) = sum_m w_m softmax(logits_m)."""
    probs = np.stack([softmax(z) for z in logits])
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (len(probs),):
        raise MicrogestureError(f"one weight per model: {len(probs)} models, got {len(w)} weights")
    return np.tensordot(w, probs, axes=1)


@dataclass(frozen=True)
class WeightSearch:
    """The chosen weights and every candidate's validation scores."""

    weights: tuple[float, ...]
    accuracy: float
    log_loss: float
    candidates: np.ndarray
    """(G, M) weight vectors tried."""
    accuracies: np.ndarray
    """(G,) top-1 accuracy of each candidate."""
    log_losses: np.ndarray
    """(G,) mean negative log-probability of the true class."""


def search_weights(logits: Sequence, labels, step: float = 0.05, chunk: int = 16) -> WeightSearch:
    """Grid-search fusion weights on validation scores.

    ``logits``: one (N, C) array of raw scores per model (softmax is applied
    here), ``labels``: (N,) class ids. Work is done ``chunk`` candidates at a
    time (memory ~ chunk x N x C floats).
    """
    probs, y = _stack(logits, labels)
    grid = weight_grid(len(probs), step)
    rows = np.arange(len(y))
    acc, nll = np.empty(len(grid)), np.empty(len(grid))
    for start in range(0, len(grid), chunk):
        w = grid[start:start + chunk]
        fused = np.tensordot(w, probs, axes=1)  # (g, N, C)
        acc[start:start + len(w)] = (fused.argmax(-1) == y).mean(-1) if len(y) else 0.0
        nll[start:start + len(w)] = -np.log(fused[:, rows, y] + _EPS).mean(-1) if len(y) else 0.0
    best = int(np.lexsort((np.arange(len(grid)), nll, -acc))[0])
    return WeightSearch(tuple(float(round(v, 10)) for v in grid[best]), float(acc[best]), float(nll[best]),
                        grid, acc, nll)


# ----------------------------------------------------------------------------- ensemble runs

ENSEMBLE_FILE = "ensemble.json"
"""The file that makes a folder an ensemble run (``microgesture ensemble``)."""
RUN_FORMAT = "microgesture-ensemble"


def is_ensemble_run(path) -> bool:
    """Whether ``path`` is an ensemble run folder (eval and export pick their ensemble path)."""
    from pathlib import Path

    return (Path(path) / ENSEMBLE_FILE).is_file()


def read_ensemble_run(path) -> dict:
    """An ensemble run's ``ensemble.json``, checked: members (name, run, checkpoint, weight),
    weights summing to 1, labels."""
    import json
    from pathlib import Path

    file = Path(path) / ENSEMBLE_FILE
    if not file.is_file():
        raise MicrogestureError(f"{path} is not an ensemble run (no {ENSEMBLE_FILE}); make one with "
                                "microgesture ensemble RUN RUN ... --data DIR --out RUN")
    try:
        info = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise MicrogestureError(f"{file} is not readable JSON ({exc}); rerun microgesture ensemble") from None
    members = info.get("members") if isinstance(info, dict) else None
    if not isinstance(members, list) or not members or info.get("format") != RUN_FORMAT:
        raise MicrogestureError(f"{file} is not a microgesture ensemble (format and members); rerun "
                                "microgesture ensemble")
    for m in members:
        if not isinstance(m, dict) or not all(k in m for k in ("name", "run", "checkpoint", "weight")):
            raise MicrogestureError(f"{file}: every member needs name, run, checkpoint and weight")
    if abs(sum(float(m["weight"]) for m in members) - 1) > 1e-6:
        raise MicrogestureError(f"{file}: the member weights must sum to 1")
    if not isinstance(info.get("labels"), list) or not info["labels"]:
        raise MicrogestureError(f"{file} has no labels")
    return info
