"""Class prompts for CLIP text towers: templates, and which prompts a step uses.

Torch-free. A class name becomes prompts by filling ``{}`` in each template.
As FROSTER does (DESIGN.md, "The MiGA 2024 model"), training draws one random
template per step and uses it together with the bare class name; evaluation
averages the embeddings of every template and the bare name. The 28 templates
below are ours, written for people seen in interview footage (the authors'
exact strings are not public in our sources).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from microgesture.core.errors import MicrogestureError

TEMPLATES: tuple[str, ...] = (
    "a photo of a person {}.",
    "a video of a person {}.",
    "a person {}.",
    "a person is {}.",
    "someone {}.",
    "a clip of someone {}.",
    "a video frame of a person {}.",
    "an athlete {}.",
    "an athlete {} during an interview.",
    "a person {} in an interview.",
    "a speaker {} while talking.",
    "a close-up of a person {}.",
    "a blurry video of a person {}.",
    "a low resolution video of a person {}.",
    "a person sitting and {}.",
    "a micro-gesture: {}.",
    "a subtle gesture of {}.",
    "an involuntary movement: {}.",
    "body language: {}.",
    "a nervous person {}.",
    "a calm person {}.",
    "the upper body of a person {}.",
    "a man {}.",
    "a woman {}.",
    "a cropped video of a person {}.",
    "a bright video of a person {}.",
    "a dark video of a person {}.",
    "human action: {}.",
)
"""The 28 prompt templates; ``{}`` is the class name."""


def check_templates(templates: Sequence[str]) -> tuple[str, ...]:
    """The templates as a tuple, each holding exactly one ``{}``."""
    bad = [t for t in templates if not isinstance(t, str) or t.count("{}") != 1]
    if bad or not templates:
        raise MicrogestureError(f"prompt templates must be strings with exactly one '{{}}' for the class name, "
                                f"got {bad[0]!r}" if bad else "the list of prompt templates is empty")
    return tuple(templates)


def class_prompts(labels: Sequence[str], templates: Sequence[str]) -> list[list[str]]:
    """Every prompt of every class: ``[[bare name, template 1 filled, ...], ...]`` (C lists of 1 + K)."""
    templates = check_templates(templates)
    return [[name] + [t.format(name) for t in templates] for name in labels]


def training_prompts(labels: Sequence[str], templates: Sequence[str],
                     rng: random.Random | None = None) -> list[list[str]]:
    """One training step's prompts: per class ``[bare name, one template filled]``, the
    same random template for every class of the step."""
    templates = check_templates(templates)
    template = (rng or random).choice(templates)
    return [[name, template.format(name)] for name in labels]
