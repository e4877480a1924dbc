"""Reading media for pose extraction and datasets: images, videos, image folders, cameras.

``open_media(source)`` gives a :class:`MediaReader`; iterating it yields
:class:`MediaFrame` objects whose ``image`` is an RGB ``uint8`` array (H, W, 3)
(OpenCV's BGR is converted once, here). A frame that cannot be decoded, or an image
in a folder that is corrupt, is skipped and recorded in ``reader.skipped`` with its
reason; it never ends the run. A source that cannot be opened at all raises
:class:`~microgesture.core.errors.MicrogestureError`.

Frame times (``time_s``) come from the video's own timestamps (or index / fps when
it has none); image files and folders use ``index / fps`` with ``fps`` defaulting to
:data:`DEFAULT_IMAGE_FPS`; cameras use the monotonic clock since the camera opened.

This is the reader for offline work. The streaming layer wraps live sources itself
(reconnects, drop policies); it may reuse :func:`validate_frame`.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import MicrogestureError

#: Frame rate assumed for image files and image folders when none is given.
DEFAULT_IMAGE_FPS = 30.0
#: Frame rate assumed for a video or camera that does not report one.
DEFAULT_VIDEO_FPS = 30.0
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp",
                              ".ppm", ".pgm", ".pbm", ".pnm", ".jp2", ".exr", ".hdr"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg",
                              ".mpeg", ".wmv", ".flv", ".ts", ".gif", ".3gp", ".ogv"})
#: A video (or camera) that fails this many reads in a row has ended.
MAX_FAILED_READS = 25


@dataclass(frozen=True)
class MediaFrame:
    """One decoded frame: its position in the source, its time, and the RGB image."""

    index: int          # 0-based position in the source (skipped frames keep their number)
    time_s: float       # seconds from the start of the source
    image: np.ndarray   # (H, W, 3) uint8 RGB


@dataclass(frozen=True)
class Skipped:
    """Frames that were not delivered: ``count`` frames from ``index``, and why."""

    index: int
    reason: str
    count: int = 1


def validate_frame(image, name: str = "frame") -> np.ndarray:
    """Check that ``image`` is an RGB ``uint8`` array (H, W, 3); return it unchanged."""
    if not isinstance(image, np.ndarray):
        raise MicrogestureError(f"{name} must be a numpy array (H, W, 3) of uint8 RGB, "
                                f"got {type(image).__name__}.")
    if image.ndim != 3 or image.shape[2] != 3:
        hint = ""
        if image.ndim == 2:
            hint = " It looks like a grayscale image: convert it with np.stack([img] * 3, -1)."
        elif image.ndim == 3 and image.shape[2] == 4:
            hint = " It looks like RGBA: drop the alpha channel with img[..., :3]."
        elif image.ndim == 3 and image.shape[0] == 3:
            hint = " It looks channels-first: transpose it with img.transpose(1, 2, 0)."
        raise MicrogestureError(f"{name} must have shape (H, W, 3) (RGB), got shape "
                                f"{tuple(image.shape)}.{hint}")
    if image.dtype != np.uint8:
        hint = (" Floats in [0, 1]: use (img * 255).round().astype(np.uint8)."
                if image.dtype.kind == "f" else "")
        raise MicrogestureError(f"{name} must have dtype uint8, got {image.dtype}.{hint}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise MicrogestureError(f"{name} is empty: shape {tuple(image.shape)}.")
    return image


def natural_key(name: str):
    """Sort key that orders ``frame2.png`` before ``frame10.png``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _cv2():
    import cv2  # imported here so that `import microgesture.core.video` stays cheap
    return cv2


def read_image_bgr(path: str | Path) -> np.ndarray | None:
    """A BGR uint8 image (OpenCV's order), or None when the file cannot be read or decoded."""
    cv2 = _cv2()
    # imdecode from bytes: works for any path (cv2.imread mishandles some unicode paths)
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError:   # unreadable (permissions, vanished): a skipped frame, not a crash
        return None
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    return None if bgr is None or bgr.size == 0 else bgr


def _read_image(path: Path) -> np.ndarray | None:
    """RGB uint8 image, or None when OpenCV cannot decode the file."""
    bgr = read_image_bgr(path)
    return None if bgr is None else _cv2().cvtColor(bgr, _cv2().COLOR_BGR2RGB)


# ----------------------------------------------------------------------------- video files

def sane_fps(value) -> float | None:
    """A frame rate a capture or a header reported, when it is believable (a finite number,
    0 < fps < 1000); else None (0, NaN and 90000 are all seen in the wild)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) and 0 < value < 1000 else None


def open_capture(path: str | Path):
    """``cv2.VideoCapture`` on a video file through FFmpeg, the one way every reader here
    opens a file (check ``isOpened()``; release it when done). Cameras and network streams
    are opened by their readers, which set timeouts and buffers of their own."""
    cv2 = _cv2()
    return cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)


@dataclass(frozen=True)
class VideoInfo:
    """What a video file's header says: ``fps`` (None when missing or absurd, see
    :func:`sane_fps`), ``frame_count`` (None when unknown) and ``size`` (width, height)."""

    fps: float | None
    frame_count: int | None
    size: tuple[int, int] | None


def probe_video(path: str | Path) -> VideoInfo | None:
    """:class:`VideoInfo` of a video file without decoding it; None when it cannot be opened."""
    cv2 = _cv2()
    cap = open_capture(path)
    try:
        if not cap.isOpened():
            return None
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        return VideoInfo(sane_fps(cap.get(cv2.CAP_PROP_FPS)), count if count > 0 else None,
                         (width, height) if width > 0 and height > 0 else None)
    finally:
        cap.release()


def read_video_frame(path: str | Path, index: int) -> np.ndarray | None:
    """Frame ``index`` (0-based) of a video file as BGR uint8, or None when it cannot be read."""
    cv2 = _cv2()
    cap = open_capture(path)
    try:
        if not cap.isOpened():
            return None
        cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, bgr = cap.read()
        return bgr if ok and bgr is not None and bgr.size else None
    finally:
        cap.release()


class MediaReader:
    """Iterable over the frames of one source; use :func:`open_media` to make one.

    Attributes: ``source`` (the path or camera index), ``kind`` (``"image"``,
    ``"folder"``, ``"video"`` or ``"camera"``), ``fps``, ``frame_count`` (None when
    unknown, e.g. a camera), ``width`` and ``height`` (of the first frame), and
    ``skipped``: a list of :class:`Skipped` records (``num_skipped`` counts frames),
    and ``end_reason`` (why a video or camera stopped, once it has).
    A reader can be iterated once; use it as a context manager or call ``close()``.
    """

    def __init__(self, source, kind: str, fps: float, frame_count: int | None,
                 width: int, height: int):
        self.source, self.kind, self.fps = source, kind, float(fps)
        self.frame_count, self.width, self.height = frame_count, width, height
        self.skipped: list[Skipped] = []
        self.end_reason: str | None = None   # why a video or camera stopped, once it has
        self._started = False

    @property
    def num_skipped(self) -> int:
        """How many frames were skipped so far."""
        return sum(s.count for s in self.skipped)

    def __iter__(self) -> Iterator[MediaFrame]:
        if self._started:
            raise MicrogestureError(f"{self.source} is already being read; a MediaReader can "
                                    "be iterated once: call open_media() again to re-read it.")
        self._started = True
        return self._frames()

    def _frames(self) -> Iterator[MediaFrame]:  # pragma: no cover - overridden
        raise NotImplementedError

    def _skip(self, index: int, reason: str, count: int = 1) -> None:
        self.skipped.append(Skipped(index, reason, count))

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return (f"MediaReader({str(self.source)!r}, kind={self.kind!r}, "
                f"{self.width}x{self.height}, fps={self.fps:g}, frames={self.frame_count})")


class _ImageFilesReader(MediaReader):
    """One image file, or a folder of them in natural order."""

    def __init__(self, source, kind: str, files: list[Path], fps: float):
        first, first_index, bad = None, 0, []
        for first_index, path in enumerate(files):   # find a readable one for the size
            first = _read_image(path)
            if first is not None:
                break
            bad.append(path)
        if first is None:
            what = (f"{source} is not an image OpenCV can read" if kind == "image" else
                    f"none of the {len(files)} images in {source} could be read")
            raise MicrogestureError(f"{what}; expected PNG, JPEG, BMP, TIFF or WebP files.")
        super().__init__(source, kind, fps, len(files), first.shape[1], first.shape[0])
        self._files = files
        self._first = (first_index, first)

    def _frames(self) -> Iterator[MediaFrame]:
        for index, path in enumerate(self._files):
            if index == self._first[0]:
                image = self._first[1]
                self._first = (-1, None)   # do not keep it alive
            else:
                image = _read_image(path)
            if image is None:
                self._skip(index, f"{path.name}: not a readable image (corrupt or not an image)")
                continue
            yield MediaFrame(index, index / self.fps, image)


class _CaptureReader(MediaReader):
    """A video file or a camera, through ``cv2.VideoCapture``."""

    def __init__(self, source, kind: str, capture, max_failed_reads: int, fps: float | None):
        cv2 = _cv2()
        self.kind = kind   # _time() needs it before MediaReader.__init__ runs
        self._cap, self._max_failed, self._fixed_fps = capture, max_failed_reads, fps is not None
        if fps is None:
            fps = sane_fps(capture.get(cv2.CAP_PROP_FPS)) or DEFAULT_VIDEO_FPS
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if kind == "video" else 0
        self._t0 = time.monotonic()
        # Read the first frame now: it proves the source is readable and gives the size.
        self._pending, failed = None, 0
        while failed < max_failed_reads:
            ok, bgr = capture.read()
            if ok and bgr is not None and bgr.size:
                self._pending = (failed, self._time(failed, fps), bgr)
                break
            failed += 1
        if self._pending is None:
            capture.release()
            what = ("no frame could be decoded from the video" if kind == "video" else
                    "the camera opened but delivered no frame")
            raise MicrogestureError(f"{source}: {what} ({max_failed_reads} attempts). "
                                    "Check that it plays in a video player.")
        height, width = self._pending[2].shape[:2]
        super().__init__(source, kind, fps, count if count > 0 else None, width, height)
        if failed:
            self._skip(0, "could not decode the first frames", failed)

    def _time(self, index: int, fps: float) -> float:
        if self.kind == "camera":
            return time.monotonic() - self._t0
        if self._fixed_fps or index == 0:
            return index / fps
        ms = self._cap.get(_cv2().CAP_PROP_POS_MSEC)   # the frame's own timestamp
        return ms / 1000.0 if ms > 0 else index / fps

    def _frames(self) -> Iterator[MediaFrame]:
        cv2 = _cv2()
        index, time_s, bgr = self._pending
        self._pending = None
        yield MediaFrame(index, time_s, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        index += 1
        failed_from = None            # first index of the current run of failed reads
        while True:
            ok, bgr = self._cap.read()
            if not ok or bgr is None or not bgr.size:
                if failed_from is None:
                    failed_from = index
                index += 1
                if index - failed_from >= self._max_failed:
                    break             # the end of the video (or a dead camera)
                continue
            if failed_from is not None:
                self._skip(failed_from, "could not decode the frame (corrupt data)",
                           index - failed_from)
                failed_from = None
            yield MediaFrame(index, self._time(index, self.fps),
                             cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            index += 1
        end = failed_from
        if self.kind == "camera":
            self.end_reason = (f"the camera stopped delivering frames ({self._max_failed} "
                               f"failed reads in a row after frame {end - 1})")
        elif self.frame_count and end < self.frame_count:
            self.end_reason = (f"the video ended after {end} of the {self.frame_count} frames "
                               "its header announces (truncated or damaged file)")
            self._skip(end, self.end_reason, self.frame_count - end)
        self.close()

    def close(self) -> None:
        self._cap.release()


def open_media(source, fps: float | None = None,
               max_failed_reads: int = MAX_FAILED_READS) -> MediaReader:
    """Open an image file, a video file, a folder of images or a camera for reading.

    ``source``: a path (str or Path), or a camera index (an int, or a string of
    digits that is not an existing path). Image folders are read in natural order
    (``2.png`` before ``10.png``); files that are not images by extension are ignored.
    ``fps`` sets the frame rate of image files and folders (default
    :data:`DEFAULT_IMAGE_FPS`); given for a video, it replaces the video's own rate and
    timestamps (``time_s = index / fps``).
    A video or camera ends after ``max_failed_reads`` failed reads in a row; shorter
    runs of failures are skipped frames.
    """
    if fps is not None and not fps > 0:
        raise MicrogestureError(f"fps must be positive, got {fps}.")
    if isinstance(source, bool):
        raise MicrogestureError(f"media source must be a path or a camera index, got {source!r}.")
    if isinstance(source, (int, np.integer)) or (
            isinstance(source, str) and source.strip().isdigit() and not os.path.exists(source)):
        reader = _open_camera(int(source), max_failed_reads)
    else:
        reader = _open_path(Path(os.fspath(source)), fps, max_failed_reads)
    return reader


def _open_camera(index: int, max_failed_reads: int) -> MediaReader:
    cv2 = _cv2()
    cap = cv2.VideoCapture(index)
    if not cap.isOpened():
        raise MicrogestureError(f"cannot open camera {index}: no such camera, or it is in use. "
                                "Camera indices start at 0 (see `ls /dev/video*` on Linux).")
    return _CaptureReader(index, "camera", cap, max_failed_reads, None)


def _open_path(path: Path, fps: float | None, max_failed_reads: int) -> MediaReader:
    if not path.exists():
        raise MicrogestureError(f"{path} does not exist; expected an image, a video, a folder "
                                "of images or a camera index.")
    if path.is_dir():
        files = sorted((p for p in path.iterdir()
                        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
                       key=lambda p: natural_key(p.name))
        if not files:
            raise MicrogestureError(f"{path} is a folder with no image files; expected images "
                                    f"with one of the extensions {', '.join(sorted(IMAGE_EXTENSIONS))}.")
        return _ImageFilesReader(path, "folder", files, fps or DEFAULT_IMAGE_FPS)
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return _ImageFilesReader(path, "image", [path], fps or DEFAULT_IMAGE_FPS)
    cap = open_capture(path)
    if cap.isOpened():
        return _CaptureReader(path, "video", cap, max_failed_reads, fps)
    cap.release()
    if suffix not in VIDEO_EXTENSIONS and _read_image(path) is not None:
        return _ImageFilesReader(path, "image", [path], fps or DEFAULT_IMAGE_FPS)
    raise MicrogestureError(f"cannot open {path}: it is not a video or image OpenCV can read "
                            "(missing codec, damaged or truncated file, or another kind of file).")
