"""A trained text-prompted model with another class list, as a checkpoint (``export --classes FILE``).

The video CLIP student's classes are text: its class embeddings are encoded
from the config's labels and prompt templates whenever it is built, so a
checkpoint whose config names other classes *is* the student recognising them
(nothing retrained). :func:`checkpoint_with_classes` writes such a checkpoint
alone (no ``run.json``: the run's data has other classes, so export verifies
the bundle on synthetic windows unless given ``--data`` with these classes).
"""

from __future__ import annotations

from pathlib import Path

from microgesture.core.classes_file import read_classes


def checkpoint_with_classes(run_or_checkpoint: str | Path, classes_file: str | Path, out_dir: str | Path) -> Path:
    """Write ``out_dir/best.safetensors``: the run's model with the classes of ``classes_file``
    (its family's ``set_classes``; a clear error for families that learn their classes)."""
    from microgesture.core.checkpoint import KEEP_FILES, load_checkpoint, run_checkpoint, save_checkpoint
    from microgesture.core.family import family_of

    class_list = read_classes(classes_file)
    source = Path(run_or_checkpoint)
    checkpoint = run_checkpoint(source) if source.is_dir() else source
    model, meta = load_checkpoint(checkpoint)
    family_of(model).set_classes(model, class_list.labels, class_list.templates)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    extra = {**(meta.get("extra") or {}), "classes_from": str(classes_file),
             "trained_classes": list(meta["config"].labels)}
    out = save_checkpoint(model, out_dir / KEEP_FILES["best"], extra)
    return out
