"""An ensemble run (``microgesture ensemble``) -> an ensemble bundle (MANIFEST.md, "Ensemble bundles").

::

    BUNDLE/
      manifest.json        "members": [{"bundle": "members/<name>", "weight": 0.55}, ...], "stages": {},
                           "labels" (every member's), "window": {"span_s", "fps", ...} (shared)
      members/<name>/      a complete bundle per member (export_bundle of its run), own manifest

The stream runs every member on the same window (each samples its own frames)
and answers ``sum_i weight_i * softmax(logits_i)``. Each member is exported and
verified like a single model; the members' manifests are pinned by checksum in
the top manifest's ``files``. The whole bundle is written next to ``out`` and
moved into place at the end (an old bundle there is replaced only then).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from microgesture.core.bundle import MANIFEST, write_manifest
from microgesture.core.ensemble import read_ensemble_run
from microgesture.core.errors import MicrogestureError
from microgesture.export.exporter import _replace, check_out, export_bundle

MEMBERS = "members"
SHARED_WINDOW = ("span_s", "span_source", "fps", "fps_source")


def _shared_window(windows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    first_name, first = next(iter(windows.items()))
    for name, window in windows.items():
        if abs(float(window.get("span_s", 0)) - float(first.get("span_s", 0))) > 1e-6:
            raise MicrogestureError(f"ensemble members {first_name} and {name} cover different spans "
                                    f"({first.get('span_s')} s and {window.get('span_s')} s): export with --span S")
    return {k: first[k] for k in SHARED_WINDOW if k in first}


def export_ensemble(run, out, formats=("onnx",), verify: bool = True, data=None, progress: bool = True,
                    span_s: float | None = None, **member_options) -> dict[str, Any]:
    """Export every member of the ensemble run ``run`` into ``out/members/<name>/`` and write the
    top manifest; returns a summary (``bundle``, ``members``: each member's export summary).
    ``span_s``: the seconds a window covers, for every member (default: export's rule, the
    clips' median length of the shared data; members that still differ are refused)."""
    info = read_ensemble_run(run)
    out = Path(os.fspath(out)).absolute()
    check_out(out)
    data = data if data is not None else (info.get("data") if info.get("data") and Path(info["data"]).is_dir()
                                          else None)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        summaries, windows = {}, {}
        for m in info["members"]:
            target = tmp / MEMBERS / m["name"]
            summaries[m["name"]] = export_bundle(m["run"] if Path(m["run"]).is_dir() else m["checkpoint"],
                                                 target, formats, verify=verify, data=data, progress=progress,
                                                 span_s=span_s, **member_options)
            manifest = json.loads((target / MANIFEST).read_text())
            if manifest["labels"] != info["labels"]:
                raise MicrogestureError(f"member {m['name']} exported other labels than the ensemble's")
            windows[m["name"]] = manifest["window"]
        top = {
            "model": {"name": Path(run).name, "arch": "ensemble", "config": {"members": [m["model"] for m in
                                                                                          info["members"]]}},
            "labels": list(info["labels"]),
            "prompts": None,
            "preprocessing": {},
            "window": _shared_window(windows),
            "stages": {},
            "members": [{"bundle": f"{MEMBERS}/{m['name']}", "weight": float(m["weight"])} for m in info["members"]],
            "ensemble": {k: info[k] for k in ("val_top1", "val_log_loss", "val_clips", "step") if k in info},
            "extra_files": [f"{MEMBERS}/{m['name']}/{MANIFEST}" for m in info["members"]],
        }
        write_manifest(tmp, top)
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"bundle": str(out), "members": summaries,
            "bytes": sum(p.stat().st_size for p in out.rglob("*") if p.is_file())}
