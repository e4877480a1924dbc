"""Skeleton files: our JSONL format (one frame per line) and iMiGUE's raw CSV.

JSONL, one JSON object per frame, pixels in the frame's own size::

    {"frame": 0, "t": 0.0, "layout": "coco18", "width": 640, "height": 480,
     "keypoints": [[312.5, 88.25, 0.9981], [null, null, 0.0], ...]}

- ``frame``: the frame's 0-based index in its video (frame numbers increase down
  the file; a skipped frame leaves a gap).
- ``t``: seconds from the start of the video.
- ``layout``: a skeleton layout name (see ``microgesture.core.layouts``); the file
  holds one layout and ``keypoints`` has one ``[x, y, score]`` per joint of it.
- ``x, y``: pixels, origin top-left, y down; ``score`` in [0, 1]. A missing joint is
  ``[null, null, 0.0]``: NaN coordinates are written as ``null``, and ``null`` reads
  back as NaN with score 0.

Lines are flushed one by one, so a run that is killed keeps every frame it wrote.
Prepare training data for your own clips in this format (``microgesture pose``
writes it), or convert from another tool with :class:`SkeletonWriter`.

iMiGUE's ``<video>_light_hand.csv`` (read by ``core.imigue``): one row per frame,
a frame index, then 35 joints x (x, y, confidence) in 1920x1080 pixels (OpenPose
BODY_25 order plus 5 fingertips per hand, layout ``imigue35``); OpenPose writes a
missing joint as ``0,0,0``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import MicrogestureError, UnknownNameError
from .layouts import get_layout

if TYPE_CHECKING:
    from .pose import Pose

IMIGUE_LAYOUT = "imigue35"
IMIGUE_WIDTH, IMIGUE_HEIGHT = 1920, 1080
#: iMiGUE's CSVs carry no times; frame / fps is used, with this rate unless told.
IMIGUE_FPS = 25.0
_KEYS = ("frame", "t", "layout", "width", "height", "keypoints")


@dataclass(frozen=True)
class SkeletonRecord:
    """One frame of a skeleton file."""

    frame: int
    t: float
    layout: str
    width: int
    height: int
    keypoints: np.ndarray   # (V, 2) float32 pixels, NaN where missing
    scores: np.ndarray      # (V,) float32 in [0, 1], 0 where missing


# ----------------------------------------------------------------------------- writing

def _num(value: float, digits: int):
    value = float(value)
    return round(value, digits) if math.isfinite(value) else None


def format_line(frame: int, t: float, keypoints, scores, layout: str, width: int,
                height: int) -> str:
    """One JSONL line (with its newline) for one frame."""
    kp = np.asarray(keypoints, dtype=np.float64)
    sc = np.asarray(scores, dtype=np.float64)
    joints = []
    for (x, y), s in zip(kp.tolist(), sc.tolist()):  # Python floats: round() is 10x faster
        if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(s)):
            joints.append([None, None, 0.0])
        else:
            joints.append([round(x, 2), round(y, 2), round(min(max(s, 0.0), 1.0), 4)])
    record = {"frame": int(frame), "t": _num(t, 6), "layout": layout, "width": int(width),
              "height": int(height), "keypoints": joints}
    return json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n"


class SkeletonWriter:
    """Streams frames to a skeleton JSONL file, one flushed line per frame.

    >>> with SkeletonWriter("clip.jsonl") as w:      # doctest: +SKIP
    ...     w.write(frame_index, time_s, pose)        # pose: a core.pose.Pose
    """

    def __init__(self, path):
        self.path = Path(os.fspath(path))
        self.frames_written = 0
        self.layout: str | None = None
        self._last_frame = -1
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "w", encoding="utf-8", newline="\n")
        except OSError as e:
            raise MicrogestureError(f"cannot write skeletons to {self.path}: {e.strerror}. "
                                    "Choose a writable path.") from None

    def write(self, frame: int, t: float, pose: "Pose") -> None:
        """Write one frame: ``pose`` has keypoints (V, 2), scores (V,), layout, width, height."""
        self.write_arrays(frame, t, pose.keypoints, pose.scores, pose.layout, pose.width,
                          pose.height)

    def write_arrays(self, frame: int, t: float, keypoints, scores, layout: str, width: int,
                     height: int) -> None:
        """Write one frame given as arrays (for converting other tools' output)."""
        if self._file.closed:
            raise MicrogestureError(f"{self.path} is closed; open a new SkeletonWriter.")
        if self.layout is None:
            self._joints = get_layout(layout).num_joints
            self.layout = layout
        elif layout != self.layout:
            raise MicrogestureError(f"{self.path} holds layout {self.layout!r}; cannot write "
                                    f"a frame in layout {layout!r} to it. Convert with "
                                    "core.pose.estimate_to_layout first.")
        kp, sc = np.asarray(keypoints), np.asarray(scores)
        if kp.shape != (self._joints, 2) or sc.shape != (self._joints,):
            raise MicrogestureError(
                f"layout {layout!r} has {self._joints} joints: expected keypoints of shape "
                f"({self._joints}, 2) and scores of shape ({self._joints},), got "
                f"{tuple(kp.shape)} and {tuple(sc.shape)}.")
        if int(frame) <= self._last_frame:
            raise MicrogestureError(f"frame numbers must increase down {self.path}: got "
                                    f"{int(frame)} after {self._last_frame}.")
        self._file.write(format_line(frame, t, kp, sc, layout, width, height))
        self._file.flush()
        self._last_frame = int(frame)
        self.frames_written += 1

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_jsonl(path) -> SkeletonWriter:
    """Open a skeleton JSONL file for writing; see :class:`SkeletonWriter`."""
    return SkeletonWriter(path)


# ----------------------------------------------------------------------------- reading

def _bad(path, line: int, what: str) -> MicrogestureError:
    return MicrogestureError(f"{path}:{line}: {what}")


def _int_field(path, lineno, rec, key, minimum):
    value = rec[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _bad(path, lineno, f"{key!r} must be an integer >= {minimum}, got {value!r}.")
    return value


def _parse_line(path, lineno: int, text: str, is_last: bool) -> SkeletonRecord:
    try:
        rec = json.loads(text)
    except json.JSONDecodeError as e:
        hint = (" The last line is incomplete: was the run killed while writing? Delete that "
                "line." if is_last else "")
        raise _bad(path, lineno, f"not valid JSON ({e.msg}).{hint}") from None
    if not isinstance(rec, dict):
        raise _bad(path, lineno, f"expected a JSON object per line, got {type(rec).__name__}.")
    missing = [k for k in _KEYS if k not in rec]
    if missing:
        raise _bad(path, lineno, f"missing {', '.join(map(repr, missing))}; every line needs "
                                 f"{', '.join(_KEYS)}.")
    frame = _int_field(path, lineno, rec, "frame", 0)
    width = _int_field(path, lineno, rec, "width", 1)
    height = _int_field(path, lineno, rec, "height", 1)
    t = rec["t"]
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
        raise _bad(path, lineno, f"'t' must be a number of seconds, got {t!r}.")
    name = rec["layout"]
    if not isinstance(name, str):
        raise _bad(path, lineno, f"'layout' must be a layout name, got {name!r}.")
    try:
        joints = get_layout(name).num_joints
    except UnknownNameError as e:
        raise _bad(path, lineno, str(e)) from None
    try:
        arr = np.array(rec["keypoints"], dtype=np.float64)   # null -> NaN
    except (TypeError, ValueError):
        raise _bad(path, lineno, "'keypoints' must be a list of [x, y, score] with numbers "
                                 "or null.") from None
    if arr.shape != (joints, 3):
        raise _bad(path, lineno, f"'keypoints' must hold {joints} [x, y, score] triples for "
                                 f"layout {name!r}, got an array of shape {arr.shape}.")
    scores = arr[:, 2]
    bad = ~((scores >= 0) & (scores <= 1))   # NaN too
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise _bad(path, lineno, f"joint {j}: score must be a number in [0, 1], got "
                                 f"{rec['keypoints'][j][2]!r}.")
    keypoints = arr[:, :2].astype(np.float32)
    missing = ~np.isfinite(keypoints).all(axis=1)
    keypoints[missing] = np.nan
    scores = np.where(missing, 0.0, scores).astype(np.float32)
    return SkeletonRecord(frame, float(t), name, width, height, keypoints, scores)


def iter_jsonl(path) -> Iterator[SkeletonRecord]:
    """Frames of a skeleton JSONL file, checked line by line (blank lines are ignored).

    Frame sizes may differ between lines (e.g. a folder of photos); the layout may not.
    """
    path = Path(os.fspath(path))
    try:
        f = open(path, encoding="utf-8")
    except OSError as e:
        raise MicrogestureError(f"cannot read skeletons from {path}: {e.strerror}.") from None
    with f:
        layout, last_frame = None, -1
        for lineno, text in enumerate(f, start=1):
            if not text.strip():
                continue
            rec = _parse_line(path, lineno, text, is_last=not text.endswith("\n"))
            if layout is not None and rec.layout != layout:
                raise _bad(path, lineno, f"layout {rec.layout!r} differs from {layout!r} on "
                                         "the lines before; a file holds one layout.")
            if rec.frame <= last_frame:
                raise _bad(path, lineno, f"frame {rec.frame} does not follow frame "
                                         f"{last_frame}; frame numbers must increase.")
            layout, last_frame = rec.layout, rec.frame
            yield rec


def read_jsonl(path):
    """Read a whole skeleton JSONL file.

    Returns ``(frames (T,) int64, times (T,) float64, keypoints (T, V, 2) float32,
    scores (T, V) float32, layout, width, height)``. All frames must share one size
    (use :func:`iter_jsonl` for files that mix sizes).
    """
    records = []
    for rec in iter_jsonl(path):
        if records and (rec.width, rec.height) != (records[0].width, records[0].height):
            raise MicrogestureError(
                f"{path}: frame {rec.frame} is {rec.width}x{rec.height} but the first frame is "
                f"{records[0].width}x{records[0].height}; read_jsonl returns one size per "
                "file: use iter_jsonl() to read frames of different sizes.")
        records.append(rec)
    if not records:
        raise MicrogestureError(f"{path} holds no frames; expected one JSON object per line "
                                "(see microgesture.core.skeleton_io).")
    return (np.array([r.frame for r in records], dtype=np.int64),
            np.array([r.t for r in records], dtype=np.float64),
            np.stack([r.keypoints for r in records]),
            np.stack([r.scores for r in records]),
            records[0].layout, records[0].width, records[0].height)


def read_imigue_csv(path, fps: float = IMIGUE_FPS, width: int = IMIGUE_WIDTH,
                    height: int = IMIGUE_HEIGHT):
    """Read an iMiGUE ``<video>_light_hand.csv``; returns the same tuple as :func:`read_jsonl`.

    The format (106 columns: a frame index, then 35 joints x (x, y, score); an
    optional header row) is read by :mod:`microgesture.core.imigue`. Frames are
    the 0-based data rows; times are ``frame / fps`` (the CSV has none).
    ``0,0,0`` joints (OpenPose's "not found") read as NaN coordinates with
    score 0; confidences are clipped to [0, 1].
    """
    from .imigue import read_light_hand

    keypoints, scores = read_light_hand(path)
    frames = np.arange(len(keypoints), dtype=np.int64)
    return frames, frames / float(fps), keypoints, scores, IMIGUE_LAYOUT, width, height
