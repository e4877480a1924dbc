"""Split names as users write them (torch-free): one table for every reader.

``valid``, ``validation`` and ``validate`` (the iMiGUE release's folder) mean
``val``; ``training`` means ``train``; ``testing`` means ``test``; case and
surrounding spaces do not matter.
"""

from __future__ import annotations

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "validate": "val", "test": "test", "testing": "test"}


def canonical_split(name: str | None) -> str | None:
    """``train``, ``val`` or ``test`` for a split name as users write it; None stays
    None; an unknown name is returned as given (stripped)."""
    if name is None:
        return None
    return SPLIT_ALIASES.get(name.strip().lower(), name.strip())
