"""What the frame thread computes for one frame: pose (:class:`Estimator`), the crop box
(:class:`BoxTracker`), the heatmap, the joints and the RGB crop (:class:`FrameMaker`),
kept as a :class:`FrameData` in the stream's frame ring.

The window's heatmaps follow the bundle's ``window`` keys (absent in old bundles: the
default in brackets): ``heatmap_kind`` ``joints`` | ``limbs`` [joints] with the layout's
``limbs`` set [anatomical]; ``heatmap_crop`` ``person`` (each frame's box of the person
over the last span, drawn as the frame arrives) | ``skeleton`` (the square box around the
skeleton over the window's pose frames, drawn when the window is assembled) [person].

A frame's heatmap is stored in :data:`HEATMAP_DTYPE` (float16: values in [0, 1] keep
11 significant bits, an absolute error under 2.5e-4) and converted to float32 only when
a window is assembled: the demo model's logits move by at most 1.8e-3 (tolerance 1e-2,
``tests/test_stream_stages.py``).
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from microgesture.core.heatmaps import compact_box, joint_heatmaps, limb_heatmaps
from microgesture.core.layouts import FINGERS, convert, get_layout, missing_joints
from microgesture.core.pose import RecordedPose, create_estimator
from microgesture.core.preprocess import BOX_PADDING, crop_resize, joints_in_box, square_box
from microgesture.stream.presence import drop_far_joints

HEATMAP_DTYPE = np.float16


@dataclass(frozen=True)
class FrameData:
    """What the frame thread keeps of one frame (in the frame ring)."""

    frame_id: int
    capture_ns: int
    keypoints: np.ndarray      # (V, 2) px in the model's layout, NaN where missing
    scores: np.ndarray         # (V,)
    box: tuple[int, int, int, int]
    heatmap16: np.ndarray | None  # (C, H, W) HEATMAP_DTYPE; None when drawn per window
    joints: np.ndarray         # (V, 3) in [0, 1] of the box, score
    crop: np.ndarray | None    # (S, S, 3) uint8, for per-frame stages and whole-window frames
    pose_ms: float
    heatmap_ms: float
    image_wh: tuple[int, int] = (0, 0)  # the frame's size (width, height)
    more: tuple = ()  # (heatmap16, crop) of an ensemble's other members, in member order

    def part(self, model: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(heatmap16, crop) of model ``model`` (0: the fields above)."""
        return (self.heatmap16, self.crop) if model == 0 else self.more[model - 1]

    @property
    def heatmap(self) -> np.ndarray | None:
        """The frame's heatmap (C, H, W) in float32."""
        return None if self.heatmap16 is None else self.heatmap16.astype(np.float32)


class BoxTracker:
    """The square crop box of the person over the last ``span_ns`` (training's clip box)."""

    def __init__(self, span_ns: int):
        self.span_ns = span_ns
        self._history: collections.deque[tuple[int, np.ndarray, np.ndarray]] = collections.deque()

    def update(self, capture_ns: int, keypoints: np.ndarray, scores: np.ndarray,
               size: tuple[int, int]) -> tuple[int, int, int, int]:
        self._history.append((capture_ns, keypoints, scores))
        while self._history and self._history[0][0] < capture_ns - self.span_ns:
            self._history.popleft()
        kp = np.stack([h[1] for h in self._history])
        sc = np.stack([h[2] for h in self._history])
        return square_box(compact_box(kp, sc, size, padding=BOX_PADDING))


class Estimator:
    """The pose estimator of one stream; recorded skeletons are looked up by frame id."""

    def __init__(self, spec: str, layout: str):
        self.layout = layout
        fingers = any(f in c for c in get_layout(layout).canonical for f in FINGERS)
        if spec == "mediapipe" and not fingers and not missing_joints("mediapipe33", layout):
            # the model's layout has no finger joints: Pose alone, about half Holistic's cost
            spec = "mediapipe-pose"
        self.spec = spec
        self.estimator = create_estimator(spec)
        self.by_frame = isinstance(self.estimator, RecordedPose)

    def __call__(self, frame) -> tuple[np.ndarray, np.ndarray]:
        if self.by_frame:
            pose = self.estimator.get(frame.frame_id)
        else:
            pose = self.estimator.estimate(frame.image, frame.capture_ns)
        kp, sc = convert(pose.keypoints, pose.scores, pose.layout, self.layout)
        if self.by_frame and (pose.width, pose.height) != (frame.image.shape[1], frame.image.shape[0]):
            scale = np.array([frame.image.shape[1] / pose.width, frame.image.shape[0] / pose.height],
                             np.float32)
            kp = kp * scale
        # absurd coordinates are dropped before any box, crop or heatmap is sized by them
        return drop_far_joints(kp, sc, (frame.image.shape[1], frame.image.shape[0]))

    def close(self) -> None:
        self.estimator.close()


class FrameMaker:
    """One frame's heatmap, joints and crop as a bundle's ``window`` asks for them."""

    def __init__(self, window: dict[str, Any], layout: str, crops: bool):
        self.crops = crops
        self.image_size = window.get("image_size")
        self.pose = bool(window["pose_frames"])
        self.kind = window.get("heatmap_kind", "joints")
        self.crop_mode = window.get("heatmap_crop", "person")
        self.limbs = (get_layout(layout).limb_set(window.get("limbs", "anatomical"))
                      if self.kind == "limbs" else None)
        self.size = int(window.get("heatmap_size") or 0)
        self.sigma = window.get("sigma")

    def _draw(self, kp: np.ndarray, sc: np.ndarray, box) -> np.ndarray:
        """Heatmaps (C, T, H, W) float32 of keypoints (T, V, 2)."""
        size = (self.size, self.size)
        if self.kind == "limbs":
            return limb_heatmaps(kp, sc, self.limbs, size, self.sigma, box=box)
        return joint_heatmaps(kp, sc, size, self.sigma, box=box)

    def __call__(self, frame, kp: np.ndarray, sc: np.ndarray, box) -> tuple:
        """(heatmap16 (C, H, W) or None, crop (S, S, 3) or None) of one frame."""
        heatmap = None
        if self.pose and self.crop_mode == "person":
            heatmap = self._draw(kp[None], sc[None], box)[:, 0].astype(HEATMAP_DTYPE)
        crop = crop_resize(frame.image, box, self.image_size) if self.crops else None
        return heatmap, crop

    def window_heatmaps(self, entries: dict[int, FrameData], pose_ids, model: int = 0) -> np.ndarray:
        """The window's heatmaps (C, P, H, W) float32."""
        if self.crop_mode == "person":
            return np.stack([entries[i].part(model)[0] for i in pose_ids], 1).astype(np.float32)
        kp = np.stack([entries[i].keypoints for i in pose_ids])
        sc = np.stack([entries[i].scores for i in pose_ids])
        box = square_box(compact_box(kp, sc, entries[pose_ids[-1]].image_wh))
        return self._draw(kp, sc, box)


def make_frame(makers, frame, kp: np.ndarray, sc: np.ndarray, box, pose_ms: float) -> FrameData:
    """One frame's FrameData for every model's maker."""
    t = time.perf_counter()
    parts = [maker(frame, kp, sc, box) for maker in makers]
    joints = joints_in_box(kp, sc, box)
    ms = (time.perf_counter() - t) * 1e3
    return FrameData(frame.frame_id, frame.capture_ns, kp, sc, box, parts[0][0], joints, parts[0][1],
                     pose_ms, ms, (frame.image.shape[1], frame.image.shape[0]), tuple(parts[1:]))
