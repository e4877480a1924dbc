"""The event JSON Schema (draft 2020-12, ``stream/event.schema.json``), shipped for
subscribers; the tests check records against it with the ``jsonschema`` package
(``tests/event_schema.py``)."""

from __future__ import annotations

import json
from pathlib import Path

SCHEMA_PATH = Path(__file__).with_name("event.schema.json")


def load_schema() -> dict:
    """The event JSON Schema (draft 2020-12) shipped beside this module."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
