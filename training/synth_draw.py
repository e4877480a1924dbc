"""Drawing a synthetic clip: the background under the camera, torso, arms, hands, fingers
and head (with the per-class looks: pressed lips, puffed cheeks, a held object), and a
little per-frame noise. :func:`render_frames` yields BGR frames for OpenCV's writer."""

from __future__ import annotations

import numpy as np

from microgesture.training.synth_animate import Track
from microgesture.training.synth_body import EAR, ELBOW, EYE, HAND, NECK, NOSE, SHOULDER, TIPS
from microgesture.training.synth_people import Subject, _rng


def _noise_bank(seed: int, size, n: int = 6):
    """``n`` pairs of (add, subtract) uint8 noise images shared by a run (cheap per-frame noise)."""
    rng = _rng(seed, 3)
    w, h = size
    bank = []
    for _ in range(n):
        z = rng.normal(0, 3.0, (h, w, 3))
        bank.append((np.clip(z, 0, 255).astype(np.uint8), np.clip(-z, 0, 255).astype(np.uint8)))
    return bank


_SHIFT = 4          # cv2 drawing with 4 fractional bits: sub-pixel positions
_ONE = 1 << _SHIFT


def _fx(a) -> list:
    """Fixed-point ints for cv2 drawing with ``shift=_SHIFT``, as nested Python lists (fast to index)."""
    return np.rint(np.asarray(a) * _ONE).astype(np.int64).tolist()


def _bgr(rgb) -> tuple[int, int, int]:
    return int(rgb[2]), int(rgb[1]), int(rgb[0])


def _shade(bgr, f) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, c * f))) for c in bgr)


def _geometry(track: Track, subj: Subject, size) -> dict:
    """Everything the renderer draws, for all frames at once (vectorised), as Python lists."""
    h = size[1]
    kp = track.keypoints
    u = track.scale[:, None]
    T = len(kp)
    ls, rs, neck, nose = kp[:, SHOULDER[0]], kp[:, SHOULDER[1]], kp[:, NECK], kp[:, NOSE]
    widen = 0.03 * u[:, 0]
    torso = np.stack([rs + u * (-0.02, 0.03), rs + u * (0.01, -0.02), neck + u * (0, -0.01),
                      ls + u * (-0.01, -0.02), ls + u * (0.02, 0.03),
                      np.stack([ls[:, 0] + widen, h + 2 * u[:, 0]], -1),
                      np.stack([rs[:, 0] - widen, h + 2 * u[:, 0]], -1)], 1)
    ear_l, ear_r = kp[:, EAR[0]], kp[:, EAR[1]]
    ang = np.arctan2(ear_l[:, 1] - ear_r[:, 1], ear_l[:, 0] - ear_r[:, 0])
    rx = subj.head[0] * (1 + 0.12 * track.cheeks)[:, None] * u
    ry = subj.head[1] * u
    centre = 0.5 * (ear_l + ear_r) + u * (0, -0.02)
    d = np.stack([np.cos(ang), np.sin(ang)], -1)
    brim = centre + u * (0, -0.04)
    hand = np.where(track.object_hand[:, None] == 0, kp[:, HAND[0]], kp[:, HAND[1]])

    def thick(f):
        return np.maximum(1, np.rint(f * u[:, 0])).astype(int).tolist()

    return {
        "kp": _fx(kp), "torso": np.rint(torso * _ONE).astype(np.int32),
        "neck": _fx(np.stack([neck + u * (0, -0.01), 0.5 * (neck + nose)], 1)),
        "head": _fx(centre), "head_axes": _fx(np.concatenate([rx, ry], 1)),
        "face": _fx(centre + u * (0, 0.03)), "face_axes": _fx(np.concatenate([rx * 0.94, ry * 0.86], 1)),
        "angle": np.degrees(ang).tolist(),
        "brim": _fx(np.stack([brim - 1.05 * rx * d, brim + 1.05 * rx * d], 1)),
        "mouth": _fx(nose + u * (0, 0.045)),
        "mouth_axes": _fx(np.concatenate([0.03 * u * (1 - 0.25 * (1 - track.mouth))[:, None],
                                          np.maximum(0.004, 0.012 * track.mouth)[:, None] * u], 1)),
        "object": _fx(np.stack([hand + u * (-0.04, 0.03), hand + u * (0.04, -0.03)], 1)),
        "t_upper": thick(0.075), "t_fore": thick(0.06), "t_finger": thick(0.016), "t_neck": thick(0.09),
        "t_brim": thick(0.025), "t_object": thick(0.025),
        "r_hand": _fx(subj.hand * u[:, 0]), "r_ear": _fx(0.022 * u[:, 0]), "r_eye": _fx(0.012 * u[:, 0]),
        "frames": T,
    }


def render_frames(track: Track, subj: Subject, size, noise=None, picks=None):
    """Yield every frame of a track as a BGR uint8 image, drawn from its true keypoints.

    ``noise``: a list of (add, subtract) uint8 images, ``picks[f]`` chooses frame f's.
    """
    import cv2
    w, h = size
    g = _geometry(track, subj, size)
    aa, l8, sh = cv2.LINE_AA, cv2.LINE_8, _SHIFT   # anti-aliased edges for the large shapes only
    skin, shirt = _bgr(subj.skin), _bgr(subj.shirt)
    upper = _shade(shirt, 0.85)                  # sleeves a shade darker than the torso, so arms show on it
    sleeve = upper if subj.long_sleeves else skin
    neck_col, ear_col, nose_col = _shade(skin, 0.9), _shade(skin, 0.92), _shade(skin, 0.8)
    top = _bgr(subj.cap) if subj.cap is not None else _bgr(subj.hair)
    brim_col = _shade(top, 0.7)
    eye_col, mouth_col, object_col = (30, 30, 30), (60, 50, 150), (40, 200, 230)
    for f in range(g["frames"]):
        img = cv2.warpAffine(subj.background, track.camera[f], (w, h), flags=cv2.INTER_NEAREST,
                             borderMode=cv2.BORDER_REFLECT)
        kp = g["kp"][f]
        tu, tf, tfi, rh = g["t_upper"][f], g["t_fore"][f], g["t_finger"][f], g["r_hand"][f]

        def arm(hh):
            s, e, wr = kp[SHOULDER[hh]], kp[ELBOW[hh]], kp[HAND[hh]]
            cv2.line(img, s, e, upper, tu, aa, sh)
            cv2.line(img, e, wr, sleeve, tf, aa, sh)
            for j in TIPS[hh]:
                cv2.line(img, wr, kp[j], skin, tfi, l8, sh)
            cv2.circle(img, wr, rh, skin, -1, aa, sh)

        behind = track.behind[f]
        for hh in (0, 1):
            if behind[hh]:
                arm(hh)
        cv2.fillPoly(img, [g["torso"][f]], shirt, aa, sh)
        a, b = g["neck"][f]
        cv2.line(img, a, b, neck_col, g["t_neck"][f], aa, sh)
        for e in EAR:
            cv2.circle(img, kp[e], g["r_ear"][f], ear_col, -1, l8, sh)
        ang = g["angle"][f]
        cv2.ellipse(img, g["head"][f], g["head_axes"][f], ang, 0, 360, top, -1, aa, sh)
        cv2.ellipse(img, g["face"][f], g["face_axes"][f], ang, 0, 360, skin, -1, aa, sh)
        if subj.cap is not None:
            a, b = g["brim"][f]
            cv2.line(img, a, b, brim_col, g["t_brim"][f], l8, sh)
        for e in EYE:
            cv2.circle(img, kp[e], g["r_eye"][f], eye_col, -1, l8, sh)
        cv2.circle(img, kp[NOSE], g["r_eye"][f], nose_col, -1, l8, sh)
        cv2.ellipse(img, g["mouth"][f], g["mouth_axes"][f], ang, 0, 360, mouth_col, -1, l8, sh)
        for hh in (0, 1):
            if not behind[hh]:
                arm(hh)
        if track.objects[f] > 0.3:    # a small object in the leading hand
            a, b = g["object"][f]
            cv2.line(img, a, b, object_col, g["t_object"][f], l8, sh)
        if noise is not None:
            add, sub = noise[picks[f]]
            cv2.add(img, add, dst=img)
            cv2.subtract(img, sub, dst=img)
        yield img


