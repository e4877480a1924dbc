"""Windows of a model from a dataset's clips, torch-free: sampling, the crop, frames,
heatmaps and joints as the model family's window asks (``core.family.WindowSpec``).

Training (``training.transforms.ClipDataset``, a thin torch wrapper), export
verification and calibration read windows through :class:`WindowReader`. One
window of a clip of N frames (its skeleton converted to the window's layout):

1. Sampling (``core.sampling``): PoseC3D's ``UniformSampleFrames`` -- ``count``
   equal segments, a random frame in each when training, at ``offset`` of it
   otherwise -- for the R RGB frames and the P pose frames. When both are sampled
   P is a multiple of R, so RGB segment r is exactly pose segments [r P/R, (r + 1) P/R).
   Short clips repeat frames.
2. The box (``HeatmapSpec.crop``): ``person`` -- ``compact_box`` of all the clip's
   keypoints (padding 0.25; CLIP-MG); ``skeleton`` -- of the sampled pose frames'
   keypoints (PoseC3D's ``PoseCompact``); made square and rounded to whole pixels.
   Training jitters it: a square of ``sqrt(u)`` times its side (u uniform in
   ``crop_scale``, an area fraction) placed at random inside the box (or around it,
   for u > 1).
3. Training flips with probability ``flip_prob``: images, heatmaps and joints
   together, left and right joints (and limbs) swapped.
4. Frames: only the needed ones are decoded -- a seek to the first, then
   sequential reads to the last -- cropped (zeros outside the image), resized to
   ``image_size`` and normalised with the window's mean and std.

Keys of a window (numpy): ``frames`` float32 (R, 3, S, S) when R; ``heatmaps``
float32 (C, P, H, W) (joint maps, C = V, or limb maps, C = limbs; H = ``size``, or
``train_size`` when training) when the window has heatmaps; ``joints`` float32
(R, V, 3) (x, y as fractions of the crop, score; missing = 0) when asked.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from microgesture.core import imigue
from microgesture.core.errors import MicrogestureError
from microgesture.core.family import WindowSpec
from microgesture.core.heatmaps import (compact_box, flip_heatmaps, joint_heatmaps, limb_flip_permutation,
                                        limb_heatmaps)
from microgesture.core.layouts import convert, get_layout
from microgesture.core.preprocess import (BOX_PADDING, _cv2, crop_resize, joints_in_box, normalize_frames,
                                          square_box)
from microgesture.core.sampling import sample_clip, sample_indices
from microgesture.core.dataset_index import CHALLENGE_SIZE
from microgesture.core.skeleton_io import IMIGUE_HEIGHT, IMIGUE_LAYOUT, IMIGUE_WIDTH, read_jsonl
from microgesture.core.video import open_capture

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
        self._cap = open_capture(path)
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
                self._cap = open_capture(self.path)
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



# ----------------------------------------------------------------------------- windows

class WindowReader:
    """Windows of ``spec`` (a ``WindowSpec``) from clip records (``ClipRecord``), as numpy.

    ``crop_scale`` (area fractions) and ``flip_prob``: training's box jitter and flips.
    ``cache_size``: parsed skeleton files (and row offsets of long iMiGUE CSVs, whose
    clips are read row range by row range) kept; a reader sent to another process
    (a loader worker) starts with empty caches.
    """

    def __init__(self, spec: WindowSpec, flip_prob: float = 0.5,
                 crop_scale: tuple[float, float] = (0.75, 1.0), cache_size: int = 128):
        lo, hi = crop_scale
        if not 0 < lo <= hi:
            raise MicrogestureError(f"crop_scale must be (low, high) area fractions with 0 < low <= high, "
                                    f"got {crop_scale!r}.")
        if not 0 <= flip_prob <= 1:
            raise MicrogestureError(f"flip_prob must lie in [0, 1], got {flip_prob!r}.")
        if spec.rgb_frames < 0 or spec.pose_frames < 0 or not (spec.rgb_frames or spec.pose_frames):
            raise MicrogestureError(f"a window samples RGB or pose frames; got rgb_frames={spec.rgb_frames}, "
                                    f"pose_frames={spec.pose_frames}")
        self.spec = spec
        self.flip_prob, self.crop_scale = float(flip_prob), (float(lo), float(hi))
        self.layout = get_layout(spec.layout)
        self.limbs = None
        if spec.heatmaps is not None and spec.heatmaps.kind == "limbs":
            self.limbs = self.layout.limb_set(spec.heatmaps.limbs)
        self.mean = np.asarray(spec.mean, np.float32)
        self.std = np.asarray(spec.std, np.float32)
        self.cache_size = max(1, int(cache_size))
        self._tracks: OrderedDict = OrderedDict()
        self._arrays: dict = {}

    @property
    def needs_video(self) -> bool:
        return self.spec.rgb_frames > 0

    def __getstate__(self):  # caches stay behind when a worker is spawned
        state = self.__dict__.copy()
        state["_tracks"], state["_arrays"] = OrderedDict(), {}
        return state

    def read(self, record, train: bool = False, rng: np.random.Generator | None = None,
             offset: float = 0.5, flip: bool = False, decode_frames: bool = True) -> dict[str, np.ndarray]:
        """One window of ``record``: random sampling, jitter and flip when ``train`` (``rng``
        needed), else the frames at ``offset`` of each segment and a mirror image when
        ``flip``. ``decode_frames=False``: no ``frames`` (every random draw stays the same)."""
        spec = self.spec
        r, p = spec.rgb_frames, spec.pose_frames
        video = VideoClip(record.video) if self.needs_video else None
        try:
            kp, sc, size, frame_of = self.pose(record, video)
            n = len(kp)
            if r and p:
                rgb_idx, pose_idx = sample_clip(n, r, p, train, rng, offset)
            else:
                pose_idx = sample_indices(n, p, train, rng, offset) if p else None
                rgb_idx = sample_indices(n, r, train, rng, offset) if r else None
            crop = spec.heatmaps.crop if spec.heatmaps is not None else "person"
            if crop == "skeleton" and pose_idx is not None:
                box = compact_box(kp[pose_idx], sc[pose_idx], size, padding=BOX_PADDING)
            else:
                box = compact_box(kp, sc, size, padding=BOX_PADDING)
            jitter = None
            if train:
                jitter = (rng.uniform(*self.crop_scale), rng.uniform(-1, 1), rng.uniform(-1, 1))
            box = square_box(box, jitter)
            flip = train and rng.random() < self.flip_prob or flip
            frames = None
            if video is not None and decode_frames:
                wanted = frame_of[rgb_idx]
                images = video.read(wanted)
                frames = np.stack([crop_resize(images[int(f)], box, spec.image_size) for f in wanted])
        finally:
            if video is not None:
                video.close()

        out: dict[str, np.ndarray] = {}
        if spec.heatmaps is not None:
            hm = spec.heatmaps.size_for(train)
            if self.limbs is not None:
                maps = limb_heatmaps(kp[pose_idx], sc[pose_idx], self.limbs, (hm, hm), spec.heatmaps.sigma, box=box)
            else:
                maps = joint_heatmaps(kp[pose_idx], sc[pose_idx], (hm, hm), spec.heatmaps.sigma, box=box)
            if flip:
                maps = flip_heatmaps(maps, self._heatmap_flip())
            out["heatmaps"] = np.ascontiguousarray(maps, dtype=np.float32)
        if spec.joints:
            joints = joints_in_box(kp[rgb_idx], sc[rgb_idx], box)
            if flip:
                joints = joints[:, self.layout.flip_permutation]
                joints[..., 0] = np.where(joints[..., 2] > 0, 1.0 - joints[..., 0], 0.0)
            out["joints"] = joints.astype(np.float32)
        if frames is not None:
            if flip:
                frames = frames[:, :, ::-1]
            out["frames"] = normalize_frames(frames, self.mean, self.std)
        return out

    def _heatmap_flip(self):
        if self.limbs is None:
            return self.layout
        if self.spec.heatmaps.limbs == "anatomical":
            return limb_flip_permutation(self.layout)
        joint = self.layout.flip_permutation
        where = {frozenset(limb): k for k, limb in enumerate(self.limbs)}
        perm = [where.get(frozenset((joint[a], joint[b]))) for a, b in self.limbs]
        if None in perm:
            raise MicrogestureError(f"limb set {self.spec.heatmaps.limbs!r} of layout {self.layout.name!r} is not "
                                    "mirror-symmetric: its limb heatmaps cannot be flipped (train with flip_prob=0)")
        return np.array(perm, dtype=np.int64)

    # ------------------------------------------------------------ skeletons
    def pose(self, record, video: VideoClip | None):
        """The clip's keypoints (N, V, 2) and scores (N, V) in the window's layout and in
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

    def _track(self, record) -> Track:
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
