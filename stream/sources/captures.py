"""Captures behind the ``cv2.VideoCapture`` interface (``read() -> (ok, bgr)``,
``get(prop)``, ``release()``): the default opener (OpenCV for cameras, files and URLs),
image folders, and turning what a capture returns into RGB."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from microgesture.core.video import (DEFAULT_VIDEO_FPS, IMAGE_EXTENSIONS, natural_key, open_capture,
                                     read_image_bgr)

# cv2.VideoCapture property ids (the same numbers as cv2.CAP_PROP_*; named here so that
# fakes and this module need not import cv2).
CAP_PROP_POS_MSEC = 0
CAP_PROP_POS_FRAMES = 1
CAP_PROP_FRAME_WIDTH = 3
CAP_PROP_FRAME_HEIGHT = 4
CAP_PROP_FPS = 5
CAP_PROP_FRAME_COUNT = 7


def _cv2():
    import cv2  # imported when a real capture is opened: fakes and tests need no OpenCV
    return cv2



class ImageFolderCapture:
    """A folder of images (or one image) behind the ``cv2.VideoCapture`` interface:
    ``read()`` decodes the next file in natural order (``(False, None)`` for an image
    that cannot be decoded, and after the last one); ``get(CAP_PROP_FRAME_COUNT)`` is
    the number of files."""

    def __init__(self, path: str | Path, fps: float | None = None):
        path = Path(path)
        if path.is_dir():
            self._files = sorted((p for p in path.iterdir()
                                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
                                 key=lambda p: natural_key(p.name))
        else:
            self._files = [path]
        self._fps = float(fps) if fps else DEFAULT_VIDEO_FPS
        self._pos = 0
        self._size = (0, 0)

    def isOpened(self) -> bool:  # noqa: N802 - cv2's name
        return bool(self._files)

    def read(self):
        if self._pos >= len(self._files):
            return False, None
        path = self._files[self._pos]
        self._pos += 1
        bgr = read_image_bgr(path)
        if bgr is None:
            return False, None
        self._size = (bgr.shape[1], bgr.shape[0])
        return True, bgr

    def get(self, prop: int) -> float:
        return {CAP_PROP_FPS: self._fps, CAP_PROP_FRAME_COUNT: float(len(self._files)),
                CAP_PROP_POS_FRAMES: float(self._pos), CAP_PROP_FRAME_WIDTH: float(self._size[0]),
                CAP_PROP_FRAME_HEIGHT: float(self._size[1])}.get(prop, 0.0)

    def release(self) -> None:
        self._pos = len(self._files)


class OpenCVOpener:
    """The default opener: ``cv2.VideoCapture`` for cameras, files and URLs (FFmpeg, with
    open and read timeouts so that a dead camera cannot block a read for long), and
    :class:`ImageFolderCapture` for folders and images. RTSP uses TCP unless the user set
    ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` (UDP loses packets, which smears H.264 frames)."""

    def __init__(self, open_timeout_s: float = 10.0, read_timeout_s: float = 5.0,
                 fps: float | None = None):
        self.open_timeout_s, self.read_timeout_s, self.fps = open_timeout_s, read_timeout_s, fps

    def __call__(self, target: int | str):
        if isinstance(target, str) and (Path(target).is_dir()
                                        or Path(target).suffix.lower() in IMAGE_EXTENSIONS):
            return ImageFolderCapture(target, self.fps)
        cv2 = _cv2()
        if isinstance(target, int) or target.startswith("/dev/video"):
            cap = cv2.VideoCapture(target)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)   # newest frame first, where the backend allows
            return cap
        if "://" in target:
            if target.lower().startswith(("rtsp://", "rtsps://")):
                os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.open_timeout_s * 1000),
                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.read_timeout_s * 1000)]
            return cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
        return open_capture(target)

    def __repr__(self) -> str:
        return f"OpenCVOpener(open_timeout_s={self.open_timeout_s}, read_timeout_s={self.read_timeout_s})"


def _good(ok, image) -> bool:
    return bool(ok) and image is not None and getattr(image, "size", 0) > 0


def _to_rgb(image: np.ndarray) -> np.ndarray | None:
    """RGB uint8 (H, W, 3) from what a capture returns (BGR, BGRA or gray); None if unusable."""
    if image.dtype != np.uint8:
        return None
    cv2 = _cv2()
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    if image.ndim == 3 and image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    return None


