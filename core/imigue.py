"""iMiGUE's raw release files, read as the organisers' scripts write them (no torch).

``<video>_light_hand.csv``: one row per video frame, **106 columns**: a leading
frame index, then 35 joints x (x, y, score) in 1920x1080 pixels -- OpenPose
BODY_25, then 5 fingertips per hand (layout ``imigue35``). Newer copies start
with a header row; both are read. The frame of a row is its 0-based position
among the data rows (the index column is not trusted for numbering). OpenPose
writes a joint it did not find as ``0,0,0``: it reads as NaN coordinates with
score 0. Any row that is not 106 numbers is refused, naming the file, the row
and what was expected.

``<video>_label.csv``: rows ``gestureID,start,end`` (an optional header row):
gesture ids 1..31 with 99 for the last class (``core.labels``), frames
**0-based and inclusive** -- a gesture may start at frame 0; the organisers'
access script adds 1 for its own 1-based reader.

The release unpacks as ``imigue_skeleton_{train,validate,test}/<video>/...``
(RGB videos in a tree of their own): the split is the folder
(:data:`SPLIT_FOLDERS`).

The challenge release keeps 22 of the 35 joints: :data:`CHALLENGE_COLUMNS` are
the ``imigue35`` joints its converter copies, in the challenge's joint order;
:func:`to_challenge22` does the same to our arrays, so both readers can be
checked against each other on one frame.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from .errors import MicrogestureError
from .labels import imigue_class_from_raw

JOINTS = 35
COLUMNS = 1 + 3 * JOINTS
"""Values per ``_light_hand.csv`` row: the frame index, then 35 x (x, y, score)."""
WIDTH, HEIGHT = 1920, 1080
FPS = 25.0
LAYOUT = "imigue35"
SPLIT_FOLDERS = {"imigue_skeleton_train": "train", "imigue_skeleton_validate": "validate",
                 "imigue_skeleton_test": "test"}
"""Release folder -> split name (``validate`` reads as ``val``, see training.splits)."""
CHALLENGE_COLUMNS = (0, 1, 2, 3, 4, 5, 6, 7, 15, 16, 17, 18, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34)
"""``imigue35`` joint copied into each of the challenge's 22 joints, in the challenge order
(BODY_25 nose, neck, the two arms, eyes and ears in BODY_25 order, then the ten fingertips
in file order). The challenge's names for them follow the viewer's side: its
``ShoulderLeft`` is BODY_25's ``RShoulder``; ``core.layouts`` states each joint's
side as the subject's."""
_ROW_HELP = f"{COLUMNS} numbers (a frame index, then {JOINTS} joints x (x, y, score))"


def _error(path, line: int, what: str) -> MicrogestureError:
    return MicrogestureError(f"{path}:{line}: {what}")


def _is_number(text) -> bool:
    try:
        float(text)
        return True
    except (TypeError, ValueError):
        return False


# ----------------------------------------------------------------------------- labels

def read_csv_rows(path, what: str) -> list[tuple[int, list[str]]]:
    """(line number, stripped fields) of the non-blank rows of a CSV file; a one-line
    error naming the file and ``what`` it should be when it cannot be read."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = [(n, [v.strip() for v in fields]) for n, fields in enumerate(csv.reader(f), start=1)]
    except OSError as e:
        raise MicrogestureError(f"cannot read {what} {path}: {e.strerror}.") from None
    except (csv.Error, UnicodeDecodeError) as e:
        raise MicrogestureError(f"{path} is not a readable CSV file ({e}); expected {what}.") from None
    return [(n, fields) for n, fields in rows if any(fields)]


def read_label_csv(path) -> list[tuple[int, int, int]]:
    """``(class id 0-based, start, end)`` per row of a ``<video>_label.csv``; frames
    0-based and inclusive, as released. A header row is skipped; every other
    problem raises, naming ``file:line``."""
    rows = read_csv_rows(Path(os.fspath(path)), "an iMiGUE label file (rows gestureID,start,end)")
    out = []
    for k, (n, fields) in enumerate(rows):
        while fields and not fields[-1]:
            fields.pop()
        try:
            values = [int(v) for v in fields]
        except ValueError:
            if k == 0 and not any(_is_number(v) for v in fields):
                continue  # a header row
            raise _error(path, n, f"expected three integers gestureID,start,end, got {','.join(fields)!r}.") \
                from None
        if len(values) != 3:
            raise _error(path, n, f"{len(values)} values; an iMiGUE label row is gestureID,start,end.")
        raw, start, end = values
        try:
            label = imigue_class_from_raw(raw)
        except MicrogestureError as e:
            raise _error(path, n, str(e)) from None
        if start < 0:
            raise _error(path, n, f"start frame {start} is negative; iMiGUE frames are 0-based.")
        if start > end:
            raise _error(path, n, f"start frame {start} is after end frame {end} (frames are inclusive).")
        out.append((label, start, end))
    return out


# ----------------------------------------------------------------------------- skeletons

def _is_header(line: bytes) -> bool:
    return not _is_number(line.split(b",", 1)[0].strip() or b"x")


def row_offsets(path) -> np.ndarray:
    """int64 (T + 1,): the byte offset of each data row of a ``_light_hand.csv`` (blank
    lines and a header row excluded), then the file size."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise MicrogestureError(f"cannot read skeletons from {path}: {e.strerror}.") from None
    offsets, pos = [], 0
    for line in data.splitlines(keepends=True):
        if line.strip():
            offsets.append(pos)
        pos += len(line)
    if offsets and _is_header(data[offsets[0]:offsets[0] + 4096].splitlines()[0]):
        offsets.pop(0)
    return np.array(offsets + [len(data)], np.int64)


def count_rows(path) -> int:
    """Data rows (frames) of a ``_light_hand.csv``."""
    return len(row_offsets(path)) - 1


def parse_rows(lines, path, first_row: int) -> np.ndarray:
    """float64 (T, 35, 3) from data lines (bytes or str) of a ``_light_hand.csv``;
    ``first_row`` is the 1-based data-row number of the first line, for messages."""
    values = []
    for k, line in enumerate(lines):
        if isinstance(line, bytes):
            line = line.decode("utf-8", "replace")
        fields = [v.strip() for v in line.strip().split(",")]
        while fields and not fields[-1]:
            fields.pop()
        row = first_row + k
        if len(fields) != COLUMNS:
            extra = " (no leading frame index?)" if len(fields) == COLUMNS - 1 else ""
            raise MicrogestureError(f"{path}: data row {row} has {len(fields)} values{extra}; a "
                                    f"_light_hand.csv row has {_ROW_HELP}.")
        try:
            values.append([float(v) for v in fields[1:]])
        except ValueError:
            col = next(i for i, v in enumerate(fields) if not _is_number(v))
            raise MicrogestureError(f"{path}: data row {row}, column {col + 1} is {fields[col]!r}, not a "
                                    f"number; expected {_ROW_HELP}.") from None
    return np.asarray(values, np.float64).reshape(len(values), JOINTS, 3)


def to_pose(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(keypoints (T, V, 2) float32, NaN where missing; scores (T, V) float32 in [0, 1])
    from raw (T, V, 3) rows: ``0,0,0`` and non-finite joints are missing."""
    kp = arr[..., :2].astype(np.float32)
    sc = np.clip(np.nan_to_num(arr[..., 2], nan=0.0), 0.0, 1.0).astype(np.float32)
    missing = ((sc == 0) & (kp == 0).all(-1)) | ~np.isfinite(kp).all(-1)
    kp[missing], sc[missing] = np.nan, 0.0
    return kp, sc


def read_rows(path, start: int, end: int, offsets: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints and scores (as :func:`to_pose`) of frames [start, end) of a
    ``_light_hand.csv``, without parsing the rest of the long file."""
    offsets = row_offsets(path) if offsets is None else offsets
    rows = len(offsets) - 1
    if not 0 <= start < end <= rows:
        raise MicrogestureError(f"{path}: frames {start}..{end - 1} (0-based) are not within its {rows} rows.")
    with open(path, "rb") as f:
        f.seek(int(offsets[start]))
        text = f.read(int(offsets[end] - offsets[start]))
    lines = [t for t in text.splitlines() if t.strip()]
    return to_pose(parse_rows(lines, path, start + 1))


def read_light_hand(path):
    """A whole ``_light_hand.csv``: ``(keypoints (T, 35, 2), scores (T, 35))``."""
    path = Path(os.fspath(path))
    offsets = row_offsets(path)
    if len(offsets) < 2:
        raise MicrogestureError(f"{path} holds no frames; expected rows of {_ROW_HELP}.")
    return read_rows(path, 0, len(offsets) - 1, offsets)


def challenge_pose(sample: np.ndarray, coords: str, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(keypoints (T', V, 2) in pixels of ``size``, NaN where missing; scores (T', V)) of one
    challenge sample (3, T, V, M): the most confident person, trailing all-zero (padding)
    frames dropped. ``coords``: ``pixels``, ``unit`` ([0, 1]) or ``centred`` (x - 0.5)."""
    data = np.asarray(sample, dtype=np.float32)
    person = int(np.argmax(np.nan_to_num(data[2]).sum((0, 1)))) if data.shape[-1] > 1 else 0
    kp = np.ascontiguousarray(data[:2, :, :, person].transpose(1, 2, 0))  # (T, V, 2)
    sc = np.clip(np.nan_to_num(data[2, :, :, person]), 0.0, 1.0)
    used = np.flatnonzero((sc > 0).any(1) | (np.nan_to_num(kp) != 0).any((1, 2)))
    length = int(used[-1]) + 1 if len(used) else len(sc)
    kp, sc = kp[:length].copy(), sc[:length].copy()
    w, h = size
    if coords == "unit":
        kp *= np.array([w, h], np.float32)
    elif coords == "centred":
        kp = (kp + 0.5) * np.array([w, h], np.float32)
    missing = (sc <= 0) | ~np.isfinite(kp).all(-1)
    kp[missing], sc[missing] = np.nan, 0.0
    return kp, sc


def challenge_frames(num_frames: int, array_frames: int, video_frames: int | None) -> np.ndarray:
    """The video frame of each of a challenge clip's ``num_frames`` skeleton frames.

    The release keeps the LAST ``array_frames`` (T = 90) frames of a longer clip and
    zero-pads a shorter one: skeleton frame i is video frame ``n - T + i`` for a video
    of n > T frames, else frame i (clamped to the video)."""
    frames = np.arange(num_frames, dtype=np.int64)
    if not video_frames:
        return frames
    if video_frames > array_frames:
        frames = frames + (video_frames - array_frames)
    return np.minimum(frames, video_frames - 1)


def to_challenge22(keypoints: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The challenge converter's 22 joints (layout ``imigue22``) from ``imigue35`` arrays."""
    cols = list(CHALLENGE_COLUMNS)
    return keypoints[..., cols, :], scores[..., cols]


def split_of_folder(path: Path, root: Path) -> str | None:
    """The release split a file lies in (``train``/``validate``/``test``), from the nearest
    ``imigue_skeleton_<split>`` folder between it and ``root``; None outside them."""
    for parent in Path(path).relative_to(root).parents:
        name = parent.name.lower()
        if name in SPLIT_FOLDERS:
            return SPLIT_FOLDERS[name]
    return None
