"""Why a stream published no gesture event: no silent dead ends.

A stream that ends (or, live, runs for a while) without a single gesture event
says why, in one of these words, with the numbers behind it:

``no_frames``        the source delivered no frame at all;
``no_person``        most frames had no person (the pose estimator found no joint), or
                     most windows were skipped for it (``windows_no_person`` in the stats);
``too_few_windows``  no window ran: the stream was shorter than one window span;
``below_threshold``  windows ran but the highest smoothed score stayed at or under the
                     start threshold (the score, its class and the threshold are given);
``too_short``        a score passed the start threshold but never lasted the minimum
                     duration (the candidates were suppressed);
``other``            none of these (e.g. only the background class scored high).

:class:`SilenceWatch` counts what it needs as frames and windows go by (pure
logic, no clock of its own); :meth:`SilenceWatch.report` builds the explanation
from its counts and the stream's stats snapshot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

REASONS = ("no_frames", "no_person", "too_few_windows", "below_threshold", "too_short", "other")


@dataclass
class SilenceWatch:
    """Counts since the last gesture event (or the start) of one stream."""

    labels: Sequence[str]
    start_threshold: float
    min_duration_s: float
    span_s: float
    fps: float = 30.0
    frames: int = 0
    frames_no_person: int = 0
    windows: int = 0
    best_score: float = 0.0
    best_label: str | None = None
    best_frame: int | None = None
    since_ns: int | None = None        # capture time of the first frame counted
    last_ns: int | None = None         # and of the last one
    suppressed_base: int = 0           # the smoother's suppressed count at the last event
    next_report_ns: int | None = None  # live: when the next periodic report is due

    def frame(self, capture_ns: int, person: bool) -> None:
        if self.since_ns is None:
            self.since_ns = capture_ns
        self.last_ns = capture_ns
        self.frames += 1
        self.frames_no_person += not person

    def window(self, smoothed: np.ndarray | None, last_frame: int) -> None:
        self.windows += 1
        if smoothed is not None and smoothed.size:
            top = int(np.argmax(smoothed))
            if smoothed[top] > self.best_score or self.best_label is None:
                self.best_score, self.best_label, self.best_frame = float(smoothed[top]), self.labels[top], last_frame

    def gesture(self, suppressed: int = 0) -> None:
        """A gesture event was published (``suppressed``: the smoother's count now): count again."""
        self.suppressed_base = int(suppressed)
        self.frames = self.frames_no_person = self.windows = 0
        self.best_score, self.best_label, self.best_frame = 0.0, None, None
        self.since_ns = self.last_ns = self.next_report_ns = None

    def due(self, now_ns: int, period_s: float) -> bool:
        """Live: True once every ``period_s`` seconds of stream time without an event."""
        if period_s <= 0 or self.since_ns is None:
            return False
        if self.next_report_ns is None:
            self.next_report_ns = self.since_ns + round(period_s * 1e9)
        if now_ns < self.next_report_ns:
            return False
        self.next_report_ns = now_ns + round(period_s * 1e9)
        return True

    def report(self, stats: Mapping | None = None, suppressed: int = 0, now_ns: int | None = None) -> dict:
        """Why no event: ``reason`` (one of :data:`REASONS`), ``message`` and the numbers.
        ``suppressed``: the smoother's count of suppressed candidates, since the stream began."""
        stats = stats or {}
        suppressed = max(0, int(suppressed) - self.suppressed_base)
        now_ns = self.last_ns if now_ns is None else now_ns
        no_person_windows = int(stats.get("windows_no_person", 0) or 0)
        seconds = (None if now_ns is None or self.since_ns is None
                   else round(max(0, now_ns - self.since_ns) / 1e9, 3))
        out = {"frames": self.frames, "frames_no_person": self.frames_no_person, "windows": self.windows,
               "windows_no_person": no_person_windows, "best_score": round(self.best_score, 4),
               "best_label": self.best_label, "best_frame": self.best_frame,
               "start_threshold": self.start_threshold, "min_duration_s": self.min_duration_s,
               "suppressed": int(suppressed), "seconds": seconds}
        out["reason"], out["message"] = self._explain(no_person_windows, suppressed)
        return out

    def _explain(self, no_person_windows: int, suppressed: int) -> tuple[str, str]:
        if self.frames == 0:
            return "no_frames", "the source delivered no frame."
        if (self.frames_no_person >= 0.9 * self.frames
                or (no_person_windows and no_person_windows >= self.windows)):
            return "no_person", (
                f"no person detected: {self.frames_no_person} of {self.frames} frames had no pose"
                + (f" and {no_person_windows} windows were skipped for it" if no_person_windows else "")
                + "; check that a person is in view and the pose estimator (--pose) suits the video.")
        if self.windows == 0:
            return "too_few_windows", (
                f"too few windows: none ran; {self.frames} frames ({self.frames / self.fps:.1f} s) but a "
                f"window needs {self.span_s:.2f} s of video (the bundle's span, or --span).")
        if self.best_score <= self.start_threshold:
            return "below_threshold", (
                f"the highest score was {self.best_score:.2f} ({self.best_label}, window ending at frame "
                f"{self.best_frame}) over {self.windows} windows, not above the start threshold "
                f"{self.start_threshold:g} (--start-threshold); lower it, or tune it with "
                f"microgesture eval-online BUNDLE --data DIR --tune.")
        if suppressed:
            return "too_short", (
                f"scores passed the start threshold {self.start_threshold:g} (highest {self.best_score:.2f}, "
                f"{self.best_label}) but never for --min-duration {self.min_duration_s:g} s: {suppressed} "
                "candidates were suppressed; lower --min-duration.")
        return "other", (f"the highest score was {self.best_score:.2f} ({self.best_label}) over "
                         f"{self.windows} windows, yet no gesture started (a background class?).")
