"""Is there a person in a window? Nothing is classified without one.

A model trained on people gives confident scores on anything: an empty room, a
red wall. So a window is classified only when its pose frames show a person:

- a frame shows a person when at least :data:`MIN_JOINT_FRACTION` of the
  layout's joints (and never fewer than :data:`MIN_JOINTS`) were found, with a
  finite position and a score above :data:`MIN_SCORE`;
- a window has a person when at least :data:`MIN_FRAME_FRACTION` of its pose
  frames show one.

Windows without a person are not run, produce no gesture, and are counted in the
stream's stats as ``windows_no_person`` (heartbeats carry it). When the person
leaves, the active gesture ends (the smoother is flushed).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

MIN_SCORE = 0.1
MIN_JOINTS = 3
MIN_JOINT_FRACTION = 0.25
MIN_FRAME_FRACTION = 0.5


def joints_found(keypoints: np.ndarray, scores: np.ndarray) -> int:
    """How many joints of one frame were found: (V, 2) px and (V,) scores."""
    kp = np.asarray(keypoints, np.float32)
    sc = np.asarray(scores, np.float32)
    return int(((sc > MIN_SCORE) & np.isfinite(kp).all(-1)).sum())


def person_in_frame(keypoints: np.ndarray, scores: np.ndarray) -> bool:
    needed = max(MIN_JOINTS, math.ceil(MIN_JOINT_FRACTION * len(scores)))
    return joints_found(keypoints, scores) >= needed


def person_in_window(frames: Iterable[tuple[np.ndarray, np.ndarray]]) -> bool:
    """``frames``: (keypoints, scores) of the window's pose frames."""
    flags = [person_in_frame(kp, sc) for kp, sc in frames]
    return bool(flags) and sum(flags) >= MIN_FRAME_FRACTION * len(flags)


FAR_MARGIN = 1.0
"""Joints more than this many frame sizes outside the frame are dropped (treated as not
found): a tracker's glitch or a damaged skeleton file, never a person."""


def drop_far_joints(keypoints: np.ndarray, scores: np.ndarray,
                    size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(keypoints, scores)`` with the joints far outside the ``(width, height)`` frame
    (or not finite) set missing (NaN, score 0), so that no box, crop or heatmap is
    ever sized by an absurd coordinate."""
    kp = np.asarray(keypoints, np.float32)
    sc = np.asarray(scores, np.float32)
    w, h = size
    lo = np.array([-FAR_MARGIN * w, -FAR_MARGIN * h], np.float32)
    hi = np.array([(1 + FAR_MARGIN) * w, (1 + FAR_MARGIN) * h], np.float32)
    with np.errstate(invalid="ignore"):
        far = ~(np.isfinite(kp).all(-1) & (kp >= lo).all(-1) & (kp <= hi).all(-1))
    if not far.any():
        return kp, sc
    kp, sc = kp.copy(), sc.copy()
    kp[far] = np.nan
    sc[far] = 0.0
    return kp, sc
