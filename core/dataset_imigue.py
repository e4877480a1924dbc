"""The iMiGUE dataset folders (``core.dataset_index``'s ``imigue-raw`` and
``imigue-challenge`` kinds, described there) read into a ``DatasetIndex``:
the split file, the raw release's per-video CSVs and the challenge's arrays and
label pickles (unpickled with only plain types allowed)."""

from __future__ import annotations

import builtins
import io
import pickle
from pathlib import Path

import numpy as np

from microgesture.core import imigue
from microgesture.core.dataset_index import (CENTRED_BELOW, CHALLENGE_LAYOUT, NORMALISED_LIMIT, SPLIT_FILE,
                                             SPLIT_HEADER, SPLITS, VIDEO_EXTENSIONS, _SPLIT_HELP, ClipRecord,
                                             DatasetIndex, _check_video, _files_by_stem, _line_error, _Problems,
                                             _read_csv_rows)
from microgesture.core.errors import MicrogestureError
from microgesture.core.labels import IMIGUE_CLASSES
from microgesture.core.split_names import SPLIT_ALIASES, canonical_split


# ----------------------------------------------------------------------------- split file

def read_split_file(path: Path) -> dict[str, tuple[str, str]]:
    """{video: (subject, split)} from a split CSV ``video,subject,split`` (module docstring)."""
    if not path.is_file():
        raise MicrogestureError(f"missing split file {path}: iMiGUE raw needs {_SPLIT_HELP}. "
                                "Write it, or pass split_file=.")
    rows = _read_csv_rows(path, "the split file")
    if not rows:
        raise MicrogestureError(f"split file {path} is empty; expected {_SPLIT_HELP}.")
    n, header = rows[0]
    if tuple(h.lower() for h in header) != SPLIT_HEADER:
        raise _line_error(path, n, f"the header is {','.join(header)!r}; a split file starts with "
                                   f"'{','.join(SPLIT_HEADER)}'.")
    out: dict[str, tuple[str, str]] = {}
    lines: dict[str, int] = {}
    for n, fields in rows[1:]:
        if len(fields) != 3 or not all(fields):
            raise _line_error(path, n, f"expected 3 non-empty fields video,subject,split, got {fields}.")
        video, subject, split = fields
        split = canonical_split(split)
        if split not in SPLITS:
            raise _line_error(path, n, f"split {split!r} is not one of {', '.join(SPLIT_ALIASES)}.")
        if video in out:
            raise _line_error(path, n, f"video {video!r} is listed twice (first on line {lines[video]}).")
        out[video], lines[video] = (subject, split), n
    if not out:
        raise MicrogestureError(f"split file {path} has a header but no videos; expected {_SPLIT_HELP}.")
    sides: dict[str, set[str]] = {}
    for subject, split in out.values():
        sides.setdefault(subject, set()).add(split)
    mixed = sorted(s for s, v in sides.items() if len(v) > 1)
    if mixed:
        raise MicrogestureError(f"split file {path}: subject(s) {mixed[:5]} appear in more than one split; "
                                "a cross-subject split puts all of a subject's videos on one side.")
    return out


# ----------------------------------------------------------------------------- iMiGUE raw

def count_csv_rows(path: Path) -> int:
    """Data rows of an iMiGUE ``_light_hand.csv`` (non-blank lines, a header line excluded)."""
    return imigue.count_rows(path)


def _videos_below(root: Path) -> dict[str, list[Path]]:
    """{stem: [paths]} of every video file below ``root`` (the release keeps RGB in its own tree)."""
    out: dict[str, list[Path]] = {}
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file():
            out.setdefault(p.stem, []).append(p)
    return out


def _raw_split(label_path: Path, root: Path, video: str, table, split_path: Path, problems: _Problems):
    """(subject, split) of a raw video: from the split file when there is one, else from the
    release folder; None (after reporting) when neither says."""
    if table is not None:
        if video not in table:
            problems(label_path, f"video {video!r} is not in the split file {split_path}; its clips are skipped",
                     f"Add a row '{video},<subject>,<train|val|test>' to it.")
            return None
        return table[video]
    split = canonical_split(imigue.split_of_folder(label_path, root))
    if split is None:
        raise MicrogestureError(
            f"{label_path} is not inside one of the release's folders "
            f"({', '.join(imigue.SPLIT_FOLDERS)}) and there is no split file {split_path}: keep the "
            f"release's folder tree as it unpacks, or write {_SPLIT_HELP}.")
    return video, split


def _read_imigue_raw(root: Path, problems: _Problems, split_path: Path | None) -> DatasetIndex:
    label_files = sorted(root.rglob("*_label.csv"))
    if not label_files:
        raise MicrogestureError(f"{root} holds no <video>_label.csv file; iMiGUE raw needs, per video, "
                                "<video>_label.csv (gestureID,start,end) beside <video>_light_hand.csv.")
    split_path = split_path or root / SPLIT_FILE
    table = read_split_file(split_path) if split_path.is_file() else None
    videos = _videos_below(root)
    out = []
    for label_path in label_files:
        video = label_path.name[: -len("_label.csv")]
        skeleton = label_path.parent / f"{video}_light_hand.csv"
        if not skeleton.is_file():
            problems(skeleton, f"missing skeleton file for {label_path.name}; its clips are skipped",
                     f"Put {skeleton.name} beside {label_path.name}.")
            continue
        side = _raw_split(label_path, root, video, table, split_path, problems)
        if side is None:
            continue
        subject, split = side
        try:
            num_frames = imigue.count_rows(skeleton)
        except MicrogestureError as e:
            problems(skeleton, f"cannot read the skeleton file ({e})")
            continue
        if num_frames == 0:
            problems(skeleton, "the skeleton file has no frames; its clips are skipped")
            continue
        rows = imigue.read_label_csv(label_path)
        # the video beside the skeleton first, else the only one of that name below the root
        found = videos.get(video, [])
        path = next((p for p in found if p.parent == label_path.parent), found[0] if found else None)
        for k, (label, start, end) in enumerate(rows):
            clip = f"{video}_{k}"
            if end >= num_frames:
                problems(label_path, f"clip {clip!r} (label row {k + 1}): frames {start}..{end} go beyond the "
                                     f"{num_frames} frames (0..{num_frames - 1}) of {skeleton}",
                         "Fix the row or the skeleton file.")
                continue
            if videos and not _check_video(path, clip, problems, label_path.parent / video):
                continue
            out.append(ClipRecord(clip, label, subject, "imigue35", skeleton, path if videos else None,
                                  start, end + 1, "imigue-csv", split=split))
    return DatasetIndex(tuple(out), IMIGUE_CLASSES, "imigue35", root, "imigue-raw")


# ----------------------------------------------------------------------------- iMiGUE challenge

class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles builtin containers, strings and numbers only: never imports or calls anything else."""

    SAFE = frozenset({"list", "tuple", "dict", "set", "frozenset", "str", "bytes", "int", "float", "bool",
                      "complex"})

    def find_class(self, module, name):
        if module in ("builtins", "__builtin__") and name in self.SAFE:
            return getattr(builtins, name)
        raise pickle.UnpicklingError(f"the pickle refers to {module}.{name}, which is not allowed")


def restricted_load(data: bytes):
    """``pickle.loads`` for untrusted data: only builtin containers, str, bytes and numbers."""
    return _RestrictedUnpickler(io.BytesIO(data), encoding="utf-8").load()


def load_label_pickle(path: Path) -> tuple[list[str], list[int]]:
    """(sample names, labels) from an ST-GCN ``<split>_label.pkl``, read safely."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise MicrogestureError(f"cannot read {path}: {e.strerror}.") from None
    try:
        obj = restricted_load(data)
    except pickle.UnpicklingError as e:
        raise MicrogestureError(
            f"{path} was refused: {e}. Label pickles may hold only lists of sample names (str) and "
            "labels (int); re-save it as pickle.dump((names, [int(x) for x in labels]), f).") from None
    except Exception as e:  # truncated or not a pickle at all
        raise MicrogestureError(f"{path} is not a readable pickle ({type(e).__name__}: {e}); expected "
                                "(sample_names, labels) as the ST-GCN tools write it.") from None
    if isinstance(obj, dict):
        names = next((obj[k] for k in ("sample_name", "sample_names", "names") if k in obj), None)
        labels = next((obj[k] for k in ("label", "labels") if k in obj), None)
        obj = (names, labels)
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2 and all(isinstance(x, (list, tuple)) for x in obj)):
        raise MicrogestureError(f"{path} holds a {type(obj).__name__}; expected a pair (sample_names, labels) "
                                "of lists, as the ST-GCN tools write it.")
    names, labels = obj
    names = [n.decode("utf-8") if isinstance(n, bytes) else n for n in names]
    bad = next((i for i, n in enumerate(names) if not isinstance(n, str) or not n), None)
    if bad is not None:
        raise MicrogestureError(f"{path}: sample {bad} has the name {names[bad]!r}; names must be strings.")
    bad = next((i for i, v in enumerate(labels) if isinstance(v, bool) or not isinstance(v, int)), None)
    if bad is not None:
        raise MicrogestureError(f"{path}: sample {bad} ({names[bad] if bad < len(names) else '?'}) has the "
                                f"label {labels[bad]!r}; labels must be integers.")
    if len(names) != len(labels):
        raise MicrogestureError(f"{path}: {len(names)} sample names but {len(labels)} labels; they must pair up.")
    return list(names), list(labels)


def detect_coords(array: np.ndarray, samples: int = 64) -> str:
    """``pixels``, ``unit`` or ``centred`` for a challenge array (N, 3, T, V, M), from up to ``samples`` clips."""
    rows = np.unique(np.linspace(0, len(array) - 1, min(samples, len(array))).round().astype(int))
    data = np.asarray(array[rows], dtype=np.float64)  # (n, 3, T, V, M)
    xy, conf = data[:, :2], data[:, 2]
    valid = (conf > 0) & np.isfinite(xy).all(1)
    if not valid.any():
        return "pixels"
    x, y = xy[:, 0][valid], xy[:, 1][valid]
    if max(np.abs(x).max(), np.abs(y).max()) > NORMALISED_LIMIT:
        return "pixels"
    return "centred" if min(x.min(), y.min()) < CENTRED_BELOW else "unit"


def video_of_sample(name: str) -> str:
    """The long video a challenge sample comes from: ``<video>_<idx>`` -> ``<video>``."""
    stem = name.rsplit(".", 1)[0] if name.lower().endswith(VIDEO_EXTENSIONS) else name
    head, _, tail = stem.rpartition("_")
    return head if head and tail.isdigit() else stem


def _read_challenge(root: Path, problems: _Problems, split_path: Path | None, split: str | None) -> DatasetIndex:
    found = sorted(p.name[: -len("_data.npy")] for p in root.glob("*_data.npy"))
    if split is not None:
        chosen = [name for name in found if canonical_split(name) == canonical_split(split)]
        if not chosen:
            raise MicrogestureError(f"missing {root / f'{split}_data.npy'}: the iMiGUE challenge release "
                                    f"has <split>_data.npy and <split>_label.pkl per split; found splits "
                                    f"{found or 'none'}.")
        found = chosen
    if not found:
        labels = sorted(p.name for p in root.glob("*_label.pkl"))
        raise MicrogestureError(f"{root} holds no <split>_data.npy (found {labels or 'no files'} of the "
                                "release); the iMiGUE challenge release has <split>_data.npy (N, 3, T, 22, M) "
                                "beside <split>_label.pkl.")
    table = None
    split_path = split_path or root / SPLIT_FILE
    if split_path.is_file():
        table = read_split_file(split_path)
    videos = {**_files_by_stem(root, VIDEO_EXTENSIONS), **_files_by_stem(root / "videos", VIDEO_EXTENSIONS)}
    has_videos = bool(videos)
    records = []
    for name in found:
        data_path, label_path = root / f"{name}_data.npy", root / f"{name}_label.pkl"
        if not label_path.is_file():
            raise MicrogestureError(f"missing {label_path}: {data_path.name} needs its labels, a pickle of "
                                    "(sample_names, labels).")
        try:
            array = np.load(data_path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise MicrogestureError(f"{data_path} is not a readable .npy array ({e}); expected float "
                                    "(N, 3, T, 22, M).") from None
        if array.ndim != 5 or array.shape[1] != 3 or array.shape[3] != 22 or array.shape[4] < 1 \
                or array.dtype.kind not in "fiu":
            raise MicrogestureError(f"{data_path} has shape {array.shape} and dtype {array.dtype}; expected "
                                    "numbers shaped (N, 3 (x, y, confidence), T, 22 joints, M people).")
        names, labels = load_label_pickle(label_path)
        if len(names) != len(array):
            raise MicrogestureError(f"{label_path} names {len(names)} samples but {data_path} holds "
                                    f"{len(array)}; they must be the same release.")
        bad = next((i for i, v in enumerate(labels) if not 0 <= v < len(IMIGUE_CLASSES)), None)
        if bad is not None:
            raise MicrogestureError(f"{label_path}: sample {bad} ({names[bad]}) has the label {labels[bad]}; "
                                    f"labels are 0-based class ids 0..{len(IMIGUE_CLASSES) - 1}.")
        coords = detect_coords(array) if len(array) else "pixels"
        for i, (sample, label) in enumerate(zip(names, labels)):
            video_name = video_of_sample(sample)
            if table is not None:
                if video_name not in table:
                    problems(label_path, f"sample {sample!r}: video {video_name!r} is not in the split file "
                                         f"{split_path}", f"Add a row '{video_name},<subject>,<split>'.")
                    continue
                subject = table[video_name][0]
            else:
                subject = video_name
            stem = sample.rsplit(".", 1)[0] if sample.lower().endswith(VIDEO_EXTENSIONS) else sample
            video = videos.get(stem) if has_videos else None
            if has_videos and not _check_video(video, sample, problems, root / "videos" / stem):
                continue
            records.append(ClipRecord(sample, int(label), subject, CHALLENGE_LAYOUT, data_path, video,
                                      skeleton_format="npy", pose_array_index=i, split=canonical_split(name),
                                      coords=coords))
    return DatasetIndex(tuple(records), IMIGUE_CLASSES, CHALLENGE_LAYOUT, root, "imigue-challenge")
