"""Pose estimation behind one small interface, and skeleton extraction from media.

An estimator turns one RGB frame into a :class:`Pose` (pixel keypoints and scores in
a named layout, see ``core.layouts``). Three come with microgesture:

- :class:`MediaPipePose`: MediaPipe's legacy ``solutions`` API, which works offline
  because mediapipe 0.10.14-0.10.21 ship its models inside the wheel. Holistic (pose
  + both hands, layout ``mediapipe-holistic75``) by default, Pose alone
  (``mediapipe33``) with ``hands=False``.
- :class:`TasksPose`: the Tasks API ``PoseLandmarker`` from a ``.task`` model file
  you provide (newer mediapipe releases ship no models).
- :class:`RecordedPose`: replays skeletons from a file (our JSONL or iMiGUE's CSV),
  for tests, demos and datasets that come with skeletons.

:func:`create_estimator` builds one from a short spec string (``mediapipe``,
``mediapipe-pose``, ``tasks:PATH``, ``recorded:PATH``) and
:func:`extract_skeletons` runs one over a video, an image or a folder and writes
skeleton JSONL (``microgesture pose`` on the command line).
"""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from . import layouts
from .errors import MicrogestureError, UnknownNameError, did_you_mean
from .progress import Progress
from .skeleton_io import iter_jsonl, read_imigue_csv, write_jsonl
from .video import open_media, validate_frame

MEDIAPIPE_PIP = "pip install 'mediapipe>=0.10.14,<0.10.22'"
# Files of the legacy solutions that must be inside the wheel (nothing may download).
_POSE_MODELS = ("pose_detection/pose_detection.tflite", "pose_landmark/pose_landmark_full.tflite")
_HOLISTIC_MODELS = _POSE_MODELS + (
    "holistic_landmark/holistic_landmark_cpu.binarypb", "holistic_landmark/hand_recrop.tflite",
    "hand_landmark/hand_landmark_full.tflite", "face_landmark/face_landmark.tflite")


@dataclass(frozen=True)
class Pose:
    """One person's skeleton in one frame.

    ``keypoints`` (V, 2) float32 pixels (x right, y down; NaN where unknown),
    ``scores`` (V,) float32 in [0, 1] (0 = missing joint), ``layout`` names the joint
    order, ``width``/``height`` are the frame's size, ``timestamp_ns`` its capture time
    (monotonic nanoseconds).
    """

    keypoints: np.ndarray
    scores: np.ndarray
    layout: str
    width: int
    height: int
    timestamp_ns: int

    @property
    def found(self) -> bool:
        """True when any joint was found (a person is in the frame)."""
        return bool(self.scores.size and self.scores.max() > 0)

    @classmethod
    def empty(cls, layout: str, width: int, height: int, timestamp_ns: int) -> "Pose":
        """No person: every score 0 and every coordinate NaN."""
        v = layouts.get_layout(layout).num_joints
        return cls(np.full((v, 2), np.nan, np.float32), np.zeros(v, np.float32), layout,
                   width, height, timestamp_ns)


@runtime_checkable
class PoseEstimator(Protocol):
    """What the rest of microgesture needs from a pose estimator.

    Implementations are context managers (``with create_estimator(...) as est:``).
    """

    layout: str

    def estimate(self, image: np.ndarray, timestamp_ns: int) -> Pose:
        """The pose in ``image`` (RGB uint8, (H, W, 3)) captured at ``timestamp_ns``."""
        ...

    def close(self) -> None:
        ...


class _Estimator:
    """Context-manager plumbing and the timestamp check of the video modes."""

    layout: str
    video: bool = True
    _last_ts: int | None = None

    def _check_timestamp(self, timestamp_ns: int) -> None:
        if self.video and self._last_ts is not None and timestamp_ns <= self._last_ts:
            raise MicrogestureError(
                f"{type(self).__name__} in video mode needs increasing timestamps: got "
                f"{timestamp_ns} ns after {self._last_ts} ns. Pass each frame's capture time "
                "(time.monotonic_ns()), or use video=False for unrelated images.")
        self._last_ts = timestamp_ns

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _import_mediapipe():
    try:
        import mediapipe
    except ImportError:
        raise MicrogestureError(f"MediaPipe is not installed; install it with `{MEDIAPIPE_PIP}` "
                                "(those releases ship the pose models).") from None
    return mediapipe


def _missing_models(mp, files) -> list[str]:
    root = Path(mp.__file__).parent / "modules"
    return [f for f in files if not (root / f).is_file()]


def holistic_available() -> bool:
    """True when the installed mediapipe ships every model Holistic needs (no download)."""
    mp = _import_mediapipe()
    return hasattr(mp, "solutions") and not _missing_models(mp, _HOLISTIC_MODELS)


class MediaPipePose(_Estimator):
    """MediaPipe's legacy solutions API: Holistic (pose + hands) or Pose alone.

    - ``hands=True``: Holistic, layout ``mediapipe-holistic75`` (33 pose landmarks, then
      21 left-hand and 21 right-hand landmarks: the person's own left and right, which
      give the fingertips). Falls back to Pose alone, with a warning, when the
      installed mediapipe lacks Holistic's models.
    - ``hands=False``: Pose alone, layout ``mediapipe33``.
    - ``video=True``: tracking mode (``static_image_mode=False``) for consecutive frames
      of one video, with increasing timestamps; ``video=False`` for unrelated images.

    Only ``model_complexity=1`` (the full model) is available: the lite (0) and heavy
    (2) models are not in the wheel and MediaPipe would try to download them.
    Scores: pose landmark visibility; hand landmarks 1.0 when the hand was found,
    else 0. No person: all scores 0.
    """

    def __init__(self, hands: bool = True, video: bool = True, min_confidence: float = 0.5,
                 model_complexity: int = 1):
        if model_complexity != 1:
            raise MicrogestureError(
                f"model_complexity={model_complexity} is not available offline: MediaPipe "
                "downloads the lite (0) and heavy (2) models at first use; only the full "
                "model (1) ships inside the mediapipe wheel. Use model_complexity=1.")
        if not 0.0 <= min_confidence <= 1.0:
            raise MicrogestureError(f"min_confidence must be in [0, 1], got {min_confidence}.")
        mp = _import_mediapipe()
        if not hasattr(mp, "solutions"):
            raise MicrogestureError(
                f"mediapipe {getattr(mp, '__version__', '?')} has no legacy solutions API; "
                f"install a release that ships the models (`{MEDIAPIPE_PIP}`) or use a Tasks "
                "model file (estimator 'tasks:PATH').")
        missing = _missing_models(mp, _POSE_MODELS)
        if missing:
            raise MicrogestureError(
                f"mediapipe {mp.__version__} does not ship the pose models ({', '.join(missing)}) "
                f"and cannot download them here; `{MEDIAPIPE_PIP}`, or use 'tasks:PATH'.")
        if hands and _missing_models(mp, _HOLISTIC_MODELS):
            warnings.warn(f"mediapipe {mp.__version__} lacks Holistic's models; using Pose "
                          "alone (layout mediapipe33, no fingertips).", stacklevel=2)
            hands = False
        self.hands, self.video = hands, video
        options = dict(static_image_mode=not video, model_complexity=1, smooth_landmarks=True,
                       enable_segmentation=False, min_detection_confidence=min_confidence,
                       min_tracking_confidence=min_confidence)
        if hands:
            self.layout = "mediapipe-holistic75"
            self._solution = mp.solutions.holistic.Holistic(refine_face_landmarks=False, **options)
        else:
            self.layout = "mediapipe33"
            self._solution = mp.solutions.pose.Pose(**options)
        self._last_ts = None

    def estimate(self, image: np.ndarray, timestamp_ns: int) -> Pose:
        validate_frame(image)
        self._check_timestamp(timestamp_ns)
        if self._solution is None:
            raise MicrogestureError("this MediaPipePose is closed; create a new one.")
        height, width = image.shape[:2]
        result = self._solution.process(np.ascontiguousarray(image))
        if result.pose_landmarks is None:
            return Pose.empty(self.layout, width, height, timestamp_ns)
        parts = [_landmarks(result.pose_landmarks, width, height, visibility=True)]
        if self.hands:
            parts += [_landmarks(result.left_hand_landmarks, width, height),
                      _landmarks(result.right_hand_landmarks, width, height)]
        xys = np.concatenate(parts)
        return Pose(np.ascontiguousarray(xys[:, :2]), np.ascontiguousarray(xys[:, 2]),
                    self.layout, width, height, timestamp_ns)

    def reset_tracking(self) -> None:
        """Forget the tracked person (a new video starts): the graph starts a new run with
        the models it has loaded, and timestamps may start over."""
        if self._solution is not None:
            self._solution.reset()
        self._last_ts = None

    def close(self) -> None:
        if self._solution is not None:
            self._solution.close()
            self._solution = None


def _landmarks(landmarks, width: int, height: int, visibility: bool = False,
               count: int = 21) -> np.ndarray:
    """(N, 3) float32 of x px, y px, score; a missing hand is NaN, NaN, 0."""
    if landmarks is None:
        out = np.full((count, 3), np.nan, np.float32)
        out[:, 2] = 0.0
        return out
    lms = getattr(landmarks, "landmark", landmarks)
    out = np.array([(lm.x * width, lm.y * height,
                     (lm.visibility if visibility and lm.visibility is not None else 1.0))
                    for lm in lms], dtype=np.float32)
    out[:, 2] = np.clip(out[:, 2], 0.0, 1.0)
    return out


class TasksPose(_Estimator):
    """MediaPipe Tasks ``PoseLandmarker`` from a ``.task`` model file; layout ``mediapipe33``.

    For users who have a model file (e.g. ``pose_landmarker_full.task`` from MediaPipe's
    model page); newer mediapipe releases ship none. ``video=True`` uses the VIDEO
    running mode (``detect_for_video``), which needs timestamps that increase by at
    least a millisecond; ``video=False`` the IMAGE mode.
    """

    layout = "mediapipe33"

    def __init__(self, model_path, video: bool = True, min_confidence: float = 0.5):
        path = Path(os.fspath(model_path)).expanduser()
        if not path.is_file():
            raise MicrogestureError(
                f"pose model file {path} {'is a folder' if path.is_dir() else 'does not exist'}; "
                "give the path of a MediaPipe PoseLandmarker .task file (e.g. "
                "pose_landmarker_full.task, from MediaPipe's pose landmarker model page).")
        mp = _import_mediapipe()
        try:
            from mediapipe.tasks.python import vision
            from mediapipe.tasks.python.core.base_options import BaseOptions
        except ImportError:
            raise MicrogestureError(f"mediapipe {getattr(mp, '__version__', '?')} has no Tasks "
                                    f"API; `{MEDIAPIPE_PIP}`.") from None
        mode = vision.RunningMode.VIDEO if video else vision.RunningMode.IMAGE
        options = vision.PoseLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(path)), running_mode=mode, num_poses=1,
            min_pose_detection_confidence=min_confidence,
            min_pose_presence_confidence=min_confidence, min_tracking_confidence=min_confidence)
        try:
            self._landmarker = vision.PoseLandmarker.create_from_options(options)
        except (RuntimeError, ValueError, OSError) as e:
            raise MicrogestureError(f"cannot load {path} as a MediaPipe PoseLandmarker model "
                                    f"({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                                    "is it a pose landmarker .task file?") from None
        self._mp, self.path, self.video = mp, path, video
        self._last_ts = None

    def estimate(self, image: np.ndarray, timestamp_ns: int) -> Pose:
        validate_frame(image)
        height, width = image.shape[:2]
        if self._landmarker is None:
            raise MicrogestureError("this TasksPose is closed; create a new one.")
        frame = self._mp.Image(image_format=self._mp.ImageFormat.SRGB,
                               data=np.ascontiguousarray(image))
        if self.video:
            ms = int(timestamp_ns) // 1_000_000
            if self._last_ts is not None and ms <= self._last_ts // 1_000_000:
                raise MicrogestureError(
                    f"TasksPose in video mode needs timestamps that increase by at least 1 ms: "
                    f"got {timestamp_ns} ns after {self._last_ts} ns.")
            self._last_ts = int(timestamp_ns)
            result = self._landmarker.detect_for_video(frame, ms)
        else:
            result = self._landmarker.detect(frame)
        if not result.pose_landmarks:
            return Pose.empty(self.layout, width, height, timestamp_ns)
        xys = _landmarks(result.pose_landmarks[0], width, height, visibility=True)
        return Pose(np.ascontiguousarray(xys[:, :2]), np.ascontiguousarray(xys[:, 2]),
                    self.layout, width, height, timestamp_ns)

    def close(self) -> None:
        if self._landmarker is not None:
            self._landmarker.close()
            self._landmarker = None


class RecordedPose(_Estimator):
    """Replays skeletons from a file: our JSONL (``.jsonl``) or iMiGUE's raw CSV (``.csv``).

    ``estimate(image, timestamp_ns)`` returns the next recorded frame (the image is not
    looked at; the recorded size and pixels are kept) stamped with ``timestamp_ns``;
    ``get(frame_index)`` returns the frame recorded with that frame number, stamped
    with its recorded time. ``layout`` (default: the file's own) converts every frame
    to that layout. Running past the end is an error; ``reset()`` starts over.
    """

    video = False   # replay takes any timestamps

    def __init__(self, path, layout: str | None = None):
        self.path = Path(os.fspath(path))
        if not self.path.is_file():
            raise MicrogestureError(f"recorded skeleton file {self.path} does not exist; give a "
                                    "skeleton .jsonl (from `microgesture pose`) or an iMiGUE "
                                    "_light_hand.csv.")
        if self.path.suffix.lower() == ".csv":
            frames, times, kps, scores, src, width, height = read_imigue_csv(self.path)
            self._records = [(int(f), float(t), kps[i], scores[i], width, height)
                             for i, (f, t) in enumerate(zip(frames, times))]
        else:
            records = list(iter_jsonl(self.path))
            if not records:
                raise MicrogestureError(f"{self.path} holds no frames; nothing to replay.")
            src = records[0].layout
            self._records = [(r.frame, r.t, r.keypoints, r.scores, r.width, r.height)
                             for r in records]
        self.source_layout = src
        self.layout = layouts.get_layout(layout).name if layout else src
        self._by_frame = {r[0]: i for i, r in enumerate(self._records)}
        self._next = 0

    def __len__(self) -> int:
        return len(self._records)

    @property
    def frames(self) -> list[int]:
        """The recorded frame numbers, in order."""
        return [r[0] for r in self._records]

    def _pose(self, i: int, timestamp_ns: int) -> Pose:
        _, _, kps, scores, width, height = self._records[i]
        pose = Pose(kps.copy(), scores.copy(), self.source_layout, width, height,
                    int(timestamp_ns))
        return estimate_to_layout(pose, self.layout)

    def estimate(self, image, timestamp_ns: int) -> Pose:
        if self._next >= len(self._records):
            raise MicrogestureError(f"{self.path} holds {len(self._records)} recorded frames and "
                                    "all were replayed; call reset() to start over, or stop "
                                    "the source at the end of the recording.")
        self._next += 1
        return self._pose(self._next - 1, timestamp_ns)

    def get(self, frame_index: int) -> Pose:
        """The frame recorded with number ``frame_index``, stamped with its recorded time."""
        i = self._by_frame.get(int(frame_index))
        if i is None:
            first, last = self._records[0][0], self._records[-1][0]
            where = ("it was skipped when the skeletons were extracted"
                     if first <= frame_index <= last else "outside the recording")
            raise MicrogestureError(f"{self.path} has no frame {frame_index} ({where}); it "
                                    f"holds frames {first} to {last}.")
        return self._pose(i, int(round(self._records[i][1] * 1e9)))

    def reset(self) -> None:
        self._next = 0


ESTIMATORS = {"mediapipe": "MediaPipe Holistic (pose + hands), offline",
              "mediapipe-pose": "MediaPipe Pose only (no hands), offline",
              "tasks:PATH": "MediaPipe Tasks PoseLandmarker from a .task model file",
              "recorded:PATH": "replay a skeleton .jsonl or an iMiGUE _light_hand.csv"}


def create_estimator(spec: str, *, video: bool = True, min_confidence: float = 0.5):
    """Build a pose estimator from a spec: ``mediapipe``, ``mediapipe-pose``,
    ``tasks:PATH`` or ``recorded:PATH``. ``video=False`` for unrelated still images."""
    spec = str(spec).strip()
    kind, sep, arg = spec.partition(":")
    if not sep:
        if kind == "mediapipe":
            return MediaPipePose(hands=True, video=video, min_confidence=min_confidence)
        if kind == "mediapipe-pose":
            return MediaPipePose(hands=False, video=video, min_confidence=min_confidence)
        if kind in ("tasks", "recorded"):
            raise MicrogestureError(f"pose estimator {kind!r} needs a file: write "
                                    f"'{kind}:PATH'.")
        raise UnknownNameError("pose estimator", spec, ESTIMATORS)
    if kind in ("tasks", "recorded") and not arg:
        raise MicrogestureError(f"pose estimator {spec!r} needs a file after the colon: "
                                f"'{kind}:PATH'.")
    if kind == "tasks":
        return TasksPose(arg, video=video, min_confidence=min_confidence)
    if kind == "recorded":
        return RecordedPose(arg)
    err = UnknownNameError("pose estimator", spec, ESTIMATORS)
    err.args = (f"unknown pose estimator {spec!r}: {kind!r} is not a known prefix."
                f"{did_you_mean(kind + ':PATH', ['tasks:PATH', 'recorded:PATH'])} "
                f"Known pose estimators: {', '.join(ESTIMATORS)}.",)
    raise err


def estimate_to_layout(pose: Pose, layout: str) -> Pose:
    """``pose`` converted to ``layout`` (joints it cannot provide: NaN, score 0)."""
    if pose.layout == layout:
        return pose
    keypoints, scores = layouts.convert(pose.keypoints, pose.scores, pose.layout, layout)
    return dataclasses.replace(pose, keypoints=np.asarray(keypoints, np.float32),
                               scores=np.asarray(scores, np.float32), layout=layout)


# ----------------------------------------------------------------------------- extraction

def extract_skeletons(source, out, layout: str = "coco18", estimator="mediapipe",
                      max_frames: int | None = None, progress: bool = True,
                      fps: float | None = None) -> dict:
    """Estimate the pose in every frame of ``source`` and write skeleton JSONL to ``out``.

    ``source``: anything :func:`~microgesture.core.video.open_media` reads; images and
    folders run the estimator in still-image mode, videos and cameras in tracking mode.
    ``estimator``: a spec for :func:`create_estimator`, or a ready estimator (not
    closed here). ``layout``: the layout written (converted with ``layouts.convert``).
    Frames that cannot be decoded are skipped and reported. Ctrl-C stops early and
    keeps what was written. Returns a summary dict: ``frames`` written,
    ``frames_with_person``, ``skipped`` frames and ``skipped_reasons``, ``seconds``
    (wall time, loading the estimator included), ``ms_per_frame`` (seconds / frames)
    and ``pose_ms_median`` (the estimator alone), ``interrupted`` (Ctrl-C).
    """
    layouts.get_layout(layout)   # a wrong name fails before any work
    if max_frames is not None and max_frames < 1:
        raise MicrogestureError(f"max_frames must be at least 1, got {max_frames}.")
    started = time.perf_counter()
    with open_media(source, fps=fps) as reader:
        video = reader.kind in ("video", "camera")
        own = isinstance(estimator, str)
        est = create_estimator(estimator, video=video) if own else estimator
        try:
            src_layout = est.layout
            v = layouts.get_layout(src_layout).num_joints
            layouts.convert(np.zeros((v, 2), np.float32), np.zeros(v, np.float32), src_layout,
                            layout)   # an impossible conversion fails before any work
            total = reader.frame_count
            if max_frames is not None:
                total = min(total, max_frames) if total else max_frames
            bar = Progress("pose", total, "frames", rate="fps", enabled=progress)
            written = persons = 0
            pose_ms: list[float] = []
            last_ts, interrupted = None, False
            with write_jsonl(out) as writer:
                try:
                    for frame in reader:
                        if max_frames is not None and written >= max_frames:
                            break
                        ts = int(round(frame.time_s * 1e9))
                        if last_ts is not None and ts <= last_ts:
                            ts = last_ts + 1   # equal or backwards stamps in a broken file
                        last_ts = ts
                        t0 = time.perf_counter()
                        pose = est.estimate(frame.image, ts)
                        pose_ms.append((time.perf_counter() - t0) * 1e3)
                        writer.write(frame.index, frame.time_s, estimate_to_layout(pose, layout))
                        written += 1
                        persons += pose.found
                        bar.update(written)
                except KeyboardInterrupt:
                    interrupted = True
            bar.finish(written)
        finally:
            if own:
                est.close()
    seconds = time.perf_counter() - started
    return {
        "source": str(source), "out": str(out), "kind": reader.kind,
        "estimator": estimator if own else type(est).__name__,
        "estimator_layout": src_layout, "layout": layout,
        "width": reader.width, "height": reader.height, "fps": reader.fps,
        "frames": written, "frames_with_person": int(persons),
        "skipped": reader.num_skipped,
        "skipped_reasons": [f"frame {s.index}" + (f" (+{s.count - 1} more)" if s.count > 1 else "")
                            + f": {s.reason}" for s in reader.skipped],
        "seconds": round(seconds, 3),
        "ms_per_frame": round(seconds * 1e3 / written, 2) if written else 0.0,
        "pose_ms_median": round(float(np.median(pose_ms)), 2) if pose_ms else 0.0,
        "interrupted": interrupted,
    }
