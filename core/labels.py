"""The shared label vocabulary: iMiGUE's 32 micro-gesture classes (0-based ids)."""

from __future__ import annotations

IMIGUE_CLASSES: tuple[str, ...] = (
    "turtle neck",
    "bulging face / deep breath",
    "touch hat",
    "touching or scratching head",
    "touching or scratching forehead",
    "cover face",
    "rubbing eyes",
    "touching or scratching facial parts",
    "touching ears",
    "biting nails",
    "touching jaw",
    "touching or scratching neck",
    "playing or adjusting hair",
    "buckle button / pull collar / adjust tie",
    "touching or covering suprasternal notch",
    "scratching back",
    "folding arms",
    "dust off clothes",
    "putting arms behind body",
    "moving torso",
    "sitting straightly",
    "scratching or touching arms",
    "rubbing or holding hands",
    "crossing fingers",
    "minaret gesture",
    "playing or manipulating objects",
    "hold back arms",
    "head up",
    "pressing lips",
    "arms akimbo",
    "shaking shoulders",
    "illustrative hand gestures",
)

IMIGUE_RAW_OTHER_ID = 99
"""iMiGUE label files use 1-based ids; raw id 99 maps to the last class."""


def imigue_class_from_raw(raw_id: int) -> int:
    """Map a raw 1-based iMiGUE gesture id (or 99) to a 0-based class id."""
    if raw_id == IMIGUE_RAW_OTHER_ID:
        return len(IMIGUE_CLASSES) - 1
    if not 1 <= raw_id <= len(IMIGUE_CLASSES):
        from microgesture.core.errors import MicrogestureError

        raise MicrogestureError(
            f"iMiGUE gesture id {raw_id} is out of range: expected 1..{len(IMIGUE_CLASSES)} or 99")
    return raw_id - 1


def default_prompt(label: str) -> str:
    """The text prompt used for a class name by the CLIP text encoder."""
    return f"a video of a person {label}."
