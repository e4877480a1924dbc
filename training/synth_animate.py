"""Animating a subject: the true pose of every frame (:func:`animate`: idle motion, the
gestures' hand paths, elbows by inverse kinematics, fingertips, body effects) and what a
pose estimator would report of it (:func:`observe`: noise, lower confidence, missing
joints)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from microgesture.training.synth_body import (_DEPTH, _DRAW_ORDER, _ELBOW_PREF, _FACE, _FAN, _FINGER_LEN,
                                              _FINGER_SHAPES, _HIP_PIVOT, _L, EAR, ELBOW, EYE, HAND, MOTIONS, NECK,
                                              NOSE, SHOULDER, SIGN, TIPS)
from microgesture.training.synth_people import Event, Subject


@dataclass(frozen=True)
class Track:
    """The true pose of every frame (pixels, before keypoint noise) and what the renderer needs."""

    keypoints: np.ndarray   # (T, 22, 2) pixels
    camera: np.ndarray      # (T, 2, 3) affine body-pixels -> image, also applied to the background
    scale: np.ndarray       # (T,) pixels per body unit, camera included
    behind: np.ndarray      # (T, 2) bool: hand drawn behind the torso
    mouth: np.ndarray       # (T,) 1 = relaxed, 0 = pressed
    cheeks: np.ndarray      # (T,) 0..1 puffed
    objects: np.ndarray     # (T,) weight of the held object
    object_hand: np.ndarray  # (T,) the hand holding it: 0 left, 1 right
    events: tuple


def envelope(frames: int, ev: Event) -> np.ndarray:
    """(T,) weight in [0, 1]: > 0 exactly on ``[start, end)``, smoothstep easing of ``ramp`` frames."""
    i = np.arange(frames, dtype=float)
    up = np.clip((i - ev.start + 1) / (ev.ramp + 1), 0, 1)
    down = np.clip((ev.end - i) / (ev.ramp + 1), 0, 1)
    x = np.minimum(up, down)
    return x * x * (3 - 2 * x)


def _smooth_noise(rng, t, amp, fmin=0.1, fmax=0.5, n=2):
    """Sum of ``n`` random slow sines per column: (T,) idle drift."""
    f = rng.uniform(fmin, fmax, n)
    ph = rng.uniform(0, 2 * np.pi, n)
    a = rng.uniform(0.5, 1.0, n)
    return amp * (a[None] * np.sin(2 * np.pi * f[None] * t[:, None] + ph[None])).sum(1) / a.sum()


def _osc(kind, ev: Event, h: int, t: np.ndarray) -> np.ndarray:
    """(T, 2) oscillation of hand ``h`` in body units, x toward the hand's own side."""
    out = np.zeros((len(t), 2))
    if not kind:
        return out
    ph = 2 * np.pi * ev.freq * t + ev.phase[h]     # random phases: the absolute time base is fine
    s, c = np.sin(ph), np.cos(ph)
    if kind == "x":
        out[:, 0] = s
    elif kind == "y":
        out[:, 1] = s
    elif kind == "circle":
        out[:, 0], out[:, 1] = c, s
    elif kind == "tug":
        out[:, 1] = 0.5 * (1 - c)
    elif kind == "sweep":
        out[:, 0], out[:, 1] = 0.5 * (1 - c), -0.3 * (1 - c)
    elif kind == "brush":
        out[:, 0], out[:, 1] = 0.3 * s, s
    elif kind == "wave":
        out[:, 0] = s
        out[:, 1] = 0.7 * np.sin(2 * np.pi * ev.freq * ev.ratio[h] * t + ev.phase[2 + h])
    else:  # pragma: no cover - a table bug
        raise ValueError(kind)
    return ev.amp * out


def _rotate(v: np.ndarray, ang) -> np.ndarray:
    c, s = np.cos(ang), np.sin(ang)
    return np.stack([c * v[..., 0] - s * v[..., 1], s * v[..., 0] + c * v[..., 1]], -1)


def _elbow(shoulder, wrist, depth, a, b, pref):
    """Two-link IK in 3D (shoulders at depth 0, the hand ``depth`` in front), projected to 2D.

    shoulder, wrist (T, 2), depth (T,), pref (T, 3): the elbow lies on the circle of
    solutions at the point nearest ``pref``. Returns (elbow, reachable wrist), (T, 2) each.
    Foreshortening comes for free: a hand in front of the face shortens the arm's image.
    """
    S = np.concatenate([shoulder, np.zeros((len(shoulder), 1))], 1)
    W = np.concatenate([wrist, depth[:, None]], 1)
    d = W - S
    dist = np.linalg.norm(d, axis=1, keepdims=True)
    u = d / np.maximum(dist, 1e-9)
    dc = np.clip(dist, abs(a - b) + 1e-3, a + b - 1e-3)
    W = S + u * dc
    x = (a * a - b * b + dc * dc) / (2 * dc)
    r = np.sqrt(np.maximum(a * a - x * x, 0.0))
    n = pref - (pref * u).sum(1, keepdims=True) * u
    n = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-9)
    E = S + u * x + r * n
    return E[:, :2], W[:, :2]


def _fingertips(hand, elbow, other_hand, subj: Subject, h: int, shape: str, point: str) -> np.ndarray:
    """(T, 5, 2) fingertips of hand ``h`` in the given shape, body units."""
    sgn = SIGN[h]
    T = len(hand)
    if shape == "steeple":   # fingertips of both hands meet above the hands
        meet = 0.5 * (hand + other_hand) + np.array([0.0, -(subj.hand + subj.finger)])
        dy = np.array([0.045, 0.0, 0.01, 0.02, 0.03]) * subj.finger / 0.045
        return meet[:, None] + np.stack([np.full(5, sgn * 0.004), dy], -1)[None]
    spread, length = _FINGER_SHAPES[shape]
    if shape == "cross":     # point across, toward and past the other hand
        v = other_hand - hand
        theta = np.arctan2(v[:, 1], v[:, 0])
    elif point == "up":
        theta = np.full(T, -np.pi / 2)
    elif point == "down":
        theta = np.full(T, np.pi / 2)
    elif point == "in":
        theta = np.full(T, np.pi if sgn > 0 else 0.0)
    else:
        v = hand - elbow
        theta = np.arctan2(v[:, 1], v[:, 0])
    ang = theta[:, None] + sgn * _FAN[None] * spread
    r = subj.hand * 0.7 + subj.finger * length * _FINGER_LEN
    if shape == "cross":     # interlace: alternate the fingers up and down a little
        ang = ang + sgn * np.array([0.0, 0.15, -0.15, 0.15, -0.15])[None] * 0.5
    return hand[:, None] + r[None, :, None] * np.stack([np.cos(ang), np.sin(ang)], -1)


def animate(subj: Subject, events, frames: int, fps: float, rng, size) -> Track:
    """The whole clip's true pose for a list of non-overlapping events (vectorised over frames)."""
    T = frames
    t = np.arange(T) / fps
    sh, nl = subj.shoulder, subj.neck
    rx = subj.head[0]
    # ---- idle motion, every clip
    breath = _smooth_noise(rng, t, rng.uniform(0.004, 0.008), 0.2, 0.35, 1)
    sway = _smooth_noise(rng, t, rng.uniform(0.003, 0.006), 0.08, 0.25)
    head_drift = np.stack([_smooth_noise(rng, t, 0.004), _smooth_noise(rng, t, 0.003)], -1)
    posture = rng.normal(0, 0.012, (2, 2))
    hand_drift = np.stack([[_smooth_noise(rng, t, 0.005, 0.1, 0.6) for _ in range(2)] for _ in range(2)])
    hand_drift = hand_drift.transpose(2, 0, 1)                              # (T, 2 hands, xy)
    # ---- body effects of the events
    head_shift = np.zeros((T, 2))
    head_shift[:, 0] += sway + head_drift[:, 0]
    head_shift[:, 1] += -0.8 * breath + head_drift[:, 1]
    neck = np.zeros((T, 2))
    neck[:, 0] += sway
    neck[:, 1] -= 0.5 * breath
    sh_y = np.zeros(T) - breath          # shoulders (both) vertical shift
    sh_x = np.zeros(T)                   # outward shift
    pitch = np.zeros(T)                  # + = nose up (head tips back)
    nod = np.zeros(T)
    ears_wide = np.zeros(T)
    roll = np.zeros(T)
    mouth = np.ones(T)
    cheeks = np.zeros(T)
    objects = np.zeros(T)
    object_hand = np.zeros(T, dtype=int)
    still = np.zeros(T)
    weights = []
    for ev in events:
        w = envelope(T, ev)
        weights.append(w)
        mo = MOTIONS[ev.cid]
        for eff, (a, f, ph) in zip(mo.body, ev.body):
            name = eff[0]
            osc = np.sin(2 * np.pi * f * t + ph)
            if name == "head_dy":
                head_shift[:, 1] += w * a
            elif name == "shoulders_up":
                sh_y -= w * a
                neck[:, 1] -= 0.5 * w * a
            elif name == "shoulders_wide":
                sh_x += w * a
            elif name == "head_pitch":
                pitch += w * a
            elif name == "ears_wide":
                ears_wide += w * a
            elif name == "lift":
                sh_y -= w * a
                neck[:, 1] -= w * a
                head_shift[:, 1] -= w * a
            elif name == "shrug":
                sh_y -= w * a * osc
                neck[:, 1] -= 0.5 * w * a * osc
                head_shift[:, 1] -= 0.3 * w * a * osc
            elif name == "nod":
                nod += w * a * osc
            elif name == "sway":
                roll += w * a * osc
            else:  # pragma: no cover - a table bug
                raise ValueError(name)
        if "mouth_closed" in mo.look:
            mouth *= 1 - 0.9 * w
        if "cheeks" in mo.look:
            cheeks = np.maximum(cheeks, w)
        if "still_hands" in mo.look:
            still = np.maximum(still, w)
    kp = np.zeros((T, _L.num_joints, 2))
    kp[:, NECK] = neck
    nose = np.array([0.0, -nl]) + head_shift
    kp[:, NOSE] = nose + np.stack([np.zeros(T), -pitch + nod], -1)
    for h in (0, 1):
        s = SIGN[h]
        kp[:, EYE[h]] = nose + (s * 0.36 * rx, -0.035) + np.stack([np.zeros(T), -0.6 * pitch + 0.3 * nod], -1)
        kp[:, EAR[h]] = nose + (s * 0.95 * rx, -0.012) + np.stack([s * ears_wide, 0.2 * pitch], -1)
        kp[:, SHOULDER[h]] = np.stack([s * (sh + sh_x) + sway, 0.02 + sh_y], -1)
    # ---- hands
    rest = np.stack([np.array([SIGN[h] * subj.rest[0], subj.rest[1]]) + posture[h] for h in (0, 1)], 0)
    wrist = rest[None] + hand_drift * (1 - still)[:, None, None]                  # (T, 2, 2)
    ep = _ELBOW_PREF["down"]
    pref = np.repeat(np.array([[[SIGN[h] * ep[0], ep[1], ep[2]] for h in (0, 1)]]), T, axis=0)   # (T, 2, 3)
    depth = np.full((T, 2), subj.rest_depth)
    behind = np.zeros((T, 2))
    targets = []   # per event: (w, hands, shape, point)
    for ev, w in zip(events, weights):
        mo = MOTIONS[ev.cid]
        if mo.hands == "none":
            continue
        hands = (0, 1) if mo.hands == "both" else (ev.side,)
        for h in hands:
            s = SIGN[h]
            anchor = _anchor(mo.anchor, kp, rest, h)
            target = anchor + np.array([s * (mo.at[0] + ev.jitter[0]), mo.at[1] + ev.jitter[1]])
            o = _osc(mo.osc, ev, h, t) if (not mo.lead_only or h == ev.side) else np.zeros((T, 2))
            o[:, 0] *= s
            wrist[:, h] += w[:, None] * (target + o - wrist[:, h])
            ep = _ELBOW_PREF[mo.elbow]
            pref[:, h] += w[:, None] * (np.array([s * ep[0], ep[1], ep[2]]) - pref[:, h])
            z = _DEPTH[mo.anchor] if mo.depth is None else mo.depth
            depth[:, h] += w * (z - depth[:, h])
            if mo.behind:
                behind[:, h] = np.maximum(behind[:, h], w)
        targets.append((w, hands, mo.fingers, mo.point))
        if "object" in mo.look:
            objects = np.maximum(objects, w)
            object_hand[w > 0] = ev.side
    for h in (0, 1):
        e, wr = _elbow(kp[:, SHOULDER[h]], wrist[:, h], depth[:, h], subj.upper_arm, subj.forearm, pref[:, h])
        kp[:, ELBOW[h]], kp[:, HAND[h]] = e, wr
    for h in (0, 1):
        hand, other = kp[:, HAND[h]], kp[:, HAND[1 - h]]
        tips = _fingertips(hand, kp[:, ELBOW[h]], other, subj, h, "relaxed", "")
        for w, hands, shape, point in targets:
            if h in hands:
                shaped = _fingertips(hand, kp[:, ELBOW[h]], other, subj, h, shape, point)
                tips = tips + w[:, None, None] * (shaped - tips)
        kp[:, TIPS[h]] = tips
    # ---- body roll about the hips, then body units -> pixels -> camera
    kp = _HIP_PIVOT + _rotate(kp - _HIP_PIVOT, roll[:, None])
    w_px, h_px = size
    cam_scale = 1 + rng.uniform(-0.02, 0.02) + _smooth_noise(rng, t, rng.uniform(0.004, 0.012), 0.05, 0.3) \
        + rng.uniform(-0.015, 0.015) * t / max(t[-1], 1e-9)
    cam_dx = rng.uniform(-0.02, 0.02) * w_px + _smooth_noise(rng, t, rng.uniform(0.003, 0.01) * w_px, 0.05, 0.4)
    cam_dy = rng.uniform(-0.015, 0.015) * h_px + _smooth_noise(rng, t, rng.uniform(0.003, 0.008) * h_px, 0.05, 0.4)
    cx, cy = w_px / 2, h_px / 2
    camera = np.zeros((T, 2, 3))
    camera[:, 0, 0] = camera[:, 1, 1] = cam_scale
    camera[:, 0, 2] = cx * (1 - cam_scale) + cam_dx
    camera[:, 1, 2] = cy * (1 - cam_scale) + cam_dy
    px = np.asarray(subj.origin) + subj.unit * kp
    px = px * cam_scale[:, None, None] + camera[:, None, :, 2]
    return Track(px, camera, subj.unit * cam_scale, behind > 0.5, mouth, cheeks, objects, object_hand,
                 tuple(events))


def _anchor(name: str, kp: np.ndarray, rest: np.ndarray, h: int) -> np.ndarray:
    """(T, 2) point a hand goes to, before its offset."""
    T = len(kp)
    if name == "rest":
        return np.broadcast_to(rest[h], (T, 2))
    if name == "nose":
        return kp[:, NOSE]
    if name == "neck":
        return kp[:, NECK]
    if name == "eye":
        return kp[:, EYE[h]]
    if name == "ear":
        return kp[:, EAR[h]]
    if name == "shoulder":
        return kp[:, SHOULDER[h]]
    if name == "opp_shoulder":
        return kp[:, SHOULDER[1 - h]]
    raise ValueError(name)  # pragma: no cover - a table bug


# ============================================================================ observation

def observe(track: Track, subj: Subject, rng, size) -> tuple[np.ndarray, np.ndarray]:
    """What a pose estimator would report: (keypoints (T, 22, 2), scores (T, 22)), NaN where missing."""
    pos = np.argsort(_DRAW_ORDER)  # layout joint -> draw position (randomness is drawn in _DRAW_ORDER)
    kp = track.keypoints[:, _DRAW_ORDER]
    hands, tips, face = pos[list(HAND)], [pos[t] for t in TIPS], pos[_FACE]
    T, V = kp.shape[:2]
    unit = track.scale[:, None, None]
    tip_idx = np.concatenate(tips)
    sigma = np.full(V, 0.003)
    sigma[tip_idx] = 0.006
    base = rng.uniform(0.88, 0.99, V)
    base[tip_idx] = rng.uniform(0.55, 0.9, len(tip_idx))
    scores = np.clip(base[None] + rng.normal(0, 0.02, (T, V)), 0.05, 1.0)
    noise = rng.normal(0, 1, (T, V, 2)) * sigma[None, :, None]
    # hands behind the body: low confidence, worse positions
    for h in (0, 1):
        idx = np.concatenate([[hands[h]], tips[h]])
        hid = track.behind[:, h]
        scores[np.ix_(hid, idx)] = rng.uniform(0.05, 0.25, (int(hid.sum()), len(idx)))
        noise[np.ix_(hid, idx)] *= 3
    # face joints under a hand
    for h in (0, 1):
        d = np.linalg.norm(kp[:, face] - kp[:, hands[h], None], axis=-1) / track.scale[:, None]
        scores[:, face] = np.where(d < 0.05, scores[:, face] * 0.45, scores[:, face])
    # occasional low confidence and missing joints
    low = rng.random((T, V)) < 0.02
    scores[low] = rng.uniform(0.05, 0.3, int(low.sum()))
    noise[low] *= 2
    miss = rng.random((T, V)) < np.where(np.isin(np.arange(V), tip_idx), 0.01, 0.004)[None]
    if rng.random() < 0.15 and T > 4:      # a whole hand lost for a few frames
        h = int(rng.integers(2))
        a = int(rng.integers(0, T - 2))
        miss[a:a + int(rng.integers(2, 7)), np.concatenate([[hands[h]], tips[h]])] = True
    out = kp + noise * unit
    w, hgt = size
    miss |= (out[..., 0] < 0) | (out[..., 0] > w - 1) | (out[..., 1] < 0) | (out[..., 1] > hgt - 1)
    out[miss] = np.nan
    scores[miss] = 0.0
    return out[:, pos], scores[:, pos]

