"""The bundle manifest's schema, checked before anything in it is used.

:func:`validate_manifest` refuses a manifest whose fields have the wrong type or
impossible values, with one line naming the field, what it holds and what it
should hold. It runs inside :func:`core.bundle.read_manifest`, so every command
that opens a bundle sees the same errors. Fields that only the streaming runtime
needs (the window's layout, frame counts and span) are optional here when absent
(tests and partial tools write small manifests) but checked when present;
:func:`require_window` makes them mandatory for a runtime that needs them.

File names are checked by :func:`safe_member`: a bundle reads only its own files,
never ``..``, an absolute path, or a symlink that leads out of the folder.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

from microgesture.core.errors import MicrogestureError

_SHA256 = re.compile(r"[0-9a-f]{64}")
_HINT = "re-export the bundle (microgesture export RUN --out BUNDLE)"


def _fail(path: Path, field: str, what: str) -> MicrogestureError:
    return MicrogestureError(f"{path}: {field} {what}; {_HINT}")


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _need(path: Path, field: str, value: Any, kind: type | tuple, wanted: str) -> Any:
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        raise _fail(path, field, f"is {_type_name(value)} {str(value)[:40]!r}, expected {wanted}")
    return value


def _positive_int(path: Path, field: str, value: Any) -> int:
    _need(path, field, value, int, "a whole number >= 1")
    if value < 1:
        raise _fail(path, field, f"is {value}, expected a whole number >= 1")
    return value


def _positive_number(path: Path, field: str, value: Any) -> float:
    _need(path, field, value, (int, float), "a number > 0")
    if not value > 0 or value != value or value == float("inf"):
        raise _fail(path, field, f"is {value}, expected a finite number > 0")
    return value


def safe_member(bundle: Path, name: Any, where: str) -> Path:
    """``bundle / name`` when ``name`` is a plain relative file name inside the bundle
    folder (no ``..``, not absolute, no symlink leading outside); else a clear error."""
    if not isinstance(name, str) or not name or "\x00" in name or "\\" in name:
        raise MicrogestureError(f"{bundle}: {where} names the file {name!r}, which is not a file "
                                f"name inside the bundle; {_HINT}")
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts or name.startswith("~"):
        raise MicrogestureError(
            f"{bundle}: {where} names {name!r}, a path outside the bundle folder: a bundle may "
            f"only name its own files (refused, nothing was read); {_HINT}")
    file = bundle / pure
    root = bundle.resolve()
    target = file.resolve()
    if target != root and root not in target.parents:
        raise MicrogestureError(
            f"{bundle}: {name} is a symlink that leads outside the bundle folder (to {target}): "
            f"a bundle may only read its own files; replace the link with the file itself")
    return file


def _check_io(path: Path, field: str, table: Any) -> None:
    _need(path, field, table, dict, "an object of tensor name -> {shape, dtype}")
    for name, spec in table.items():
        _need(path, f"{field}.{name}", spec, dict, "an object with shape and dtype")
        shape = _need(path, f"{field}.{name}.shape", spec.get("shape"), list,
                      "a list of sizes (numbers, or names for dynamic axes)")
        for i, d in enumerate(shape):
            if isinstance(d, bool) or not (isinstance(d, str) or isinstance(d, int) and d >= 0):
                raise _fail(path, f"{field}.{name}.shape[{i}]", f"is {d!r}, expected a size >= 0 "
                            "or an axis name")
        _need(path, f"{field}.{name}.dtype", spec.get("dtype"), str, "a dtype name such as float32")


def validate_manifest(manifest: dict[str, Any], path: Path, roles: tuple[str, ...]) -> None:
    """Raise :class:`MicrogestureError` for the first field of ``manifest`` (read from
    ``path``) that breaks the schema (see :mod:`core.bundle`)."""
    model = _need(path, "model", manifest["model"], dict, "an object with name, arch and config")
    _need(path, "model.name", model.get("name"), str, "the model's name")
    if "config" in model:
        _need(path, "model.config", model["config"], dict, "an object")
    labels = _need(path, "labels", manifest["labels"], list, "a list of class names")
    if not labels:
        raise _fail(path, "labels", "is empty, expected one name per class")
    for i, label in enumerate(labels):
        _need(path, f"labels[{i}]", label, str, "a class name")
    _need(path, "preprocessing", manifest["preprocessing"], dict, "an object")
    window = _need(path, "window", manifest["window"], dict, "an object")
    for key in ("heatmap_size", "image_size"):
        if key in window:
            _positive_int(path, f"window.{key}", window[key])
    for key in ("rgb_frames", "pose_frames"):  # 0: the model takes no RGB (PoseC3D) or no pose (the student)
        if key in window:
            _need(path, f"window.{key}", window[key], int, "a whole number >= 0")
            if isinstance(window[key], bool) or window[key] < 0:
                raise _fail(path, f"window.{key}", f"is {window[key]!r}, expected a whole number >= 0")
    if not manifest.get("members") and window.get("rgb_frames") == 0 and window.get("pose_frames") == 0:
        raise _fail(path, "window", "samples neither RGB nor pose frames (rgb_frames and pose_frames are 0)")
    for key in ("span_s", "sigma"):
        if key in window:
            _positive_number(path, f"window.{key}", window[key])
    if "layout" in window:
        _need(path, "window.layout", window["layout"], str, "a layout name such as coco18")
    files = _need(path, "files", manifest["files"], dict, "an object of file name -> checksum")
    for name, meta in files.items():
        _need(path, f"files[{name!r}]", meta, dict, "an object with sha256 and bytes")
        if not isinstance(meta.get("sha256"), str) or not _SHA256.fullmatch(meta["sha256"]):
            raise _fail(path, f"files[{name!r}].sha256", "is not a 64-digit hexadecimal sha256")
        size = meta.get("bytes")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise _fail(path, f"files[{name!r}].bytes", f"is {size!r}, expected a size >= 0")
    stages = _need(path, "stages", manifest["stages"], dict, "an object of stage name -> stage")
    members = manifest.get("members")
    if members is not None:
        _check_members(path, members)
    answers = [n for n, st in stages.items() if isinstance(st, dict)
               and ("logits" in st.get("outputs", {}) or n in ("head", "window"))]  # names: older bundles
    for key, needs in (("rgb_frames", "frames"), ("pose_frames", "heatmaps")):
        takes = [n for n, st in stages.items() if isinstance(st, dict) and needs in st.get("inputs", {})]
        if window.get(key) == 0 and takes:
            raise _fail(path, f"window.{key}", f"is 0, but stage {takes[0]!r} takes {needs}: "
                        f"the window must sample the frames its stages read")
    if not answers and not members:
        raise _fail(path, "stages", f"has no stage that outputs 'logits' (it has {', '.join(stages) or 'none'}): "
                    "a bundle needs the stage that turns features into class scores")
    for name, stage in stages.items():
        where = f"stages.{name}"
        _need(path, where, stage, dict, "an object with role, inputs, outputs and files")
        if stage.get("role") not in roles:
            raise MicrogestureError(f"{path}: stage {name!r} has role {stage.get('role')!r}, "
                                    f"expected one of {roles}")
        for key in ("inputs", "outputs"):
            if key in stage:
                _check_io(path, f"{where}.{key}", stage[key])
        table = _need(path, f"{where}.files", stage.get("files", {}), dict,
                      "an object of precision -> file name")
        if not table:
            raise _fail(path, f"{where}.files", "is empty, expected at least the fp32 graph")
        for precision, file in table.items():
            _need(path, f"{where}.files.{precision}", file, str, "a file name in the bundle")
            if file not in files:
                raise MicrogestureError(f"{path}: stage {name!r} names {file}, which has no "
                                        "checksum in 'files'; re-export the bundle")
    _check_label_count(manifest, path)


def _check_members(path: Path, members: Any) -> None:
    """An ensemble bundle's ``members``: sub-bundles inside it, weights summing to 1."""
    _need(path, "members", members, list, "a list of {bundle, weight}")
    if not members:
        raise _fail(path, "members", "is empty, expected the ensemble's member bundles")
    total = 0.0
    for i, member in enumerate(members):
        _need(path, f"members[{i}]", member, dict, "an object with bundle and weight")
        _need(path, f"members[{i}].bundle", member.get("bundle"), str, "a sub-folder of the bundle")
        safe_member(path.parent, member["bundle"], f"members[{i}].bundle")
        weight = member.get("weight")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 1:
            raise _fail(path, f"members[{i}].weight", f"is {weight!r}, expected a number in [0, 1]")
        total += weight
    if abs(total - 1.0) > 1e-6:
        raise _fail(path, "members", f"weights sum to {total:.6g}, expected 1")


def _check_label_count(manifest: dict[str, Any], path: Path) -> None:
    """The head's ``logits`` width (when the manifest gives it) must equal the labels."""
    head = manifest["stages"].get("head") or manifest["stages"].get("window") or {}
    logits = (head.get("outputs") or {}).get("logits")
    width = logits["shape"][-1] if logits and logits.get("shape") else None
    n = len(manifest["labels"])
    if isinstance(width, int) and width != n:
        raise MicrogestureError(
            f"{path}: the model scores {width} classes but the manifest lists {n} labels; every "
            f"window would fail. Give exactly {width} labels (or {_HINT})")


def check_label_count(width: int | None, labels: list, where: str) -> None:
    """The same check against the class count a loaded model really outputs."""
    if isinstance(width, int) and width != len(labels):
        raise MicrogestureError(
            f"{where}: the model outputs {width} class scores but the manifest lists "
            f"{len(labels)} labels; give exactly {width} labels, or {_HINT}")


def require_window(manifest: dict[str, Any], bundle: Any, need_layout: bool = True) -> dict:
    """The bundle's ``window`` with every field streaming needs present and valid."""
    path = Path(str(bundle)) / "manifest.json"
    window = manifest["window"]
    if manifest.get("members"):  # an ensemble: the members' windows hold the rest
        keys = ["span_s"]
        need_layout = False
    else:
        keys = ["rgb_frames", "pose_frames", "span_s"]
        for key in keys[:2]:
            if key in window and (isinstance(window[key], bool) or not isinstance(window[key], int)
                                  or window[key] < 0):
                raise _fail(path, f"window.{key}", f"is {window[key]!r}, expected a whole number >= 0")
        if window.get("rgb_frames", 1):  # a pose-only model (PoseC3D) needs no image size
            keys.append("image_size")
        if window.get("pose_frames", 1):  # an RGB-only model (the video CLIP) needs no heatmaps
            keys += ["heatmap_size", "sigma"]
        if not window.get("rgb_frames", 1) and not window.get("pose_frames", 1):
            raise _fail(path, "window", "samples no RGB and no pose frames")
    for key in keys + (["layout"] if need_layout else []):
        if key not in window:
            raise _fail(path, f"window.{key}", "is missing (streaming needs the window's "
                        "frames, span, layout, heatmap and image sizes)")
    for key, allowed in (("heatmap_kind", ("joints", "limbs")), ("heatmap_crop", ("person", "skeleton"))):
        if key in window and window[key] not in allowed:
            raise _fail(path, f"window.{key}", f"is {window[key]!r}, expected one of {', '.join(allowed)}")
    if need_layout:
        from microgesture.core.layouts import LAYOUTS
        if window["layout"] not in LAYOUTS:
            from microgesture.core.errors import did_you_mean
            raise _fail(path, "window.layout", f"is {window['layout']!r}, not a known layout."
                        f"{did_you_mean(window['layout'], LAYOUTS)} Known: {', '.join(sorted(LAYOUTS))}")
    return window
