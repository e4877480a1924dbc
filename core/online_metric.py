"""Online detection scored as the MiGA challenge's online track scores it (torch-free).

A long video has labelled gesture intervals (the ground truth); a recognizer
streaming it publishes detections, each an interval of the video with a class.
Frames are 0-based and intervals inclusive at both ends (``[start, end]``, as
iMiGUE's ``_label.csv``), so an interval holds ``end - start + 1`` frames.

The rule, per video:

1. Detections of ``min_frames`` (15) frames or fewer are dropped.
2. The others are taken in order of their start frame (then end frame), as a
   stream publishes them. A detection is a true positive when a ground-truth
   interval of the same class that no earlier detection matched has a temporal
   IoU with it above ``iou_threshold`` (0.3, strictly above); among several such
   intervals it takes the one with the highest IoU (the earliest on a tie), which
   is then matched and cannot be matched again. Every other kept detection is a
   false positive; every ground truth left unmatched a false negative.

Totals are summed over all videos before precision = TP / kept detections,
recall = TP / ground truth and F1 = 2PR / (P + R) (0 when both are 0) are taken:
a video with many gestures weighs more than one with few. Per class the same
sums restricted to the class.

Delay: for each matched ground truth, from its first frame to the frame at which
the detection was first announced (``Detection.announced``: the last frame of the
window that published the gesture's ``start``), in frames and in seconds at the
video's frame rate. A stream announces a gesture only after its window has seen
enough of it, so the delay is positive; the interval the detection describes can
still start before or at the gesture (see ``stream.events``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

IOU_THRESHOLD = 0.3
MIN_FRAMES = 15


@dataclass(frozen=True)
class Interval:
    """A labelled gesture: ``label`` over frames ``start..end`` (inclusive)."""

    label: str
    start: int
    end: int

    @property
    def frames(self) -> int:
        return self.end - self.start + 1


@dataclass(frozen=True)
class Detection(Interval):
    """A detected gesture. ``announced``: the frame whose window first announced it
    (None if unknown); ``score``: its confidence, for reports only."""

    announced: int | None = None
    score: float | None = None


def temporal_iou(a: Interval, b: Interval) -> float:
    """Intersection over union of two inclusive frame intervals."""
    inter = min(a.end, b.end) - max(a.start, b.start) + 1
    if inter <= 0:
        return 0.0
    return inter / (a.frames + b.frames - inter)


@dataclass
class VideoMatch:
    """The outcome for one video. ``pairs``: (detection index, truth index, IoU) in
    ``kept`` and ``truth``; ``kept``: the detections that survived the length rule."""

    truth: list[Interval]
    kept: list[Detection]
    dropped: list[Detection]
    pairs: list[tuple[int, int, float]]
    fps: float | None = None

    @property
    def tp(self) -> int:
        return len(self.pairs)

    def matched_truth(self) -> set[int]:
        return {t for _, t, _ in self.pairs}

    def matched_detections(self) -> set[int]:
        return {d for d, _, _ in self.pairs}

    def delays(self) -> list[dict]:
        """Per matched ground truth with a known announcement: the delay in frames (and s)."""
        out = []
        for d, t, _ in self.pairs:
            det, gt = self.kept[d], self.truth[t]
            if det.announced is None:
                continue
            frames = det.announced - gt.start
            out.append({"label": gt.label, "frames": frames,
                        "seconds": None if not self.fps else frames / self.fps})
        return out


def match_video(truth: Sequence[Interval], detections: Sequence[Detection],
                iou_threshold: float = IOU_THRESHOLD, min_frames: int = MIN_FRAMES,
                fps: float | None = None) -> VideoMatch:
    """Match one video's detections to its ground truth (the rule in the module docstring)."""
    for item in list(truth) + list(detections):
        if item.end < item.start:
            raise ValueError(f"interval {item} ends before it starts")
    kept = sorted((d for d in detections if d.frames > min_frames), key=lambda d: (d.start, d.end))
    dropped = [d for d in detections if d.frames <= min_frames]
    truth = list(truth)
    used: set[int] = set()
    pairs = []
    for i, det in enumerate(kept):
        best, best_iou = None, iou_threshold
        for j, gt in enumerate(truth):
            if j in used or gt.label != det.label:
                continue
            iou = temporal_iou(det, gt)
            if iou > best_iou:
                best, best_iou = j, iou
        if best is not None:
            used.add(best)
            pairs.append((i, best, best_iou))
    return VideoMatch(truth, kept, dropped, pairs, fps)


def prf(tp: int, detections: int, truth: int) -> dict[str, float]:
    """Precision, recall and F1 from counts (0 where undefined)."""
    p = tp / detections if detections else 0.0
    r = tp / truth if truth else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f1}


def _delay_stats(delays: list[dict]) -> dict:
    secs = np.array([d["seconds"] for d in delays if d["seconds"] is not None], dtype=float)
    frames = np.array([d["frames"] for d in delays], dtype=float)
    stats = {"n": len(delays)}
    if frames.size:
        stats.update(mean_frames=float(frames.mean()), median_frames=float(np.median(frames)))
    if secs.size:
        stats.update(mean_s=float(secs.mean()), median_s=float(np.median(secs)),
                     p90_s=float(np.percentile(secs, 90)))
    return stats


def score_online(videos: Mapping[str, VideoMatch], classes: Iterable[str] = ()) -> dict:
    """Totals, per class and per video, from :func:`match_video` results by video name.

    ``classes``: labels to list even when they occur nowhere (default: those that occur).
    """
    totals = {"videos": len(videos), "tp": 0, "detections": 0, "dropped": 0, "ground_truth": 0}
    per_class: dict[str, dict] = {c: {"tp": 0, "detections": 0, "ground_truth": 0} for c in classes}
    per_video, delays = {}, []
    for name, m in videos.items():
        totals["tp"] += m.tp
        totals["detections"] += len(m.kept)
        totals["dropped"] += len(m.dropped)
        totals["ground_truth"] += len(m.truth)
        for gt in m.truth:
            per_class.setdefault(gt.label, {"tp": 0, "detections": 0, "ground_truth": 0})["ground_truth"] += 1
        for det in m.kept:
            per_class.setdefault(det.label, {"tp": 0, "detections": 0, "ground_truth": 0})["detections"] += 1
        for d, _, _ in m.pairs:
            per_class[m.kept[d].label]["tp"] += 1
        video_delays = m.delays()
        delays += video_delays
        per_video[name] = {"tp": m.tp, "detections": len(m.kept), "dropped": len(m.dropped),
                           "ground_truth": len(m.truth), **prf(m.tp, len(m.kept), len(m.truth)),
                           "delay": _delay_stats(video_delays)}
    for counts in per_class.values():
        counts.update(prf(counts["tp"], counts["detections"], counts["ground_truth"]))
    by_class: dict[str, list] = {}
    for d in delays:
        by_class.setdefault(d["label"], []).append(d)
    for label, counts in per_class.items():
        counts["delay"] = _delay_stats(by_class.get(label, []))
    return {**totals, **prf(totals["tp"], totals["detections"], totals["ground_truth"]),
            "delay": _delay_stats(delays), "per_class": per_class, "per_video": per_video}


def describe_match(m: VideoMatch) -> dict:
    """A JSON-able account of one video: every ground truth and detection with its outcome."""
    truth_hit = {t: (d, iou) for d, t, iou in m.pairs}
    det_hit = {d: (t, iou) for d, t, iou in m.pairs}
    return {
        "truth": [{**asdict(gt), "matched": j in truth_hit,
                   "iou": truth_hit[j][1] if j in truth_hit else None}
                  for j, gt in enumerate(m.truth)],
        "detections": [{**asdict(det), "true_positive": i in det_hit,
                        "iou": det_hit[i][1] if i in det_hit else None}
                       for i, det in enumerate(m.kept)],
        "dropped": [asdict(d) for d in m.dropped],
    }
