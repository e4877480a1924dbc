"""``microgesture data check DIR``: what a dataset holds, what is wrong with it, and a
picture per split that shows at once whether sides and alignment are right.

The report (printed, and written as ``check.json`` beside the pictures):

- clips per split and per class, subjects per split, clip lengths in frames;
- every clip left out and why (missing or unreadable files, labels beyond the
  skeleton's frames, as ``open_dataset`` reports them), and clips whose video
  has fewer frames than the clip needs;
- sides: in how many sampled frames the subject's LEFT shoulder lies on the
  image's RIGHT (a subject facing the camera: nearly all). A split where it
  is rarely so has its left and right swapped, or subjects facing away;
- ``<split>.png``: one frame of one clip of each split (the middle frame of the
  first clip with a video, enlarged to 960 px if smaller; a gray canvas without
  RGB) with every joint drawn at
  its place, named (``L``/``R`` prefixes are the subject's side), and the
  layout's limbs, so a user with the real data can see whether the skeleton
  sits on the person and whether its left is the person's left.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from microgesture.core import imigue
from microgesture.core.layouts import convert, get_layout
from microgesture.core.paths import atomic_write
from microgesture.core.preprocess import _cv2
from microgesture.core.skeleton_io import read_jsonl
from microgesture.core.video import probe_video, read_video_frame
from microgesture.training.datasets import CHALLENGE_SIZE, ClipRecord, open_dataset

SIDE_SAMPLES = 24
"""Clips per split whose middle frame is checked for sides."""
MIRRORED_BELOW = 0.5


def _video_frames(path: Path) -> tuple[int | None, tuple[int, int] | None]:
    info = probe_video(path)
    return (None, None) if info is None else (info.frame_count, info.size)


def clip_pose(record: ClipRecord, video_size: tuple[int, int] | None):
    """(keypoints (N, V, 2) in pixels of the video (or the skeleton's own frame), scores
    (N, V), the video frame of each of the N frames, frame size) of one clip. No torch."""
    if record.skeleton_format == "npy":
        size = video_size or CHALLENGE_SIZE
        array = np.load(record.skeleton, mmap_mode="r", allow_pickle=False)
        kp, sc = imigue.challenge_pose(array[record.pose_array_index], record.coords, size)
        count, _ = _video_frames(record.video) if record.video is not None else (None, None)
        return kp, sc, imigue.challenge_frames(len(kp), array.shape[2], count), size
    if record.skeleton_format == "imigue-csv":
        kp, sc = imigue.read_rows(record.skeleton, record.start, record.end)
        frames, size = np.arange(record.start, record.end), (imigue.WIDTH, imigue.HEIGHT)
    else:
        frames, _, kp, sc, _, width, height = read_jsonl(record.skeleton)
        keep = (frames >= record.start) & (record.end is None or frames < record.end)
        frames, kp, sc, size = frames[keep], kp[keep], sc[keep], (width, height)
    if video_size is not None and video_size != size:
        kp = (kp + 0.5) * np.array([video_size[0] / size[0], video_size[1] / size[1]], np.float32) - 0.5
        size = video_size
    return kp, sc, frames, size


def _left_on_the_right(kp: np.ndarray, sc: np.ndarray, layout: str) -> bool | None:
    """Whether the subject's left shoulder lies right of the right shoulder in the image."""
    lay = get_layout(layout)
    try:
        left, right = lay.index("left_shoulder"), lay.index("right_shoulder")
    except Exception:
        return None
    if sc[left] <= 0 or sc[right] <= 0:
        return None
    return bool(kp[left, 0] > kp[right, 0])


def draw_frame(image: np.ndarray, kp: np.ndarray, sc: np.ndarray, layout: str, title: str) -> np.ndarray:
    """BGR ``image`` with the limbs, the joints and each joint's name drawn over it."""
    cv2 = _cv2()
    lay = get_layout(layout)
    out = image.copy()
    scale = max(out.shape[:2]) / 640
    thick, font = max(1, round(2 * scale)), 0.35 * scale
    ok = (sc > 0) & np.isfinite(kp).all(-1)
    for a, b in lay.limbs:
        if ok[a] and ok[b]:
            cv2.line(out, tuple(np.round(kp[a]).astype(int)), tuple(np.round(kp[b]).astype(int)),
                     (0, 200, 255), thick, cv2.LINE_AA)
    for j in np.flatnonzero(ok):
        side = lay.canonical[j].split("_")[0]
        colour = {"left": (255, 120, 0), "right": (0, 0, 255)}.get(side, (0, 220, 0))
        p = tuple(np.round(kp[j]).astype(int))
        cv2.circle(out, p, thick + 2, colour, -1, cv2.LINE_AA)
        cv2.putText(out, lay.joints[j], (p[0] + thick + 3, p[1] - thick), cv2.FONT_HERSHEY_SIMPLEX, font,
                    colour, max(1, thick // 2), cv2.LINE_AA)
    cv2.putText(out, title, (8, int(22 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 1.5 * font, (255, 255, 255),
                max(1, thick // 2), cv2.LINE_AA)
    cv2.putText(out, "blue: subject's left  red: subject's right", (8, int(44 * scale)),
                cv2.FONT_HERSHEY_SIMPLEX, font * 1.2, (255, 255, 255), max(1, thick // 2), cv2.LINE_AA)
    return out


def check_dataset(path, out, kind: str = "auto") -> dict[str, Any]:
    """Check a dataset folder; writes ``check.json`` and ``<split>.png`` into ``out``."""
    index = open_dataset(path, kind=kind)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    groups: dict[str, list[ClipRecord]] = {}
    for r in index.records:
        groups.setdefault(r.split or "all", []).append(r)
    report: dict[str, Any] = {
        "path": str(index.root), "kind": index.kind, "layout": index.layout, "clips": len(index),
        "classes": list(index.classes),
        "skipped": [{"path": str(p), "reason": why} for p, why in index.skipped],
        "splits": {}, "problems": [], "pictures": []}
    sizes: dict[Path, tuple] = {}
    for split, records in sorted(groups.items()):
        lengths = [r.num_frames for r in records if r.num_frames is not None]
        entry = {"clips": len(records), "subjects": len({r.subject for r in records}),
                 "clips_per_class": {index.classes[k]: n for k, n in sorted(Counter(r.label for r in records).items())}}
        if lengths:
            entry["frames"] = {"min": int(min(lengths)), "median": float(np.median(lengths)),
                               "max": int(max(lengths)), "total": int(sum(lengths))}
        for r in records:  # clips that need more frames than their video has
            if r.video is not None and r.end is not None:
                if r.video not in sizes:
                    sizes[r.video] = _video_frames(r.video)
                count = sizes[r.video][0]
                if count is not None and r.end > count:
                    report["problems"].append(f"{r.clip_id}: frames {r.start}..{r.end - 1} go beyond the {count} "
                                              f"frames of {r.video}")
        entry["sides"] = _sides(records, sizes)
        if entry["sides"]["checked"] and entry["sides"]["left_on_image_right"] < MIRRORED_BELOW:
            report["problems"].append(
                f"split {split}: the subject's left shoulder is on the image's left in "
                f"{1 - entry['sides']['left_on_image_right']:.0%} of the checked frames: left and right look "
                f"swapped for this layout ({records[0].layout}); look at {split}.png")
        report["splits"][split] = entry
        report["pictures"].append(str(_picture(records, sizes, out / f"{split}.png", split)))
    atomic_write(out / "check.json", lambda tmp: tmp.write_text(json.dumps(report, indent=2)))
    return report


def _sides(records, sizes) -> dict[str, Any]:
    votes = []
    step = max(1, len(records) // SIDE_SAMPLES)
    for r in records[::step][:SIDE_SAMPLES]:
        try:
            kp, sc, _, _ = clip_pose(r, None)
        except Exception:  # unreadable clips are reported by open_dataset / training
            continue
        if len(kp):
            kp, sc = convert(kp[len(kp) // 2], sc[len(kp) // 2], r.layout, "coco18")
            vote = _left_on_the_right(kp, sc, "coco18")
            if vote is not None:
                votes.append(vote)
    return {"checked": len(votes), "left_on_image_right": float(np.mean(votes)) if votes else None}


def _picture(records, sizes, path: Path, split: str) -> Path:
    cv2 = _cv2()
    record = next((r for r in records if r.video is not None), records[0])
    video_size = None
    if record.video is not None:
        video_size = (sizes.get(record.video) or _video_frames(record.video))[1]
    kp, sc, frames, size = clip_pose(record, video_size)
    mid = len(kp) // 2
    image = read_video_frame(record.video, int(frames[mid])) if record.video is not None else None
    note = f"frame {int(frames[mid])}" if image is not None else "no RGB video"
    if image is None:
        image = np.full((size[1], size[0], 3), 90, np.uint8)
    grow = 960 / image.shape[1]
    point = kp[mid]
    if grow > 1:  # small frames are enlarged so that the joint names can be read
        image = cv2.resize(image, None, fx=grow, fy=grow, interpolation=cv2.INTER_LINEAR)
        point = (point + 0.5) * grow - 0.5
    title = f"{split}: {record.clip_id} ({record.layout}), {note}"
    if not cv2.imwrite(str(path), draw_frame(image, point, sc[mid], record.layout, title)):
        from microgesture.core.errors import MicrogestureError

        raise MicrogestureError(f"cannot write {path}; choose a writable --out folder")
    return path


def format_report(report: dict[str, Any]) -> str:
    """The report as a few lines of text."""
    lines = [f"{report['path']}: {report['kind']}, layout {report['layout']}, {report['clips']} clips"]
    for split, e in report["splits"].items():
        frames = e.get("frames", {})
        sides = e["sides"]
        side = (f"left shoulder on the image's right in {sides['left_on_image_right']:.0%} of {sides['checked']} "
                "checked frames" if sides["checked"] else "sides not checked (no shoulders)")
        lines.append(f"  {split}: {e['clips']} clips, {e['subjects']} subjects, "
                     + (f"{frames['min']}-{frames['max']} frames (median {frames['median']:g}), "
                        if frames else "") + side)
        lines.append("    " + ", ".join(f"{name}: {n}" for name, n in e["clips_per_class"].items()))
    lines.append(f"  skipped: {len(report['skipped'])}")
    lines += [f"    {s['path']}: {s['reason']}" for s in report["skipped"][:20]]
    lines.append(f"  problems: {len(report['problems'])}")
    lines += [f"    {p}" for p in report["problems"][:20]]
    lines.append("  pictures: " + ", ".join(report["pictures"]))
    return "\n".join(lines)
