"""A model family's ablation set (CLIP-MG: the paper's), trained and evaluated with one command, as a table."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from microgesture.core.checkpoint import atomic_write
from microgesture.core.config import get_config
from microgesture.core.errors import UnknownNameError
from microgesture.core.family import family_of
from microgesture.training import plots
from microgesture.training.evaluate import evaluate
from microgesture.training.trainer import STATE_FILE, TrainOptions, train


def run_ablations(options: TrainOptions, names: list[str] | None = None, clips: int = 1,
                  progress: bool = True) -> list[dict[str, Any]]:
    """Train and evaluate every ablation into ``options.out/<name>``; write
    ``ablations.md``, ``ablations.json`` and ``ablations.png`` in ``options.out``.
    A finished ablation is not trained again (delete its folder to redo it), and
    an interrupted one resumes, so the command can simply be run again. The set is
    the model family's (``ModelFamily.ablations``)."""
    ablations = family_of(get_config(options.model)).ablations
    names = names or list(ablations)
    for name in names:
        if name not in ablations:
            raise UnknownNameError("ablation", name, ablations)
    out = Path(options.out)
    rows = []
    for name in names:
        run = out / name
        if progress:
            print(f"== ablation {name}", file=sys.stderr)
        sub = dataclasses.replace(options, out=str(run),
                                  overrides={**options.overrides, **ablations[name]})
        summary = train(sub, resume=(run / STATE_FILE).exists(), progress=progress)
        report = evaluate(run, clips=clips, workers=options.workers, progress=progress)
        rows.append({"ablation": name, "overrides": ablations[name], "top1": report["top1"],
                     "top5": report["top5"], "macro_f1": report["macro_f1"],
                     "best_epoch": summary["best_epoch"], "test_clips": report["clips"]})
    table = ["| ablation | top-1 | top-5 | macro-F1 |", "|---|---|---|---|"]
    table += [f"| {r['ablation']} | {r['top1']:.3f} | {r['top5']:.3f} | {r['macro_f1']:.3f} |"
              for r in rows]
    header = (f"Model {options.model}, data {options.data}, held-out subjects, "
              f"{clips} clip(s) per test video.\n\n")
    atomic_write(out / "ablations.md", lambda tmp: tmp.write_text(header + "\n".join(table) + "\n"))
    atomic_write(out / "ablations.json", lambda tmp: tmp.write_text(json.dumps(rows, indent=2)))
    plots.ablation_bars(rows, out / "ablations.png")
    return rows
