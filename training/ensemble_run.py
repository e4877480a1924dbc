"""``microgesture ensemble RUN... --data DIR --out RUN``: the weighted late fusion of trained
runs as a run of its own, and its evaluation.

:func:`make_ensemble` scores each member run with its own family's evaluation
forward on the validation split it held out in training (never its test
split; every member must have held out the same clips, so no member was
trained on the clips the weights are chosen on), turns the logits into softmax
probabilities and searches the weights on a grid (``core.ensemble.search_weights``:
step 0.05, weights summing to 1, best top-1, ties to the lower log-loss). The
run folder gets ``ensemble.json``::

    {"format": "microgesture-ensemble", "version": 1,
     "members": [{"name": "rgb", "run": "/abs/runs/rgb", "checkpoint": "/abs/runs/rgb/best.safetensors",
                  "model": "miga24-vclip-b16", "arch": "miga24-vclip", "weight": 0.55, "val_top1": 0.61}, ...],
     "weights": [0.55, 0.4, 0.05], "step": 0.05, "val_top1": 0.69, "val_log_loss": 1.2, "val_clips": 812,
     "labels": [...], "data": "/abs/data", "split": {...the members' split record...}}

:func:`evaluate_ensemble` scores it like ``microgesture eval`` scores a run (the
members' held-out test part, or every clip): ``metrics.json`` with the
ensemble's metrics and each member's top-1. ``export`` turns it into an
ensemble bundle (``export/ensemble_bundle.py``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from microgesture.core.ensemble import ENSEMBLE_FILE, RUN_FORMAT, fuse, read_ensemble_run, search_weights
from microgesture.core.errors import MicrogestureError
from microgesture.core.paths import atomic_write
from microgesture.training import splits
from microgesture.training.datasets import open_dataset
from microgesture.training.family_eval import family_logits, load_run, run_data, validation_part
from microgesture.training.metrics import classification_report, topk_accuracy
from microgesture.training.transforms import ClipDataset

METRICS = "metrics.json"


def member_names(runs) -> list[str]:
    """A short unique name per member: its run folder's name (``-2``, ``-3`` for repeats)."""
    names: list[str] = []
    for run in runs:
        base = Path(run).name if Path(run).is_dir() else Path(run).parent.name
        base = "".join(c if c.isalnum() or c in "-_." else "-" for c in base).strip(".") or "member"
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(p.name != ENSEMBLE_FILE for p in out.iterdir())):
        raise MicrogestureError(f"--out {out} exists and holds other files; choose a new folder for the ensemble run")


def make_ensemble(runs, out, data: str | None = None, step: float = 0.05, batch_size: int = 8,
                  workers: int = 2, progress: bool = True) -> dict[str, Any]:
    """Search the members' weights on their validation split and write the ensemble run ``out``."""
    runs = [Path(r) for r in runs]
    if len(runs) < 2:
        raise MicrogestureError("an ensemble needs at least two trained runs: microgesture ensemble RUN RUN ... "
                                "--data DIR --out RUN")
    for run in runs:
        if not run.is_dir():
            raise MicrogestureError(f"{run} is not a run folder (the ensemble needs each member's run folder, "
                                    "where its validation split is recorded)")
    out = Path(out)
    _check_out(out)
    members, logits, labels, clip_ids, first = [], [], None, None, None
    for name, run in zip(member_names(runs), runs):
        model, meta, ckpt, info = load_run(run, progress)
        config = meta["config"]
        if first is None:
            first = (run, config.labels, info["split"] if info else None)
        elif tuple(config.labels) != tuple(first[1]):
            raise MicrogestureError(f"{run} was trained on other classes than {first[0]}: ensemble members must "
                                    "share their classes (the same classes.txt)")
        folder = run_data(info, data, str(run))
        val = validation_part(open_dataset(folder), info, str(run))
        ids = [r.clip_id for r in val.records]
        if clip_ids is None:
            clip_ids = ids
        elif ids != clip_ids:
            raise MicrogestureError(f"{run} held out other validation clips than {first[0]}: train every member "
                                    "on the same data and split (same --data and --test-subjects)")
        if not ids:
            raise MicrogestureError(f"{run} has no validation clips in {folder}")
        z, y = family_logits(model, ClipDataset(val, config, train=False), batch_size, workers, progress, name)
        labels = y if labels is None else labels
        logits.append(z)
        members.append({"name": name, "run": str(run.resolve()), "checkpoint": str(Path(ckpt).resolve()),
                        "model": config.name, "arch": config.arch, "val_top1": topk_accuracy(z, y, 1)})
        del model
    search = search_weights(logits, labels, step)
    for m, w in zip(members, search.weights):
        m["weight"] = w
    info = {"format": RUN_FORMAT, "version": 1, "members": members, "weights": list(search.weights),
            "step": step, "val_top1": search.accuracy, "val_log_loss": search.log_loss,
            "val_clips": int(len(labels)), "labels": list(first[1]), "data": str(Path(folder).resolve()),
            "split": first[2]}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / ENSEMBLE_FILE, lambda tmp: tmp.write_text(json.dumps(info, indent=2)))
    if progress:
        each = ", ".join(f"{m['name']} {m['weight']:.2f} (top-1 {m['val_top1']:.3f})" for m in members)
        print(f"ensemble weights: {each}; validation top-1 {search.accuracy:.3f}; wrote {out / ENSEMBLE_FILE}",
              file=sys.stderr)
    return info


def evaluate_ensemble(run, data: str | None = None, all_subjects: bool = False, batch_size: int = 8,
                      workers: int = 2, out: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Score an ensemble run on its members' held-out test part (or every clip) and write ``metrics.json``."""
    info = read_ensemble_run(run)
    data = data or info.get("data")
    if not data:
        raise MicrogestureError(f"{run} records no dataset: pass the data with --data DIR")
    index = open_dataset(data)
    if tuple(index.classes) != tuple(info["labels"]):
        raise MicrogestureError(f"the dataset at {data} has other classes than the ensemble {run}: evaluate on "
                                "data with the same classes.txt")
    if not all_subjects and info.get("split"):
        index = splits.eval_part(index, info["split"])
    if len(index.records) == 0:
        raise MicrogestureError(f"no test clips in {data} for this ensemble's test subjects")
    logits, labels, member_top1 = [], None, {}
    for m in info["members"]:
        model, meta, _, _ = load_run(m["checkpoint"], progress)
        z, y = family_logits(model, ClipDataset(index, meta["config"], train=False), batch_size, workers,
                             progress, m["name"])
        labels = y if labels is None else labels
        logits.append(z)
        member_top1[m["name"]] = topk_accuracy(z, y, 1)
        del model
    probs = fuse(logits, [m["weight"] for m in info["members"]])
    report = classification_report(probs, labels, info["labels"], [r.subject for r in index.records])
    report.update(ensemble=str(run), data=str(data), members=member_top1,
                  weights={m["name"]: m["weight"] for m in info["members"]}, views=1, clips_per_view=1)
    out_dir = Path(out) if out else Path(run)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / METRICS, lambda tmp: tmp.write_text(json.dumps(report, indent=2)))
    return report
