"""Source specs: what a camera index, URL or path given by the user is, and the default
stream id of each kind."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np

from microgesture.core.errors import MicrogestureError, did_you_mean
from microgesture.core.redact import redact
from microgesture.core.stream_ids import stream_id_for
from microgesture.core.video import IMAGE_EXTENSIONS
from microgesture.stream.sources.records import _LIVE_KINDS, NETWORK_SCHEMES


@dataclass(frozen=True)
class SourceSpec:
    """A parsed source spec. ``target`` is what the opener gets (an int for cameras, a
    string otherwise); ``display`` is the redacted form used in every message."""

    kind: str            # "webcam", "network", "file", "folder" or "image"
    target: int | str
    display: str

    @property
    def live(self) -> bool:
        return self.kind in _LIVE_KINDS

    def __repr__(self) -> str:
        return f"SourceSpec(kind={self.kind!r}, display={self.display!r})"


_SPEC_HELP = ("expected a camera index (0), an rtsp:// or http(s):// URL, a video file or a "
              "folder of images")


def parse_spec(spec: Any) -> SourceSpec:
    """Classify a source spec; raises :class:`MicrogestureError` for one that cannot be a
    source (wrong type, empty, unknown URL scheme). Existence is checked when opening."""
    if isinstance(spec, bool) or spec is None:
        raise MicrogestureError(f"source must be a camera index, a URL or a path, got {spec!r}; "
                                f"{_SPEC_HELP}.")
    if isinstance(spec, (int, np.integer)):
        if spec < 0:
            raise MicrogestureError(f"camera index must be >= 0, got {spec}.")
        return SourceSpec("webcam", int(spec), f"camera {int(spec)}")
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str):
        raise MicrogestureError(f"source must be a camera index, a URL or a path, got "
                                f"{type(spec).__name__}; {_SPEC_HELP}.")
    text = spec.strip()
    if not text:
        raise MicrogestureError(f"source is empty; {_SPEC_HELP}.")
    if text.isdigit() and not os.path.exists(text):
        return SourceSpec("webcam", int(text), f"camera {int(text)}")
    scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.\-]*)://", text)
    if scheme:
        name = scheme.group(1).lower()
        if name in NETWORK_SCHEMES:
            return SourceSpec("network", text, redact(text))
        if name == "file":
            text = unquote(urlsplit(text).path)
        else:
            known = (*NETWORK_SCHEMES, "file")
            raise MicrogestureError(
                f"unknown URL scheme {name!r} in {redact(text)}.{did_you_mean(name, known)} "
                f"Supported schemes: {', '.join(known)}; or give a camera index or a path.")
    if re.fullmatch(r"/dev/video\d+", text):
        return SourceSpec("webcam", text, text)
    path = Path(text)
    if path.is_dir():
        return SourceSpec("folder", text, text)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return SourceSpec("image", text, text)
    return SourceSpec("file", text, text)


def default_stream_id(spec: SourceSpec) -> str:
    """The id of a source opened without one: ``camera0``, a file's stem, a URL's host and
    path without credentials (:func:`core.stream_ids.stream_id_for`), valid in events."""
    return stream_id_for(spec.kind, spec.target)

