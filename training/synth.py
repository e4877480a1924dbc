"""A synthetic micro-gesture dataset: animated upper-body skeletons and matching videos.

:func:`write_synthetic` writes a set in our own-data format (the layout the
dataset reader reads)::

    out_dir/clips.csv               "clip,label,subject"; label = class name, subject = "s03"
    out_dir/classes.txt             one class name per line, in id order
    out_dir/videos/<clip>.mp4       RGB frames (mp4v), drawn from the skeleton below
    out_dir/skeletons/<clip>.jsonl  skeleton JSONL (core.skeleton_io), layout imigue22,
                                    pixels of the video
    out_dir/synth.json              generator, parameters and seed (re-make the set with
                                    ``write_synthetic(out_dir, **synth["params"])``), the
                                    subjects' looks, and every clip's gesture span

:func:`make_long_video` writes one longer video of one subject doing several
gestures with idle gaps (for the streaming demo), its skeleton JSONL and a
ground-truth CSV. :func:`generate_skeletons` returns the skeletons of a set as
arrays without writing anything (the same numbers the files hold).

The person model. Positions are in *body units* (about a frame height; x to
the image right, y down, origin at the neck, ShoulderCenter) and map to pixels
by the subject's placement and a per-clip camera. Per subject: shoulder width,
arm and forearm lengths, neck length, head size, hand and finger sizes, where
the resting hands lie, position and scale in the frame, handedness, skin,
shirt, hair and cap colours, long or short sleeves, and a background (a noisy
gradient with a few board-like rectangles, as behind an interview; drawn under
the person with the same camera). Per clip:
a camera that drifts (translation and scale, a few percent), a slightly
different resting posture, and idle micro-motion (breathing lifts the
shoulders and head, a slow sway, head and hand drift). Per frame: keypoint
noise, lower confidence for fingertips, for hands hidden behind the body and
for face joints under a hand; now and then a joint (or a whole hand for a few
frames) is missing (NaN, score 0), as are joints outside the frame.

A gesture occupies a random sub-span ``[start, end)`` of the clip: a weight
rises from 0 to 1 with smoothstep easing over ``ramp`` frames, holds, and falls
back. The moving hand (one-handed gestures: chosen per clip, the subject's
dominant hand more often) goes from rest to a target that follows the body
(the chin moves when the head moves) and to a depth in front of the body;
elbows follow by two-link inverse kinematics in 3D, projected to the image (so
a hand raised to the face foreshortens the arm, as a camera sees it); an
oscillation (scratching, rubbing, tugging, waving) with a
random amplitude and frequency within the class's range is added. The five
fingertips of each hand fan around the hand joint along the forearm and take a
per-class shape (fist, spread, pinch, flat, crossing, steeple).

Each class's motion (iMiGUE names, 0-based ids). "One hand" gestures use one
hand, "both" both hands; offsets are body units (shoulder half-width ~0.19):

==  =========================================  =================================================
id  class                                      synthetic motion
==  =========================================  =================================================
0   turtle neck                                head sinks 0.04-0.06 toward the shoulders, which
                                               rise; hands stay
1   bulging face / deep breath                 one slow inhale: shoulders rise and widen, head
                                               tips slightly up, ears (cheeks) widen; drawn with
                                               puffed cheeks and a closed mouth
2   touch hat                                  one hand to the front-top of the head (cap
                                               brim), pinched fingers, 1-2 slow downward tugs
3   touching or scratching head                one hand to the top of the head, fingers spread,
                                               fast sideways scratching (2.5-4 Hz)
4   touching or scratching forehead            one hand flat on the forehead, sideways rubbing
5   cover face                                 both hands flat over the face, fingers up, head
                                               bows a little
6   rubbing eyes                               one hand to its own-side eye, small circles
7   touching or scratching facial parts        one hand to the cheek, small vertical scratching
8   touching ears                              one hand to its own ear, small slow pulls
9   biting nails                               one fist at the mouth, fast tiny jitter, head
                                               bows a little
10  touching jaw                               one hand to the chin, slow stroking
11  touching or scratching neck                one hand to the side of the neck, vertical
                                               scratching; head tips up a little
12  playing or adjusting hair                  one hand to the side of the head, sweeping arcs
                                               back over the hair
13  buckle button / pull collar / adjust tie   both hands to the collar, pinched, downward tugs;
                                               head tips up
14  touching or covering suprasternal notch    one flat hand on the notch below the neck, still
15  scratching back                            one hand over its own shoulder, behind the body
                                               (elbow up, hand partly hidden, low confidence),
                                               vertical scratching
16  folding arms                               both wrists cross to the opposite elbow, fists
17  dust off clothes                           one flat hand brushes the opposite chest, fast
                                               large strokes
18  putting arms behind body                   both hands go behind the back (hidden, low
                                               confidence), shoulders widen
19  moving torso                               the whole upper body sways (rotation about the
                                               hips, 0.06-0.12 rad, 0.4-0.9 Hz)
20  sitting straightly                         neck, shoulders and head lift 0.03-0.05 and the
                                               shoulders widen; hands stay in the lap
21  scratching or touching arms                one hand to the opposite upper arm, vertical
                                               scratching
22  rubbing or holding hands                   both hands meet in front of the belly and rub
                                               sideways, mirrored
23  crossing fingers                           both hands together in the lap, fingers of each
                                               hand across the other (interlaced), still
24  minaret gesture                            both hands in front of the chest, fingertips of
                                               both hands meet above them (steeple), tapping
25  playing or manipulating objects            both hands in front of the body, the lead hand
                                               turns a small object (drawn) in circles
26  hold back arms                             arms straighten down and back at the sides,
                                               shoulders rise (a stiff, held-back stance)
27  head up                                    nose and eyes move up 0.04-0.06, more than the
                                               ears (the head tips back)
28  pressing lips                              tiny nod of the nose (0.004-0.008) while the
                                               mouth is drawn pressed; hands static
29  arms akimbo                                both hands to the hips, elbows out wide
30  shaking shoulders                          shoulders oscillate vertically (2-3.5 Hz),
                                               neck and head follow a little
31  illustrative hand gestures                 both hands rise in front of the body and wave in
                                               independent 2D paths, fingers spread
==  =========================================  =================================================

Classes 1, 20, 26 and 28 barely show in an upper-body skeleton; their motions
here are plausible stand-ins chosen to be separable in principle, not copies of
how the real athletes move (nor are the others: the set proves a pipeline
learns, not what iMiGUE looks like). Determinism: every subject and clip draws
from its own ``numpy.random.SeedSequence(seed, spawn_key=...)``, so a seed gives
identical skeleton files and identical video frames, however many clips or
worker processes there are.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from microgesture.core.errors import MicrogestureError
from microgesture.core.labels import IMIGUE_CLASSES
from microgesture.core.layouts import get_layout
from microgesture.core.skeleton_io import SkeletonWriter

LAYOUT = "imigue22"
GENERATOR = "microgesture.training.synth"
FORMAT_VERSION = 1
DEFAULT_FRAMES = 40
DEFAULT_SIZE = (128, 128)
DEFAULT_FPS = 15.0
MIN_FRAMES = 8
MIN_SIZE = 32

_L = get_layout(LAYOUT)
NOSE, NECK = _L.index("nose"), _L.index("neck")
SHOULDER = (_L.index("left_shoulder"), _L.index("right_shoulder"))   # hand index 0 = left, 1 = right
ELBOW = (_L.index("left_elbow"), _L.index("right_elbow"))
HAND = (_L.index("left_wrist"), _L.index("right_wrist"))
EYE = (_L.index("left_eye"), _L.index("right_eye"))
EAR = (_L.index("left_ear"), _L.index("right_ear"))
TIPS = tuple(np.array([_L.index(f"{s}_{f}_tip") for f in ("thumb", "index", "middle", "ring", "pinky")])
             for s in ("left", "right"))
SIGN = (1.0, -1.0)   # the person's left is the image's right (+x)
# The joint order observe() draws its per-joint randomness in: imigue22's order before its
# sides were stated as the subject's. Fixed, so a seed makes the same data (and the shipped
# demo the same video) whatever order the layout table has.
_DRAW_ORDER = np.array([_L.index(c) for c in (
    "nose", "neck", "left_shoulder", "left_elbow", "left_wrist", "right_shoulder", "right_elbow", "right_wrist",
    "left_eye", "right_eye", "left_ear", "right_ear",
    *(f"{s}_{f}_tip" for s in ("right", "left") for f in ("thumb", "index", "middle", "ring", "pinky")))])
_FACE = np.array([NOSE, *EYE, *EAR])
_HIP_PIVOT = np.array([0.0, 0.55])    # body sways about this point


# ============================================================================ classes

@dataclass(frozen=True)
class Motion:
    """How one class moves. Offsets in body units; ``at`` x points toward the hand's own side.

    hands: "none", "one" (one hand, chosen per clip) or "both".
    anchor: where the hand goes (see ``_anchor``); ``at`` is added to it.
    osc: oscillation of the moving hand(s): "", "x", "y", "circle", "tug", "sweep",
    "wave", "brush"; ``amp`` (body units) and ``freq`` (Hz) ranges; ``lead_only``:
    only the leading hand oscillates.
    fingers: "relaxed", "fist", "spread", "pinch", "flat", "cross", "steeple";
    point: fingers pointing "up", "down", "in" (to the midline) or "" (along the forearm).
    elbow: which inverse-kinematics solution is preferred: "down", "out", "up" or "back".
    depth: how far the hand is in front of the shoulders (default by anchor, ``_DEPTH``).
    behind: the hand goes behind the body (drawn under the torso, low confidence).
    body: ((effect, lo, hi[, freq_lo, freq_hi]), ...) for head, shoulders and torso.
    look: drawing-only changes: "mouth_closed", "cheeks", "object".
    """

    hands: str = "none"
    anchor: str = "rest"
    at: tuple = (0.0, 0.0)
    osc: str = ""
    amp: tuple = (0.0, 0.0)
    freq: tuple = (1.0, 1.0)
    lead_only: bool = False
    fingers: str = "relaxed"
    point: str = ""
    elbow: str = "down"
    behind: bool = False
    depth: float | None = None
    body: tuple = ()
    look: tuple = ()


MOTIONS: tuple[Motion, ...] = (
    # 0 turtle neck
    Motion(body=(("head_dy", 0.04, 0.06), ("shoulders_up", 0.02, 0.035))),
    # 1 bulging face / deep breath
    Motion(body=(("shoulders_up", 0.015, 0.03), ("shoulders_wide", 0.01, 0.02), ("head_pitch", 0.01, 0.02),
                 ("ears_wide", 0.008, 0.015)), look=("cheeks", "mouth_closed")),
    # 2 touch hat
    Motion("one", "nose", (0.03, -0.15), "tug", (0.01, 0.02), (0.7, 1.4), fingers="pinch", point="in",
           elbow="out", depth=0.06, body=(("head_dy", 0.005, 0.012),)),
    # 3 touching or scratching head
    Motion("one", "nose", (0.05, -0.2), "x", (0.012, 0.025), (2.5, 4.0), fingers="spread", point="in",
           elbow="out", depth=0.0),
    # 4 touching or scratching forehead
    Motion("one", "nose", (0.0, -0.09), "x", (0.01, 0.02), (1.5, 3.0), fingers="flat", point="in"),
    # 5 cover face
    Motion("both", "nose", (0.045, 0.0), "y", (0.003, 0.006), (0.5, 1.0), fingers="flat", point="up",
           body=(("head_dy", 0.01, 0.02),)),
    # 6 rubbing eyes
    Motion("one", "eye", (0.0, 0.015), "circle", (0.008, 0.015), (2.0, 3.5), fingers="pinch", point="up"),
    # 7 touching or scratching facial parts
    Motion("one", "nose", (0.06, 0.025), "y", (0.008, 0.016), (2.5, 4.0), fingers="pinch", point="up"),
    # 8 touching ears
    Motion("one", "ear", (0.02, 0.0), "tug", (0.006, 0.012), (1.0, 2.0), fingers="pinch", point="up",
           elbow="out"),
    # 9 biting nails
    Motion("one", "nose", (0.0, 0.05), "x", (0.004, 0.008), (3.0, 5.0), fingers="fist", point="up",
           body=(("head_dy", 0.01, 0.015),)),
    # 10 touching jaw
    Motion("one", "nose", (0.02, 0.095), "y", (0.008, 0.016), (0.6, 1.2), point="in"),
    # 11 touching or scratching neck
    Motion("one", "neck", (0.045, -0.07), "y", (0.01, 0.02), (2.5, 4.0), fingers="spread", point="in",
           depth=0.06,           body=(("head_pitch", 0.008, 0.015),)),
    # 12 playing or adjusting hair
    Motion("one", "nose", (0.1, -0.12), "sweep", (0.02, 0.04), (0.7, 1.3), fingers="spread", point="up",
           elbow="out", depth=0.0),
    # 13 buckle button / pull collar / adjust tie
    Motion("both", "neck", (0.05, 0.04), "tug", (0.01, 0.02), (1.0, 2.0), fingers="pinch", point="in",
           depth=0.1,           body=(("head_pitch", 0.01, 0.02),)),
    # 14 touching or covering suprasternal notch
    Motion("one", "neck", (0.01, 0.05), fingers="flat", point="in", depth=0.1),
    # 15 scratching back
    Motion("one", "shoulder", (-0.02, -0.08), "y", (0.015, 0.03), (2.5, 4.0), elbow="up", behind=True,
           depth=-0.1),
    # 16 folding arms
    Motion("both", "neck", (-0.15, 0.25), fingers="fist", depth=0.14,
           body=(("shoulders_wide", -0.015, -0.008),)),
    # 17 dust off clothes
    Motion("one", "neck", (-0.1, 0.2), "brush", (0.03, 0.05), (2.0, 3.5), fingers="flat", point="down",
           depth=0.12),
    # 18 putting arms behind body
    Motion("both", "neck", (0.08, 0.4), elbow="out", behind=True, depth=-0.12,
           body=(("shoulders_wide", 0.008, 0.015),)),
    # 19 moving torso
    Motion(body=(("sway", 0.06, 0.12, 0.4, 0.9),)),
    # 20 sitting straightly
    Motion(body=(("lift", 0.03, 0.05), ("shoulders_wide", 0.01, 0.02))),
    # 21 scratching or touching arms
    Motion("one", "opp_shoulder", (0.0, 0.13), "y", (0.015, 0.03), (2.5, 4.0), fingers="spread", point="in"),
    # 22 rubbing or holding hands
    Motion("both", "neck", (0.03, 0.3), "x", (0.01, 0.025), (1.5, 3.0), point="in", depth=0.22),
    # 23 crossing fingers
    Motion("both", "neck", (0.035, 0.31), fingers="cross", depth=0.2),
    # 24 minaret gesture
    Motion("both", "neck", (0.06, 0.17), "x", (0.004, 0.008), (1.0, 2.0), fingers="steeple", depth=0.22),
    # 25 playing or manipulating objects
    Motion("both", "neck", (0.07, 0.28), "circle", (0.01, 0.02), (1.5, 3.0), lead_only=True,
           fingers="pinch", point="in", depth=0.25, look=("object",)),
    # 26 hold back arms
    Motion("both", "shoulder", (0.03, 0.42), point="down", elbow="back", depth=-0.2,
           body=(("shoulders_up", 0.015, 0.03),)),
    # 27 head up
    Motion(body=(("head_pitch", 0.04, 0.06), ("head_dy", -0.012, -0.006))),
    # 28 pressing lips
    Motion(body=(("nod", 0.004, 0.008, 1.0, 2.0),), look=("mouth_closed", "still_hands")),
    # 29 arms akimbo
    Motion("both", "shoulder", (-0.02, 0.4), elbow="out", point="in", depth=-0.02),
    # 30 shaking shoulders
    Motion(body=(("shrug", 0.02, 0.035, 2.0, 3.5),)),
    # 31 illustrative hand gestures
    Motion("both", "neck", (0.12, 0.2), "wave", (0.04, 0.07), (0.8, 1.8), fingers="spread", point="up",
           depth=0.3),
)
assert len(MOTIONS) == len(IMIGUE_CLASSES)

# fingers: (spread, length scale); thumb..pinky fan offsets and relative lengths
_FINGER_SHAPES = {"relaxed": (0.45, 1.0), "fist": (0.5, 0.3), "spread": (0.9, 1.05), "pinch": (0.15, 0.75),
                  "flat": (0.22, 1.0), "cross": (0.3, 1.5), "steeple": (0.3, 1.0)}
_FAN = np.array([0.9, 0.4, 0.0, -0.35, -0.7])
_FINGER_LEN = np.array([0.7, 1.0, 1.08, 1.0, 0.82])
# preferred elbow direction (x toward the arm's own side, y down, z toward the camera)
_ELBOW_PREF = {"down": (0.35, 1.0, -0.2), "out": (1.0, 0.15, -0.3), "up": (0.3, -1.0, -0.3),
               "back": (0.2, 0.3, -1.0)}
# how far in front of the shoulders a hand is at each anchor, body units (Motion.depth overrides)
_DEPTH = {"rest": 0.22, "nose": 0.12, "eye": 0.12, "ear": 0.03, "neck": 0.16, "shoulder": 0.0,
          "opp_shoulder": 0.08}


# ============================================================================ people and events

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


# ============================================================================ rendering

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


# ============================================================================ writing

def _write_clip(video_path: Path, skel_path: Path, track: Track, obs, subj: Subject, fps: float, size,
                bank, rng) -> None:
    import cv2
    w, h = size
    writer = cv2.VideoWriter(str(video_path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
    if not writer.isOpened():
        raise MicrogestureError(f"cannot write the video {video_path}: OpenCV could not open an mp4v writer. "
                                "Check that the folder is writable and that OpenCV was built with FFmpeg.")
    picks = rng.integers(0, len(bank), len(track.keypoints))
    kp, sc = obs
    try:
        with SkeletonWriter(skel_path) as sw:
            for f, img in enumerate(render_frames(track, subj, size, bank, picks)):
                writer.write(img)
                sw.write_arrays(f, f / fps, kp[f], sc[f], LAYOUT, w, h)
    finally:
        writer.release()


def _check_int(name, value, lo, hi=None, fix=""):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo or (hi is not None
                                                                                              and value > hi):
        rng = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise MicrogestureError(f"{name} must be an integer {rng}, got {value!r}.{' ' + fix if fix else ''}")
    return int(value)


def _check_size(size):
    try:
        w, h = (int(v) for v in size)
        ok = len(tuple(size)) == 2 and w >= MIN_SIZE and h >= MIN_SIZE
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise MicrogestureError(f"size must be (width, height) with both at least {MIN_SIZE} pixels, got "
                                f"{size!r}; e.g. size=(128, 128).")
    return w, h


def _check_fps(fps):
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
        raise MicrogestureError(f"fps must be a positive number, got {fps!r}; e.g. fps=15.")
    return float(fps)


def is_synthetic_set(path) -> bool:
    """Whether ``path`` holds a set written by this generator (its synth.json says so)."""
    try:
        meta = json.loads((Path(path) / "synth.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("generator") == GENERATOR


def _prepare_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise MicrogestureError(f"{out} is a file; give a folder for the synthetic set (new or empty).")
    if out.is_dir() and any(out.iterdir()):
        if not is_synthetic_set(out):
            raise MicrogestureError(
                f"{out} is not empty and is not a synthetic set (it has no synth.json written by "
                f"{GENERATOR}); refusing to overwrite it. Choose a new or empty folder.")
        for sub, ext in (("videos", ".mp4"), ("skeletons", ".jsonl")):
            if (out / sub).is_dir():
                for p in (out / sub).iterdir():
                    if p.suffix == ext and p.is_file():
                        p.unlink()
        for name in ("clips.csv", "classes.txt"):
            if (out / name).is_file():
                (out / name).unlink()
    (out / "videos").mkdir(parents=True, exist_ok=True)
    (out / "skeletons").mkdir(parents=True, exist_ok=True)


class _Progress:
    def __init__(self, total: int, what: str, on: bool):
        self.total, self.what, self.on, self.last = total, what, on, 0.0

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if self.on and (done == self.total or now - self.last >= 0.25):
            self.last = now
            end = "\n" if done == self.total else ""
            print(f"\rsynth: {done}/{self.total} {self.what}", end=end, file=sys.stderr, flush=True)


def _validate(subjects, clips_per_class, classes, frames, size, fps, seed):
    subjects = _check_int("subjects", subjects, 2, fix="A cross-subject split needs at least 2 subjects.")
    clips_per_class = _check_int("clips_per_class", clips_per_class, 1)
    classes = _check_int("classes", classes, 1, len(IMIGUE_CLASSES),
                         fix=f"The first N of the {len(IMIGUE_CLASSES)} iMiGUE classes are used.")
    frames = _check_int("frames", frames, MIN_FRAMES, fix="Gestures need room to ease in and out.")
    seed = _check_int("seed", seed, 0)
    return subjects, clips_per_class, classes, frames, _check_size(size), _check_fps(fps), seed


def _clip_plan(subjects, clips_per_class, classes):
    for s in range(subjects):
        for c in range(classes):
            for k in range(clips_per_class):
                yield s, c, k, _clip_name(s, c, k)


def _clip_name(s: int, c: int, k: int) -> str:
    return f"s{s:02d}_c{c:02d}_{k:02d}"


def _make_clip(seed, subj, s, c, k, frames, fps, size):
    rng = _rng(seed, 1, s, c, k)
    ev = _clip_event(rng, c, frames, subj)
    track = animate(subj, [ev], frames, fps, rng, size)
    return track, observe(track, subj, rng, size), rng


def generate_skeletons(subjects: int = 4, clips_per_class: int = 2, classes: int = len(IMIGUE_CLASSES),
                       seed: int = 0, frames: int = DEFAULT_FRAMES, size=DEFAULT_SIZE,
                       fps: float = DEFAULT_FPS) -> dict:
    """The skeletons of the set :func:`write_synthetic` would write, as arrays (nothing is drawn).

    Returns ``{"keypoints": (N, T, 22, 2) float32 pixels (NaN = missing), "scores": (N, T, 22),
    "labels": (N,) class ids, "subjects": (N,) subject ids, "clips": [names], "spans": (N, 3)
    gesture start, end (exclusive) and ramp frames, "hands": (N,) the leading hand, 0 left
    (the person's), 1 right}``.
    """
    subjects, clips_per_class, classes, frames, size, fps, seed = _validate(
        subjects, clips_per_class, classes, frames, size, fps, seed)
    kps, scs, labels, subs, names, spans, hands = [], [], [], [], [], [], []
    people = [_subject(seed, s, size) for s in range(subjects)]
    for s, c, k, name in _clip_plan(subjects, clips_per_class, classes):
        track, (kp, sc), _ = _make_clip(seed, people[s], s, c, k, frames, fps, size)
        kps.append(kp)
        scs.append(sc)
        labels.append(c)
        subs.append(s)
        names.append(name)
        ev = track.events[0]
        spans.append((ev.start, ev.end, ev.ramp))
        hands.append(ev.side)
    return {"keypoints": np.stack(kps).astype(np.float32), "scores": np.stack(scs).astype(np.float32),
            "labels": np.array(labels), "subjects": np.array(subs), "clips": names, "spans": np.array(spans),
            "hands": np.array(hands)}


def write_synthetic(out_dir, subjects: int = 4, clips_per_class: int = 2, classes: int = 8, seed: int = 0,
                    frames: int = DEFAULT_FRAMES, size=DEFAULT_SIZE, fps: float = DEFAULT_FPS,
                    progress: bool = True, workers: int | None = None) -> dict:
    """Write a synthetic set of ``subjects * classes * clips_per_class`` clips to ``out_dir``.

    Uses the first ``classes`` iMiGUE classes. ``out_dir`` must be new, empty, or a
    synthetic set written before (which is replaced). ``workers``: processes writing
    clips (default 1; the files do not depend on it). Workers are spawned, so a script
    that asks for more than one must guard its entry point with
    ``if __name__ == "__main__":``. Returns a summary dict (counts, parameters, seconds).
    """
    subjects, clips_per_class, classes, frames, size, fps, seed = _validate(
        subjects, clips_per_class, classes, frames, size, fps, seed)
    total = subjects * classes * clips_per_class
    workers = _check_int("workers", 1 if workers is None else workers, 1)
    out = Path(os.fspath(out_dir))
    _prepare_out_dir(out)
    t0 = time.monotonic()
    names = list(IMIGUE_CLASSES[:classes])
    params = {"subjects": subjects, "clips_per_class": clips_per_class, "classes": classes, "seed": seed,
              "frames": frames, "size": list(size), "fps": fps}
    meta = {"generator": GENERATOR, "version": FORMAT_VERSION, "complete": False, "layout": LAYOUT,
            "params": params}
    _write_json(out / "synth.json", meta)    # marks the folder as ours before anything else is written
    tick = _Progress(total, "clips", progress)
    jobs = [(str(out), seed, s, c, clips_per_class, frames, fps, size) for s in range(subjects)
            for c in range(classes)]
    done, clips = 0, {}
    if workers == 1:
        for job in jobs:
            clips[job[2:4]] = _write_clips(*job)
            done += clips_per_class
            tick(done)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed
        # spawn, not fork: forking a process whose OpenCV thread pool has run can hang the child
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_init_worker) as pool:
            futures = {pool.submit(_write_clips, *job): job[2:4] for job in jobs}
            for fut in as_completed(futures):
                clips[futures[fut]] = fut.result()
                done += clips_per_class
                tick(done)
    clips = [clip for job in jobs for clip in clips[job[2:4]]]
    with open(out / "clips.csv", "w", encoding="utf-8", newline="") as fh:
        wr = csv.writer(fh, lineterminator="\n")
        wr.writerow(["clip", "label", "subject"])
        wr.writerows((c["clip"], c["label"], c["subject"]) for c in clips)
    (out / "classes.txt").write_text("".join(n + "\n" for n in names), encoding="utf-8")
    people = [_subject(seed, s, size) for s in range(subjects)]
    meta.update(complete=True, class_names=names, subjects=[p.describe() for p in people], clips=clips)
    _write_json(out / "synth.json", meta)
    seconds = time.monotonic() - t0
    return {"out_dir": str(out), "clips": total, "subjects": [p.name for p in people], "classes": names,
            "frames": frames, "size": list(size), "fps": fps, "seed": seed, "workers": workers,
            "seconds": round(seconds, 3)}


@functools.lru_cache(maxsize=64)
def _subject(seed: int, index: int, size) -> Subject:
    return make_subject(seed, index, size)


@functools.lru_cache(maxsize=4)
def _bank(seed: int, size):
    return _noise_bank(seed, size)


def _init_worker() -> None:
    import cv2
    cv2.setNumThreads(1)


def _write_clips(out: str, seed: int, s: int, c: int, count: int, frames: int, fps: float, size) -> list:
    """Write the ``count`` clips of subject ``s`` and class ``c``; their synth.json entries."""
    subj, out = _subject(seed, s, tuple(size)), Path(out)
    entries = []
    for k in range(count):
        name = _clip_name(s, c, k)
        track, obs, rng = _make_clip(seed, subj, s, c, k, frames, fps, size)
        _write_clip(out / "videos" / f"{name}.mp4", out / "skeletons" / f"{name}.jsonl", track, obs, subj,
                    fps, size, _bank(seed, tuple(size)), rng)
        entries.append({"clip": name, "subject": subj.name, **track.events[0].describe()})
    return entries


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def make_long_video(out_path, duration_s: float = 60.0, classes=None, seed: int = 0, subject: int = 0,
                    size=(256, 256), fps: float = DEFAULT_FPS, gesture_s=(2.0, 4.0), gap_s=(1.5, 3.5),
                    progress: bool = True) -> dict:
    """One subject doing several gestures in sequence with idle gaps, for the streaming demo.

    Writes ``out_path`` (an .mp4), ``<stem>.jsonl`` (skeletons, layout imigue22) and
    ``<stem>_gt.csv`` next to it: rows ``label,start_frame,end_frame`` with 0-based frames
    and ``end_frame`` EXCLUSIVE (the gesture moves on ``start_frame <= f < end_frame``).
    ``classes``: class names or ids to draw from (default: all 32), in random order,
    cycling, never the same twice in a row. Returns a summary dict with the paths.
    """
    size, fps = _check_size(size), _check_fps(fps)
    seed = _check_int("seed", seed, 0)
    subject = _check_int("subject", subject, 0)
    if isinstance(duration_s, bool) or not isinstance(duration_s, (int, float)) or not duration_s >= 5:
        raise MicrogestureError(f"duration_s must be at least 5 seconds, got {duration_s!r}.")
    for name, (lo, hi) in (("gesture_s", gesture_s), ("gap_s", gap_s)):
        if not 0 < lo <= hi:
            raise MicrogestureError(f"{name} must be (min, max) seconds with 0 < min <= max, got {(lo, hi)!r}.")
    cids = _class_ids(classes)
    out = Path(os.fspath(out_path))
    if out.suffix.lower() != ".mp4":
        raise MicrogestureError(f"{out}: the long video must be an .mp4 file; e.g. demo.mp4.")
    out.parent.mkdir(parents=True, exist_ok=True)
    frames = int(round(duration_s * fps))
    rng = _rng(seed, 2, subject)
    subj = make_subject(seed, subject, size)
    events, pos, order, last = [], 0, [], None
    while True:
        pos += int(round(rng.uniform(*gap_s) * fps))
        length = int(round(rng.uniform(*gesture_s) * fps))
        if pos + length > frames - int(round(gap_s[0] * fps)):
            break
        if not order:
            order = list(rng.permutation(cids))
            if len(order) > 1 and order[0] == last:
                order.append(order.pop(0))
        cid = int(order.pop(0))
        events.append(sample_event(rng, cid, pos, pos + length, subj, ramp=int(round(rng.uniform(0.3, 0.6) * fps))))
        last, pos = cid, pos + length
    if not events:
        raise MicrogestureError(f"{duration_s} s leaves no room for a gesture with gaps of {gap_s} s and gestures "
                                f"of {gesture_s} s; make the video longer.")
    track = animate(subj, events, frames, fps, rng, size)
    obs = observe(track, subj, rng, size)
    skel, gt = out.with_suffix(".jsonl"), out.with_name(out.stem + "_gt.csv")
    tick = _Progress(frames, "frames", progress)
    import cv2
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), tuple(size))
    if not writer.isOpened():
        raise MicrogestureError(f"cannot write the video {out}: OpenCV could not open an mp4v writer.")
    bank = _noise_bank(seed, size)
    picks = rng.integers(0, len(bank), frames)
    try:
        with SkeletonWriter(skel) as sw:
            for f, img in enumerate(render_frames(track, subj, size, bank, picks)):
                writer.write(img)
                sw.write_arrays(f, f / fps, obs[0][f], obs[1][f], LAYOUT, size[0], size[1])
                tick(f + 1)
    finally:
        writer.release()
    with open(gt, "w", encoding="utf-8", newline="") as fh:
        wr = csv.writer(fh, lineterminator="\n")
        wr.writerow(["label", "start_frame", "end_frame"])
        wr.writerows((IMIGUE_CLASSES[e.cid], e.start, e.end) for e in events)
    return {"video": str(out), "skeletons": str(skel), "ground_truth": str(gt), "frames": frames, "fps": fps,
            "size": list(size), "subject": subj.name, "seed": seed,
            "gestures": [e.describe() for e in events]}


def _class_ids(classes) -> list[int]:
    if classes is None:
        return list(range(len(IMIGUE_CLASSES)))
    if isinstance(classes, (str, int)):
        classes = [classes]
    ids = []
    for c in classes:
        if isinstance(c, str):
            if c not in IMIGUE_CLASSES:
                from microgesture.core.errors import did_you_mean
                raise MicrogestureError(f"unknown class {c!r}.{did_you_mean(c, IMIGUE_CLASSES)} "
                                        "Use one of the iMiGUE class names (core.labels.IMIGUE_CLASSES).")
            ids.append(IMIGUE_CLASSES.index(c))
        else:
            ids.append(_check_int("class id", c, 0, len(IMIGUE_CLASSES) - 1))
    if not ids:
        raise MicrogestureError("classes is empty; give at least one class name or id, or None for all.")
    return ids
