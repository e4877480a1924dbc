"""Zero-shot evaluation: score a text-prompted run on a class list it was not trained on.

``microgesture eval --zero-shot --classes FILE RUN [--data DIR]``: the run's
model takes the classes of FILE (``core/classes_file.py``: one name per line,
optional ``template:`` lines) through its family's ``set_classes`` (the text
tower encodes the new prompts; nothing is retrained), then scores the clips of
the data (the run's held-out subjects by default, every clip with
``all_subjects``). Each clip's class is found in the list by name (ignoring
case); the metrics (top-1, top-5, macro-F1, per class and subject, over the
listed classes, so extra names act as distractors) go to
``metrics_zero_shot.json`` in the run (or ``out``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from microgesture.core.classes_file import class_key, label_map, read_classes
from microgesture.core.errors import MicrogestureError
from microgesture.core.family import family_of
from microgesture.core.paths import atomic_write
from microgesture.training import splits
from microgesture.training.datasets import open_dataset
from microgesture.core.ensemble import softmax
from microgesture.training.family_eval import family_logits, load_run, run_data
from microgesture.training.metrics import classification_report
from microgesture.training.transforms import ClipDataset

REPORT_FILE = "metrics_zero_shot.json"


def evaluate_zero_shot(run: str | Path, classes: str | Path, data: str | None = None,
                       all_subjects: bool = False, batch_size: int = 8, workers: int = 2,
                       out: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Evaluate ``run`` on the classes of the file ``classes``; returns the report it writes."""
    class_list = read_classes(classes)
    model, meta, ckpt, info = load_run(run, progress)
    family = family_of(model)
    family.set_classes(model, class_list.labels, class_list.templates)
    data = run_data(info, data, str(run))
    index = open_dataset(data)
    positions = label_map(index.classes, class_list.labels)
    if not all_subjects and info is not None:
        index = splits.eval_part(index, info["split"])
    if len(index.records) == 0:
        raise MicrogestureError(f"no clips to score in {data} for this run's test subjects (try --all-subjects)")
    dataset = ClipDataset(index, model.config.replace(labels=tuple(index.classes)), train=False)
    logits, labels = family_logits(model, dataset, batch_size, workers, progress, "zero-shot")
    labels = np.asarray(positions, np.int64)[labels]
    trained = {class_key(n) for n in meta["config"].labels}
    report = classification_report(softmax(logits), labels, class_list.labels,
                                   [r.subject for r in index.records])
    report.update(checkpoint=str(ckpt), data=str(data), classes_file=str(classes), classes=list(class_list.labels),
                  templates=list(class_list.templates) if class_list.templates else "the model's own",
                  unseen_classes=[n for n in class_list.labels if class_key(n) not in trained],
                  model=meta["config"].name, zero_shot=True)
    out_dir = Path(out) if out else (Path(run) if Path(run).is_dir() else Path(run).parent)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / REPORT_FILE, lambda tmp: tmp.write_text(json.dumps(report, indent=2)))
    if progress:
        print(f"wrote {out_dir / REPORT_FILE}", file=sys.stderr)
    return report
