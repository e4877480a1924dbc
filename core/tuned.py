"""Smoothing settings tuned for a bundle, stored inside the bundle (torch-free).

``microgesture eval-online BUNDLE --data DIR --tune`` searches the event smoothing
(start and end thresholds, minimum duration, windows averaged, hop) for the best
online F1 on validation videos and writes the winner to ``BUNDLE/smoothing.json``::

    {"schema": "microgesture.smoothing/1",
     "settings": {"window": 2, "start_threshold": 0.4, "end_threshold": 0.24,
                  "min_duration_s": 0.25, "hop_s": 0.3333},
     "tuned": {"data": "...", "split": "val", "videos": 3, "f1": 0.81, ...}}

The file is part of the bundle like any other: :func:`write_tuned` adds its sha256
and size to the manifest's ``files`` table (and changes nothing else in the
manifest), so :func:`microgesture.core.bundle.read_manifest` verifies it with the
rest and a changed file is refused. A bundle without the file streams with the
built-in defaults; ``microgesture stream`` uses the file's settings as its defaults
and any option given on the command line wins over them. Re-exporting a bundle
writes a new manifest without the file: tune again.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from microgesture.core.bundle import MANIFEST, sha256_file
from microgesture.core.errors import MicrogestureError
from microgesture.core.paths import atomic_write

TUNED_FILE = "smoothing.json"
SCHEMA = "microgesture.smoothing/1"
# setting -> (type, lower bound, upper bound)
SETTINGS = {"window": (int, 1, 1000), "start_threshold": (float, 0.0, 1.0), "end_threshold": (float, 0.0, 1.0),
            "min_duration_s": (float, 0.0, 3600.0), "hop_s": (float, 1e-3, 3600.0)}


def check_settings(settings: dict[str, Any], where: str = "smoothing settings") -> dict[str, Any]:
    """``settings`` with only known keys of the right type and range (None values dropped)."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if value is None:
            continue
        if key not in SETTINGS:
            raise MicrogestureError(f"{where}: unknown setting {key!r}; known: {', '.join(SETTINGS)}.")
        kind, lo, hi = SETTINGS[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                kind is int and value != int(value)) or not math.isfinite(value) or not lo <= value <= hi:
            raise MicrogestureError(f"{where}: {key} must be a {kind.__name__} in [{lo}, {hi}], got {value!r}.")
        out[key] = kind(value)
    if "start_threshold" in out and "end_threshold" in out and not out["end_threshold"] < out["start_threshold"]:
        raise MicrogestureError(f"{where}: end_threshold {out['end_threshold']} must be below start_threshold "
                                f"{out['start_threshold']}.")
    return out


def read_tuned(bundle) -> dict[str, Any] | None:
    """The tuned settings of a bundle folder, or None when it has none.

    The file counts only when the manifest lists it with a matching checksum.
    """
    root = Path(bundle)
    if root.name == MANIFEST:
        root = root.parent
    path = root / TUNED_FILE
    try:
        files = json.loads((root / MANIFEST).read_text()).get("files", {})
    except (OSError, ValueError, AttributeError):
        return None   # not a readable bundle: read_manifest reports that properly
    meta = files.get(TUNED_FILE) if isinstance(files, dict) else None
    if meta is None:
        return None
    if not path.is_file():
        raise MicrogestureError(f"bundle file {path} is missing (listed in {MANIFEST}); tune again with "
                                f"microgesture eval-online {root} --data DIR --tune")
    if sha256_file(path) != meta.get("sha256"):
        raise MicrogestureError(f"bundle file {path} does not match its checksum in {MANIFEST}: it was changed "
                                f"after tuning; tune again with microgesture eval-online {root} --data DIR --tune")
    try:
        doc = json.loads(path.read_text())
    except ValueError as exc:
        raise MicrogestureError(f"{path} is not valid JSON ({exc}); tune again") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or not isinstance(doc.get("settings"), dict):
        raise MicrogestureError(f"{path} is not a {SCHEMA} file; tune again")
    return check_settings(doc["settings"], str(path))


def write_tuned(bundle, settings: dict[str, Any], tuned: dict[str, Any]) -> Path:
    """Write ``smoothing.json`` into the bundle and its checksum into the manifest."""
    root = Path(bundle)
    manifest_path = root / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise MicrogestureError(f"cannot read {manifest_path} ({exc}); tuning needs an exported bundle") from None
    doc = {"schema": SCHEMA, "settings": check_settings(settings),
           "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "tuned": tuned}
    path = root / TUNED_FILE
    try:
        atomic_write(path, lambda tmp: tmp.write_text(json.dumps(doc, indent=2) + "\n"))
        manifest.setdefault("files", {})[TUNED_FILE] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        atomic_write(manifest_path, lambda tmp: tmp.write_text(json.dumps(manifest, indent=2)))
    except OSError as exc:
        raise MicrogestureError(f"cannot write the tuned settings into {root} ({exc.strerror}); tune a "
                                "writable copy of the bundle (cp -r BUNDLE MINE)") from None
    return path
