"""The streaming 3D CNN: each pose segment is encoded once and every window reuses it.

A model exported with ``pose.windows="segments"`` (the paper's aligned windows) computes
RGB frame r's pose feature from its own segment of P/R pose frames only (zero padding at
the segment's edges; ``core.clip_mg.SkeletonEncoder3D``). Its bundle carries a
``pose_segment`` stage, ``heatmaps (N, V, P/R, H, W) -> pose (N, D)``, and a window's pose
input (B, R, D) is its R segments' features stacked in time order, which equals the
whole-window ``pose`` stage (tested at 1e-4 in fp32).

Windows overlap: at the default hop (one RGB stride) consecutive windows share R - 1
segments shifted by one, so a window runs the 3D CNN on ONE new segment instead of R.
A segment is identified by its pose frame ids (a frame's heatmap is fixed when it
arrives), so reuse is exact whatever the scheduler samples: a segment whose frames differ
from every cached one (a dropped frame, another hop) is simply computed. Bundles without
the stage (``strided`` windows, bundles made before it) run the whole-window ``pose``
stage as before.

:class:`SegmentCache` belongs to one stream (the frame thread prepares, the window thread
fills it); :func:`segment_pose` runs the new segments of a batch of windows in one call.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from microgesture.core.errors import MicrogestureError


def pose_stages(manifest: dict[str, Any], segment_cache: bool = True) -> tuple[str, ...]:
    """The stages a stream opens, in run order: with ``segment_cache`` and a per-segment
    stage (``pose_segment``), that stage instead of the ones it replaces; else every stage
    but the per-segment ones."""
    from microgesture.stream.stages import stage_specs

    specs = stage_specs(manifest)
    segmented = segment_cache and any(s.role == "per-segment" for s in specs)
    replaced = {r for s in specs if s.role == "per-segment" for r in s.replaces} if segmented else set()
    return tuple(s.name for s in specs if s.name not in replaced
                 and (segmented or s.role != "per-segment"))


@dataclass
class _Segment:
    key: tuple[int, ...]                # the segment's pose frame ids
    feature: np.ndarray | None          # (D,) when cached
    heatmaps: np.ndarray | None         # (V, F, H, W) when it has to be computed


@dataclass
class SegmentJob:
    """One window's segments, in time order, and the cache they come from and go to."""

    cache: SegmentCache
    segments: list[_Segment]


class SegmentCache:
    """Pose features of one stream's recent segments, keyed by their pose frame ids
    (at most ``capacity``, oldest forgotten first). Thread-safe."""

    def __init__(self, capacity: int = 32):
        self.capacity = max(1, int(capacity))
        self._features: OrderedDict[tuple[int, ...], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.computed = 0   # segments run through the 3D CNN
        self.reused = 0     # segments of windows taken from the cache

    def get(self, key: tuple[int, ...]) -> np.ndarray | None:
        with self._lock:
            return self._features.get(key)

    def put(self, key: tuple[int, ...], feature: np.ndarray) -> None:
        with self._lock:
            self._features[key] = feature
            self._features.move_to_end(key)
            while len(self._features) > self.capacity:
                self._features.popitem(last=False)
            self.computed += 1

    def prepare(self, pose_ids: Sequence[int], rgb_frames: int,
                heatmap: Callable[[int], np.ndarray]) -> SegmentJob:
        """A window's segments (``pose_ids`` cut into ``rgb_frames`` equal parts): the cached
        features, and the stacked heatmaps (V, F, H, W) of the others (``heatmap(frame_id)``
        gives one frame's (V, H, W))."""
        if rgb_frames < 1 or len(pose_ids) % rgb_frames:
            raise MicrogestureError(f"{len(pose_ids)} pose frames do not cut into {rgb_frames} "
                                    "equal segments")
        f = len(pose_ids) // rgb_frames
        out = []
        for k in range(rgb_frames):
            key = tuple(int(i) for i in pose_ids[k * f:(k + 1) * f])
            feature = self.get(key)
            out.append(_Segment(key, feature, None if feature is not None else
                                np.stack([heatmap(i) for i in key], 1)))
        return SegmentJob(self, out)

    def count_reused(self, n: int = 1) -> None:
        with self._lock:
            self.reused += n

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"pose_segments_computed": self.computed, "pose_segments_reused": self.reused}


def segment_pose(session: Any, jobs: Sequence[Any], input: str = "heatmaps",
                 output: str = "pose") -> np.ndarray:
    """The pose input (B, R, D) of a batch of windows (objects with a ``segments``
    :class:`SegmentJob`): segments cached since the window was prepared are reused, the
    others (each once, however many windows hold it) run through ``session`` (the
    ``pose_segment`` stage) in one call and are cached."""
    todo: dict[tuple[int, tuple[int, ...]], tuple[SegmentCache, np.ndarray]] = {}
    for job in jobs:
        cache = job.segments.cache
        for seg in job.segments.segments:
            if seg.feature is None:
                seg.feature = cache.get(seg.key)
            if seg.feature is None:
                todo.setdefault((id(cache), seg.key), (cache, seg.heatmaps))
            else:
                cache.count_reused()
    fresh: dict[tuple[int, tuple[int, ...]], np.ndarray] = {}
    if todo:
        heatmaps = np.ascontiguousarray(np.stack([h for _, h in todo.values()]), dtype=np.float32)
        features = session.run({input: heatmaps})[output]
        for (where, (cache, _)), feature in zip(todo.items(), features):
            cache.put(where[1], feature)
            fresh[where] = feature
    out = []
    for job in jobs:
        cache = job.segments.cache
        for seg in job.segments.segments:
            if seg.feature is None:
                seg.feature = fresh[(id(cache), seg.key)]
            seg.heatmaps = None  # the window's heatmaps are not kept once it ran
        out.append(np.stack([seg.feature for seg in job.segments.segments]))
    return np.stack(out).astype(np.float32, copy=False)
