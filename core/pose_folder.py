"""Skeletons for a whole folder of videos in one command (``microgesture pose CLIPS/ --out
SKELETONS/``).

One estimator instance serves every video (MediaPipe loads its models once; its
tracking is reset between videos, and timestamps start over per video). Each video
``CLIPS/<name>.<ext>`` gives ``SKELETONS/<name>.jsonl``, the file the own-data layout
expects (``skeletons/<clip>.jsonl``). A video that cannot be opened or has no
decodable frame is reported with its reason, counted and skipped; the others go on.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from .errors import MicrogestureError
from .video import VIDEO_EXTENSIONS, natural_key


def folder_videos(folder) -> list[Path]:
    """The video files directly in ``folder`` (by extension), in natural order."""
    path = Path(os.fspath(folder))
    if not path.is_dir():
        return []
    return sorted((p for p in path.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS),
                  key=lambda p: natural_key(p.name))


class _PerVideo:
    """The shared estimator, with its tracking and timestamps started over per video."""

    def __init__(self, estimator):
        self._est = estimator
        self.layout = estimator.layout
        self._offset, self._last = 0, None

    def start_video(self) -> None:
        reset = getattr(self._est, "reset_tracking", None)
        if reset is not None:
            reset()
            self._offset = 0
        elif self._last is not None:   # no reset: one long timeline, a second between videos
            self._offset = self._last + 1_000_000_000

    def estimate(self, image, timestamp_ns: int):
        self._last = timestamp_ns + self._offset
        return self._est.estimate(image, self._last)


def extract_folder(source, out, layout: str = "coco18", estimator: str = "mediapipe",
                   max_frames: int | None = None, progress: bool = True) -> dict:
    """Write ``out/<video>.jsonl`` for every video in the folder ``source``.

    Returns a summary: ``videos`` found, ``written`` files, ``failed`` (a list of
    ``{"video", "reason"}``), ``frames`` and ``frames_with_person`` over all videos,
    ``skipped_frames``, ``seconds`` and the per-video summaries (``files``).
    Raises when the folder holds no video, ``out`` is a file, or no video could be read.
    """
    from .layouts import get_layout
    from .pose import create_estimator, extract_skeletons

    source, out = Path(os.fspath(source)), Path(os.fspath(out))
    videos = folder_videos(source)
    if not videos:
        raise MicrogestureError(f"{source} holds no video files ({', '.join(sorted(VIDEO_EXTENSIONS))})")
    if out.exists() and not out.is_dir():
        raise MicrogestureError(f"--out {out} is a file; with a folder of videos give an output "
                                "folder (one .jsonl per video)")
    if str(estimator).startswith("recorded:"):
        raise MicrogestureError("--estimator recorded:FILE replays one recording; a folder of "
                                "videos needs a live estimator (mediapipe, mediapipe-pose, tasks:PATH)")
    get_layout(layout)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    files, failed = [], []
    frames = persons = skipped = 0
    with create_estimator(estimator, video=True) as est:
        shared = _PerVideo(est)
        for i, video in enumerate(videos, 1):
            target = out / f"{video.stem}.jsonl"
            shared.start_video()
            t0 = time.perf_counter()
            try:
                summary = extract_skeletons(video, target, layout=layout, estimator=shared,
                                            max_frames=max_frames, progress=False)
                reason = None if summary["frames"] else "no frame could be decoded"
            except MicrogestureError as exc:
                reason = str(exc)
            if reason is not None:
                target.unlink(missing_ok=True)
                failed.append({"video": str(video), "reason": reason})
                _say(progress, f"pose [{i}/{len(videos)}] {video.name}: skipped ({reason})")
                continue
            files.append(summary)
            frames += summary["frames"]
            persons += summary["frames_with_person"]
            skipped += summary["skipped"]
            _say(progress, f"pose [{i}/{len(videos)}] {video.name}: {summary['frames']} frames, "
                           f"{summary['frames_with_person']} with a person, "
                           f"{time.perf_counter() - t0:.1f} s -> {target}")
            if summary["interrupted"]:   # Ctrl-C: keep what is written, stop here
                break
    if not files:
        raise MicrogestureError(f"none of the {len(videos)} videos in {source} could be read "
                                f"(first: {failed[0]['video']}: {failed[0]['reason']})")
    return {"source": str(source), "out": str(out), "videos": len(videos), "written": len(files),
            "failed": failed, "frames": frames, "frames_with_person": persons,
            "skipped_frames": skipped, "seconds": round(time.perf_counter() - started, 3),
            "interrupted": bool(files[-1]["interrupted"]), "files": files}


def _say(enabled: bool, text: str) -> None:
    if enabled:
        print(text, file=sys.stderr, flush=True)
