"""Exported bundles: one self-describing directory that a runtime needs alone.

```
BUNDLE/
  manifest.json          what is here (schema below), with each file's sha256
  visual.onnx            per-frame stage:  frames (N, 3, S, S)             -> tokens (N, 1 + patches, D)
  pose.onnx              per-window stage: heatmaps (B, V, P, H, W)         -> pose (B, R, D)
  pose_segment.onnx      per-segment stage (pose.windows "segments" only):
                         heatmaps (B, V, P/R, H, W) -> pose (B, D), one RGB frame's segment
  head.onnx              per-window stage: tokens (B, R, 1 + patches, D), pose (B, R, D),
                                           joints (B, R, V, 3)              -> logits (B, C)
  <stage>.int8.onnx      quantized variants; <stage>.<precision>.engine TensorRT engines
  text_embeddings.npy    (C, D) class prompt embeddings, for models that use them
```

A model uses only the stages (and stage inputs) of its modalities: a pose-only
ablation has no ``visual`` stage, and its head takes ``pose`` alone. Models
whose encoder mixes frames export one ``window`` stage instead.

``manifest.json`` (``schema_version`` 1)::

    {
      "schema_version": 1,
      "format": "microgesture-bundle",
      "created": "2026-11-22T03:00:00Z",
      "model": {"name": "clip-mg-b32", "arch": "clip-mg", "config": {...ModelConfig.to_dict()}},
      "labels": ["turtle neck", ...],
      "prompts": ["a video of a person turtle neck.", ...] | null,
      "preprocessing": {...core.checkpoint.preprocessing(config)},
      "window": {"rgb_frames": 8, "pose_frames": 32, "span_s": 1.0667, "layout": "coco18",
                 "heatmap_size": 64, "sigma": 0.625, "image_size": 224},
      "stages": {
        "visual": {"role": "per-frame",
                   "inputs": {"frames": {"shape": ["batch", 3, 224, 224], "dtype": "float32"}},
                   "outputs": {"tokens": {"shape": ["batch", 50, 512], "dtype": "float32"}},
                   "files": {"fp32": "visual.onnx", "int8": "visual.int8.onnx"}},
        "pose": {"role": "per-window", ...}, "head": {"role": "per-window", ...}
      },
      "files": {"visual.onnx": {"sha256": "...", "bytes": 12345}, ...},
      "verification": {"fp32": {"stage": {...errors...}, "passed": true}, "int8": {...}},
      "versions": {"microgesture": "0.1.0", "torch": "...", "onnx": "...", "opset": 18}
    }

:func:`read_manifest` checks the schema version, validates every field's type and
value (:mod:`core.manifest_schema`: a ``head`` stage, positive frame counts, as many
labels as the head's ``logits`` has classes, ...), refuses file names that lead
outside the bundle folder (``..``, absolute paths, symlinks out of it) before any
file is opened, checks that every listed file exists and that its checksum
matches, and refuses a tampered or incompatible bundle with a message that names
the problem.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from microgesture.core.errors import MicrogestureError
from microgesture.core.family import ROLES
from microgesture.core.manifest_schema import safe_member, validate_manifest
from microgesture.core.paths import atomic_write

FORMAT = "microgesture-bundle"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
STAGE_ROLES = ROLES  # core.family: per-frame, per-segment, per-window, whole-window


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(bundle: str | Path, manifest: dict[str, Any]) -> Path:
    """Fill in format, schema version, creation time and the ``files`` table (every
    file named by a stage, plus ``extra_files``), then write ``manifest.json``
    atomically. Returns its path."""
    bundle = Path(bundle)
    names = {name for stage in manifest.get("stages", {}).values()
             for name in stage.get("files", {}).values()}
    names |= set(manifest.pop("extra_files", []))
    for name in sorted(names):
        safe_member(bundle, name, "the manifest")
        if not (bundle / name).is_file():
            raise MicrogestureError(f"bundle file {bundle / name} is missing; cannot write the manifest")
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "format": FORMAT,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **manifest,
        "files": {n: {"sha256": sha256_file(bundle / n), "bytes": (bundle / n).stat().st_size}
                  for n in sorted(names)},
    }
    return atomic_write(bundle / MANIFEST, lambda tmp: tmp.write_text(json.dumps(manifest, indent=2)))


def read_manifest(bundle: str | Path, verify_files: bool = True) -> dict[str, Any]:
    """The checked manifest of ``bundle`` (a directory or its manifest.json)."""
    bundle = Path(bundle)
    if bundle.name == MANIFEST:
        bundle = bundle.parent
    path = bundle / MANIFEST
    if not path.is_file():
        raise MicrogestureError(f"{bundle} is not a microgesture bundle: no {MANIFEST} "
                                "(make one with microgesture export RUN --out BUNDLE)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MicrogestureError(f"{path} is not valid JSON ({exc}); re-export the bundle") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise MicrogestureError(f"{path} is not a microgesture bundle manifest (format is not "
                                f"'{FORMAT}')")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise MicrogestureError(
            f"{path} has bundle schema version {version!r}; this microgesture reads version "
            f"{SCHEMA_VERSION}: " + ("upgrade microgesture" if isinstance(version, int)
                                     and version > SCHEMA_VERSION else "re-export the bundle"))
    for key in ("model", "labels", "preprocessing", "window", "stages", "files"):
        if key not in manifest:
            raise MicrogestureError(f"{path} lacks the '{key}' field; re-export the bundle")
    validate_manifest(manifest, path, STAGE_ROLES)
    for name in manifest["files"]:  # before any file is opened: only the bundle's own
        safe_member(bundle, name, "'files'")
    if verify_files:
        for name, meta in manifest["files"].items():
            file = bundle / name
            if not file.is_file():
                raise MicrogestureError(f"bundle file {file} is missing (listed in {MANIFEST})")
            if file.stat().st_size != meta["bytes"] or sha256_file(file) != meta["sha256"]:
                raise MicrogestureError(
                    f"bundle file {file} does not match its checksum in {MANIFEST}: it was "
                    "changed or damaged after export; re-export the bundle")
    manifest["root"] = str(bundle)
    return manifest


def stage_precisions(manifest: dict[str, Any], stage: str) -> list[str]:
    """The precisions (keys of ``files``: fp32, int8, fp16, engine) ``stage`` has in the bundle."""
    stages = manifest.get("stages", {})
    if stage not in stages:
        from microgesture.core.errors import UnknownNameError
        raise UnknownNameError("stage", stage, stages)
    return list(stages[stage].get("files", {}))


def stage_file(manifest: dict[str, Any], stage: str, precision: str = "fp32") -> Path:
    """The path of ``stage``'s file at ``precision`` in a manifest from :func:`read_manifest`;
    a clear error listing the precisions the bundle has when it lacks this one."""
    have = stage_precisions(manifest, stage)
    if precision not in have:
        raise MicrogestureError(
            f"the bundle has no {precision!r} file for stage {stage!r}; it has: "
            f"{', '.join(have) or 'none'}. Choose one of those, or re-export with that precision "
            "(engines: microgesture export --formats engine on a GPU machine)")
    if "root" not in manifest:
        raise MicrogestureError("this manifest was not read with read_manifest (no 'root'); "
                                "open the bundle with core.bundle.read_manifest(BUNDLE)")
    return safe_member(Path(manifest["root"]), manifest["stages"][stage]["files"][precision],
                       f"stage {stage!r}")
