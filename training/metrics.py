"""Classification metrics researchers read: top-k, per-class, macro-F1, per-subject."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) counts, rows = true class, columns = predicted class."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (np.asarray(labels, np.int64), np.asarray(predictions, np.int64)), 1)
    return cm


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows of ``scores`` (N, C) whose label is among the k best."""
    if len(labels) == 0:
        return float("nan")
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return float((top == np.asarray(labels)[:, None]).any(1).mean())


def classification_report(scores: np.ndarray, labels: np.ndarray, classes: Sequence[str],
                          subjects: Sequence[str] | None = None) -> dict:
    """Every metric ``microgesture eval`` writes, from scores (N, C) and labels (N,).

    Per-class accuracy (recall) and F1 are reported for the classes present in
    ``labels``; macro-F1 averages over those classes, as iMiGUE papers do.
    """
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels, np.int64)
    predictions = scores.argmax(1)
    cm = confusion_matrix(labels, predictions, len(classes))
    support = cm.sum(1)
    predicted = cm.sum(0)
    tp = np.diag(cm)
    recall = np.divide(tp, support, out=np.zeros(len(classes)), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros(len(classes)), where=predicted > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(len(classes)),
                   where=(precision + recall) > 0)
    present = support > 0
    report = {
        "clips": int(len(labels)),
        "top1": topk_accuracy(scores, labels, 1),
        "top5": topk_accuracy(scores, labels, 5),
        "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
        "mean_class_accuracy": float(recall[present].mean()) if present.any() else float("nan"),
        "per_class": {
            name: {"accuracy": float(recall[i]), "f1": float(f1[i]), "support": int(support[i])}
            for i, name in enumerate(classes) if present[i]
        },
        "confusion_matrix": cm.tolist(),
    }
    if subjects is not None:
        subjects = np.asarray(subjects)
        per_subject = {str(s): float((predictions[subjects == s] == labels[subjects == s]).mean())
                       for s in sorted(set(subjects.tolist()))}
        values = np.array(list(per_subject.values()))
        report["per_subject"] = per_subject
        report["subject_accuracy_mean"] = float(values.mean())
        report["subject_accuracy_std"] = float(values.std())
    return report
