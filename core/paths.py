"""Where microgesture keeps files it ships and files it builds, and how it writes them."""

from __future__ import annotations

import os
from pathlib import Path

DEMO_BUNDLE = Path(__file__).resolve().parent.parent / "demo_bundle"
"""The demo model shipped in the package (``microgesture/demo_bundle``)."""


def _umask() -> int:
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return 0o022


def folder_file_mode(folder: str | Path) -> int:
    """The mode a file in ``folder`` gets: the folder's read and write bits, within the
    umask (a 0775 run folder gives 0664 files, a 0700 one 0600)."""
    return os.stat(folder).st_mode & 0o666 & ~_umask()


def atomic_write(path: str | Path, write) -> Path:
    """Call ``write(tmp_path)``, fsync it, then rename it onto ``path``: readers see the
    old file or the new one, never half of one. The file gets its folder's permissions
    (:func:`folder_file_mode`; some writers, safetensors among them, create 0600 files)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.chmod(tmp, folder_file_mode(path.parent))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def cache_dir(name: str) -> Path:
    """``$MICROGESTURE_CACHE/<name>``, else ``$XDG_CACHE_HOME/microgesture/<name>``, else
    ``~/.cache/microgesture/<name>`` (not created)."""
    root = os.environ.get("MICROGESTURE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "microgesture")
    return Path(root) / name
