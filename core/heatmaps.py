"""Keypoints to pseudo heatmaps: the one implementation that training and streaming share.

As mmaction2's ``PoseCompact`` + ``GeneratePoseTarget`` (PoseC3D), vectorised:

- :func:`compact_box` finds the padded box around a clip's keypoints;
- :func:`joint_heatmaps` draws one score-weighted Gaussian per joint,
  (V, T, H, W); :func:`limb_heatmaps` one Gaussian of the distance to each
  limb's segment, (L, T, H, W);
- :func:`flip_heatmaps` mirrors heatmaps and swaps left/right channels. Test-time
  flip-and-average is ``0.5 * (model(h) + model(flip_heatmaps(h, perm)))``, with
  ``perm`` the layout (joints) or :func:`limb_flip_permutation` (limbs).

Pixel convention, everywhere: pixel centres sit at integer coordinates, so a
joint at x = 10.0 peaks exactly at column 10, and column i spans
[i - 0.5, i + 0.5]. A box ``(x0, y0, x1, y1)`` is in slice convention: it is the
crop ``image[y0:y1, x0:x1]`` (fractional bounds allowed), the whole image is
``(0, 0, W, H)``, and mapping keypoints into a box resized to (H, W) matches
``cv2.resize`` of that crop.

Values: ``score * exp(-d^2 / (2 sigma^2))`` where d (output pixels) is the distance
to the joint or to the limb's segment, 0 where d > 3 sigma (a circle, where
mmaction2 cuts a square). A joint is missing when its score is not > 0 or a
coordinate is NaN, infinite or beyond +-1e6 pixels (a broken estimate); it
draws nothing and never puts NaN in the output.
Several people (M, T, V, 2) are merged with a per-pixel max.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np

from microgesture.core.errors import MicrogestureError
from microgesture.core.layouts import Layout, check_pose, get_layout

Box = tuple[float, float, float, float]

_CUT = 4.5  # d > 3 sigma  <=>  d^2 / (2 sigma^2) > 4.5
_FAR = 1e6  # pixels: a coordinate beyond this comes from a broken estimator, not from an image


def _as_pose(keypoints, scores, ndims=(3, 4), shape="(T, V, 2) or (M, T, V, 2)") -> tuple[np.ndarray, np.ndarray]:
    """float64 keypoints (..., V, 2) and scores (..., V), checked against each other."""
    kp, sc = check_pose(keypoints, scores, shape, ndims=ndims)
    return kp.astype(np.float64, copy=False), sc.astype(np.float64, copy=False)


def _valid(kp: np.ndarray, sc: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """bool (..., V): score above threshold (NaN is not) and both coordinates within +-_FAR (not NaN)."""
    return (sc > threshold) & (np.abs(kp) <= _FAR).all(-1)


def _check_size(size, name: str, order: str) -> tuple[int, int]:
    try:
        a, b = (int(s) for s in size)
        ok = a > 0 and b > 0 and (a, b) == tuple(size)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise MicrogestureError(f"{name} must be two positive integers {order}, got {size!r}.")
    return a, b


def _check_sigma(sigma) -> float:
    try:
        ok = np.isfinite(sigma) and sigma > 0
    except TypeError:
        ok = False
    if not ok:
        raise MicrogestureError(f"sigma must be a positive number of output pixels (e.g. 0.6 at 56x56), got {sigma!r}.")
    return float(sigma)


def _check_box(box) -> Box:
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
        ok = all(np.isfinite((x0, y0, x1, y1))) and x1 > x0 and y1 > y0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise MicrogestureError(f"box must be (x0, y0, x1, y1) with x1 > x0 and y1 > y0, as from compact_box(), "
                                f"got {box!r}.")
    return x0, y0, x1, y1


def compact_box(keypoints, scores, image_size: tuple[int, int], padding: float = 0.25, threshold: float = 0.0,
                hw_ratio: Union[float, tuple[float, float], None] = (1.0, 1.0), allow_imgpad: bool = True,
                min_size: float = 10.0) -> Box:
    """The box around all valid keypoints of a clip, padded, as PoseC3D's ``PoseCompact``.

    keypoints (..., V, 2) in source pixels (any leading shape: frames, people),
    scores (..., V); ``image_size`` is (W, H). Valid joints have a score above
    ``threshold`` and coordinates that are numbers (within +-1e6). The tight box is grown about its
    centre to ``1 + padding`` times its size, then widened or heightened until
    its height/width ratio lies in ``hw_ratio`` = (low, high) (a float means
    both; None: any ratio). ``allow_imgpad=False`` clips the box to the image
    (the ratio may then be lost).

    Returns (x0, y0, x1, y1) as floats in slice convention (module docstring).
    No valid joint, or a tight box under ``min_size`` pixels wide or high (one
    joint, say), gives the whole image (0, 0, W, H).
    """
    kp, sc = _as_pose(keypoints, scores, ndims=None, shape="(..., V, 2)")
    w, h = _check_size(image_size, "image_size", "(W, H)")
    if not padding >= 0:
        raise MicrogestureError(f"padding must be >= 0 (a fraction of the box size, e.g. 0.25), got {padding!r}.")
    if hw_ratio is not None:
        low, high = (hw_ratio, hw_ratio) if np.isscalar(hw_ratio) else hw_ratio
        if not 0 < low <= high:
            raise MicrogestureError(f"hw_ratio must be a positive float or (low, high) with 0 < low <= high, "
                                    f"got {hw_ratio!r}.")
    whole = (0.0, 0.0, float(w), float(h))
    valid = _valid(kp, sc, threshold)
    if not valid.any():
        return whole
    pts = kp[valid] + 0.5  # pixel centres -> slice coordinates
    (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
    if x1 - x0 < min_size or y1 - y0 < min_size:
        return whole
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half_w, half_h = (x1 - x0) / 2 * (1 + padding), (y1 - y0) / 2 * (1 + padding)
    if hw_ratio is not None:
        half_h = max(low * half_w, half_h)
        half_w = max(half_h / high, half_w)
    box = [cx - half_w, cy - half_h, cx + half_w, cy + half_h]
    if not allow_imgpad:
        box = [max(box[0], 0.0), max(box[1], 0.0), min(box[2], float(w)), min(box[3], float(h))]
    return tuple(float(v) for v in box)


def box_to_output(keypoints, box: Box, size: tuple[int, int]) -> np.ndarray:
    """Keypoints (..., 2) in source pixels -> pixels of the box resized to ``size`` = (H, W).

    ``x' = (x + 0.5 - x0) * W / (x1 - x0) - 0.5`` (and likewise y): the mapping
    ``cv2.resize`` applies to ``image[y0:y1, x0:x1]``.
    """
    x0, y0, x1, y1 = _check_box(box)
    h, w = _check_size(size, "size", "(H, W)")
    kp = np.asarray(keypoints, dtype=np.float64)
    origin, scale = np.array([x0, y0]), np.array([w / (x1 - x0), h / (y1 - y0)])
    return (kp + 0.5 - origin) * scale - 0.5


def _prepare(keypoints, scores, size, sigma, box):
    """(M, T, V, 2) output-pixel keypoints and (M, T, V) scores; missing joints at (0, 0) with score 0."""
    kp, sc = _as_pose(keypoints, scores)
    (h, w), sigma = _check_size(size, "size", "(H, W)"), _check_sigma(sigma)
    if kp.ndim == 3:
        kp, sc = kp[None], sc[None]
    if box is not None:
        kp = box_to_output(kp, box, (h, w))
    valid = _valid(kp, sc)
    return np.where(valid[..., None], kp, 0.0), np.where(valid, sc, 0.0), (h, w), sigma


def _window(coord: np.ndarray, n: int, sigma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pixels within 3 sigma of each coordinate along one axis of n pixels.

    coord (...,) -> pixel index int64 (..., k), exponent (i - coord)^2 / (2 sigma^2)
    (..., k), inside-the-image bool (..., k); k = min(floor(6 sigma) + 2, n).
    """
    k = min(int(6 * sigma) + 2, n)
    first = np.clip(np.ceil(coord - 3 * sigma), 0, n)
    pixel = first[..., None] + np.arange(k)
    return pixel.astype(np.int64), (pixel - coord[..., None]) ** 2 / (2 * sigma**2), pixel < n


def joint_heatmaps(keypoints, scores, size: tuple[int, int], sigma: float, box: Box | None = None) -> np.ndarray:
    """Score-weighted Gaussian heatmaps, one channel per joint.

    keypoints (T, V, 2) or (M, T, V, 2) for M people, scores (T, V) or (M, T, V)
    -> float32 (V, T, H, W) for ``size`` = (H, W). ``box``: crop the keypoints
    to this box and scale them to ``size`` (None: they are already in output
    pixels). ``sigma`` is in output pixels.

    Separable and local: every (person, frame, joint) Gaussian is the outer
    product of a y and an x profile over the (6 sigma + 2)^2 window that can be
    non-zero, cut to the 3-sigma circle and scattered into the output. The work
    and the temporaries are O(M T V sigma^2), not O(M T V H W).
    """
    kp, sc, (h, w), sigma = _prepare(keypoints, scores, size, sigma, box)
    m, t, v = sc.shape
    margin = 3 * sigma + 2  # a joint beyond this margin draws nothing either way: clipping keeps indices small
    kp = np.clip(kp, -margin, np.array([w, h]) + margin)
    x, zx, in_x = (a[..., None, :] for a in _window(kp[..., 0], w, sigma))  # (M, T, V, 1, kx)
    y, zy, in_y = (a[..., :, None] for a in _window(kp[..., 1], h, sigma))  # (M, T, V, ky, 1)
    heat = np.exp(-zy) * sc[..., None, None] * np.exp(-zx)  # the score rides on the y profile
    keep = (zy + zx <= _CUT) & in_y & in_x & (sc > 0)[..., None, None]
    channel = np.arange(v) * t + np.arange(t)[:, None]  # (T, V): offset of out[v, t] in (V*T) images
    index = (channel[..., None, None] * h + y) * w + x  # (M, T, V, ky, kx) into out.ravel()
    out = np.zeros((v, t, h, w), np.float32)
    flat = out.reshape(-1)
    for p in range(m):  # one person's windows never overlap each other: plain assignment
        idx, val = index[p][keep[p]], heat[p][keep[p]]
        flat[idx] = np.maximum(flat[idx], val) if p else val
    return out


def _limbs(limbs, num_joints: int) -> np.ndarray:
    """int (L, 2) from a layout (its limbs) or a sequence of joint index pairs."""
    if isinstance(limbs, (str, Layout)):
        limbs = get_layout(limbs).limbs
    arr = np.asarray(limbs)
    if arr.ndim != 2 or arr.shape[1] != 2 or not np.issubdtype(arr.dtype, np.integer) \
            or arr.size and not (0 <= arr.min() and arr.max() < num_joints):
        raise MicrogestureError(f"limbs must be a layout or (L, 2) pairs of joint indices in [0, {num_joints}), "
                                f"got {limbs!r}.")
    return arr


def _segment_d2(a: np.ndarray, b: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """float32 (N, len(ys), len(xs)): squared distance of each grid point to the segment a-b; a, b (N, 2).

    In the segment's own frame (unit direction e, length L), a point at offset
    p from a lies ``along = p . e`` and ``across = p x e``; its distance is
    ``across`` beside the segment and reaches back to the nearer end beyond it.
    A zero-length segment (e = (1, 0), L = 0) is a point.
    """
    ab = b - a
    length = np.hypot(ab[:, 0], ab[:, 1])
    e = np.where(length[:, None] > 0, ab / np.where(length > 0, length, 1.0)[:, None], [1.0, 0.0])
    ex, ey = e[:, 0, None, None], e[:, 1, None, None]
    px = xs[None, None, :] - a[:, 0, None, None]  # (N, 1, W)
    py = ys[None, :, None] - a[:, 1, None, None]  # (N, H, 1)
    f32 = np.float32
    along = (px * ex).astype(f32) + (py * ey).astype(f32)
    across = (py * ex).astype(f32) - (px * ey).astype(f32)
    beyond = along - np.clip(along, 0, length.astype(f32)[:, None, None])
    np.multiply(beyond, beyond, out=beyond)
    np.multiply(across, across, out=across)
    return np.add(beyond, across, out=beyond)


def limb_heatmaps(keypoints, scores, limbs, size: tuple[int, int], sigma: float, box: Box | None = None) -> np.ndarray:
    """Gaussian heatmaps of the distance to each limb's segment.

    keypoints (T, V, 2) or (M, T, V, 2), scores (T, V) or (M, T, V); ``limbs`` a
    layout (its limbs) or (L, 2) joint index pairs -> float32 (L, T, H, W). A
    limb's value is ``min(score_a, score_b) * exp(-d^2 / (2 sigma^2))`` (as
    mmaction2), nothing if either end is missing. ``size``, ``sigma``, ``box``
    as :func:`joint_heatmaps`.

    Only the segments that exist are drawn, over the window that the segments
    grown by 3 sigma cover: all of a person's segments over one shared window,
    or limb by limb over each limb's window in all frames, whichever touches
    fewer pixels. The first wins for one frame (streaming), the second for
    long clips; memory stays within about _MAX_STEP pixels per step.
    """
    kp, sc, (h, w), sigma = _prepare(keypoints, scores, size, sigma, box)
    pairs = _limbs(limbs, sc.shape[-1])
    m, t, _ = sc.shape
    out = np.zeros((len(pairs), t, h, w), np.float32)
    unit = np.sqrt(2) * sigma  # distances in this unit square to the Gaussian's exponent
    for p in range(m):
        a, b = kp[p][:, pairs[:, 0]], kp[p][:, pairs[:, 1]]  # (T, L, 2)
        value = np.minimum(sc[p][:, pairs[:, 0]], sc[p][:, pairs[:, 1]]).astype(np.float32)  # (T, L)
        # Each segment's window: (x, y) of its first pixel and of one past its last, inside the image.
        lo = np.maximum(np.ceil(np.minimum(a, b) - 3 * sigma), 0)
        hi = np.minimum(np.floor(np.maximum(a, b) + 3 * sigma) + 1, (w, h))
        draw = ((value > 0) & (lo < hi).all(-1))[..., None]  # the limb exists and is near the image
        lo, hi = np.where(draw, lo, np.inf), np.where(draw, hi, -np.inf)
        for frame, limb in _segment_groups(lo, hi):
            x0, y0 = lo[frame, limb].min(0).astype(np.int64)
            x1, y1 = hi[frame, limb].max(0).astype(np.int64)
            z = _segment_d2(a[frame, limb] / unit, b[frame, limb] / unit,
                            np.arange(x0, x1) / unit, np.arange(y0, y1) / unit)
            np.copyto(z, np.inf, where=z > _CUT)
            heat = np.exp(np.negative(z, out=z), out=z) * value[frame, limb, None, None]
            region = (limb, frame, slice(y0, y1), slice(x0, x1))
            out[region] = np.maximum(out[region], heat) if p else heat  # (limb, frame) unique per person
    return out


_STEP_COST = 4096  # the fixed cost of one drawing step, in pixels (about 60 us of numpy calls)
_MAX_STEP = 1 << 21  # pixels per drawing step, to bound temporaries


def _segment_groups(lo: np.ndarray, hi: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(frame, limb) index arrays of segments to draw together over one shared window.

    lo, hi (T, L, 2): each segment's window, (inf, -inf) for segments not to draw.
    All segments at once, or limb by limb, whichever costs fewer pixels (window
    area x segments + _STEP_COST per step); then cut to _MAX_STEP pixels a step.
    """
    def area(lo, hi):  # (..., 2) -> window areas (...)
        return np.maximum(hi - lo, 0).prod(-1)

    draw = lo[..., 0] < hi[..., 0]
    count = draw.sum(0)  # segments per limb
    per_limb = area(lo.min(0), hi.max(0))
    whole = area(lo.min((0, 1)), hi.max((0, 1)))
    if count.sum() * whole + _STEP_COST <= (count * per_limb + _STEP_COST * (count > 0)).sum():
        groups, areas = [np.nonzero(draw)], [whole]
    else:
        groups = [(np.flatnonzero(draw[:, k]), np.full(c, k)) for k, c in enumerate(count) if c]
        areas = per_limb[count > 0]
    steps = [max(1, int(_MAX_STEP // max(s, 1))) for s in areas]
    return [(f[i:i + n], k[i:i + n]) for (f, k), n in zip(groups, steps) for i in range(0, len(f), n)]


def limb_flip_permutation(layout: Union[str, Layout]) -> np.ndarray:
    """int64 (L,): limb l's mirror image is limb ``perm[l]``, from the layout's joint flip permutation.

    Raises MicrogestureError when a limb's mirror is not among the layout's limbs
    (imigue22's release graph is such a layout): flipping its limb heatmaps
    would put a limb in the wrong channel.
    """
    layout = get_layout(layout)
    joint = layout.flip_permutation
    where = {frozenset(limb): k for k, limb in enumerate(layout.limbs)}
    perm = [where.get(frozenset((joint[a], joint[b]))) for a, b in layout.limbs]
    lonely = [layout.limbs[k] for k, q in enumerate(perm) if q is None]
    if lonely:
        names = ", ".join(f"{layout.joints[a]}-{layout.joints[b]}" for a, b in lonely)
        raise MicrogestureError(f"layout {layout.name!r} has limbs whose mirror image is not one of its limbs "
                                f"({names}), so its limb heatmaps cannot be flipped. Skip limb flip-averaging, "
                                f"or convert the skeleton to a mirror-symmetric layout (e.g. coco18) first.")
    return np.array(perm, dtype=np.int64)


def flip_heatmaps(heatmaps, layout_or_perm: Union[str, Layout, Sequence[int], np.ndarray],
                  channel_axis: int = -4) -> np.ndarray:
    """Mirror heatmaps left-right and swap left/right channels.

    heatmaps (..., C, T, H, W) numpy (channels on ``channel_axis``), e.g. (V, T, H, W)
    or a batch (N, V, T, H, W) -> the same shape, C-contiguous. ``layout_or_perm``:
    a layout (its joint flip permutation) for joint heatmaps, or a permutation
    such as :func:`limb_flip_permutation` for limb heatmaps. Flipping the
    keypoints with ``flip_keypoints(..., width=W)`` and drawing them gives the
    same heatmaps.
    """
    hm = np.asarray(heatmaps)
    if isinstance(layout_or_perm, (str, Layout)):
        perm = get_layout(layout_or_perm).flip_permutation
    else:
        perm = np.asarray(layout_or_perm)
    if hm.ndim < 3 or not -hm.ndim <= channel_axis < hm.ndim:
        raise MicrogestureError(f"heatmaps must have shape (..., C, T, H, W) with channels on axis {channel_axis}, "
                                f"got {hm.shape}.")
    c = hm.shape[channel_axis]
    if perm.shape != (c,) or not np.issubdtype(perm.dtype, np.integer) \
            or not np.array_equal(np.sort(perm), np.arange(c)):
        raise MicrogestureError(f"the flip permutation must reorder the {c} channels on axis {channel_axis}, "
                                f"got {perm.size} entries; for limb heatmaps pass limb_flip_permutation(layout).")
    return np.take(hm[..., ::-1], perm, axis=channel_axis)  # one copy, C-contiguous
