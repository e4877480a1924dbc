"""Starting a stream safely: what must hold before the first frame is read, and
what is undone when a later step fails.

- :func:`open_stages` opens a bundle's stages and checks that the stage giving
  ``logits`` (CLIP-MG's head) really scores as many classes as the manifest has labels (a mismatch would make every
  window fail); a failure closes whatever was opened.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from microgesture.core.backends import open_stage
from microgesture.core.errors import MicrogestureError
from microgesture.core.manifest_schema import check_label_count


def open_stages(manifest: dict[str, Any], names: Iterable[str], bundle: Any, **options) -> dict:
    """The bundle's stages among ``names`` as backends; the ``logits`` width is
    checked against the labels. Nothing stays open when this raises."""
    sessions: dict = {}
    try:
        for name in names:
            if name in manifest["stages"]:
                sessions[name] = open_stage(manifest, name, **options)
        # the answer: the stage whose manifest outputs `logits` (CLIP-MG's head)
        last = next((n for n in reversed(list(sessions)) if "logits" in manifest["stages"][n]["outputs"]),
                    "head" if "head" in sessions else next(reversed(list(sessions))))
        outputs = {s.name: s for s in sessions[last].outputs}
        if "logits" not in outputs:
            raise MicrogestureError(f"bundle {bundle}: the {last} stage has outputs {sorted(outputs)}, "
                                    "not 'logits'; re-export the bundle")
        check_label_count(outputs["logits"].shape[-1], list(manifest["labels"]), f"bundle {bundle}")
    except BaseException:
        for session in sessions.values():
            session.close()
        raise
    return sessions
