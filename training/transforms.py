"""From a :class:`~microgesture.training.datasets.ClipRecord` to model inputs, sampled as the papers do.

:class:`ClipDataset` item ``i`` (keys as ``core.clip_mg``'s input contract):

- ``frames``   float32 (R, 3, S, S): R RGB frames cropped to the clip's box, resized
  to S, normalised with the config's mean/std (zeros for a pose-only model);
- ``heatmaps`` float32 (V, P, H, W): Gaussian joint heatmaps of P pose frames in the
  SAME box (``core.heatmaps.joint_heatmaps``, the function streaming uses);
- ``joints``   float32 (R, V, 3): the joints at the R RGB frames, x and y as fractions
  of the crop (0 at its left/top edge, 1 at its right/bottom edge), and the score;
  a missing joint is (0, 0, 0);
- ``label``, ``index`` int64 (the record's position in the index).

Steps, for a clip of N frames (its skeleton, converted to ``config.pose.layout``):

1. Sampling (:func:`sample_clip`): PoseC3D's ``UniformSampleFrames`` -- ``count``
   equal segments, a random frame in each when training, the centre otherwise --
   for the R RGB frames and the P pose frames. P is a multiple of R, so RGB
   segment r is exactly pose segments [r P/R, (r + 1) P/R): the RGB frame lies in
   the span of the pose frames its window averages. Short clips repeat frames.
2. The box: ``compact_box`` of all the clip's keypoints (padding 0.25), made
   square and rounded to whole pixels. Training jitters it: a square of
   ``sqrt(u)`` times its side (u uniform in ``crop_scale``, an area fraction)
   placed at random inside the box (or around it, for u > 1).
3. Training flips with probability ``flip_prob``: images, heatmaps and joints
   together, left and right joints swapped (``core.heatmaps.flip_heatmaps``).
4. Frames: only the needed ones are decoded -- a seek to the first, then
   sequential reads to the last -- cropped (zeros outside the image) and resized.

Randomness comes from ``numpy.random.default_rng([seed, epoch, index])``: an item
is the same in every process and worker for a given (seed, epoch, index), and
different items get different crops. Call :meth:`ClipDataset.set_epoch` (or
:func:`set_epoch` on the loader) before each epoch; the epoch lives in shared
memory, so persistent workers see it.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from microgesture.core import imigue
from microgesture.core.errors import MicrogestureError
from microgesture.core.heatmaps import compact_box, flip_heatmaps, joint_heatmaps
from microgesture.core.layouts import convert, get_layout
from microgesture.core.preprocess import (BOX_PADDING, _cv2, crop_resize, joints_in_box,
                                          normalize_frames, square_box)
from microgesture.core.sampling import sample_clip
from microgesture.core.skeleton_io import IMIGUE_HEIGHT, IMIGUE_LAYOUT, IMIGUE_WIDTH, read_jsonl
from microgesture.training.datasets import CHALLENGE_SIZE, ClipRecord, DatasetIndex

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- skeletons

@dataclass(frozen=True)
class Track:
    """A parsed skeleton file: ``frames`` (T,) video frame indices, ``keypoints``
    (T, V, 2) pixels (NaN where missing), ``scores`` (T, V), layout and frame size."""

    frames: np.ndarray
    keypoints: np.ndarray
    scores: np.ndarray
    layout: str
    width: int
    height: int


def challenge_track(sample: np.ndarray, coords: str, size: tuple[int, int], layout: str) -> Track:
    """A Track from one challenge sample (3, T, V, M): the most confident person,
    trailing all-zero (padding) frames dropped, coordinates scaled to pixels of ``size``
    (``core.imigue.challenge_pose``)."""
    kp, sc = imigue.challenge_pose(sample, coords, size)
    return Track(np.arange(len(kp), dtype=np.int64), kp, sc, layout, *size)


def jsonl_track(path) -> Track:
    """A whole skeleton JSONL file (core.skeleton_io format)."""
    frames, _, kp, sc, layout, w, h = read_jsonl(path)
    return Track(frames, kp, sc, layout, w, h)


def imigue_row_offsets(path) -> np.ndarray:
    """int64 (T + 1,): the byte offset of each data row of an iMiGUE ``_light_hand.csv``
    (blank lines and a header row excluded), then the file size (``core.imigue.row_offsets``)."""
    return imigue.row_offsets(path)


def read_imigue_rows(path, start: int, end: int, offsets: np.ndarray | None = None) -> Track:
    """Frames [start, end) of an iMiGUE ``_light_hand.csv``, as ``read_imigue_csv`` reads
    them (0,0,0 joints missing, confidences clipped to [0, 1]), without parsing the rest
    of the long file. ``offsets``: from :func:`imigue_row_offsets` (computed if None)."""
    kp, sc = imigue.read_rows(path, start, end, offsets)
    return Track(np.arange(start, end, dtype=np.int64), kp, sc, IMIGUE_LAYOUT, IMIGUE_WIDTH, IMIGUE_HEIGHT)


challenge_frames = imigue.challenge_frames


# ----------------------------------------------------------------------------- video

class VideoClip:
    """A video opened for reading a few frames by index (RGB uint8)."""

    def __init__(self, path):
        cv2 = _cv2()
        self.path = path
        self._cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        if not self._cap.isOpened():
            self._cap.release()
            raise MicrogestureError(f"cannot open video {path}: not a video OpenCV can read (missing codec, "
                                    "damaged or truncated file). Replace or re-encode it.")
        self.width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count = count if count > 0 else None
        if self.width <= 0 or self.height <= 0:
            self.close()
            raise MicrogestureError(f"video {path} reports no frame size; it is damaged or not a video.")

    def read(self, indices) -> dict[int, np.ndarray]:
        """{index: RGB frame} for the given 0-based frame indices: a seek to the first,
        then sequential reads to the last (frames in between are grabbed, not decoded)."""
        cv2 = _cv2()
        wanted = sorted({int(i) for i in indices})
        first, last = wanted[0], wanted[-1]
        pos = 0
        if first > 0:
            if self._cap.set(cv2.CAP_PROP_POS_FRAMES, first) and int(self._cap.get(cv2.CAP_PROP_POS_FRAMES)) == first:
                pos = first
            else:  # no seeking in this file: start again from the beginning
                self._cap.release()
                self._cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        out, keep = {}, set(wanted)
        for index in range(pos, last + 1):
            if index in keep:
                ok, bgr = self._cap.read()
                ok = ok and bgr is not None and bgr.size > 0
            else:
                ok = self._cap.grab()
            if not ok:
                frames = f"{self.frame_count} frames by its header" if self.frame_count else "an unknown length"
                raise MicrogestureError(f"cannot decode frame {index} of {self.path} (the clip needs frames "
                                        f"{first}..{last}; the video has {frames}): the file is truncated or "
                                        "damaged, or the clip's frame range goes beyond the video.")
            if index in keep:
                out[index] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return out

    def close(self) -> None:
        self._cap.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ----------------------------------------------------------------------------- dataset

class ClipDataset(Dataset):
    """Model inputs for the clips of a :class:`DatasetIndex` (module docstring).

    ``config``: a CLIP-MG config (``rgb_frames``, ``pose_frames``, ``clip.image_size``,
    ``clip.mean/std``, ``pose.layout``, ``pose.heatmap_size``, ``pose.sigma``,
    ``modality``). ``train``: random sampling, box jitter and flips.
    ``skip_bad``: a clip whose files cannot be read is logged with its path,
    counted in ``self.bad`` (per process) and replaced by the next good clip;
    otherwise it raises. Test-time views (evaluation only): view ``clip`` of
    ``num_clips`` samples each segment at ``(clip + 0.5) / num_clips`` (PoseC3D's
    multi-clip testing, evenly spread instead of random), and ``flip=True``
    mirrors the view (frames, heatmaps and joints) for flip-averaging. ``cache_size``: parsed skeleton files (and row offsets of long iMiGUE
    CSVs, whose clips are read row range by row range) kept per worker.
    """

    def __init__(self, index: DatasetIndex, config, train: bool, seed: int = 0, flip_prob: float = 0.5,
                 crop_scale: tuple[float, float] = (0.75, 1.0), skip_bad: bool = True, cache_size: int = 128,
                 clip: int = 0, num_clips: int = 1, flip: bool = False):
        if not all(hasattr(config, a) for a in ("clip", "pose", "modality", "rgb_frames", "pose_frames")):
            raise MicrogestureError(f"ClipDataset needs a CLIP-MG config (get_config('clip-mg-tiny'), ...), "
                                    f"got {type(config).__name__}.")
        lo, hi = crop_scale
        if not 0 < lo <= hi:
            raise MicrogestureError(f"crop_scale must be (low, high) area fractions with 0 < low <= high, "
                                    f"got {crop_scale!r}.")
        if not 0 <= flip_prob <= 1:
            raise MicrogestureError(f"flip_prob must lie in [0, 1], got {flip_prob!r}.")
        if not 0 <= clip < num_clips:
            raise MicrogestureError(f"clip must lie in [0, num_clips), got clip={clip}, num_clips={num_clips}.")
        if train and (num_clips != 1 or flip):
            raise MicrogestureError("num_clips and flip are test-time views; for training use flip_prob.")
        if len(index) == 0:
            raise MicrogestureError(f"{index.root}: the dataset index has no clips.")
        top = max(r.label for r in index.records)
        if top >= config.num_classes:
            raise MicrogestureError(f"{index.root} has labels up to {top} ({len(index.classes)} classes) but the "
                                    f"model config {config.name!r} has {config.num_classes}; build the model with "
                                    "labels=index.classes.")
        self.needs_video = config.modality != "pose"
        if self.needs_video:
            missing = [r for r in index.records if r.video is None]
            if missing:
                raise MicrogestureError(
                    f"{len(missing)} of {len(index)} clips of {index.root} have no video (e.g. "
                    f"{missing[0].clip_id!r}), but the model's modality {config.modality!r} needs RGB frames. "
                    "Add the videos, or train a pose-only model (modality='pose').")
        self.index, self.config, self.train, self.seed = index, config, bool(train), int(seed)
        self.flip_prob, self.crop_scale, self.skip_bad = float(flip_prob), (float(lo), float(hi)), skip_bad
        self.offset, self.flip = (clip + 0.5) / num_clips, bool(flip)
        self.layout = get_layout(config.pose.layout)
        self.mean = np.asarray(config.clip.mean, np.float32)
        self.std = np.asarray(config.clip.std, np.float32)
        self.cache_size = max(1, int(cache_size))
        self.decode_frames = True
        """False: items carry no ``frames`` (the token cache has them); every random draw
        (sampling, crop, flip) stays the same, so heatmaps and joints match the cached view."""
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self.bad = 0
        self._bad_indices: set[int] = set()
        self._tracks: OrderedDict = OrderedDict()
        self._arrays: dict = {}

    def __len__(self) -> int:
        return len(self.index)

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        """The epoch for the random crops and flips; seen by all workers (shared memory)."""
        self._epoch[0] = int(epoch)

    def __getstate__(self):  # caches stay behind when a worker is spawned
        state = self.__dict__.copy()
        state["_tracks"], state["_arrays"] = OrderedDict(), {}
        return state

    # ------------------------------------------------------------ items
    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        n = len(self.index)
        if not -n <= i < n:
            raise IndexError(f"clip {i} out of range for a dataset of {n} clips")
        i %= n
        for attempt in range(n):
            j = (i + attempt) % n
            if j in self._bad_indices:
                continue
            record = self.index.records[j]
            try:
                return self.item(j)
            except (MicrogestureError, OSError, ValueError) as e:
                where = record.video or record.skeleton
                if not self.skip_bad:
                    raise MicrogestureError(f"clip {record.clip_id!r} ({where}): {e} "
                                            "(skip_bad=True skips such clips.)") from e
                self._bad_indices.add(j)
                self.bad += 1
                log.warning("skipping clip %r (%s): %s [%d bad clip(s) so far in this process]",
                            record.clip_id, where, e, self.bad)
        raise MicrogestureError(f"{self.index.root}: none of the {n} clips could be loaded; see the warnings "
                                "above for each clip's path and reason.")

    def rng(self, i: int) -> np.random.Generator:
        """The random generator of item ``i`` in the current epoch."""
        return np.random.default_rng([self.seed, self.epoch, int(i)])

    def item(self, i: int) -> dict[str, torch.Tensor]:
        """Item ``i``, raising on a bad clip (``__getitem__`` adds the skipping)."""
        record = self.index.records[i]
        cfg = self.config
        rng = self.rng(i) if self.train else None
        video = VideoClip(record.video) if self.needs_video else None
        try:
            kp, sc, size, frame_of = self._pose(record, video)
            n = len(kp)
            rgb_idx, pose_idx = sample_clip(n, cfg.rgb_frames, cfg.pose_frames, self.train, rng, self.offset)
            box = compact_box(kp, sc, size, padding=BOX_PADDING)
            jitter = None
            if self.train:
                jitter = (rng.uniform(*self.crop_scale), rng.uniform(-1, 1), rng.uniform(-1, 1))
            box = square_box(box, jitter)
            flip = self.train and rng.random() < self.flip_prob or self.flip
            s = cfg.clip.image_size
            if video is not None and self.decode_frames:
                wanted = frame_of[rgb_idx]
                images = video.read(wanted)
                frames = np.stack([crop_resize(images[int(f)], box, s) for f in wanted])
            else:
                frames = None
        finally:
            if video is not None:
                video.close()

        hm = cfg.pose.heatmap_size
        heatmaps = joint_heatmaps(kp[pose_idx], sc[pose_idx], (hm, hm), cfg.pose.sigma, box=box)
        joints = joints_in_box(kp[rgb_idx], sc[rgb_idx], box)
        if flip:
            heatmaps = flip_heatmaps(heatmaps, self.layout)
            joints = joints[:, self.layout.flip_permutation]
            joints[..., 0] = np.where(joints[..., 2] > 0, 1.0 - joints[..., 0], 0.0)
            if frames is not None:
                frames = frames[:, :, ::-1]
        if frames is None:
            out_frames = torch.zeros(cfg.rgb_frames if self.decode_frames else 0, 3, s, s)
        else:
            out_frames = torch.from_numpy(normalize_frames(frames, self.mean, self.std))
        return {
            "frames": out_frames,
            "heatmaps": torch.from_numpy(np.ascontiguousarray(heatmaps, dtype=np.float32)),
            "joints": torch.from_numpy(joints.astype(np.float32)),
            "label": torch.tensor(record.label, dtype=torch.int64),
            "index": torch.tensor(i, dtype=torch.int64),
        }

    # ------------------------------------------------------------ skeletons
    def _pose(self, record: ClipRecord, video: VideoClip | None):
        """The clip's keypoints (N, V, 2) and scores (N, V) in the model layout and in
        pixels of the image (W, H), and the video frame index of each of the N frames."""
        if record.skeleton is None:
            raise MicrogestureError(f"clip {record.clip_id!r} has no skeleton file; the crop and heatmaps need one.")
        if record.skeleton_format == "npy":
            size = (video.width, video.height) if video is not None else CHALLENGE_SIZE
            array = self._array(record.skeleton)
            track = challenge_track(array[record.pose_array_index], record.coords, size, record.layout)
            kp, sc = track.keypoints, track.scores
            n = len(kp)
            count = video.frame_count if video is not None else None
            frame_of = challenge_frames(n, array.shape[2], count)
        else:
            track = self._track(record)
            end = record.end if record.end is not None else int(track.frames[-1]) + 1
            n = end - record.start
            kp = np.full((n, track.keypoints.shape[1], 2), np.nan, np.float32)
            sc = np.zeros((n, track.keypoints.shape[1]), np.float32)
            inside = (track.frames >= record.start) & (track.frames < end)
            kp[track.frames[inside] - record.start] = track.keypoints[inside]
            sc[track.frames[inside] - record.start] = track.scores[inside]
            size = (track.width, track.height)
            if video is not None and (video.width, video.height) != size:
                scale = np.array([video.width / size[0], video.height / size[1]], np.float32)
                kp = (kp + 0.5) * scale - 0.5
                size = (video.width, video.height)
            frame_of = record.start + np.arange(n, dtype=np.int64)
        if track.layout != self.layout.name:
            kp, sc = convert(kp, sc, track.layout, self.layout)
        return kp.astype(np.float32), sc.astype(np.float32), size, frame_of

    def _track(self, record: ClipRecord) -> Track:
        """The clip's skeleton: a whole JSONL file, or the clip's rows of a long iMiGUE CSV."""
        if record.skeleton_format == "imigue-csv":  # cache the row offsets of the long file
            offsets = self._cached(("offsets", record.skeleton), lambda: imigue_row_offsets(record.skeleton))
            end = record.end if record.end is not None else len(offsets) - 1
            return read_imigue_rows(record.skeleton, record.start, end, offsets)
        return self._cached(("jsonl", record.skeleton), lambda: jsonl_track(record.skeleton))

    def _cached(self, key, load):
        """A bounded per-process (per-worker) LRU cache of parsed skeleton data."""
        value = self._tracks.get(key)
        if value is not None:
            self._tracks.move_to_end(key)
            return value
        value = self._tracks[key] = load()
        while len(self._tracks) > self.cache_size:
            self._tracks.popitem(last=False)
        return value

    def _array(self, path):
        array = self._arrays.get(path)
        if array is None:
            array = self._arrays[path] = np.load(path, mmap_mode="r", allow_pickle=False)
        return array


# ----------------------------------------------------------------------------- loading

class EpochShuffle(Sampler):
    """A random order of ``length`` items that depends only on (seed, epoch)."""

    def __init__(self, length: int, seed: int = 0):
        self.length, self.seed, self.epoch = length, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        return iter(np.random.default_rng([self.seed, self.epoch]).permutation(self.length).tolist())

    def __len__(self) -> int:
        return self.length


def _worker_init(worker_id: int) -> None:
    _cv2().setNumThreads(1)  # workers decode in parallel already
    torch.set_num_threads(1)


def make_loader(dataset: ClipDataset, batch_size: int, train: bool, workers: int = 0, distributed: bool = False,
                *, num_replicas: int | None = None, rank: int | None = None, drop_last: bool = False) -> DataLoader:
    """A DataLoader over ``dataset``: decoding in ``workers`` processes (persistent), a
    shuffled order per epoch when ``train``, a ``DistributedSampler`` when ``distributed``
    (``num_replicas``/``rank`` default to the initialised process group). Call
    :func:`set_epoch` before each epoch."""
    if batch_size < 1 or workers < 0:
        raise MicrogestureError(f"batch_size must be >= 1 and workers >= 0, got {batch_size} and {workers}.")
    seed = getattr(dataset, "seed", 0)
    if distributed:
        from torch.utils.data.distributed import DistributedSampler

        try:
            sampler = DistributedSampler(dataset, num_replicas=num_replicas, rank=rank, shuffle=train, seed=seed,
                                         drop_last=drop_last)
        except (RuntimeError, ValueError) as e:
            raise MicrogestureError(f"distributed loading needs torch.distributed.init_process_group() first "
                                    f"(or num_replicas and rank): {e}") from None
    elif train:
        sampler = EpochShuffle(len(dataset), seed)
    else:
        sampler = None
    # Workers come from a fork server, not from a fork of this process: a fork copies the
    # locks of this process's other threads (OpenCV's and OpenMP's pools, a stream or video
    # writer thread) as they are at that instant, and a worker that found one held hung in
    # its first cv2/torch call (seen in the test suite: the loader waited forever).
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      persistent_workers=workers > 0, worker_init_fn=_worker_init if workers else None,
                      multiprocessing_context="forkserver" if workers else None, drop_last=drop_last)


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Set the epoch of a loader's dataset (crops, flips) and sampler (order)."""
    for part in (loader.dataset, loader.sampler):
        if hasattr(part, "set_epoch"):
            part.set_epoch(epoch)
