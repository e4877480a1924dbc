"""Annotated video files that browsers play (``microgesture stream --save-video``).

Browsers play H.264 in MP4 and VP8/VP9 in WebM; they do not play the MPEG-4 Part 2
(``mp4v``) that OpenCV writes by default. The FFmpeg inside the opencv-contrib-python
wheel has no H.264 encoder (checked on 4.11: ``avc1``/``H264`` writers do not open),
but it has libvpx. So:

- ``OUT.webm``: VP8 (VP9 is about 4x slower to encode here);
- ``OUT.mp4`` (``.m4v``, ``.mov``): H.264 (``avc1``) when this OpenCV can encode it,
  else VP8 in ``OUT.webm`` beside it, said on stderr and in the stream's summary.

Frames are encoded on a writer thread (VP8 takes tens of milliseconds per 640x480
frame on one core), through a bounded queue: a file source loses no frame, a live
source drops frames at the source as when inference lags.
"""

from __future__ import annotations

import queue
import sys
import threading
from pathlib import Path

from microgesture.core.errors import MicrogestureError

MP4_SUFFIXES = (".mp4", ".m4v", ".mov")
CODECS = {"avc1": "H.264", "VP80": "VP8"}


def writer_plan(path: str | Path) -> list[tuple[Path, str]]:
    """The (file, fourcc) pairs to try, in order, for a ``--save-video`` path."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".webm":
        return [(path, "VP80")]
    if suffix in MP4_SUFFIXES:
        return [(path, "avc1"), (path.with_suffix(".webm"), "VP80")]
    raise MicrogestureError(f"--save-video {path}: give an .mp4 or a .webm path (the formats "
                            "browsers play)")


def check_path(path: str | Path) -> None:
    """Fail before streaming starts when the video cannot be written there."""
    writer_plan(path)
    folder = Path(path).absolute().parent
    if not folder.is_dir():
        raise MicrogestureError(f"--save-video {path}: the folder {folder} does not exist")


class VideoFile:
    """An annotated video written on its own thread; ``write(bgr_image)``, ``close()``.

    Opens on the first frame (its size fixes the video's). ``path`` and ``codec`` say
    what was really written once the first frame is in.
    """

    def __init__(self, path: str | Path, fps: float, max_queue: int = 64):
        self.requested = Path(path)
        self.fps = float(fps) if fps and fps > 0 else 30.0
        self.path: Path | None = None
        self.codec: str | None = None
        self.frames = 0
        self._writer = None
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def _open(self, width: int, height: int) -> None:
        import cv2

        tried = []
        for path, fourcc in writer_plan(self.requested):
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), self.fps,
                                     (width, height))
            if writer.isOpened():
                self._writer, self.path, self.codec = writer, path, CODECS[fourcc]
                if path != self.requested:
                    print(f"microgesture stream: this OpenCV has no {', '.join(tried)} encoder; "
                          f"writing {self.codec} WebM to {path} instead (browsers play it)",
                          file=sys.stderr, flush=True)
                return
            writer.release()
            path.unlink(missing_ok=True)
            tried.append(CODECS[fourcc])
        raise MicrogestureError(f"cannot write the video {self.requested} ({', '.join(tried)} "
                                "encoders unavailable, or the folder is not writable)")

    def write(self, image) -> None:
        if self._error is not None:
            raise MicrogestureError(f"writing {self.path}: {self._error}")
        if self._writer is None:
            self._open(image.shape[1], image.shape[0])
            self._thread = threading.Thread(target=self._run, name="video-writer", daemon=True)
            self._thread.start()
        self._queue.put(image)

    def _run(self) -> None:
        while True:
            image = self._queue.get()
            if image is None:
                return
            try:
                self._writer.write(image)
                self.frames += 1
            except BaseException as exc:  # reported on the next write and by close()
                self._error = exc

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if self._writer is not None:
            self._writer.release()

    def summary(self) -> dict:
        return {"path": str(self.path or self.requested), "codec": self.codec,
                "frames": self.frames}


def caption(view) -> list[tuple[str, bool]]:
    """The overlay's text lines for a stream (a ``stream.dispatch.StreamView``: labels,
    smoothed scores, active gesture): the current top class and its smoothed score on every
    frame (after the first window), and the gesture being reported, highlighted (``True``)."""
    labels = view.labels
    smoothed = view.smoothed
    lines: list[tuple[str, bool]] = []
    if smoothed is None:
        lines.append(("waiting for the first window", False))
    else:
        top = int(smoothed.argmax())
        lines.append((f"top: {labels[top]} {float(smoothed[top]):.2f}", False))
    active = view.active
    if active:
        lines.append((f"GESTURE: {active['label']} {active['score']:.2f}", True))
    return lines
