"""Long videos with labelled gesture intervals, for online evaluation (torch-free).

:func:`open_long_videos` reads a folder in one of two layouts into a list of
:class:`LongVideo` (paths and ground truth, never pixels):

**Own long videos** (and the synthetic ones, ``microgesture data synth DIR
--long-videos N``)::

    DIR/intervals.csv           video,label,start_frame,last_frame: one row per gesture;
                                label = class name; frames 0-based, both inclusive
    DIR/videos.csv              optional: video,subject,split (split: train, val or
                                test; valid, validation, validate are read as val).
                                Without it every video in videos/ is listed, no split
    DIR/videos/<video>.mp4      any extension OpenCV reads (.mp4, .avi, .mkv, .mov, .webm)
    DIR/skeletons/<video>.jsonl optional: skeletons replayed instead of running pose

A video listed in ``videos.csv`` with no row in ``intervals.csv`` has no gesture
(every detection on it is a false positive).

**iMiGUE raw release**: every ``<video>_label.csv`` under DIR (``gestureID,start,end``,
read by :func:`microgesture.core.imigue.read_label_csv`: 0-based inclusive frames),
its ``<video>_light_hand.csv`` beside it (replayed as skeletons) and its RGB video
``<video>.<ext>`` anywhere under DIR. The split is ``split.csv`` (``video,subject,split``)
when present, else the release's folder (``imigue_skeleton_train``, ``_validate``,
``_test``). A label file without a video is skipped and reported in ``skipped``.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from microgesture.core.errors import MicrogestureError
from microgesture.core.labels import IMIGUE_CLASSES
from microgesture.core.online_metric import Interval
from microgesture.core.split_names import SPLITS, canonical_split

INTERVALS = "intervals.csv"
VIDEOS = "videos.csv"
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v")


@dataclass(frozen=True)
class LongVideo:
    name: str
    video: Path
    truth: tuple[Interval, ...]
    skeleton: Path | None = None
    subject: str = ""
    split: str | None = None


@dataclass
class LongVideoSet:
    root: Path
    kind: str                       # "intervals" or "imigue-raw"
    videos: list[LongVideo]
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (path, reason)

    def split(self, name: str | None) -> list[LongVideo]:
        """The videos of split ``name`` (None: all)."""
        return list(self.videos) if name is None else [v for v in self.videos if v.split == name]

    def splits(self) -> list[str]:
        return sorted({v.split for v in self.videos if v.split})


def normalize_split(value: str, where: str) -> str:
    split = canonical_split(value)
    if split not in SPLITS:
        raise MicrogestureError(f"{where}: split {value!r} is not one of train, val (valid, validation) "
                                "or test.")
    return split


def _rows(path: Path, required: tuple[str, ...], what: str) -> list[tuple[int, dict]]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in reader.fieldnames or []]
            missing = [c for c in required if c not in header]
            if missing:
                raise MicrogestureError(f"{path}: the header lacks {', '.join(missing)}; {what} needs the "
                                        f"columns {','.join(required)} (found {','.join(header) or 'nothing'}).")
            return [(n, {(k or "").strip(): (v or "").strip() for k, v in row.items()})
                    for n, row in enumerate(reader, start=2) if any((v or "").strip() for v in row.values())]
    except OSError as e:
        raise MicrogestureError(f"cannot read {path}: {e.strerror}.") from None
    except (csv.Error, UnicodeDecodeError) as e:
        raise MicrogestureError(f"{path} is not a readable CSV file ({e}).") from None


def _frame(path: Path, n: int, row: dict, key: str) -> int:
    try:
        value = int(row[key])
    except ValueError:
        raise MicrogestureError(f"{path}:{n}: {key} {row[key]!r} is not a whole frame number.") from None
    if value < 0:
        raise MicrogestureError(f"{path}:{n}: {key} {value} is negative; frames are 0-based.")
    return value


def read_intervals(path) -> dict[str, list[Interval]]:
    """``{video: [Interval, ...]}`` from an ``intervals.csv`` (see the module docstring)."""
    path = Path(path)
    if path.is_file():
        with open(path, encoding="utf-8-sig") as f:
            head = f.readline()
        if "end_frame" in head and "last_frame" not in head:
            raise MicrogestureError(
                f"{path}: use the column last_frame (the gesture's last frame, inclusive), not end_frame, "
                "so that nobody has to guess whether the end is included.")
    out: dict[str, list[Interval]] = {}
    for n, row in _rows(path, ("video", "label", "start_frame", "last_frame"), "an interval file"):
        start, last = _frame(path, n, row, "start_frame"), _frame(path, n, row, "last_frame")
        if last < start:
            raise MicrogestureError(f"{path}:{n}: last_frame {last} is before start_frame {start}.")
        if not row["video"] or not row["label"]:
            raise MicrogestureError(f"{path}:{n}: video and label must not be empty.")
        out.setdefault(row["video"], []).append(Interval(row["label"], start, last))
    return out


def write_intervals(path, rows) -> None:
    """Write ``intervals.csv`` from (video, label, start_frame, last_frame) rows."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["video", "label", "start_frame", "last_frame"])
        w.writerows(rows)


def _videos_by_stem(folder: Path, recursive: bool = False) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    files = folder.rglob("*") if recursive else folder.iterdir()
    out: dict[str, Path] = {}
    for p in sorted(files):
        if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS:
            out.setdefault(p.stem, p)
    return out


def _read_split_table(path: Path) -> dict[str, tuple[str, str | None]]:
    table = {}
    for n, row in _rows(path, ("video",), "a video list"):
        split = normalize_split(row["split"], f"{path}:{n}") if row.get("split") else None
        table[row["video"]] = (row.get("subject", "") or row["video"], split)
    return table


def _open_intervals(root: Path) -> LongVideoSet:
    truth = read_intervals(root / INTERVALS)
    found = _videos_by_stem(root / "videos") or _videos_by_stem(root)
    table = (_read_split_table(root / VIDEOS) if (root / VIDEOS).is_file()
             else {name: (name, None) for name in found})
    unknown = sorted(set(truth) - set(table))
    if unknown:
        raise MicrogestureError(f"{root / INTERVALS} labels videos that are not listed "
                                f"({', '.join(unknown[:5])}); add them to {VIDEOS} or videos/.")
    videos, skipped = [], []
    for name, (subject, split) in table.items():
        if name not in found:
            skipped.append((str(root / "videos" / name), "no video file with this name"))
            continue
        skel = root / "skeletons" / f"{name}.jsonl"
        videos.append(LongVideo(name, found[name], tuple(truth.get(name, ())), skel if skel.is_file() else None,
                                subject, split))
    return LongVideoSet(root, "intervals", videos, skipped)


_RELEASE_SPLIT = re.compile(r"imigue_skeleton_(train|validate|valid|val|test)$", re.IGNORECASE)


def _open_imigue(root: Path) -> LongVideoSet:
    from microgesture.core.imigue import read_label_csv

    table = _read_split_table(root / "split.csv") if (root / "split.csv").is_file() else {}
    rgb = _videos_by_stem(root, recursive=True)
    videos, skipped = [], []
    for label_path in sorted(root.rglob("*_label.csv")):
        name = label_path.name[: -len("_label.csv")]
        local = _videos_by_stem(label_path.parent)
        video = local.get(name) or rgb.get(name)
        if video is None:
            skipped.append((str(label_path), f"no RGB video {name}.mp4 (or another extension) under {root}"))
            continue
        subject, split = table.get(name, (name, None))
        if split is None:
            for part in label_path.parents:
                m = _RELEASE_SPLIT.match(part.name)
                if m:
                    split = normalize_split(m.group(1), str(part))
                    break
        truth = tuple(Interval(IMIGUE_CLASSES[c], s, e) for c, s, e in read_label_csv(label_path))
        skel = label_path.with_name(f"{name}_light_hand.csv")
        videos.append(LongVideo(name, video, truth, skel if skel.is_file() else None, subject, split))
    return LongVideoSet(root, "imigue-raw", videos, skipped)


def open_long_videos(path) -> LongVideoSet:
    """The long videos of a folder (own/synthetic ``intervals.csv``, or iMiGUE raw)."""
    root = Path(path)
    if not root.is_dir():
        raise MicrogestureError(f"{root} is not a folder; give the folder of long videos (with {INTERVALS}, "
                                "or an iMiGUE raw release).")
    if (root / INTERVALS).is_file():
        found = _open_intervals(root)
    elif any(root.rglob("*_label.csv")):
        found = _open_imigue(root)
    else:
        raise MicrogestureError(
            f"{root} holds no {INTERVALS} (own or synthetic long videos: video,label,start_frame,last_frame) "
            "and no <video>_label.csv (iMiGUE raw); make a synthetic set with microgesture data synth DIR "
            "--long-videos N.")
    if not found.videos:
        reasons = "; ".join(f"{p}: {r}" for p, r in found.skipped[:3])
        raise MicrogestureError(f"{root}: no long video to evaluate ({reasons or 'none listed'}).")
    return found
