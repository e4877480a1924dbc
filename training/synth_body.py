"""The synthetic person's skeleton and how each class moves: the layout's joint indices,
the generator's defaults, and one :class:`Motion` per iMiGUE class (``MOTIONS``), with the
finger shapes, elbow preferences and hand depths the animation uses. The table of what
each class does is in :mod:`microgesture.training.synth`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from microgesture.core.labels import IMIGUE_CLASSES
from microgesture.core.layouts import get_layout

LAYOUT = "imigue22"
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


