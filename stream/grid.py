"""Windows on a sampling grid fixed in stream time: every sampled frame is known ahead.

:class:`stream.scheduler.WindowScheduler` samples each window from the frames that are
there, so a dropped frame shifts every later sample of the windows that hold it. Here
the grid is fixed in stream time instead: frame slot ``s`` is the nominal frame captured
``s`` frame intervals (``1 / fps``) after the stream's first frame, a window covers
``span_frames`` slots and window ``w`` starts at slot ``w * hop_frames``. Inside a window
the RGB and pose slots are those evaluation samples from a clip of ``span_frames``
frames (``core.sampling.sample_clip``, ``train=False``), so on a steady stream a live
window samples exactly the frames evaluation samples from the same frames (tested).

Consequences:

- which slots the model will look at is known before the frame arrives
  (:meth:`SamplingGrid.is_rgb`, :meth:`SamplingGrid.is_pose`): every sampled RGB frame can
  be encoded once and every sampled pose frame estimated once, whatever the hop (a slot
  several windows sample is still one frame), and pose need not be estimated on the
  other frames (:meth:`SamplingGrid.wants_pose`: pose slots, plus RGB slots, whose
  joints guide the head);
- a dropped frame shifts nothing: its slot stays empty and the window takes the nearest
  frame present in its span for it (``GridWindow.substituted`` counts them);
- the default hop is one RGB stride (``span_frames / rgb_frames``, rounded): each window
  then adds one new RGB frame and one new pose segment to the ones before it.

A frame is put in the slot nearest its capture time; with a camera whose real rate
differs from ``fps`` the slots slowly drift against the frames: an occasional slot is
empty (taken as dropped) or two frames meet in one (the first is kept).
"""

from __future__ import annotations

from dataclasses import dataclass

from microgesture.core.errors import MicrogestureError
from microgesture.core.sampling import sample_clip
from microgesture.stream.scheduler import SchedulerStats, Window


@dataclass(frozen=True)
class GridWindow(Window):
    """A :class:`stream.scheduler.Window` on the grid: window ``index`` covers slots
    ``[first_slot, first_slot + span_frames)``; ``substituted``: sampled slots that had no
    frame and took the nearest one."""

    first_slot: int = 0
    substituted: int = 0


class SamplingGrid:
    """The slots the model samples (see the module notes). ``offset``: where in each
    segment evaluation samples (0.5 = the centre)."""

    def __init__(self, span_frames: int, rgb_frames: int = 8, pose_frames: int = 32,
                 hop_frames: int | None = None, offset: float = 0.5):
        for name, value in (("span_frames", span_frames), ("rgb_frames", rgb_frames),
                            ("pose_frames", pose_frames)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise MicrogestureError(f"{name} must be a whole number >= 1, got {value!r}.")
        hop = hop_frames if hop_frames is not None else max(1, round(span_frames / rgb_frames))
        if isinstance(hop, bool) or not isinstance(hop, int) or hop < 1:
            raise MicrogestureError(f"hop_frames must be a whole number >= 1, got {hop_frames!r}.")
        self.span_frames, self.rgb_frames, self.pose_frames, self.hop = span_frames, rgb_frames, pose_frames, hop
        rgb, pose = sample_clip(span_frames, rgb_frames, pose_frames, train=False, offset=offset)
        self.rgb_positions = tuple(int(i) for i in rgb)
        self.pose_positions = tuple(int(i) for i in pose)
        self._rgb, self._pose = set(self.rgb_positions), set(self.pose_positions)

    def windows_holding(self, slot: int) -> range:
        """Indices of the windows whose span holds ``slot``."""
        first = max(0, -(-(slot - self.span_frames + 1) // self.hop))
        return range(first, slot // self.hop + 1) if slot >= 0 else range(0)

    def is_rgb(self, slot: int) -> bool:
        return any(slot - w * self.hop in self._rgb for w in self.windows_holding(slot))

    def is_pose(self, slot: int) -> bool:
        return any(slot - w * self.hop in self._pose for w in self.windows_holding(slot))

    def wants_pose(self, slot: int) -> bool:
        """True when the pose estimator must run on this slot's frame: a pose frame, or an
        RGB frame (its joints guide the head and place its crop)."""
        return self.is_pose(slot) or self.is_rgb(slot)

    def window_slots(self, index: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(RGB slots, pose slots) of window ``index``."""
        start = index * self.hop
        return (tuple(start + p for p in self.rgb_positions),
                tuple(start + p for p in self.pose_positions))


class GridScheduler:
    """Feeds frames into the slots of a :class:`SamplingGrid` and hands out windows as their
    last slot passes. ``fps``: the nominal frame rate that fixes the slots. Not thread-safe."""

    def __init__(self, grid: SamplingGrid, fps: float):
        if not fps or fps <= 0:
            raise MicrogestureError(f"fps must be positive, got {fps!r}.")
        self.grid, self.dt_ns = grid, 1e9 / fps
        self.origin_ns: int | None = None
        self._frames: dict[int, tuple[int, int]] = {}   # slot -> (frame id, capture ns)
        self._last_slot = -1
        self._next = 0          # the next window to hand out
        self._skipped_pending = 0
        self.frames = self.duplicates = self.skipped = self.substituted = 0

    def slot(self, capture_ns: int) -> int:
        """The slot of a frame captured at ``capture_ns`` (the first frame fixes slot 0)."""
        if self.origin_ns is None:
            self.origin_ns = int(capture_ns)
        return round((int(capture_ns) - self.origin_ns) / self.dt_ns)

    def wants_pose(self, capture_ns: int) -> bool:
        """Whether a frame captured at ``capture_ns`` needs pose (see :meth:`SamplingGrid.wants_pose`)."""
        return self.grid.wants_pose(self.slot(capture_ns))

    def add(self, frame_id: int, capture_ns: int) -> bool:
        """Record a frame; returns True when its slot is sampled as RGB (encode it now).
        A second frame in an occupied slot, or one in a slot only windows already handed
        out hold, is ignored (counted in ``duplicates``)."""
        s = self.slot(capture_ns)
        self.frames += 1
        if s in self._frames or s < self._next * self.grid.hop:
            self.duplicates += 1
            return False
        self._frames[s] = (int(frame_id), int(capture_ns))
        self._last_slot = max(self._last_slot, s)
        return self.grid.is_rgb(s)

    def tick(self, capture_ns: int) -> None:
        """A frame captured at ``capture_ns`` that no window samples: time moves on (windows
        may become due), nothing is kept."""
        self._last_slot = max(self._last_slot, self.slot(capture_ns))

    def pending(self) -> int:
        """Windows whose last slot has passed and that were not handed out yet. Leading
        windows whose span holds no frame at all (the frame thread fell a whole span
        behind, or the camera stalled) are skipped here: there is nothing to sample."""
        self._skip_empty()
        return self._complete()

    def _complete(self) -> int:
        last_complete = (self._last_slot - self.grid.span_frames + 1) // self.grid.hop
        return max(0, last_complete - self._next + 1) if self._last_slot >= self.grid.span_frames - 1 else 0

    def due(self) -> bool:
        return self.pending() > 0

    def _skip_empty(self) -> None:
        while self._complete() > 0:
            first = self._next * self.grid.hop
            if any(first <= s < first + self.grid.span_frames for s in self._frames):
                return
            self._next += 1
            self.skipped += 1
            self._skipped_pending += 1

    def skip_to_latest(self) -> int:
        """Drop every due window but the newest; returns how many were dropped."""
        skipped = max(0, self.pending() - 1)
        self._next += skipped
        self.skipped += skipped
        self._skipped_pending += skipped
        return skipped

    def select(self) -> GridWindow:
        """The oldest due window; sampled slots without a frame take the nearest frame in
        the window's span (None in the span at all: a MicrogestureError)."""
        if not self.due():
            raise MicrogestureError("no window is due: call select() only when due() is True.")
        index = self._next
        rgb_slots, pose_slots = self.grid.window_slots(index)
        first = index * self.grid.hop
        present = sorted(s for s in self._frames if first <= s < first + self.grid.span_frames)
        if not present:
            raise MicrogestureError(f"window {index} has no frame in its span (slots {first} to "
                                    f"{first + self.grid.span_frames - 1}).")
        substituted = 0

        def frame_at(slot: int) -> int:
            nonlocal substituted
            if slot in self._frames:
                return self._frames[slot][0]
            substituted += 1
            return self._frames[min(present, key=lambda s: (abs(s - slot), s))][0]

        rgb = tuple(frame_at(s) for s in rgb_slots)
        pose = tuple(frame_at(s) for s in pose_slots)
        last = self._frames[present[-1]]
        start = self._frames[present[0]]
        window = GridWindow(rgb, pose, start[1], last[1], last[0], last[1], index=index,
                            skipped=self._skipped_pending, num_frames=len(present),
                            first_slot=first, substituted=substituted)
        self.substituted += substituted
        self._skipped_pending = 0
        self._next += 1
        keep_from = self._next * self.grid.hop
        for s in [s for s in self._frames if s < keep_from]:
            del self._frames[s]
        return window


class GridStreamScheduler:
    """:class:`GridScheduler` behind the interface the pipeline uses with
    ``stream.scheduler.WindowScheduler`` (``add``, ``due``, ``skip_to_latest``, ``select``,
    ``reset``, ``stats``), plus what the grid adds: :meth:`wants_pose` (the pose thread asks
    before estimating) and :meth:`tick` (a frame the grid does not sample: it moves time
    on, nothing is kept). After :meth:`reset` the next frame starts a new grid."""

    def __init__(self, span_frames: int, rgb_frames: int, pose_frames: int,
                 hop_frames: int | None, fps: float):
        self.grid = SamplingGrid(span_frames, rgb_frames, pose_frames, hop_frames)
        self.fps = fps
        self._sched = GridScheduler(self.grid, fps)
        self._frames = self._windows = self._resets = self._predicted = 0
        self._skipped = self._ticks = 0

    def wants_pose(self, capture_ns: int) -> bool:
        return self._sched.wants_pose(capture_ns)

    def add(self, frame_id: int, capture_ns: int) -> bool:
        self._frames += 1
        predicted = self._sched.add(frame_id, capture_ns)
        self._predicted += predicted
        return predicted

    def tick(self, frame_id: int, capture_ns: int) -> None:
        """A frame no window samples arrived: time moves on (windows may become due)."""
        self._frames += 1
        self._ticks += 1
        self._sched.tick(capture_ns)

    def pending(self) -> int:
        return self._sched.pending()

    def due(self) -> bool:
        return self._sched.due()

    def skip_to_latest(self) -> int:
        return self._sched.skip_to_latest()

    def select(self) -> GridWindow:
        self._windows += 1
        return self._sched.select()

    def reset(self) -> None:
        self._resets += 1
        self._skipped += self._sched.skipped  # behind, and windows with no frame at all
        self._sched = GridScheduler(self.grid, self.fps)

    def stats(self) -> SchedulerStats:
        return SchedulerStats(self._frames, self._windows, self._skipped + self._sched.skipped, self._resets,
                              self._predicted, self._predicted, self._sched.substituted, 0)
