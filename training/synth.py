"""A synthetic micro-gesture dataset: animated upper-body skeletons and matching videos.

:func:`write_synthetic` writes a set in our own-data format (the layout the
dataset reader reads)::

    out_dir/clips.csv               "clip,label,subject"; label = class name, subject = "s03"
    out_dir/classes.txt             one class name per line, in id order
    out_dir/videos/<clip>.mp4       RGB frames (mp4v), drawn from the skeleton below
    out_dir/skeletons/<clip>.jsonl  skeleton JSONL (core.skeleton_io), layout imigue22,
                                    pixels of the video
    out_dir/synth.json              generator, parameters and seed (re-make the set with
                                    ``write_synthetic(out_dir, **synth["params"])``), the
                                    subjects' looks, and every clip's gesture span

:func:`make_long_video` writes one longer video of one subject doing several
gestures with idle gaps (for the streaming demo), its skeleton JSONL and a
ground-truth CSV. :func:`generate_skeletons` returns the skeletons of a set as
arrays without writing anything (the same numbers the files hold).

The person model. Positions are in *body units* (about a frame height; x to
the image right, y down, origin at the neck, ShoulderCenter) and map to pixels
by the subject's placement and a per-clip camera. Per subject: shoulder width,
arm and forearm lengths, neck length, head size, hand and finger sizes, where
the resting hands lie, position and scale in the frame, handedness, skin,
shirt, hair and cap colours, long or short sleeves, and a background (a noisy
gradient with a few board-like rectangles, as behind an interview; drawn under
the person with the same camera). Per clip:
a camera that drifts (translation and scale, a few percent), a slightly
different resting posture, and idle micro-motion (breathing lifts the
shoulders and head, a slow sway, head and hand drift). Per frame: keypoint
noise, lower confidence for fingertips, for hands hidden behind the body and
for face joints under a hand; now and then a joint (or a whole hand for a few
frames) is missing (NaN, score 0), as are joints outside the frame.

A gesture occupies a random sub-span ``[start, end)`` of the clip: a weight
rises from 0 to 1 with smoothstep easing over ``ramp`` frames, holds, and falls
back. The moving hand (one-handed gestures: chosen per clip, the subject's
dominant hand more often) goes from rest to a target that follows the body
(the chin moves when the head moves) and to a depth in front of the body;
elbows follow by two-link inverse kinematics in 3D, projected to the image (so
a hand raised to the face foreshortens the arm, as a camera sees it); an
oscillation (scratching, rubbing, tugging, waving) with a
random amplitude and frequency within the class's range is added. The five
fingertips of each hand fan around the hand joint along the forearm and take a
per-class shape (fist, spread, pinch, flat, crossing, steeple).

Each class's motion (iMiGUE names, 0-based ids). "One hand" gestures use one
hand, "both" both hands; offsets are body units (shoulder half-width ~0.19):

==  =========================================  =================================================
id  class                                      synthetic motion
==  =========================================  =================================================
0   turtle neck                                head sinks 0.04-0.06 toward the shoulders, which
                                               rise; hands stay
1   bulging face / deep breath                 one slow inhale: shoulders rise and widen, head
                                               tips slightly up, ears (cheeks) widen; drawn with
                                               puffed cheeks and a closed mouth
2   touch hat                                  one hand to the front-top of the head (cap
                                               brim), pinched fingers, 1-2 slow downward tugs
3   touching or scratching head                one hand to the top of the head, fingers spread,
                                               fast sideways scratching (2.5-4 Hz)
4   touching or scratching forehead            one hand flat on the forehead, sideways rubbing
5   cover face                                 both hands flat over the face, fingers up, head
                                               bows a little
6   rubbing eyes                               one hand to its own-side eye, small circles
7   touching or scratching facial parts        one hand to the cheek, small vertical scratching
8   touching ears                              one hand to its own ear, small slow pulls
9   biting nails                               one fist at the mouth, fast tiny jitter, head
                                               bows a little
10  touching jaw                               one hand to the chin, slow stroking
11  touching or scratching neck                one hand to the side of the neck, vertical
                                               scratching; head tips up a little
12  playing or adjusting hair                  one hand to the side of the head, sweeping arcs
                                               back over the hair
13  buckle button / pull collar / adjust tie   both hands to the collar, pinched, downward tugs;
                                               head tips up
14  touching or covering suprasternal notch    one flat hand on the notch below the neck, still
15  scratching back                            one hand over its own shoulder, behind the body
                                               (elbow up, hand partly hidden, low confidence),
                                               vertical scratching
16  folding arms                               both wrists cross to the opposite elbow, fists
17  dust off clothes                           one flat hand brushes the opposite chest, fast
                                               large strokes
18  putting arms behind body                   both hands go behind the back (hidden, low
                                               confidence), shoulders widen
19  moving torso                               the whole upper body sways (rotation about the
                                               hips, 0.06-0.12 rad, 0.4-0.9 Hz)
20  sitting straightly                         neck, shoulders and head lift 0.03-0.05 and the
                                               shoulders widen; hands stay in the lap
21  scratching or touching arms                one hand to the opposite upper arm, vertical
                                               scratching
22  rubbing or holding hands                   both hands meet in front of the belly and rub
                                               sideways, mirrored
23  crossing fingers                           both hands together in the lap, fingers of each
                                               hand across the other (interlaced), still
24  minaret gesture                            both hands in front of the chest, fingertips of
                                               both hands meet above them (steeple), tapping
25  playing or manipulating objects            both hands in front of the body, the lead hand
                                               turns a small object (drawn) in circles
26  hold back arms                             arms straighten down and back at the sides,
                                               shoulders rise (a stiff, held-back stance)
27  head up                                    nose and eyes move up 0.04-0.06, more than the
                                               ears (the head tips back)
28  pressing lips                              tiny nod of the nose (0.004-0.008) while the
                                               mouth is drawn pressed; hands static
29  arms akimbo                                both hands to the hips, elbows out wide
30  shaking shoulders                          shoulders oscillate vertically (2-3.5 Hz),
                                               neck and head follow a little
31  illustrative hand gestures                 both hands rise in front of the body and wave in
                                               independent 2D paths, fingers spread
==  =========================================  =================================================

Classes 1, 20, 26 and 28 barely show in an upper-body skeleton; their motions
here are plausible stand-ins chosen to be separable in principle, not copies of
how the real athletes move (nor are the others: the set proves a pipeline
learns, not what iMiGUE looks like). Determinism: every subject and clip draws
from its own ``numpy.random.SeedSequence(seed, spawn_key=...)``, so a seed gives
identical skeleton files and identical video frames, however many clips or
worker processes there are.

Where things live: :mod:`.synth_body` (joint indices, defaults, each class's
:class:`Motion`), :mod:`.synth_people` (subjects and gesture events),
:mod:`.synth_animate` (the true pose per frame and what a pose estimator sees of it),
:mod:`.synth_draw` (drawing the frames); this module writes the sets and the long videos.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import os
import time
from pathlib import Path

import numpy as np

from microgesture.core.errors import MicrogestureError
from microgesture.core.labels import IMIGUE_CLASSES
from microgesture.core.progress import Progress
from microgesture.core.skeleton_io import SkeletonWriter
from microgesture.training.synth_animate import Track, animate, envelope, observe  # noqa: F401 (re-exported)
from microgesture.training.synth_body import (  # noqa: F401 (re-exported)
    DEFAULT_FPS, DEFAULT_FRAMES, DEFAULT_SIZE, LAYOUT, MIN_FRAMES, MIN_SIZE, MOTIONS, Motion)
from microgesture.training.synth_draw import _noise_bank, render_frames
from microgesture.training.synth_people import (  # noqa: F401 (re-exported)
    Event, Subject, _clip_event, _rng, make_subject, sample_event)

GENERATOR = "microgesture.training.synth"
FORMAT_VERSION = 1


# ============================================================================ writing

def _write_clip(video_path: Path, skel_path: Path, track: Track, obs, subj: Subject, fps: float, size,
                bank, rng) -> None:
    import cv2
    w, h = size
    writer = cv2.VideoWriter(str(video_path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
    if not writer.isOpened():
        raise MicrogestureError(f"cannot write the video {video_path}: OpenCV could not open an mp4v writer. "
                                "Check that the folder is writable and that OpenCV was built with FFmpeg.")
    picks = rng.integers(0, len(bank), len(track.keypoints))
    kp, sc = obs
    try:
        with SkeletonWriter(skel_path) as sw:
            for f, img in enumerate(render_frames(track, subj, size, bank, picks)):
                writer.write(img)
                sw.write_arrays(f, f / fps, kp[f], sc[f], LAYOUT, w, h)
    finally:
        writer.release()


def _check_int(name, value, lo, hi=None, fix=""):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo or (hi is not None
                                                                                              and value > hi):
        rng = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise MicrogestureError(f"{name} must be an integer {rng}, got {value!r}.{' ' + fix if fix else ''}")
    return int(value)


def _check_size(size):
    try:
        w, h = (int(v) for v in size)
        ok = len(tuple(size)) == 2 and w >= MIN_SIZE and h >= MIN_SIZE
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise MicrogestureError(f"size must be (width, height) with both at least {MIN_SIZE} pixels, got "
                                f"{size!r}; e.g. size=(128, 128).")
    return w, h


def _check_fps(fps):
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
        raise MicrogestureError(f"fps must be a positive number, got {fps!r}; e.g. fps=15.")
    return float(fps)


def is_synthetic_set(path) -> bool:
    """Whether ``path`` holds a set written by this generator (its synth.json says so)."""
    try:
        meta = json.loads((Path(path) / "synth.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("generator") == GENERATOR


def _prepare_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise MicrogestureError(f"{out} is a file; give a folder for the synthetic set (new or empty).")
    if out.is_dir() and any(out.iterdir()):
        if not is_synthetic_set(out):
            raise MicrogestureError(
                f"{out} is not empty and is not a synthetic set (it has no synth.json written by "
                f"{GENERATOR}); refusing to overwrite it. Choose a new or empty folder.")
        for sub, ext in (("videos", ".mp4"), ("skeletons", ".jsonl")):
            if (out / sub).is_dir():
                for p in (out / sub).iterdir():
                    if p.suffix == ext and p.is_file():
                        p.unlink()
        for name in ("clips.csv", "classes.txt"):
            if (out / name).is_file():
                (out / name).unlink()
    (out / "videos").mkdir(parents=True, exist_ok=True)
    (out / "skeletons").mkdir(parents=True, exist_ok=True)


def _validate(subjects, clips_per_class, classes, frames, size, fps, seed):
    subjects = _check_int("subjects", subjects, 2, fix="A cross-subject split needs at least 2 subjects.")
    clips_per_class = _check_int("clips_per_class", clips_per_class, 1)
    classes = _check_int("classes", classes, 1, len(IMIGUE_CLASSES),
                         fix=f"The first N of the {len(IMIGUE_CLASSES)} iMiGUE classes are used.")
    frames = _check_int("frames", frames, MIN_FRAMES, fix="Gestures need room to ease in and out.")
    seed = _check_int("seed", seed, 0)
    return subjects, clips_per_class, classes, frames, _check_size(size), _check_fps(fps), seed


def _clip_plan(subjects, clips_per_class, classes):
    for s in range(subjects):
        for c in range(classes):
            for k in range(clips_per_class):
                yield s, c, k, _clip_name(s, c, k)


def _clip_name(s: int, c: int, k: int) -> str:
    return f"s{s:02d}_c{c:02d}_{k:02d}"


def _make_clip(seed, subj, s, c, k, frames, fps, size):
    rng = _rng(seed, 1, s, c, k)
    ev = _clip_event(rng, c, frames, subj)
    track = animate(subj, [ev], frames, fps, rng, size)
    return track, observe(track, subj, rng, size), rng


def generate_skeletons(subjects: int = 4, clips_per_class: int = 2, classes: int = len(IMIGUE_CLASSES),
                       seed: int = 0, frames: int = DEFAULT_FRAMES, size=DEFAULT_SIZE,
                       fps: float = DEFAULT_FPS) -> dict:
    """The skeletons of the set :func:`write_synthetic` would write, as arrays (nothing is drawn).

    Returns ``{"keypoints": (N, T, 22, 2) float32 pixels (NaN = missing), "scores": (N, T, 22),
    "labels": (N,) class ids, "subjects": (N,) subject ids, "clips": [names], "spans": (N, 3)
    gesture start, end (exclusive) and ramp frames, "hands": (N,) the leading hand, 0 left
    (the person's), 1 right}``.
    """
    subjects, clips_per_class, classes, frames, size, fps, seed = _validate(
        subjects, clips_per_class, classes, frames, size, fps, seed)
    kps, scs, labels, subs, names, spans, hands = [], [], [], [], [], [], []
    people = [_subject(seed, s, size) for s in range(subjects)]
    for s, c, k, name in _clip_plan(subjects, clips_per_class, classes):
        track, (kp, sc), _ = _make_clip(seed, people[s], s, c, k, frames, fps, size)
        kps.append(kp)
        scs.append(sc)
        labels.append(c)
        subs.append(s)
        names.append(name)
        ev = track.events[0]
        spans.append((ev.start, ev.end, ev.ramp))
        hands.append(ev.side)
    return {"keypoints": np.stack(kps).astype(np.float32), "scores": np.stack(scs).astype(np.float32),
            "labels": np.array(labels), "subjects": np.array(subs), "clips": names, "spans": np.array(spans),
            "hands": np.array(hands)}


def write_synthetic(out_dir, subjects: int = 4, clips_per_class: int = 2, classes: int = 8, seed: int = 0,
                    frames: int = DEFAULT_FRAMES, size=DEFAULT_SIZE, fps: float = DEFAULT_FPS,
                    progress: bool = True, workers: int | None = None) -> dict:
    """Write a synthetic set of ``subjects * classes * clips_per_class`` clips to ``out_dir``.

    Uses the first ``classes`` iMiGUE classes. ``out_dir`` must be new, empty, or a
    synthetic set written before (which is replaced). ``workers``: processes writing
    clips (default 1; the files do not depend on it). Workers are spawned, so a script
    that asks for more than one must guard its entry point with
    ``if __name__ == "__main__":``. Returns a summary dict (counts, parameters, seconds).
    """
    subjects, clips_per_class, classes, frames, size, fps, seed = _validate(
        subjects, clips_per_class, classes, frames, size, fps, seed)
    total = subjects * classes * clips_per_class
    workers = _check_int("workers", 1 if workers is None else workers, 1)
    out = Path(os.fspath(out_dir))
    _prepare_out_dir(out)
    t0 = time.monotonic()
    names = list(IMIGUE_CLASSES[:classes])
    params = {"subjects": subjects, "clips_per_class": clips_per_class, "classes": classes, "seed": seed,
              "frames": frames, "size": list(size), "fps": fps}
    meta = {"generator": GENERATOR, "version": FORMAT_VERSION, "complete": False, "layout": LAYOUT,
            "params": params}
    _write_json(out / "synth.json", meta)    # marks the folder as ours before anything else is written
    tick = Progress("synth", total, "clips", enabled=progress)
    jobs = [(str(out), seed, s, c, clips_per_class, frames, fps, size) for s in range(subjects)
            for c in range(classes)]
    done, clips = 0, {}
    if workers == 1:
        for job in jobs:
            clips[job[2:4]] = _write_clips(*job)
            done += clips_per_class
            tick(done)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed
        # spawn, not fork: forking a process whose OpenCV thread pool has run can hang the child
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_init_worker) as pool:
            futures = {pool.submit(_write_clips, *job): job[2:4] for job in jobs}
            for fut in as_completed(futures):
                clips[futures[fut]] = fut.result()
                done += clips_per_class
                tick(done)
    tick.finish(done)
    clips = [clip for job in jobs for clip in clips[job[2:4]]]
    with open(out / "clips.csv", "w", encoding="utf-8", newline="") as fh:
        wr = csv.writer(fh, lineterminator="\n")
        wr.writerow(["clip", "label", "subject"])
        wr.writerows((c["clip"], c["label"], c["subject"]) for c in clips)
    (out / "classes.txt").write_text("".join(n + "\n" for n in names), encoding="utf-8")
    people = [_subject(seed, s, size) for s in range(subjects)]
    meta.update(complete=True, class_names=names, subjects=[p.describe() for p in people], clips=clips)
    _write_json(out / "synth.json", meta)
    seconds = time.monotonic() - t0
    return {"out_dir": str(out), "clips": total, "subjects": [p.name for p in people], "classes": names,
            "frames": frames, "size": list(size), "fps": fps, "seed": seed, "workers": workers,
            "seconds": round(seconds, 3)}


@functools.lru_cache(maxsize=64)
def _subject(seed: int, index: int, size) -> Subject:
    return make_subject(seed, index, size)


@functools.lru_cache(maxsize=4)
def _bank(seed: int, size):
    return _noise_bank(seed, size)


def _init_worker() -> None:
    import cv2
    cv2.setNumThreads(1)


def _write_clips(out: str, seed: int, s: int, c: int, count: int, frames: int, fps: float, size) -> list:
    """Write the ``count`` clips of subject ``s`` and class ``c``; their synth.json entries."""
    subj, out = _subject(seed, s, tuple(size)), Path(out)
    entries = []
    for k in range(count):
        name = _clip_name(s, c, k)
        track, obs, rng = _make_clip(seed, subj, s, c, k, frames, fps, size)
        _write_clip(out / "videos" / f"{name}.mp4", out / "skeletons" / f"{name}.jsonl", track, obs, subj,
                    fps, size, _bank(seed, tuple(size)), rng)
        entries.append({"clip": name, "subject": subj.name, **track.events[0].describe()})
    return entries


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def make_long_video(out_path, duration_s: float = 60.0, classes=None, seed: int = 0, subject: int = 0,
                    size=(256, 256), fps: float = DEFAULT_FPS, gesture_s=(2.0, 4.0), gap_s=(1.5, 3.5),
                    progress: bool = True) -> dict:
    """One subject doing several gestures in sequence with idle gaps, for the streaming demo.

    Writes ``out_path`` (an .mp4), ``<stem>.jsonl`` (skeletons, layout imigue22) and
    ``<stem>_gt.csv`` next to it: rows ``label,start_frame,end_frame`` with 0-based frames
    and ``end_frame`` EXCLUSIVE (the gesture moves on ``start_frame <= f < end_frame``).
    ``classes``: class names or ids to draw from (default: all 32), in random order,
    cycling, never the same twice in a row. Returns a summary dict with the paths.
    """
    size, fps = _check_size(size), _check_fps(fps)
    seed = _check_int("seed", seed, 0)
    subject = _check_int("subject", subject, 0)
    if isinstance(duration_s, bool) or not isinstance(duration_s, (int, float)) or not duration_s >= 5:
        raise MicrogestureError(f"duration_s must be at least 5 seconds, got {duration_s!r}.")
    for name, (lo, hi) in (("gesture_s", gesture_s), ("gap_s", gap_s)):
        if not 0 < lo <= hi:
            raise MicrogestureError(f"{name} must be (min, max) seconds with 0 < min <= max, got {(lo, hi)!r}.")
    cids = _class_ids(classes)
    out = Path(os.fspath(out_path))
    if out.suffix.lower() != ".mp4":
        raise MicrogestureError(f"{out}: the long video must be an .mp4 file; e.g. demo.mp4.")
    out.parent.mkdir(parents=True, exist_ok=True)
    frames = int(round(duration_s * fps))
    rng = _rng(seed, 2, subject)
    subj = make_subject(seed, subject, size)
    events, pos, order, last = [], 0, [], None
    while True:
        pos += int(round(rng.uniform(*gap_s) * fps))
        length = int(round(rng.uniform(*gesture_s) * fps))
        if pos + length > frames - int(round(gap_s[0] * fps)):
            break
        if not order:
            order = list(rng.permutation(cids))
            if len(order) > 1 and order[0] == last:
                order.append(order.pop(0))
        cid = int(order.pop(0))
        events.append(sample_event(rng, cid, pos, pos + length, subj, ramp=int(round(rng.uniform(0.3, 0.6) * fps))))
        last, pos = cid, pos + length
    if not events:
        raise MicrogestureError(f"{duration_s} s leaves no room for a gesture with gaps of {gap_s} s and gestures "
                                f"of {gesture_s} s; make the video longer.")
    track = animate(subj, events, frames, fps, rng, size)
    obs = observe(track, subj, rng, size)
    skel, gt = out.with_suffix(".jsonl"), out.with_name(out.stem + "_gt.csv")
    tick = Progress("synth", frames, "frames", enabled=progress)
    import cv2
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), tuple(size))
    if not writer.isOpened():
        raise MicrogestureError(f"cannot write the video {out}: OpenCV could not open an mp4v writer.")
    bank = _noise_bank(seed, size)
    picks = rng.integers(0, len(bank), frames)
    try:
        with SkeletonWriter(skel) as sw:
            for f, img in enumerate(render_frames(track, subj, size, bank, picks)):
                writer.write(img)
                sw.write_arrays(f, f / fps, obs[0][f], obs[1][f], LAYOUT, size[0], size[1])
                tick(f + 1)
    finally:
        writer.release()
    tick.finish(frames)
    with open(gt, "w", encoding="utf-8", newline="") as fh:
        wr = csv.writer(fh, lineterminator="\n")
        wr.writerow(["label", "start_frame", "end_frame"])
        wr.writerows((IMIGUE_CLASSES[e.cid], e.start, e.end) for e in events)
    return {"video": str(out), "skeletons": str(skel), "ground_truth": str(gt), "frames": frames, "fps": fps,
            "size": list(size), "subject": subj.name, "seed": seed,
            "gestures": [e.describe() for e in events]}


def _class_ids(classes) -> list[int]:
    if classes is None:
        return list(range(len(IMIGUE_CLASSES)))
    if isinstance(classes, (str, int)):
        classes = [classes]
    ids = []
    for c in classes:
        if isinstance(c, str):
            if c not in IMIGUE_CLASSES:
                from microgesture.core.errors import did_you_mean
                raise MicrogestureError(f"unknown class {c!r}.{did_you_mean(c, IMIGUE_CLASSES)} "
                                        "Use one of the iMiGUE class names (core.labels.IMIGUE_CLASSES).")
            ids.append(IMIGUE_CLASSES.index(c))
        else:
            ids.append(_check_int("class id", c, 0, len(IMIGUE_CLASSES) - 1))
    if not ids:
        raise MicrogestureError("classes is empty; give at least one class name or id, or None for all.")
    return ids
