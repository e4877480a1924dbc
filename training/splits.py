"""Which clips a run trains on, which it validates on and which ``eval`` scores.

One rule for ``train``, ``--resume``, ``eval`` and ``ablate``:

1. ``--test-subjects A,B``: those subjects are held out (validation and test).
2. Otherwise, a dataset that says where its clips belong (the ``split`` column of
   clips.csv, a split file, the challenge release's ``train``/``valid`` parts, the
   raw release's ``imigue_skeleton_{train,validate,test}`` folders; split names as
   ``datasets.canonical_split`` reads them) is split as it says: the run trains on
   every clip not in a held-out split, validates (and picks its best epoch) on
   ``val`` when there is one, else on ``test``; ``eval`` scores ``test`` when there
   is one, else ``val``. The test split is never used to choose anything.
3. Otherwise a ``--test-fraction`` of the subjects, chosen with ``--seed``.

The choice is written to ``run.json`` (``split``) with the held-out subjects, so
a resumed run and ``eval`` use the same clips.
"""

from __future__ import annotations

from microgesture.core.errors import MicrogestureError
from microgesture.training.datasets import DatasetIndex

HELD_OUT = ("val", "test")


def choose(index: DatasetIndex, test_subjects=None, fraction: float = 0.3,
           seed: int = 0) -> tuple[DatasetIndex, DatasetIndex, dict]:
    """(train, validation, the ``split`` record of run.json) for a new run (module docstring)."""
    have = index.splits()
    held = [s for s in HELD_OUT if s in have]
    if test_subjects or not held:
        train, val = index.split_by_subject(test_subjects=test_subjects, fraction=fraction, seed=seed)
        info = {"by": "subjects"}
    else:
        val_split = held[0]
        info = {"by": "dataset", "val_split": val_split, "test_split": held[-1]}
        train, val = _by_dataset(index, info)
        if not train.records:
            raise MicrogestureError(f"{index.root}: every clip is in a held-out split ({', '.join(held)}); "
                                    "mark the training clips 'train', or hold out subjects with "
                                    "--test-subjects / --test-fraction.")
        shared = sorted(set(train.subjects()) & set(val.subjects()))
        if shared:
            info["shared_subjects"] = shared
    info.update(train_subjects=sorted(train.subjects()), test_subjects=sorted(val.subjects()))
    return train, val, info


def _by_dataset(index: DatasetIndex, info: dict) -> tuple[DatasetIndex, DatasetIndex]:
    held = {info["val_split"], info["test_split"]}
    train = index.select(lambda r: r.split not in held)
    return train, index.by_split(info["val_split"])


def from_run(index: DatasetIndex, info: dict) -> tuple[DatasetIndex, DatasetIndex]:
    """(train, validation) of a run from its ``split`` record (for ``--resume``)."""
    if info.get("by") == "dataset":
        return _by_dataset(index, info)
    return index.split_by_subject(test_subjects=tuple(info["test_subjects"]))


def eval_part(index: DatasetIndex, info: dict) -> DatasetIndex:
    """The clips ``eval`` scores for a run: its test split, or its held-out subjects."""
    if info.get("by") == "dataset":
        return index.by_split(info["test_split"] if info["test_split"] in index.splits() else info["val_split"])
    return index.split_by_subject(test_subjects=tuple(info["test_subjects"]))[1]


def describe(info: dict, train: DatasetIndex, val: DatasetIndex) -> str:
    """One line saying what a run trains on and holds out, for the user."""
    subjects = val.subjects()
    names = ", ".join(subjects[:8]) + (f" and {len(subjects) - 8} more" if len(subjects) > 8 else "")
    if info.get("by") == "dataset":
        text = (f"training on {len(train)} clips, validating on the dataset's {info['val_split']!r} split "
                f"({len(val)} clips, subjects {names})")
        if info["test_split"] != info["val_split"]:
            text += f"; eval will score the {info['test_split']!r} split"
        if info.get("shared_subjects"):
            text += (f"; note: {len(info['shared_subjects'])} subject(s) are on both sides "
                     f"({', '.join(info['shared_subjects'][:5])})")
        return text
    return (f"training on {len(train)} clips of {len(train.subjects())} subjects, holding out {len(val)} clips "
            f"of {len(subjects)} subject(s): {names}")
