"""Skeleton layouts as data, and conversion between any two of them.

A :class:`Layout` is a joint order (names), a list of limbs (pairs of joint
indices) and, for every joint, a *canonical* name from one shared vocabulary
(``"nose"``, ``"neck"``, ``"left_wrist"``, ``"left_thumb_tip"``, ...). The
left/right pairs that a horizontal flip swaps follow from the canonical names
(``left_x`` <-> ``right_x``), so they cannot disagree with them.

Left and right are always the PERSON's left and right, as OpenPose and
MediaPipe report them (MediaPipe Holistic's ``left_hand`` is the hand at the
pose's ``left_wrist``): the canonical names say so. A layout keeps its source's
joint names even where they mean the viewer's side: the iMiGUE challenge
release's ``ShoulderLeft`` is copied from OpenPose's ``RShoulder``, so its
canonical name is ``right_shoulder`` (``core.imigue.CHALLENGE_COLUMNS``).

Limbs are declared by joint names. ``Layout.limbs`` is the anatomical set, used
by default; a layout may carry other named sets (:meth:`Layout.limb_set`), e.g.
``imigue22``'s ``release``: the published 22-joint edge list, verbatim, for
reproducing models trained on it.

Conversion (:func:`convert`) is driven by the canonical names too: a target
joint is copied from the source joint with the same canonical name; failing
that, it is derived by one of the :data:`DERIVATIONS` (a weighted mean of other
canonical joints, score = the minimum of their scores); failing that, it is
missing (score 0, NaN coordinates). Adding a layout means writing its table;
no conversion code changes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Union

import numpy as np

from microgesture.core.errors import MicrogestureError, lookup

SIDES = ("left", "right")
FINGERS = ("thumb", "index", "middle", "ring", "pinky")


def mirror_name(canonical: str) -> str:
    """The canonical name of the mirrored joint: ``left_x`` <-> ``right_x``, others unchanged."""
    for a, b in (("left_", "right_"), ("right_", "left_")):
        if canonical.startswith(a):
            return b + canonical[len(a):]
    return canonical


@dataclass(frozen=True)
class Layout:
    """A skeleton layout: joint names, left/right pairs, limbs and canonical names.

    ``flip_pairs`` and ``limbs`` hold joint indices. ``canonical`` gives every
    joint its name in the shared vocabulary used by :func:`convert`; it
    defaults to the joint names themselves.
    """

    name: str
    joints: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    limbs: tuple[tuple[int, int], ...]
    canonical: tuple[str, ...] = field(default=(), repr=False)
    limb_sets: tuple[tuple[str, tuple[tuple[int, int], ...]], ...] = field(default=(), repr=False, compare=False)
    """Other named limb sets, ``((name, limbs), ...)``; ``limbs`` is the ``anatomical`` one."""

    def __post_init__(self):
        if not self.canonical:
            object.__setattr__(self, "canonical", tuple(self.joints))
        v, where = len(self.joints), f"layout {self.name!r}"
        for what, names in (("joint names", self.joints), ("canonical names", self.canonical)):
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise MicrogestureError(f"{where}: duplicate {what} {dup}; every joint needs its own name.")
        if len(self.canonical) != v:
            raise MicrogestureError(f"{where}: {len(self.canonical)} canonical names for {v} joints; "
                                    "give one canonical name per joint.")
        for what, pairs in (("flip_pairs", self.flip_pairs), ("limbs", self.limbs),
                            *((f"limb set {n!r}", p) for n, p in self.limb_sets)):
            bad = [p for p in pairs if len(p) != 2 or not all(0 <= i < v for i in p) or p[0] == p[1]]
            if bad:
                raise MicrogestureError(f"{where}: {what} {bad} are not pairs of two different joint "
                                        f"indices in [0, {v}).")
        flipped = [i for p in self.flip_pairs for i in p]
        if len(flipped) != len(set(flipped)):
            raise MicrogestureError(f"{where}: a joint appears in more than one flip pair {self.flip_pairs}.")
        if len({frozenset(p) for p in self.limbs}) != len(self.limbs):
            raise MicrogestureError(f"{where}: duplicate limbs in {self.limbs}; list each limb once.")

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    def limb_set(self, name: str = "anatomical") -> tuple[tuple[int, int], ...]:
        """The limbs of a named set: ``anatomical`` (= :attr:`limbs`) or one of :attr:`limb_sets`."""
        sets = {"anatomical": self.limbs, **dict(self.limb_sets)}
        return lookup(sets, name, f"{self.name} limb set")

    def index(self, joint: str) -> int:
        """Index of a joint, by its layout name (``"RShoulder"``) or canonical name (``"right_shoulder"``)."""
        return lookup(self._index, joint, f"{self.name} joint")

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {**{c: i for i, c in enumerate(self.canonical)}, **{n: i for i, n in enumerate(self.joints)}}

    @functools.cached_property
    def flip_permutation(self) -> np.ndarray:
        """int64 (V,): joint i's mirror image is joint ``perm[i]`` (itself for centre joints).

        ``x[..., perm, :]`` swaps left and right; the permutation is its own inverse.
        """
        perm = np.arange(self.num_joints)
        for i, j in self.flip_pairs:
            perm[i], perm[j] = j, i
        perm.flags.writeable = False
        return perm


def _layout(name: str, table, limbs, **limb_sets) -> Layout:
    """A Layout from ``[(joint name, canonical name), ...]``; flip pairs follow from the canonical names.

    ``limbs`` (and each of ``limb_sets``): pairs of joint names (layout or canonical), or of
    indices where a source publishes its list by index (kept verbatim)."""
    joints, canonical = (tuple(col) for col in zip(*table))
    named = {**{c: i for i, c in enumerate(canonical)}, **{n: i for i, n in enumerate(joints)}}

    def resolve(pairs):
        try:
            return tuple(tuple(named[j] if isinstance(j, str) else int(j) for j in p) for p in pairs)
        except KeyError as e:  # a table bug
            raise MicrogestureError(f"layout {name!r}: a limb names the unknown joint {e.args[0]!r}.") from None

    where = {c: i for i, c in enumerate(canonical)}
    pairs = []
    for i, c in enumerate(canonical):
        twin = mirror_name(c)
        if twin not in where:  # a table bug: a left joint without its right twin
            raise MicrogestureError(f"layout {name!r}: {c!r} has no mirror joint {twin!r}.")
        if i < where[twin]:
            pairs.append((i, where[twin]))
    return Layout(name, joints, tuple(pairs), resolve(limbs), canonical,
                  tuple((n, resolve(p)) for n, p in limb_sets.items()))


# --- OpenPose: BODY_25 (iMiGUE raw) and COCO-18 (CLIP-MG) -------------------------------------------
_OPENPOSE = {
    "Nose": "nose", "Neck": "neck",
    "RShoulder": "right_shoulder", "RElbow": "right_elbow", "RWrist": "right_wrist",
    "LShoulder": "left_shoulder", "LElbow": "left_elbow", "LWrist": "left_wrist", "MidHip": "mid_hip",
    "RHip": "right_hip", "RKnee": "right_knee", "RAnkle": "right_ankle",
    "LHip": "left_hip", "LKnee": "left_knee", "LAnkle": "left_ankle",
    "REye": "right_eye", "LEye": "left_eye", "REar": "right_ear", "LEar": "left_ear",
    "LBigToe": "left_big_toe", "LSmallToe": "left_small_toe", "LHeel": "left_heel",
    "RBigToe": "right_big_toe", "RSmallToe": "right_small_toe", "RHeel": "right_heel",
}
_BODY25 = list(_OPENPOSE.items())  # dict order is BODY_25 order
# OpenPose's rendered BODY_25 pairs (poseParameters.hpp, POSE_BODY_25_PAIRS_RENDER).
_BODY25_LIMBS = [(1, 8), (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (8, 9), (9, 10), (10, 11),
                 (8, 12), (12, 13), (13, 14), (1, 0), (0, 15), (15, 17), (0, 16), (16, 18), (14, 19),
                 (19, 20), (14, 21), (11, 22), (22, 23), (11, 24)]
# iMiGUE appends 5 fingertips per hand, left hand first (OpenPose's hand output order).
_IMIGUE_TIPS = [(f"{s[0].upper()}{f.capitalize()}Tip", f"{s}_{f}_tip") for s in SIDES for f in FINGERS]
_IMIGUE35_LIMBS = _BODY25_LIMBS + [(f"{s[0].upper()}Wrist", f"{s[0].upper()}{f.capitalize()}Tip")
                                   for s in SIDES for f in FINGERS]

_COCO18 = ["Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist", "RHip",
           "RKnee", "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar", "LEar"]
# OpenPose's rendered COCO pairs (POSE_COCO_PAIRS_RENDER).
_COCO18_LIMBS = [(1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11),
                 (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17)]

# --- iMiGUE challenge release: 22 upper-body joints -----------------------------------------------------
# The release's names and order; each joint is the imigue35 joint its converter copied
# (core.imigue.CHALLENGE_COLUMNS), and the canonical name says the SUBJECT's side. The release's
# Left/Right name the viewer's side: ShoulderLeft is OpenPose's RShoulder, RightFinger1..5 are the
# first five fingertips of the 35-joint file, the subject's left hand.
_IMIGUE22_NAMES = ["Nose", "ShoulderCenter", "ShoulderLeft", "ElbowLeft", "HandLeft", "ShoulderRight",
                   "ElbowRight", "HandRight", "EyeLeft", "EyeRight", "EarLeft", "EarRight"] + [
    f"{s}Finger{k + 1}" for s in ("Right", "Left") for k in range(5)]
_IMIGUE22_FROM35 = (0, 1, 2, 3, 4, 5, 6, 7, 15, 16, 17, 18, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34)
_IMIGUE22 = [(n, (_BODY25 + _IMIGUE_TIPS)[c][1]) for n, c in zip(_IMIGUE22_NAMES, _IMIGUE22_FROM35)]
_IMIGUE22_LIMBS = [("ShoulderCenter", "Nose"), ("ShoulderCenter", "ShoulderLeft"), ("ShoulderLeft", "ElbowLeft"),
                   ("ElbowLeft", "HandLeft"), ("ShoulderCenter", "ShoulderRight"), ("ShoulderRight", "ElbowRight"),
                   ("ElbowRight", "HandRight"), ("Nose", "EyeLeft"), ("EyeLeft", "EarLeft"), ("Nose", "EyeRight"),
                   ("EyeRight", "EarRight")] + [
    (f"Hand{s}", f"{s}Finger{k + 1}") for s in ("Right", "Left") for k in range(5)]
# The edge list that circulates with the release (SMG openpose22, the MiGA'23 winner's limb config),
# verbatim, by index: under the order above it joins HandLeft to ShoulderRight and an eye to the
# fingertips (it reads like a 1-based transcription). Only for reproducing models trained on it.
_IMIGUE22_RELEASE_LIMBS = ([(2, 1), (2, 3), (3, 4), (4, 5), (2, 6), (6, 7), (7, 8), (1, 9), (9, 11), (1, 10),
                            (10, 11)] + [(5, 12 + k) for k in range(5)] + [(8, 17 + k) for k in range(5)])

# --- COCO-17 (PoseC3D) --------------------------------------------------------------------------------
_COCO17 = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
           "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
           "right_knee", "left_ankle", "right_ankle"]
# mmaction2 GeneratePoseTarget's default COCO-17 skeleton (PoseC3D).
_COCO17_LIMBS = [(0, 1), (0, 2), (1, 3), (2, 4), (0, 5), (5, 7), (7, 9), (0, 6), (6, 8), (8, 10), (5, 11),
                 (11, 13), (13, 15), (6, 12), (12, 14), (14, 16), (11, 12)]

# --- MediaPipe ----------------------------------------------------------------------------------------
_MP_POSE = ["nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
            "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder",
            "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky",
            "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb", "left_hip", "right_hip",
            "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel", "right_heel",
            "left_foot_index", "right_foot_index"]
# BlazePose's hand points are knuckles (pinky and index #1 knuckle, thumb #2 knuckle), not fingertips.
_MP_POSE_CANONICAL = {"mouth_left": "left_mouth", "mouth_right": "right_mouth",
                      **{f"{s}_{f}": f"{s}_{f}_knuckle" for s in SIDES for f in ("pinky", "index", "thumb")}}
# mediapipe.python.solutions.pose_connections.POSE_CONNECTIONS
_MP_POSE_LIMBS = [(0, 1), (1, 2), (2, 3), (3, 7), (0, 4), (4, 5), (5, 6), (6, 8), (9, 10), (11, 12), (11, 13),
                  (13, 15), (15, 17), (15, 19), (15, 21), (17, 19), (12, 14), (14, 16), (16, 18), (16, 20),
                  (16, 22), (18, 20), (11, 23), (12, 24), (23, 24), (23, 25), (24, 26), (25, 27), (26, 28),
                  (27, 29), (28, 30), (29, 31), (30, 32), (27, 31), (28, 32)]

_MP_HAND = ["wrist"] + [f"thumb_{p}" for p in ("cmc", "mcp", "ip", "tip")] + [
    f"{f}_{p}" for f in ("index_finger", "middle_finger", "ring_finger", "pinky") for p in ("mcp", "pip", "dip", "tip")]
# mediapipe.python.solutions.hands_connections.HAND_CONNECTIONS: palm, then each finger from its base.
_MP_HAND_LIMBS = [(0, 1), (0, 5), (9, 13), (13, 17), (5, 9), (0, 17), (1, 2), (2, 3), (3, 4), (5, 6), (6, 7),
                  (7, 8), (9, 10), (10, 11), (11, 12), (13, 14), (14, 15), (15, 16), (17, 18), (18, 19), (19, 20)]


def _hand_canonical(side: str, joint: str) -> str:
    """``("left", "index_finger_tip")`` -> ``"left_index_tip"``; the hand's wrist is ``left_hand_wrist``."""
    return f"{side}_hand_wrist" if joint == "wrist" else f"{side}_{joint.replace('_finger', '')}"


LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (
    _layout("imigue35", _BODY25 + _IMIGUE_TIPS, _IMIGUE35_LIMBS),
    _layout("imigue22", _IMIGUE22, _IMIGUE22_LIMBS, release=_IMIGUE22_RELEASE_LIMBS),
    _layout("coco18", [(n, _OPENPOSE[n]) for n in _COCO18], _COCO18_LIMBS),
    _layout("coco17", [(n, n) for n in _COCO17], _COCO17_LIMBS),
    _layout("mediapipe33", [(n, _MP_POSE_CANONICAL.get(n, n)) for n in _MP_POSE], _MP_POSE_LIMBS),
    # A hand on its own has no side: its canonical names match no other layout's.
    _layout("mediapipe-hand21", [(n, f"hand.{n}") for n in _MP_HAND], _MP_HAND_LIMBS),
    _layout("mediapipe-holistic75",
            [(n, _MP_POSE_CANONICAL.get(n, n)) for n in _MP_POSE]
            + [(f"{s}_hand.{n}", _hand_canonical(s, n)) for s in SIDES for n in _MP_HAND],
            _MP_POSE_LIMBS + [(a + o, b + o) for o in (33, 54) for a, b in _MP_HAND_LIMBS]),
)}
"""The known layouts by name."""


def _sided(rules: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Expand ``{side}`` in rule names and sources for both sides."""
    return {t.format(side=s): {k.format(side=s): w for k, w in src.items()} for s in SIDES for t, src in rules.items()}


DERIVATIONS: dict[str, dict[str, float]] = {
    "neck": {"left_shoulder": 0.5, "right_shoulder": 0.5},
    "mid_hip": {"left_hip": 0.5, "right_hip": 0.5},
    **_sided({
        # Pose-only MediaPipe has three knuckles per hand and no fingertips. Using the knuckles as the
        # tips, and placing the middle and ring fingers 1/3 and 2/3 of the way from the index to the
        # pinky knuckle, is an APPROXIMATION: right about where the hand is, wrong about finger pose.
        "{side}_thumb_tip": {"{side}_thumb_knuckle": 1.0},
        "{side}_index_tip": {"{side}_index_knuckle": 1.0},
        "{side}_middle_tip": {"{side}_index_knuckle": 2 / 3, "{side}_pinky_knuckle": 1 / 3},
        "{side}_ring_tip": {"{side}_index_knuckle": 1 / 3, "{side}_pinky_knuckle": 2 / 3},
        "{side}_pinky_tip": {"{side}_pinky_knuckle": 1.0},
        # MediaPipe's foot_index is the toe tip, OpenPose's big toe is close to it (approximation).
        "{side}_big_toe": {"{side}_foot_index": 1.0},
    }),
}
"""Canonical joints that a layout lacks, as weighted means of other canonical joints.

A derived joint's score is the minimum of its sources' scores; a rule whose
sources are not all in the source layout does not apply."""


def get_layout(name_or_layout: Union[str, Layout]) -> Layout:
    """A registered layout by name (a :class:`Layout` is returned as it is)."""
    if isinstance(name_or_layout, Layout):
        return name_or_layout
    if not isinstance(name_or_layout, str):
        raise MicrogestureError(f"a layout must be a name or a Layout, got {type(name_or_layout).__name__}; "
                                f"known layouts: {', '.join(sorted(LAYOUTS))}.")
    return lookup(LAYOUTS, name_or_layout, "layout")


@functools.lru_cache(maxsize=None)
def _plan(src: Layout, dst: Layout) -> tuple[np.ndarray, np.ndarray]:
    """(weights (V_dst, V_src), sources (V_dst, K)) for ``src -> dst``.

    ``sources`` indexes the source scores padded with two columns: ``V_src`` (score 0:
    nothing to convert from) and ``V_src + 1`` (score +inf: padding that the min ignores).
    """
    where = {c: i for i, c in enumerate(src.canonical)}
    rules = []
    for c in dst.canonical:
        if c in where:
            rules.append({where[c]: 1.0})
        elif c in DERIVATIONS and all(s in where for s in DERIVATIONS[c]):
            rules.append({where[s]: w for s, w in DERIVATIONS[c].items()})
        else:
            rules.append({})
    nothing, pad = src.num_joints, src.num_joints + 1
    k = max(1, *(len(r) for r in rules))
    weights = np.zeros((dst.num_joints, src.num_joints))
    sources = np.full((dst.num_joints, k), pad)
    for d, rule in enumerate(rules):
        weights[d, list(rule)] = list(rule.values())
        sources[d, :len(rule) or 1] = list(rule) or [nothing]
    weights.flags.writeable = sources.flags.writeable = False
    return weights, sources


def mapping_matrix(src: Union[str, Layout], dst: Union[str, Layout]) -> np.ndarray:
    """float64 (V_dst, V_src): row d holds the weights of the source joints that make target joint d.

    Rows sum to 1 for joints that ``src`` can provide and are all zero for the others.
    """
    return _plan(get_layout(src), get_layout(dst))[0].copy()


def missing_joints(src: Union[str, Layout], dst: Union[str, Layout]) -> tuple[str, ...]:
    """Names of the ``dst`` joints that no ``src`` data can provide (always score 0 after :func:`convert`)."""
    dst = get_layout(dst)
    weights = _plan(get_layout(src), dst)[0]
    return tuple(n for n, row in zip(dst.joints, weights) if not row.any())


def check_pose(keypoints, scores, shape: str = "(..., V, 2)", ndims=None, num_joints=None):
    """Keypoints (..., V, 2) and scores (..., V) as float arrays (float32 or wider), or a MicrogestureError.

    ``shape`` describes the expected keypoints shape in the message; ``ndims``
    (allowed numbers of dimensions) and ``num_joints`` (V) constrain it.
    """
    try:
        kp, sc = np.asarray(keypoints), np.asarray(scores)
    except ValueError as e:  # ragged nested lists
        raise MicrogestureError(f"keypoints and scores must be numeric arrays ({e}).") from None
    if kp.dtype.kind not in "biuf" or sc.dtype.kind not in "biuf":
        raise MicrogestureError(f"keypoints and scores must be numeric arrays, got {kp.dtype} and {sc.dtype}.")
    dtype = np.result_type(kp.dtype, sc.dtype, np.float32)
    kp, sc = kp.astype(dtype, copy=False), sc.astype(dtype, copy=False)
    if kp.ndim < 2 or kp.shape[-1] != 2 or (ndims is not None and kp.ndim not in ndims) \
            or (num_joints is not None and kp.shape[-2] != num_joints):
        raise MicrogestureError(f"keypoints must have shape {shape} (x, y per joint), got {kp.shape}.")
    if sc.shape != kp.shape[:-1]:
        raise MicrogestureError(f"scores must have shape {kp.shape[:-1]} to match keypoints {kp.shape}, "
                                f"got {sc.shape}.")
    return kp, sc


def convert(keypoints, scores, src: Union[str, Layout], dst: Union[str, Layout]) -> tuple[np.ndarray, np.ndarray]:
    """Re-express a pose in another layout.

    keypoints (..., V_src, 2), scores (..., V_src), any leading batch shape ->
    keypoints (..., V_dst, 2), scores (..., V_dst), float (float32 or wider).

    A source joint is missing when its score is not > 0 or a coordinate is not
    finite. Every output joint with score 0 has NaN coordinates, and only those.
    """
    src, dst = get_layout(src), get_layout(dst)
    kp, sc = check_pose(keypoints, scores, f"(..., {src.num_joints}, 2) for layout {src.name!r}",
                        num_joints=src.num_joints)
    weights, sources = _plan(src, dst)
    valid = (sc > 0) & np.isfinite(kp).all(-1)
    sc = np.where(valid, sc, 0)
    out_kp = weights.astype(kp.dtype) @ np.where(valid[..., None], kp, 0)
    padded = np.concatenate([sc, np.zeros_like(sc[..., :1]), np.full_like(sc[..., :1], np.inf)], -1)
    out_sc = padded[..., sources].min(-1)
    out_kp[out_sc == 0] = np.nan
    return out_kp, out_sc


def flip_keypoints(keypoints, scores, layout: Union[str, Layout], width: float) -> tuple[np.ndarray, np.ndarray]:
    """Mirror a pose horizontally in an image ``width`` pixels wide.

    keypoints (..., V, 2), scores (..., V) -> the same shapes. Pixel centres
    sit at integer coordinates (column i spans [i - 0.5, i + 0.5]), so
    ``x' = width - 1 - x`` maps column i to column ``width - 1 - i``, exactly
    what ``image[:, ::-1]`` and :func:`microgesture.core.heatmaps.flip_heatmaps`
    do. Left and right joints swap, so a left wrist stays a left wrist.
    """
    layout = get_layout(layout)
    kp, sc = check_pose(keypoints, scores, f"(..., {layout.num_joints}, 2) for layout {layout.name!r}",
                        num_joints=layout.num_joints)
    perm = layout.flip_permutation
    kp = kp[..., perm, :]  # fancy indexing copies
    kp[..., 0] = (width - 1) - kp[..., 0]
    return kp, sc[..., perm]
