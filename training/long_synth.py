"""A set of long synthetic videos with labelled gesture intervals, for online evaluation.

``microgesture data synth DIR --long-videos N --seconds S`` writes N videos of S
seconds, each of its own subject performing several gestures with idle gaps
(:func:`microgesture.training.synth.make_long_video`), in the own long-video
layout that ``microgesture eval-online`` reads (``core.long_videos``)::

    DIR/intervals.csv              video,label,start_frame,last_frame (0-based, inclusive)
    DIR/videos.csv                 video,subject,split
    DIR/videos/<video>.mp4
    DIR/skeletons/<video>.jsonl    the generator's skeletons (layout imigue22), replayed
    DIR/classes.txt                the iMiGUE class names
    DIR/synth.json                 generator, parameters, every video's gestures

Subjects are numbered from ``first_subject`` (default 100), so with the same seed
they are people no clip set of up to 100 subjects contains: the shipped demo
model never saw them. Subjects are split into training, validation and test:
a quarter (at least one from 2 videos on) for validation, a quarter (at least one
from 3 videos on) for test, in that order after the training ones.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from pathlib import Path

from microgesture.core.errors import MicrogestureError
from microgesture.core.labels import IMIGUE_CLASSES
from microgesture.core.long_videos import write_intervals
from microgesture.core.progress import Progress
from microgesture.training.synth import GENERATOR, LAYOUT, make_long_video

FIRST_SUBJECT = 100


def split_of(index: int, count: int) -> str:
    """``train``, ``val`` or ``test`` for video ``index`` of ``count``."""
    val = max(1 if count >= 2 else 0, round(count / 4))
    test = max(1 if count >= 3 else 0, round(count / 4))
    train = count - val - test
    return "train" if index < train else ("val" if index < train + val else "test")


def _one(out: str, name: str, seconds: float, seed: int, subject: int, size, fps: float) -> dict:
    import cv2

    cv2.setNumThreads(1)
    video = Path(out) / "videos" / f"{name}.mp4"
    info = make_long_video(video, seconds, seed=seed, subject=subject, size=size, fps=fps, progress=False)
    os.replace(video.with_suffix(".jsonl"), Path(out) / "skeletons" / f"{name}.jsonl")
    video.with_name(video.stem + "_gt.csv").unlink()
    return info


def _generator(folder: Path) -> str | None:
    try:
        return json.loads((folder / "synth.json").read_text(encoding="utf-8")).get("generator")
    except (OSError, ValueError, AttributeError):
        return None


def write_long_videos(out_dir, videos: int = 8, seconds: float = 60.0, seed: int = 0, size=(256, 256),
                      fps: float = 15.0, first_subject: int = FIRST_SUBJECT, workers: int = 1,
                      progress: bool = True) -> dict:
    """Write the set described in the module docstring; return a summary."""
    if isinstance(videos, bool) or not isinstance(videos, int) or videos < 1:
        raise MicrogestureError(f"--long-videos must be a whole number >= 1, got {videos!r}.")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise MicrogestureError(f"--workers must be a whole number >= 1, got {workers!r}.")
    out = Path(os.fspath(out_dir))
    if out.exists() and any(out.iterdir()):
        if _generator(out) != GENERATOR + ".long":
            raise MicrogestureError(f"{out} exists and is not a long-video set written before; choose a new "
                                    "or empty folder.")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    params = {"videos": videos, "seconds": seconds, "seed": seed, "size": list(size), "fps": fps,
              "first_subject": first_subject}
    meta = {"generator": GENERATOR + ".long", "complete": False, "layout": LAYOUT, "params": params}
    (out / "synth.json").write_text(json.dumps(meta) + "\n", encoding="utf-8")  # ours, before anything else
    for sub in ("videos", "skeletons"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    jobs = [(str(out), f"long{i:03d}", float(seconds), int(seed), first_subject + i, tuple(size), float(fps))
            for i in range(videos)]
    results: dict[str, dict] = {}

    bar = Progress("synth", videos, "long videos", enabled=progress)

    def note(name):
        bar.update(len(results))

    if workers == 1:
        for job in jobs:
            results[job[1]] = _one(*job)
            note(job[1])
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(_one, *job): job[1] for job in jobs}
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                note(futures[fut])
    bar.finish(len(results))
    rows, table = [], []
    for i, job in enumerate(jobs):
        name, info = job[1], results[job[1]]
        table.append((name, info["subject"], split_of(i, videos)))
        # make_long_video's ground truth is [start, end): the last frame is end - 1
        rows += [(name, g["label"], g["start"], g["end"] - 1) for g in info["gestures"]]
    write_intervals(out / "intervals.csv", rows)
    with open(out / "videos.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["video", "subject", "split"])
        w.writerows(table)
    (out / "classes.txt").write_text("".join(n + "\n" for n in IMIGUE_CLASSES), encoding="utf-8")
    meta.update(complete=True, videos={name: {"subject": subj, "split": split, "gestures": results[name]["gestures"]}
                                       for name, subj, split in table})
    (out / "synth.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return {"out_dir": str(out), "videos": videos, "gestures": len(rows),
            "splits": {s: sum(1 for t in table if t[2] == s) for s in ("train", "val", "test")},
            "seconds": round(time.monotonic() - t0, 3)}
