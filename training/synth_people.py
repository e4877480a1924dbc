"""Synthetic people and their gestures: a subject's proportions, placement, colours and
background (:func:`make_subject`), and one gesture event on a span of frames
(:func:`sample_event`). Every draw comes from a ``SeedSequence`` keyed by what it is for
(:func:`_rng`), so a seed gives the same people and events however the set is cut."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from microgesture.core.labels import IMIGUE_CLASSES
from microgesture.training.synth_body import DEFAULT_SIZE, MOTIONS


_SKIN = np.array([(255, 219, 172), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36),
                  (92, 58, 34)], dtype=float)
_HAIR = np.array([(20, 15, 10), (60, 40, 25), (110, 75, 40), (180, 150, 90), (90, 90, 90)], dtype=float)


@dataclass(frozen=True)
class Subject:
    """One synthetic person: proportions (body units), placement (pixels) and colours (RGB)."""

    name: str
    shoulder: float        # half the shoulder width
    upper_arm: float
    forearm: float
    neck: float            # neck (ShoulderCenter) to nose, vertically
    head: tuple            # head ellipse half-axes (rx, ry)
    hand: float            # hand disc radius
    finger: float          # finger length
    rest: tuple            # resting wrist (x toward own side, y)
    rest_depth: float      # resting hands' distance in front of the shoulders
    dominant: int          # 0 left, 1 right
    origin: tuple          # neck position, pixels
    unit: float            # pixels per body unit
    skin: tuple
    shirt: tuple
    hair: tuple
    cap: tuple | None      # cap colour, or None
    long_sleeves: bool
    background: np.ndarray  # (H, W, 3) uint8 BGR

    def describe(self) -> dict:
        """JSON-ready description (no background image)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()
                if k != "background"}


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=tuple(int(k) for k in key)))


def _colour(rng, avoid, min_dist=90.0, sat=(0.25, 0.9), val=(0.2, 0.9)):
    """A random RGB colour at least ``min_dist`` away (L2) from every colour in ``avoid``."""
    import cv2
    for _ in range(50):
        hsv = np.array([[[rng.uniform(0, 180), rng.uniform(*sat) * 255, rng.uniform(*val) * 255]]], np.uint8)
        rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(float)
        if all(np.linalg.norm(rgb - np.asarray(a, float)) >= min_dist for a in avoid):
            break
    return tuple(int(c) for c in rgb)


def _background(rng, size, avoid) -> np.ndarray:
    """A noisy gradient with a few board-like rectangles, BGR uint8."""
    import cv2
    w, h = size
    c1, c2 = (np.array(_colour(rng, avoid, 70, (0.05, 0.6), (0.3, 0.95)), float) for _ in range(2))
    ang = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w]
    g = (np.cos(ang) * xx / w + np.sin(ang) * yy / h)
    g = (g - g.min()) / max(np.ptp(g), 1e-6)
    img = c1 * (1 - g[..., None]) + c2 * g[..., None]
    blobs = cv2.resize(rng.normal(0, 12, (6, 6, 3)), (w, h), interpolation=cv2.INTER_CUBIC)
    img = img + blobs
    for _ in range(rng.integers(2, 6)):
        x0, y0 = rng.uniform(-0.1, 0.9) * w, rng.uniform(-0.1, 0.8) * h
        bw, bh = rng.uniform(0.1, 0.35) * w, rng.uniform(0.06, 0.2) * h
        col = np.array(_colour(rng, avoid, 70, (0.1, 0.8), (0.3, 0.95)), float)
        xs, ys = slice(max(0, int(x0)), max(0, int(x0 + bw))), slice(max(0, int(y0)), max(0, int(y0 + bh)))
        img[ys, xs] = 0.5 * img[ys, xs] + 0.5 * col
    img = img + rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)[..., ::-1].copy()   # RGB -> BGR


def make_subject(seed: int, index: int, size=DEFAULT_SIZE) -> Subject:
    """Subject ``index`` of a set made with ``seed``, for frames of ``size`` (W, H)."""
    rng = _rng(seed, 0, index)
    w, h = size
    m = min(w, h)
    head_rx = rng.uniform(0.088, 0.102)
    skin = np.clip(_SKIN[rng.integers(len(_SKIN))] + rng.normal(0, 8, 3), 0, 255)
    skin = tuple(int(c) for c in skin)
    shirt = _colour(rng, [skin], 110)
    hair = tuple(int(c) for c in np.clip(_HAIR[rng.integers(len(_HAIR))] + rng.normal(0, 6, 3), 0, 255))
    cap = _colour(rng, [skin], 90) if rng.random() < 0.4 else None
    unit = m * rng.uniform(0.95, 1.08)
    origin = (w / 2 + rng.uniform(-0.07, 0.07) * m, h * 0.47 + rng.uniform(-0.02, 0.02) * m)
    avoid = [skin, shirt, hair] + ([cap] if cap else [])
    return Subject(
        name=f"s{index:02d}", shoulder=rng.uniform(0.17, 0.21), upper_arm=rng.uniform(0.25, 0.29),
        forearm=rng.uniform(0.23, 0.27), neck=rng.uniform(0.17, 0.21),
        head=(head_rx, head_rx * rng.uniform(1.22, 1.38)), hand=rng.uniform(0.032, 0.04),
        finger=rng.uniform(0.04, 0.05), rest=(rng.uniform(0.08, 0.13), rng.uniform(0.33, 0.37)),
        rest_depth=rng.uniform(0.18, 0.26),
        dominant=int(rng.random() < 0.75), origin=origin, unit=unit, skin=skin, shirt=shirt, hair=hair,
        cap=cap, long_sleeves=bool(rng.random() < 0.5), background=_background(rng, size, avoid))


@dataclass(frozen=True)
class Event:
    """One gesture: class ``cid`` moving on frames ``[start, end)`` with ``ramp`` frames of easing."""

    cid: int
    start: int
    end: int
    ramp: int
    side: int              # the leading hand: 0 left, 1 right
    amp: float
    freq: float
    phase: tuple           # oscillation phases per hand (and a second one for "wave")
    ratio: tuple           # "wave": y-frequency ratio per hand
    jitter: tuple          # target offset, body units
    body: tuple            # (amplitude, frequency, phase) per body effect of the class

    def describe(self) -> dict:
        return {"label": IMIGUE_CLASSES[self.cid], "start": self.start, "end": self.end, "ramp": self.ramp,
                "hand": ("left", "right")[self.side]}


def sample_event(rng, cid: int, start: int, end: int, subject: Subject, ramp: int | None = None) -> Event:
    """An event of class ``cid`` on ``[start, end)`` with random amplitude, speed and hand."""
    mo = MOTIONS[cid]
    if ramp is None:
        ramp = int(round(rng.uniform(0.15, 0.3) * (end - start)))
    ramp = int(max(1, min(ramp, (end - start) // 2)))
    side = subject.dominant if rng.random() < 0.7 else 1 - subject.dominant
    body = []
    for eff in mo.body:
        f = rng.uniform(eff[3], eff[4]) if len(eff) > 3 else 0.0
        body.append((float(rng.uniform(eff[1], eff[2])), float(f), float(rng.uniform(0, 2 * np.pi))))
    return Event(cid, int(start), int(end), ramp, int(side), float(rng.uniform(*mo.amp)) if mo.osc else 0.0,
                 float(rng.uniform(*mo.freq)), tuple(float(p) for p in rng.uniform(0, 2 * np.pi, 4)),
                 tuple(float(r) for r in rng.uniform(0.6, 1.4, 2)),
                 tuple(float(j) for j in rng.normal(0, 0.008, 2)), tuple(body))


def _clip_event(rng, cid: int, frames: int, subject: Subject) -> Event:
    """The one gesture of a dataset clip: a random sub-span with idle frames before it."""
    start = int(rng.integers(max(1, round(0.08 * frames)), max(2, round(0.3 * frames)) + 1))
    length = int(round(rng.uniform(0.5, 0.8) * frames))
    end = min(frames, start + max(length, 3))
    return sample_event(rng, cid, start, end, subject)


# ============================================================================ animation

