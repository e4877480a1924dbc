"""Dataset indexes: which clips a dataset holds, their labels, subjects and files.

:func:`open_dataset` reads a dataset folder into a :class:`DatasetIndex`: a list
of :class:`ClipRecord` (one per clip, pointing at files, never holding pixels),
the class names, the skeleton layout, and the clips that were skipped and why.
``core.windowing`` turns a record into a model's window (``training.transforms``
wraps it for torch).

Three folder layouts (``kind``) are read; ``kind="auto"`` tells them apart by
their files. The two iMiGUE readers live in ``core.dataset_imigue``.

``clips`` -- our own format (``training.synth`` writes it too)::

    clips.csv               header "clip,label,subject" (an optional "split" column);
                            label = a class name, or an integer class id
    classes.txt             optional: one class name per line, in id order
                            (without it: the sorted unique names, or "class <i>"
                            for integer labels)
    skeletons/<clip>.jsonl  the skeleton JSONL format of core.skeleton_io
    videos/<clip>.mp4       (or .avi, .mkv, .mov); no videos/ folder at all means a
                            pose-only dataset (records have ``video=None``)

  A clip's frame range is [0, last skeleton frame + 1); skeleton frame numbers
  are video frame indices.

``imigue-raw`` -- iMiGUE as released (``core.imigue`` reads the files), one long
interview video per file set, the folder tree taken as it unpacks::

    imigue_skeleton_train/<video>/<video>_light_hand.csv   106 columns per row: a frame
                                        index, then 35 joints x (x, y, score), 1920x1080 px
    imigue_skeleton_train/<video>/<video>_label.csv        rows "gestureID,start,end": ids
                                        1..31 (99 = the last class), 0-based inclusive frames
    imigue_skeleton_validate/..., imigue_skeleton_test/... the other splits
    <anywhere below the root>/<video>.mp4                  optional RGB (its own tree)
    split.csv                           optional SPLIT FILE (below): when present it decides
                                        subjects and splits (the 37/35 cross-subject protocol)

  The split is the ``imigue_skeleton_<split>`` folder (``validate`` is ``val``); the
  subject is then the video name (the release does not name athletes). Without those
  folders a split file is needed. Each label row is one clip: frames [start, end]
  of its video and skeleton file, id ``<video>_<k>`` (k = 0-based row number among
  the label rows, as the challenge release names its clips).

``imigue-challenge`` -- the MiGA challenge release (ST-GCN convention)::

    <split>_data.npy        float (N, 3, T, V=22, M): channels x, y, confidence;
                            layout imigue22; memory-mapped, never loaded whole
    <split>_label.pkl       a pickle of (sample_names, labels): lists of str and
                            0-based int (read with a restricted unpickler that
                            refuses anything but builtin containers, str and numbers)
    videos/<name>.mp4       optional clips named by sample name (``<video>_<idx>``),
                            in videos/ or beside the arrays
    split.csv               optional SPLIT FILE, for subjects

  The parts ``train`` and ``valid`` are the training and validation splits
  (``valid`` reads as ``val``). Clips longer than T frames keep their LAST T
  skeleton frames, shorter ones are zero-padded: skeleton frame i of a clip whose
  video has n > T frames is video frame n - T + i. Trailing frames whose confidences are all 0 are padding and are dropped when
  the clip is loaded. Coordinates: if every valid |x|, |y| is <= 1.5 they are
  normalised -- to [0, 1] (scaled by the frame size) or, when clearly negative
  values occur, centred on 0 as ST-GCN's ``x - 0.5`` (shifted by 0.5, then
  scaled) -- else they are pixels. The frame size is the clip video's, or a
  nominal 1920x1080 without one. The decision is taken once per array from a
  sample of its clips (``ClipRecord.coords``).

The SPLIT FILE (``split.csv``) is a CSV with the header ``video,subject,split``:
one row per long video (the name before ``_label.csv``, or before ``_<idx>`` of
a challenge sample), the subject (athlete) in it, and its split. Split names, wherever they are
written (this file, the ``split`` column of clips.csv, the challenge's parts, the
raw release's folders), read as ``train``, ``val`` or ``test``
(:func:`canonical_split`: ``valid``, ``validation`` and ``validate`` are ``val``). The real cross-subject protocol has 37 train and 35
test subjects; a subject must never be on both sides. Without a split file the
challenge reader uses the video name as the subject.

Problems with a clip's FILES (a missing or unreadable skeleton, a missing video,
a video not listed in the split file, an iMiGUE label beyond its skeleton's frames)
skip the clip: it is listed in
``DatasetIndex.skipped`` with its path and reason, and a warning gives the count;
``strict=True`` raises on the first one instead. Problems with the ANNOTATIONS
(an unknown label, an id out of range, start > end, an empty file) always raise,
naming file:line.
"""

from __future__ import annotations

import logging
import os
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from microgesture.core import imigue
from microgesture.core.errors import MicrogestureError, did_you_mean
from microgesture.core.skeleton_io import IMIGUE_HEIGHT, IMIGUE_WIDTH, read_jsonl
from microgesture.core.split_names import SPLIT_ALIASES, canonical_split

log = logging.getLogger(__name__)

KINDS = ("clips", "imigue-raw", "imigue-challenge")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov")
SPLITS = ("train", "val", "test")
SPLIT_FILE = "split.csv"
SPLIT_HEADER = ("video", "subject", "split")
SKELETON_FORMATS = ("jsonl", "imigue-csv", "npy")
COORDS = ("pixels", "unit", "centred")
#: Challenge coordinates whose valid |x|, |y| all lie within this are normalised.
NORMALISED_LIMIT = 1.5
#: Normalised coordinates this far below 0 mean the centred (x - 0.5) convention.
CENTRED_BELOW = -0.05
CHALLENGE_LAYOUT = "imigue22"
CHALLENGE_SIZE = (IMIGUE_WIDTH, IMIGUE_HEIGHT)
_SPLIT_HELP = ("a CSV with the header 'video,subject,split' and one row per video "
               "(split is train, val or test; see microgesture.core.dataset_index)")


@dataclass(frozen=True)
class ClipRecord:
    """One clip: a frame range of a video and of its skeleton file.

    ``start``/``end``: the clip's video frames [start, end) (0-based; ``end=None``:
    to the end of the skeleton). ``skeleton_format`` says how to read ``skeleton``:
    ``jsonl`` (core.skeleton_io), ``imigue-csv`` (a long ``_light_hand.csv``; its
    rows are video frames) or ``npy`` (row ``pose_array_index`` of a challenge
    array; the last T frames of a longer clip video). ``coords`` says how ``npy``
    coordinates are scaled (module docstring); the other formats are pixels.
    """

    clip_id: str
    label: int
    subject: str
    layout: str
    skeleton: Path | None
    video: Path | None = None
    start: int = 0
    end: int | None = None
    skeleton_format: str = "jsonl"
    pose_array_index: int | None = None
    split: str | None = None
    coords: str = "pixels"

    def __post_init__(self):
        if self.skeleton_format not in SKELETON_FORMATS:
            raise MicrogestureError(f"clip {self.clip_id!r}: skeleton_format must be one of "
                                    f"{', '.join(SKELETON_FORMATS)}, got {self.skeleton_format!r}.")
        if self.coords not in COORDS:
            raise MicrogestureError(f"clip {self.clip_id!r}: coords must be one of {', '.join(COORDS)}, "
                                    f"got {self.coords!r}.")
        if self.start < 0 or (self.end is not None and self.end <= self.start):
            raise MicrogestureError(f"clip {self.clip_id!r}: frame range [{self.start}, {self.end}) is empty "
                                    "or negative.")
        if self.skeleton_format == "npy" and self.pose_array_index is None:
            raise MicrogestureError(f"clip {self.clip_id!r}: an npy skeleton needs pose_array_index.")

    @property
    def num_frames(self) -> int | None:
        """Frames in the clip, when the record knows its end."""
        return None if self.end is None else self.end - self.start


@dataclass(frozen=True)
class DatasetIndex:
    """The clips of a dataset, with its class names and skeleton layout.

    ``layout`` is the skeleton layout of the records (the most common one if
    they differ; each record carries its own). ``skipped`` lists the
    ``(path, reason)`` of every clip (or file) left out.
    """

    records: tuple[ClipRecord, ...]
    classes: tuple[str, ...]
    layout: str
    root: Path
    kind: str
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    def __getitem__(self, i: int) -> ClipRecord:
        return self.records[i]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subjects(self) -> tuple[str, ...]:
        """The sorted unique subjects."""
        return tuple(sorted({r.subject for r in self.records}))

    def splits(self) -> tuple[str, ...]:
        """The sorted unique split names the records carry (empty when none)."""
        return tuple(sorted({r.split for r in self.records if r.split is not None}))

    def class_counts(self) -> tuple[int, ...]:
        """Clips per class id, for every class (zeros included)."""
        counts = Counter(r.label for r in self.records)
        return tuple(counts.get(i, 0) for i in range(len(self.classes)))

    def select(self, keep: Callable[[ClipRecord], bool] | Iterable[int]) -> DatasetIndex:
        """A copy holding the records for which ``keep(record)`` is true, or those at the given indices."""
        if callable(keep):
            records = tuple(r for r in self.records if keep(r))
        else:
            records = tuple(self.records[i] for i in keep)
        return replace(self, records=records, skipped=list(self.skipped))

    def by_split(self, split: str) -> DatasetIndex:
        """The records of one split (``train``, ``test``, ...); an error when there are none."""
        split = canonical_split(split)
        out = self.select(lambda r: r.split == split)
        if not out.records:
            have = self.splits()
            raise MicrogestureError(
                f"{self.root}: no clips in split {split!r}; "
                + (f"the dataset has the splits {', '.join(have)}." if have else
                   "the dataset has no split information: use DatasetIndex.split_by_subject() "
                   "or add a 'split' column / split file."))
        return out

    def split_by_subject(self, test_subjects: Iterable[str] | float | None = None, fraction: float = 0.2,
                         seed: int = 0) -> tuple[DatasetIndex, DatasetIndex]:
        """``(train, test)`` with held-out SUBJECTS: no subject has clips on both sides.

        ``test_subjects``: the subjects to hold out (all must exist); when None or
        empty, a ``fraction`` of the subjects chosen at random with ``seed`` (at
        least one on each side). A float in place of ``test_subjects`` is the
        fraction. The test side is never empty; named subjects may leave the
        train side empty (evaluating on test subjects only).
        """
        subjects = self.subjects()
        if isinstance(test_subjects, (int, float)) and not isinstance(test_subjects, bool):
            test_subjects, fraction = None, test_subjects
        if isinstance(test_subjects, str):
            test_subjects = (test_subjects,)
        if test_subjects:
            held = set(test_subjects)
            unknown = sorted(held - set(subjects))
            if unknown:
                raise MicrogestureError(f"unknown test subject(s) {unknown} in {self.root}."
                                        f"{did_you_mean(unknown[0], subjects)} The dataset's subjects: "
                                        f"{', '.join(subjects)}.")
        else:
            if not 0 < fraction < 1:
                raise MicrogestureError(f"the test fraction must lie in (0, 1), got {fraction!r}.")
            if len(subjects) < 2:
                raise MicrogestureError(f"{self.root}: cannot split {len(subjects)} subject(s) into train and "
                                        "test; a subject-disjoint split needs at least 2 subjects.")
            count = min(max(1, round(fraction * len(subjects))), len(subjects) - 1)
            held = set(random.Random(seed).sample(subjects, count))
        train = self.select(lambda r: r.subject not in held)
        test = self.select(lambda r: r.subject in held)
        if not test.records:
            raise MicrogestureError(f"{self.root}: the subject split leaves no test clips.")
        return train, test


# ----------------------------------------------------------------------------- opening

def open_dataset(path, kind: str = "auto", split: str | None = None, strict: bool = False,
                 split_file=None) -> DatasetIndex:
    """Read a dataset folder into a :class:`DatasetIndex` (formats: module docstring).

    ``kind``: ``auto`` (from the files present), ``clips``, ``imigue-raw`` or
    ``imigue-challenge``. ``split``: keep only that split (``train``/``test``;
    the challenge reader then reads only ``<split>_data.npy``). ``strict``: raise
    on the first clip with a missing or unreadable file instead of skipping it.
    ``split_file``: the split CSV (default ``<path>/split.csv``).
    """
    root = Path(os.fspath(path))
    if not root.is_dir():
        raise MicrogestureError(f"dataset folder {root} does not exist (or is not a folder); expected "
                                "a folder with clips.csv (own data), <video>_label.csv files (iMiGUE raw) "
                                "or <split>_data.npy files (iMiGUE challenge).")
    if kind == "auto":
        kind = detect_kind(root)
    if kind not in KINDS:
        raise MicrogestureError(f"unknown dataset kind {kind!r}.{did_you_mean(kind, KINDS)} "
                                f"Known kinds: auto, {', '.join(KINDS)}.")
    split_path = Path(os.fspath(split_file)) if split_file is not None else None
    problems = _Problems(strict)
    from microgesture.core.dataset_imigue import _read_challenge, _read_imigue_raw

    if kind == "clips":
        index = _read_clips(root, problems)
    elif kind == "imigue-raw":
        index = _read_imigue_raw(root, problems, split_path)
    else:
        index = _read_challenge(root, problems, split_path, split)
    index = replace(index, skipped=problems.skipped)
    if problems.skipped:
        first_path, first_reason = problems.skipped[0]
        log.warning("%s: skipped %d clip(s) or file(s) with missing or unreadable files (first: %s: %s); "
                    "see DatasetIndex.skipped, or pass strict=True to fail instead.",
                    root, len(problems.skipped), first_path, first_reason)
    if split is not None:
        index = index.by_split(split)
    if not index.records:
        reason = f" ({len(problems.skipped)} skipped, first: {problems.skipped[0][1]})" if problems.skipped else ""
        raise MicrogestureError(f"{root}: the dataset has no usable clips{reason}.")
    return index


def detect_kind(root: Path) -> str:
    """The dataset kind of a folder, from the files it holds."""
    if (root / "clips.csv").is_file():
        return "clips"
    if any(root.glob("*_data.npy")) or any(root.glob("*_label.pkl")):
        return "imigue-challenge"
    if any(root.rglob("*_label.csv")) or any(root.rglob("*_light_hand.csv")):
        return "imigue-raw"
    raise MicrogestureError(
        f"{root} is not a dataset folder we know: found no clips.csv (own data: clips.csv with "
        "'clip,label,subject', skeletons/<clip>.jsonl, videos/<clip>.mp4), no <video>_label.csv with "
        "<video>_light_hand.csv (iMiGUE raw) and no <split>_data.npy with <split>_label.pkl (iMiGUE "
        "challenge). Point at the folder that holds these files, or pass kind=.")


class _Problems:
    """Skipped clips, or the first one raised when strict."""

    def __init__(self, strict: bool):
        self.strict, self.skipped = strict, []

    def __call__(self, path: Path, reason: str, fix: str = "") -> None:
        if self.strict:
            raise MicrogestureError(f"{path}: {reason}.{' ' + fix if fix else ''} "
                                    "(strict=False skips such clips instead.)")
        self.skipped.append((path, reason))


def _line_error(path: Path, line: int, what: str) -> MicrogestureError:
    return MicrogestureError(f"{path}:{line}: {what}")


def _read_csv_rows(path: Path, what: str) -> list[tuple[int, list[str]]]:
    """(line number, stripped fields) of the non-blank rows of a CSV file."""
    return imigue.read_csv_rows(path, what)


def _files_by_stem(folder: Path, extensions: Sequence[str]) -> dict[str, Path]:
    """{stem: path} of the files in ``folder`` with one of ``extensions`` (case-insensitive)."""
    out: dict[str, Path] = {}
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() in extensions and p.is_file():
                out.setdefault(p.stem, p)
    return out


def _check_video(path: Path | None, clip: str, problems: _Problems, where: Path) -> bool:
    """True when the clip's video is usable (present and not empty)."""
    if path is None:
        problems(where, f"clip {clip!r}: no video file {where.name}.{{{','.join(e[1:] for e in VIDEO_EXTENSIONS)}}}",
                 "Add the video, or remove the clip.")
        return False
    if path.stat().st_size == 0:
        problems(path, f"clip {clip!r}: the video file is empty", "Replace it with the real video.")
        return False
    return True


def _most_common(values: Iterable[str], default: str) -> str:
    counts = Counter(values)
    return counts.most_common(1)[0][0] if counts else default


# ----------------------------------------------------------------------------- own data

def _parse_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _read_classes(path: Path) -> tuple[str, ...]:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except OSError as e:
        raise MicrogestureError(f"cannot read {path}: {e.strerror}.") from None
    names, seen = [], {}
    for n, line in enumerate(lines, start=1):
        name = line.strip()
        if not name:
            continue
        if name in seen:
            raise _line_error(path, n, f"class {name!r} is listed twice (first on line {seen[name]}); "
                                       "list each class once, in id order.")
        seen[name] = n
        names.append(name)
    if not names:
        raise MicrogestureError(f"{path} lists no classes; write one class name per line, in id order "
                                "(or delete it to use the sorted names from clips.csv).")
    return tuple(names)


def _read_clips(root: Path, problems: _Problems) -> DatasetIndex:
    csv_path = root / "clips.csv"
    if not csv_path.is_file():
        raise MicrogestureError(f"missing {csv_path}: own data needs clips.csv with the header "
                                "'clip,label,subject' and one row per clip, plus skeletons/<clip>.jsonl.")
    rows = _read_csv_rows(csv_path, "the clip list")
    if not rows:
        raise MicrogestureError(f"{csv_path} is empty; expected the header 'clip,label,subject' and "
                                "one row per clip.")
    header_line, header = rows[0]
    header = [h.lower() for h in header]
    missing = [c for c in ("clip", "label", "subject") if c not in header]
    if missing:
        raise _line_error(csv_path, header_line, f"the header {','.join(header)!r} lacks "
                                                 f"{', '.join(missing)}; expected 'clip,label,subject' "
                                                 "(and optionally 'split').")
    col = {name: header.index(name) for name in ("clip", "label", "subject", "split") if name in header}
    entries, seen = [], {}
    for n, fields in rows[1:]:
        if len(fields) < len(header):
            raise _line_error(csv_path, n, f"{len(fields)} fields, expected {len(header)} ({','.join(header)}).")
        clip, label, subject = (fields[col[c]] for c in ("clip", "label", "subject"))
        split = canonical_split(fields[col["split"]]) if "split" in col and fields[col["split"]] else None
        for name, value in (("clip", clip), ("label", label), ("subject", subject)):
            if not value:
                raise _line_error(csv_path, n, f"the {name} is empty.")
        if clip in seen:
            raise _line_error(csv_path, n, f"clip {clip!r} is listed twice (first on line {seen[clip]}).")
        if split is not None and split not in SPLITS:
            raise _line_error(csv_path, n, f"split {split!r} is not one of {', '.join(SPLIT_ALIASES)}.")
        seen[clip] = n
        entries.append((n, clip, label, subject, split or None))
    if not entries:
        raise MicrogestureError(f"{csv_path} has a header but no clips; add one row per clip.")
    classes = _own_classes(root, csv_path, entries)
    where = {name: i for i, name in enumerate(classes)}

    skeletons = root / "skeletons"
    if not skeletons.is_dir():
        raise MicrogestureError(f"missing folder {skeletons}: own data needs skeletons/<clip>.jsonl for "
                                "every clip in clips.csv (core.skeleton_io format).")
    video_dir = root / "videos"
    videos = _files_by_stem(video_dir, VIDEO_EXTENSIONS) if video_dir.is_dir() else None
    records = []
    for n, clip, label_text, subject, split in entries:
        if label_text in where:
            label = where[label_text]
        else:
            label = _parse_int(label_text)
            if label is None:
                raise _line_error(csv_path, n, f"label {label_text!r} is not a class of "
                                               f"{_classes_source(root)}.{did_you_mean(label_text, classes)}")
            if not 0 <= label < len(classes):
                raise _line_error(csv_path, n, f"label id {label} is out of range: {_classes_source(root)} "
                                               f"has {len(classes)} classes (ids 0..{len(classes) - 1}).")
        skel = skeletons / f"{clip}.jsonl"
        if not skel.is_file():
            problems(skel, f"clip {clip!r}: missing skeleton file", "Extract it with `microgesture pose`.")
            continue
        try:
            frames, _, _, _, layout, _, _ = read_jsonl(skel)
        except MicrogestureError as e:
            problems(skel, f"clip {clip!r}: unreadable skeleton ({e})", "Re-extract it.")
            continue
        video = None
        if videos is not None:
            video = videos.get(clip)
            if not _check_video(video, clip, problems, video_dir / clip):
                continue
        records.append(ClipRecord(clip, label, subject, layout, skel, video, 0, int(frames[-1]) + 1,
                                  "jsonl", split=split))
    layout = _most_common((r.layout for r in records), "coco18")
    return DatasetIndex(tuple(records), classes, layout, root, "clips")


def _classes_source(root: Path) -> str:
    return "classes.txt" if (root / "classes.txt").is_file() else "the labels of clips.csv"


def _own_classes(root: Path, csv_path: Path, entries) -> tuple[str, ...]:
    path = root / "classes.txt"
    if path.is_file():
        return _read_classes(path)
    labels = [e[2] for e in entries]
    ids = [_parse_int(v) for v in labels]
    if all(i is not None for i in ids):
        if min(ids) < 0:
            n = entries[ids.index(min(ids))][0]
            raise _line_error(csv_path, n, f"label id {min(ids)} is negative; class ids start at 0.")
        return tuple(f"class {i}" for i in range(max(ids) + 1))
    if any(i is not None for i in ids):
        n = entries[next(k for k, i in enumerate(ids) if i is not None)][0]
        raise _line_error(csv_path, n, "labels mix integer ids and class names; without classes.txt use "
                                       "one kind, or write classes.txt (one name per line, in id order).")
    return tuple(sorted(set(labels)))
