"""Where microgesture keeps files it ships and files it builds."""

from __future__ import annotations

import os
from pathlib import Path

DEMO_BUNDLE = Path(__file__).resolve().parent.parent / "demo_bundle"
"""The demo model shipped in the package (``microgesture/demo_bundle``)."""


def cache_dir(name: str) -> Path:
    """``$MICROGESTURE_CACHE/<name>``, else ``$XDG_CACHE_HOME/microgesture/<name>``, else
    ``~/.cache/microgesture/<name>`` (not created)."""
    root = os.environ.get("MICROGESTURE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "microgesture")
    return Path(root) / name
