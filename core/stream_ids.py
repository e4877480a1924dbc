"""Stream ids: the name of one video stream in frames, event topics, logs and on the command
line (``--stream-id``, ``listen --stream``). One rule for what a valid id is
(:func:`check_stream_id`) and one for the id a source gets when none is given
(:func:`stream_id_for`: ``camera0``, a file's stem, a URL's host and path, never its
credentials).
"""

from __future__ import annotations

import re
from pathlib import Path

from microgesture.core.errors import MicrogestureError
from microgesture.core.redact import redact

#: 1 to 64 letters, digits, '_', '-', '.' or ':', starting with a letter or digit.
STREAM_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")


def check_stream_id(stream_id) -> str:
    """``stream_id`` unchanged if it can name a stream in topics and on the command line;
    else a :class:`MicrogestureError` saying what a valid one looks like."""
    if not isinstance(stream_id, str) or not STREAM_ID.fullmatch(stream_id):
        raise MicrogestureError(
            f"stream id {stream_id!r} is not valid: use 1 to 64 letters, digits, '_', '-', '.' "
            f"or ':', starting with a letter or digit (e.g. cam0).")
    return stream_id


def stream_id_for(kind: str, target: int | str) -> str:
    """The default id of a source (a valid one, see :data:`STREAM_ID`) from its parsed spec's
    ``kind`` (``webcam``, ``network``, ``file``, ``folder``, ``image``) and ``target`` (a
    camera index, a device path, a URL or a path): ``camera0``, ``video1`` for
    ``/dev/video1``, a file's or folder's name without the extension, a URL's host and path
    without credentials (``10.1.2.3:554-live``)."""
    if kind == "webcam":
        text = f"camera{target}" if isinstance(target, int) else Path(str(target)).name
    elif kind in ("file", "folder", "image"):
        text = Path(str(target)).stem or Path(str(target)).name
    else:
        text = re.sub(r"^[a-z]+://(\*\*\*@)?", "", redact(str(target)))
    text = re.sub(r"[^A-Za-z0-9_.:-]+", "-", text).strip("-._:")[:64]
    return text if text and text[0].isalnum() else f"stream-{text}"[:64].rstrip("-") or "stream"
