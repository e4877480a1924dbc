"""Which frames a window samples: one rule for training, evaluation and streaming.

A clip (or a live window) of N frames is cut into equal segments; training
takes a random frame in each segment, evaluation and streaming the frame at a
fixed fraction of it (the centre by default), so a live window sees exactly
what evaluation saw.
"""

from __future__ import annotations

import numpy as np

from microgesture.core.errors import MicrogestureError


def sample_indices(num_frames: int, count: int, train: bool, rng: np.random.Generator | None = None,
                   offset: float = 0.5) -> np.ndarray:
    """``count`` frame indices (int64, increasing) spread over ``num_frames`` in equal segments.

    Segment k is ``[k N / count, (k + 1) N / count)``; the index is a random frame
    in it when ``train`` (``rng`` needed), otherwise the frame at ``offset`` (a
    fraction in [0, 1), 0.5 = the centre) of it. With fewer frames than ``count``
    segments are shorter than a frame, so frames repeat.
    """
    if num_frames < 1:
        raise MicrogestureError(f"cannot sample frames from a clip of {num_frames} frames.")
    if count < 1:
        raise MicrogestureError(f"the number of frames to sample must be >= 1, got {count}.")
    if train and rng is None:
        raise MicrogestureError("sample_indices(train=True) needs a random generator (rng).")
    if not 0 <= offset < 1:
        raise MicrogestureError(f"offset must be a fraction of a segment in [0, 1), got {offset!r}.")
    step = num_frames / count
    where = rng.random(count) if train else np.full(count, float(offset))
    idx = np.floor((np.arange(count) + where) * step).astype(np.int64)
    return np.clip(idx, 0, num_frames - 1)


def sample_clip(num_frames: int, rgb_frames: int, pose_frames: int, train: bool,
                rng: np.random.Generator | None = None, offset: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """``(rgb indices (R,), pose indices (P,))``, aligned: RGB frame r lies in the
    frames spanned by pose segments [r P/R, (r + 1) P/R) (P a multiple of R).
    ``offset``: where in each segment evaluation samples (see :func:`sample_indices`)."""
    if pose_frames % rgb_frames:
        raise MicrogestureError(f"pose_frames ({pose_frames}) must be a multiple of rgb_frames ({rgb_frames}).")
    pose = sample_indices(num_frames, pose_frames, train, rng, offset)
    rgb = sample_indices(num_frames, rgb_frames, train, rng, offset)
    return rgb, pose
