"""Turning frames and skeletons into model inputs: one implementation for
training and streaming (numpy and OpenCV, no torch).

The crop box is square and in whole pixels, a slice ``image[y0:y1, x0:x1]``
(zeros outside the image); the same box crops the RGB frames, places the
heatmaps (core.heatmaps) and normalises the joints.
"""

from __future__ import annotations

import math

import numpy as np

BOX_PADDING = 0.25
"""Padding of the person's box, as a fraction of its size (PoseC3D's PoseCompact)."""


def _cv2():
    import cv2  # imported where needed: importing this module stays cheap

    return cv2


MAX_PAD_AREA = 4
"""A padded crop is allocated only up to this many times the frame's area; a larger box
(joints far outside the frame) is resized from its visible part straight into place."""


def crop_resize(image: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """``image[y0:y1, x0:x1]`` (whole-pixel box; zeros outside the image) resized to ``size`` x ``size``.

    Memory stays bounded whatever the box: a box more than :data:`MAX_PAD_AREA` times
    the frame's area is never allocated; its visible part is resized into its place in
    the output (the same pixels up to the rounding of that place to whole pixels)."""
    cv2 = _cv2()
    x0, y0, x1, y1 = (int(v) for v in box)
    h, w = image.shape[:2]
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if (ix0, iy0, ix1, iy1) == (x0, y0, x1, y1):
        crop = image[y0:y1, x0:x1]
    elif (x1 - x0) * (y1 - y0) > MAX_PAD_AREA * max(w * h, size * size):
        return _visible_part_in_place(image, (x0, y0, x1, y1), (ix0, iy0, ix1, iy1), size)
    else:
        crop = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
        if ix1 > ix0 and iy1 > iy0:
            crop[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = image[iy0:iy1, ix0:ix1]
    shrink = (x1 - x0) > size
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _visible_part_in_place(image, box, visible, size: int) -> np.ndarray:
    cv2 = _cv2()
    x0, y0, x1, y1 = box
    ix0, iy0, ix1, iy1 = visible
    out = np.zeros((size, size, 3), np.uint8)
    if ix1 <= ix0 or iy1 <= iy0:
        return out
    sx, sy = size / (x1 - x0), size / (y1 - y0)
    ox0, oy0 = int(round((ix0 - x0) * sx)), int(round((iy0 - y0) * sy))
    ox1, oy1 = min(size, int(round((ix1 - x0) * sx))), min(size, int(round((iy1 - y0) * sy)))
    if ox1 <= ox0 or oy1 <= oy0:  # the frame is less than an output pixel: it averages away
        return out
    out[oy0:oy1, ox0:ox1] = cv2.resize(np.ascontiguousarray(image[iy0:iy1, ix0:ix1]),
                                       (ox1 - ox0, oy1 - oy0), interpolation=cv2.INTER_AREA)
    return out


def square_box(box, jitter: tuple[float, float] | None = None, rng: np.random.Generator | None = None
               ) -> tuple[int, int, int, int]:
    """A square, whole-pixel box about ``box``'s centre (side = its longer side);
    ``jitter`` = (u, shift_x, shift_y) scales the side by sqrt(u) and moves the centre."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if jitter is not None:
        u, sx, sy = jitter
        new = side * math.sqrt(u)
        room = abs(side - new) / 2
        cx, cy, side = cx + sx * room, cy + sy * room, new
    side = max(2, int(round(side)))
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    return left, top, left + side, top + side


def joints_in_box(kp: np.ndarray, sc: np.ndarray, box) -> np.ndarray:
    """Joints (..., V, 2) px and scores (..., V) -> (..., V, 3): x, y as fractions of
    the box (slice convention, as the model's ``joints`` input), score; missing = 0."""
    x0, y0, x1, y1 = box
    xy = (kp + 0.5 - np.array([x0, y0], np.float32)) / np.array([x1 - x0, y1 - y0], np.float32)
    valid = (sc > 0) & np.isfinite(xy).all(-1)
    out = np.zeros(kp.shape[:-1] + (3,), np.float32)
    out[..., :2] = np.where(valid[..., None], xy, 0.0)
    out[..., 2] = np.where(valid, sc, 0.0)
    return out


def normalize_frames(frames: np.ndarray, mean, std) -> np.ndarray:
    """RGB uint8 frames (N, S, S, 3) -> float32 (N, 3, S, S) with CLIP's mean/std."""
    mean = np.asarray(mean, np.float32)
    std = np.asarray(std, np.float32)
    x = (frames.astype(np.float32) * (1.0 / 255.0) - mean) / std
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
