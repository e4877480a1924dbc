"""When windows run and which frames they sample: the live counterpart of evaluation.

A window covers a fixed span of time ending at its last frame. The frames in the span
are sampled with :func:`microgesture.core.sampling.sample_indices` (``train=False``), the
rule evaluation uses, so a live window sees what evaluation saw for a clip of the same
frames. Feed the scheduler every frame the pipeline receives::

    scheduler = WindowScheduler.for_frames(32, fps=source.fps)   # 8 RGB, 32 pose, hop 4
    for frame in source:
        if scheduler.add(frame.frame_id, frame.capture_ns):
            encode_now(frame)              # predicted RGB frame: encode its tokens once
        if scheduler.due():
            scheduler.skip_to_latest()     # live: never queue windows behind inference
            window = scheduler.select()    # window.rgb_ids, window.pose_ids, ...

Which frames are in the span. With ``dt`` the median interval between recent frames,
the window ending at a frame captured at ``t`` holds the frames captured in
``[t - span_ns + dt / 2, t]`` (``Window.start_ns`` .. ``Window.end_ns``, both included,
as :meth:`microgesture.stream.rings.Ring.window` takes them). At a steady frame rate
that is ``round(span_ns / dt)`` frames, and the half-frame margin keeps the count
steady when timestamps jitter by less than a quarter of a frame. Frames the pipeline
never saw (dropped by the source, failed reads) are simply not in the span: the
window samples the frames that are there.

When windows run. The first window is due once a full span is covered (the first frame
lies at least ``span_ns - 1.5 dt`` before the newest: an older frame would not be in
it), then one every ``hop_frames`` frames received. A gap of at least ``span_ns``
between two frames (a reconnect) starts over: the next window waits for a full span
again (call :meth:`reset` to do that yourself).

Falling behind. Windows that became due while inference was busy are pending
(:meth:`pending`); :meth:`select` takes the oldest (file replay: every window runs),
and :meth:`skip_to_latest` first drops all but the newest (live: latency stays bounded)
and reports how many were skipped. The windows kept stay on the hop lattice, so the
predicted RGB frames stay valid.

Reusing RGB frames. With ``hop_frames = span_frames / rgb_frames`` (32 / 8 = 4) the
sampled positions of consecutive windows coincide shifted by one segment: each sampled
frame serves ``rgb_frames`` windows and only one frame in ``hop_frames`` is ever
sampled. :meth:`add` predicts whether the frame just added will be sampled as RGB by
some later window (:meth:`rgb_candidates` lists the frames held that will be), so the
pipeline can encode exactly those frames once, as they arrive, and cache the tokens.
The prediction is exact while the number of frames in a span stays at its steady value
(a steady frame rate, no dropped frames): then every sampled frame was predicted and
every predicted frame gets sampled. It misses when the count changes (frames dropped
upstream, an fps change, jitter near a quarter frame), at the start before the frame
interval is known (give ``fps`` to predict from the first frame), and after
:meth:`reset`. The pipeline must therefore treat a sampled frame without cached
tokens as encode-on-demand and count it; :meth:`stats` counts the scheduler's own view
(``hits``, ``misses``: sampled frames not predicted; ``wasted``: predicted frames that
no window sampled).
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass
from typing import Any

from microgesture.core.errors import MicrogestureError
from microgesture.core.sampling import sample_indices

#: Frame intervals used to estimate the frame rate.
INTERVAL_HISTORY = 64


@dataclass(frozen=True)
class Window:
    """One window to run. ``rgb_ids`` / ``pose_ids``: the sampled frame ids, in time order
    (frames repeat when the span holds fewer frames than are sampled). ``start_ns`` ..
    ``end_ns``: the span (both included; ``end_ns == last_capture_ns``). ``index``: the
    window's number (skipped windows take none). ``skipped``: windows dropped by
    :meth:`WindowScheduler.skip_to_latest` just before this one. ``num_frames``: frames in
    the span."""

    rgb_ids: tuple[int, ...]
    pose_ids: tuple[int, ...]
    start_ns: int
    end_ns: int
    last_frame_id: int
    last_capture_ns: int
    index: int = 0
    skipped: int = 0
    num_frames: int = 0


@dataclass(frozen=True)
class SchedulerStats:
    frames: int       # frames added
    windows: int      # windows selected
    skipped: int      # due windows dropped by skip_to_latest
    resets: int       # fresh starts (gaps of a full span, reset())
    predicted: int    # frames add() predicted to be sampled as RGB
    hits: int         # frames sampled as RGB that were predicted (counted once per frame)
    misses: int       # frames sampled as RGB that were not predicted: encode on demand
    wasted: int       # predicted frames that left the history without being sampled


class _Slot:
    __slots__ = ("seq", "frame_id", "capture_ns", "predicted", "sampled")

    def __init__(self, seq: int, frame_id: int, capture_ns: int):
        self.seq, self.frame_id, self.capture_ns = seq, frame_id, capture_ns
        self.predicted = self.sampled = False


class WindowScheduler:
    """Decides when windows run and which frames they sample (see the module notes).

    ``span_ns``: the time a window covers. ``rgb_frames`` / ``pose_frames``: frames
    sampled from the span for each branch. ``hop_frames``: frames received between
    windows. ``fps``: the nominal rate, used until the frame interval has been measured
    (it lets :meth:`add` predict from the first frame). ``offset``: where in each segment
    the sampled frame lies, as in evaluation (``sample_indices``; 0.5 = the centre).
    ``max_history``: frames kept at most; beyond it pending windows are skipped.
    Not thread-safe: one pipeline thread feeds and selects.
    """

    def __init__(self, span_ns: int, rgb_frames: int = 8, pose_frames: int = 32,
                 hop_frames: int = 4, *, fps: float | None = None, offset: float = 0.5,
                 max_history: int = 4096):
        for name, value in (("rgb_frames", rgb_frames), ("pose_frames", pose_frames),
                            ("hop_frames", hop_frames)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise MicrogestureError(f"{name} must be a whole number >= 1, got {value!r}.")
        if not span_ns or span_ns <= 0:
            raise MicrogestureError(f"span_ns (the time a window covers, in nanoseconds) must be "
                                    f"positive, got {span_ns!r}.")
        if fps is not None and not fps > 0:
            raise MicrogestureError(f"fps must be positive, got {fps}.")
        if not 0 <= offset < 1:
            raise MicrogestureError(f"offset is a fraction of a segment in [0, 1), got {offset!r}.")
        self.span_ns, self.rgb_frames, self.pose_frames = int(span_ns), rgb_frames, pose_frames
        self.hop_frames, self.fps, self.offset = hop_frames, fps, offset
        self.max_history = max(int(max_history), 8)
        self._hist: deque[_Slot] = deque()
        self._intervals: deque[int] = deque(maxlen=INTERVAL_HISTORY)
        self._seq = 0
        self._first_seq: int | None = None
        self._first_ns = 0
        self._next_end: int | None = None
        self._last_id: int | None = None
        self._last_ns = 0
        self._pending_skip = 0
        self._distances: dict[int, tuple[int, ...]] = {}
        self._dt_cache: float | None = 1e9 / fps if fps else None
        self._frames = self._windows = self._skipped = self._resets = 0
        self._predicted = self._hits = self._misses = self._wasted = 0

    @classmethod
    def for_frames(cls, span_frames: int, fps: float, rgb_frames: int = 8, pose_frames: int = 32,
                   hop_frames: int | None = None, **kwargs: Any) -> WindowScheduler:
        """A scheduler whose span holds ``span_frames`` frames at ``fps``; ``hop_frames``
        defaults to ``span_frames // rgb_frames`` (the lattice that reuses RGB frames)."""
        if not fps or fps <= 0:
            raise MicrogestureError(f"fps must be positive, got {fps!r}.")
        if isinstance(span_frames, bool) or not isinstance(span_frames, int) or span_frames < 1:
            raise MicrogestureError(f"span_frames must be a whole number >= 1, got {span_frames!r}.")
        hop = hop_frames if hop_frames is not None else max(1, span_frames // rgb_frames)
        return cls(round(span_frames * 1e9 / fps), rgb_frames, pose_frames, hop, fps=fps, **kwargs)

    # ------------------------------------------------------------------ feeding

    def add(self, frame_id: int, capture_ns: int) -> bool:
        """Record a frame as it arrives (frame ids and times must grow). Returns True if a
        later window is predicted to sample it as RGB: encode it now."""
        frame_id, capture_ns = int(frame_id), int(capture_ns)
        if self._last_id is not None:
            if frame_id <= self._last_id or capture_ns < self._last_ns:
                raise MicrogestureError(
                    f"frames must be added in order: frame {frame_id} at {capture_ns} ns came after "
                    f"frame {self._last_id} at {self._last_ns} ns. Use a new WindowScheduler for "
                    "a new stream.")
            gap = capture_ns - self._last_ns
            if gap >= self.span_ns:
                self._restart()
            else:
                self._intervals.append(gap)
                self._dt_cache = self._estimate_dt()
        seq = self._seq
        self._seq += 1
        self._frames += 1
        if self._first_seq is None:
            self._first_seq, self._first_ns = seq, capture_ns
        slot = _Slot(seq, frame_id, capture_ns)
        self._hist.append(slot)
        self._last_id, self._last_ns = frame_id, capture_ns
        if self._next_end is None and self._covered(capture_ns):
            self._next_end = seq
        slot.predicted = self._predict(seq)
        self._predicted += slot.predicted
        if len(self._hist) > self.max_history:
            self.skip_to_latest()
        self._trim()
        return slot.predicted

    def reset(self) -> None:
        """Start over (e.g. after the source reconnected): the next window waits for a
        full span of new frames. The frame interval estimate is kept."""
        self._restart()

    def _restart(self) -> None:
        for slot in self._hist:
            self._wasted += slot.predicted and not slot.sampled
        self._hist.clear()
        self._first_seq, self._next_end, self._pending_skip = None, None, 0
        self._resets += 1

    # ------------------------------------------------------------------ windows

    def pending(self) -> int:
        """How many windows are due (more than one when inference fell behind)."""
        if self._next_end is None or self._next_end >= self._seq:
            return 0
        return (self._seq - 1 - self._next_end) // self.hop_frames + 1

    def due(self) -> bool:
        """True when a window should run now."""
        return self.pending() > 0

    def skip_to_latest(self) -> int:
        """Drop every due window but the newest (which stays on the hop lattice); returns
        how many were dropped (also reported as ``Window.skipped`` and in ``stats()``)."""
        pending = self.pending()
        if pending <= 1:
            return 0
        skipped = pending - 1
        self._next_end += skipped * self.hop_frames
        self._skipped += skipped
        self._pending_skip += skipped
        self._trim()
        return skipped

    def select(self, frames_in_span: Any = None) -> Window:
        """The oldest due window (call :meth:`skip_to_latest` first to take the newest).

        Samples ``sample_indices(n, count, train=False)`` over the ``n`` frames in its
        span: by default the frames this scheduler was given; or ``frames_in_span``
        (ring entries, frames, or ``(frame_id, capture_ns)`` pairs, e.g. the frames the
        frame ring still holds), of which those inside the span are used."""
        if not self.due():
            raise MicrogestureError("no window is due: call select() only when due() is True "
                                    "(or use next_window(), which returns None then).")
        end_seq = self._next_end
        slots = self._hist
        end = slots[end_seq - slots[0].seq]
        dt = self._dt() or 0.0
        start_ns = min(math.floor(end.capture_ns - self.span_ns + dt / 2) + 1, end.capture_ns)
        own = [s for s in slots if s.seq <= end_seq and s.capture_ns >= start_ns]
        if frames_in_span is None:
            population = [(s.frame_id, s.capture_ns) for s in own]
        else:
            population = sorted(
                (fid, t) for fid, t in map(_id_and_time, frames_in_span)
                if start_ns <= t <= end.capture_ns and fid <= end.frame_id)
            if not population:
                raise MicrogestureError(
                    f"none of the {len(frames_in_span)} frames given lies in the window's span "
                    f"[{start_ns}, {end.capture_ns}] ns (frames up to {end.frame_id}).")
        n = len(population)
        rgb = tuple(population[i][0] for i in sample_indices(n, self.rgb_frames, False,
                                                               offset=self.offset))
        pose = tuple(population[i][0] for i in sample_indices(n, self.pose_frames, False,
                                                                offset=self.offset))
        by_id = {s.frame_id: s for s in own}
        for fid in dict.fromkeys(rgb):
            slot = by_id.get(fid)
            if slot is not None and not slot.sampled:
                slot.sampled = True
                if slot.predicted:
                    self._hits += 1
                else:
                    self._misses += 1
        window = Window(rgb, pose, start_ns, end.capture_ns, end.frame_id, end.capture_ns,
                        index=self._windows, skipped=self._pending_skip, num_frames=n)
        self._windows += 1
        self._pending_skip = 0
        self._next_end += self.hop_frames
        self._trim()
        return window

    def next_window(self, skip: bool = True, frames_in_span: Any = None) -> Window | None:
        """The window to run now, or None when none is due; ``skip=True`` skips to the
        newest due window first (live), ``skip=False`` returns them all in turn (files)."""
        if not self.due():
            return None
        if skip:
            self.skip_to_latest()
        return self.select(frames_in_span)

    # ------------------------------------------------------------------ prediction

    def rgb_candidates(self) -> list[int]:
        """Ids of the frames held that later windows are predicted to sample as RGB
        (frames not received yet have no id: :meth:`add` predicts for them on arrival)."""
        return [s.frame_id for s in self._hist if self._predict(s.seq)]

    @property
    def expected_frames(self) -> int | None:
        """Frames a span holds at the current frame rate (None until it is known)."""
        dt = self._dt()
        return None if dt is None else max(1, round(self.span_ns / dt))

    def _dt(self) -> float | None:
        return self._dt_cache

    def _estimate_dt(self) -> float | None:
        """The frame interval: the mean of the recent intervals that lie within 50 % of
        their median. The median ignores dropped frames (double intervals); the mean of
        consecutive intervals cancels timestamp jitter, which the span's frame count
        (``span_ns / dt``, e.g. 32) would otherwise amplify."""
        if not self._intervals:
            return 1e9 / self.fps if self.fps else None
        median = statistics.median_low(self._intervals)  # an interval itself: never none usable
        if median <= 0:
            return 1e9 / self.fps if self.fps else None
        usable = [x for x in self._intervals if 0.5 * median <= x <= 1.5 * median]
        return sum(usable) / len(usable)

    def _covered(self, t_end: int) -> bool:
        dt = self._dt()
        return dt is not None and t_end - self._first_ns >= self.span_ns - 1.5 * dt

    def _predict(self, seq: int) -> bool:
        n = self.expected_frames
        if n is None or self._first_seq is None:
            return False
        if self._next_end is not None:
            first_end = self._next_end
        else:   # before the first window: it should end when the span holds n frames
            first_end = max(self._first_seq + n - 1, self._seq)
        distances = self._distances.get(n)
        if distances is None:
            positions = sample_indices(n, self.rgb_frames, False, offset=self.offset)
            distances = self._distances[n] = tuple(sorted({n - 1 - int(p) for p in positions}))
        for d in distances:
            k = seq + d - first_end
            if k >= 0 and k % self.hop_frames == 0:
                return True
        return False

    def _trim(self) -> None:
        """Forget frames no pending or later window can hold."""
        if self._next_end is None or not self._hist:
            return
        if self._next_end < self._seq:
            keep_from = self._hist[self._next_end - self._hist[0].seq].capture_ns - self.span_ns
        else:
            keep_from = self._last_ns - self.span_ns
        while self._hist and self._hist[0].capture_ns < keep_from:
            slot = self._hist.popleft()
            self._wasted += slot.predicted and not slot.sampled

    # ------------------------------------------------------------------ reporting

    def stats(self) -> SchedulerStats:
        return SchedulerStats(self._frames, self._windows, self._skipped, self._resets,
                              self._predicted, self._hits, self._misses, self._wasted)

    def __repr__(self) -> str:
        return (f"WindowScheduler(span_ns={self.span_ns}, rgb_frames={self.rgb_frames}, "
                f"pose_frames={self.pose_frames}, hop_frames={self.hop_frames}, "
                f"pending={self.pending()})")


def _id_and_time(item: Any) -> tuple[int, int]:
    if hasattr(item, "frame_id") and hasattr(item, "capture_ns"):
        return int(item.frame_id), int(item.capture_ns)
    frame_id, capture_ns = item
    return int(frame_id), int(capture_ns)
