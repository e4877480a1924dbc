"""The capture thread of a :class:`~microgesture.stream.sources.source.VideoSource`:
connecting (and skipping what FFmpeg buffered while opening), reading live sources and
files, losing a source and reconnecting with backoff, pacing a file in real time, and
handing each frame to the buffer.

:class:`CaptureLoop` is the reading half of ``VideoSource`` (a base class of it): its
methods run in the capture thread (``_run``) or in ``start()`` (the first connect), and
use the state, counters and status methods that ``VideoSource`` defines."""

from __future__ import annotations

import logging

import numpy as np

from microgesture.core.errors import MicrogestureError
from microgesture.core.video import DEFAULT_VIDEO_FPS, sane_fps
from microgesture.stream.sources.captures import (CAP_PROP_FPS, CAP_PROP_FRAME_COUNT, CAP_PROP_POS_MSEC,
                                                 _good, _to_rgb)
from microgesture.stream.sources.records import LIVE_STALL_S, Frame, StreamState, SystemClock, fmt_size
from microgesture.stream.stall import Stalled, TimedReader

log = logging.getLogger("microgesture.stream.sources")   # one logger name for the package


class _OpenFailed(Exception):
    pass



class CaptureLoop:
    """Reading, losing and reconnecting (see the module notes)."""

    # ----------------------------------------------------------------- connecting

    def _connect(self) -> list[tuple[np.ndarray, int, int]]:
        """Open the capture and read its first frame(s): ``[(rgb, frame_id, read_ns)]``."""
        try:
            cap = self._opener(self._spec.target)
        except Exception as exc:  # noqa: BLE001 - any opener failure is a failed open
            raise _OpenFailed(self._scrub(exc if isinstance(exc, MicrogestureError)
                                          else f"{type(exc).__name__}: {exc}")) from None
        if cap is None or (hasattr(cap, "isOpened") and not cap.isOpened()):
            if cap is not None:
                cap.release()
            raise _OpenFailed({"webcam": "the camera could not be opened",
                               "network": "the stream could not be opened",
                               "folder": "the folder has no image files"}.get(
                                   self.kind, "the file could not be opened"))
        self._cap = cap
        if self._stall_s:  # live: a read that hangs longer than the stall limit is a loss
            self._reader = TimedReader(cap, name=f"microgesture-read-{self.stream_id}")
        fps = self._fps_override or sane_fps(cap.get(CAP_PROP_FPS))
        if fps:
            self._fps = fps
        elif not self.live:
            self._fps = DEFAULT_VIDEO_FPS
        if not self.live:
            self._frame_count = max(0, int(cap.get(CAP_PROP_FRAME_COUNT) or 0))
            self._t0_ns = self._clock.monotonic_ns()
        for _ in range(self._max_failed):
            if self._stop_event.is_set():
                break
            try:
                ok, image = self._read_frame(cap)
            except Stalled as exc:
                self._release()
                raise _OpenFailed(f"connected but {exc} (the stall limit)") from None
            read_ns = self._clock.monotonic_ns()
            frame_id = self._next_id
            self._next_id += 1
            rgb = _to_rgb(image) if _good(ok, image) else None
            if rgb is not None:
                if not self.live and self._fail_from is not None:
                    self._drop("read_failed", frame_id - self._fail_from)
                    self._fail_from = None
                old_size, self._size = self._size, (rgb.shape[1], rgb.shape[0])
                self._connect_prev_size = old_size
                first = [(rgb, frame_id, read_ns)]
                if not self.live:
                    return first
                try:
                    return self._skip_backlog(cap, first)
                except Stalled as exc:
                    self._release()
                    raise _OpenFailed(f"connected but {exc} (the stall limit)") from None
            if self.live:
                self._next_id -= 1     # a camera not yet delivering is not a gap
            elif self._fail_from is None:
                self._fail_from = frame_id
            if self._frame_count and frame_id + 1 >= self._frame_count:
                break
        self._release()
        what = ("opened but delivered no frame" if self.live
                else "no frame could be decoded")
        raise _OpenFailed(f"{what} ({self._max_failed} attempts)")

    def _skip_backlog(self, cap, frames: list) -> list:
        """Catch up with a live stream that was just (re)connected.

        FFmpeg buffers a second or two of an RTSP stream while it opens it; those frames
        then come out of ``read()`` at once, stale, with capture times squeezed together.
        A frame is stale when the next one is already waiting: its read returns in less
        than half the interval the stream's own timestamps (``CAP_PROP_POS_MSEC``)
        advanced by. Stale frames are dropped (cause ``stale``) until two reads in a row
        wait for their frame (one slow decode on a busy machine is not the live edge), for
        at most about 4 s of frames. Without stream timestamps nothing is dropped
        (webcams, fakes)."""
        pending, prev_pos = frames, cap.get(CAP_PROP_POS_MSEC) or 0.0
        unknown = waited = stale = 0
        for _ in range(10 + int(4 * (self._fps or DEFAULT_VIDEO_FPS))):
            if self._stop_event.is_set():
                break
            t0 = self._clock.monotonic_ns()
            ok, image = self._read_frame(cap)
            t1 = self._clock.monotonic_ns()
            pos = cap.get(CAP_PROP_POS_MSEC) or 0.0
            frame_id = self._next_id
            self._next_id += 1
            rgb = _to_rgb(image) if _good(ok, image) else None
            if rgb is None:
                self._drop("read_failed")
                self._fail_run = 1
                break
            step_ns, prev_pos = (pos - prev_pos) * 1e6, pos
            if step_ns > 0 and t1 - t0 < step_ns / 2:       # it was waiting: the rest is stale
                self._drop("stale", len(pending))
                stale += len(pending)
                pending, unknown, waited = [(rgb, frame_id, t1)], 0, 0
                continue
            pending.append((rgb, frame_id, t1))
            if step_ns > 0:
                waited += 1
                if waited >= 2:                             # two reads waited: we are live
                    break
            else:
                unknown += 1
                if unknown >= 3:                            # no stream timestamps: keep all
                    break
        if stale:
            log.debug("%s: skipped %d stale frames after connecting", self.stream_id, stale)
        return pending

    def _read_frame(self, cap):
        """``cap.read()``, within the stall limit for live sources (:class:`Stalled`)."""
        if self._reader is None:
            return cap.read()
        return self._reader.read(self._stall_s, cancel=self._stop_event)

    def _release(self) -> None:
        reader, self._reader = self._reader, None
        cap, self._cap = self._cap, None
        if reader is not None:  # its thread releases the capture (after a stuck read returns)
            reader.close()
            return
        if cap is not None:
            try:
                cap.release()
            except Exception as exc:  # noqa: BLE001 - releasing must not fail the caller
                log.warning("%s: releasing the capture failed: %s", self._display, self._scrub(exc))

    # ----------------------------------------------------------------- thread

    def _run(self) -> None:
        try:
            while not self._stop_event.is_set():
                state = self._state
                if state is StreamState.CONNECTED:
                    self._step_live() if self.live else self._step_file()
                elif state is StreamState.LOST:
                    self._release()
                    if self._backoff is None:
                        self._transition(StreamState.ENDED,
                                         "connection lost and reconnecting is off (reconnect=False)")
                        break
                    if not self._reconnect():
                        break
                else:
                    break
        except Exception as exc:  # noqa: BLE001 - report, never die silently
            message = self._scrub(f"{type(exc).__name__}: {exc}")
            log.error("%s: the capture thread failed: %s", self._display, message)
            self._transition(StreamState.ENDED, f"capture failed: {message}")
        finally:
            self._release()
            if self._stop_event.is_set():
                self._transition(StreamState.STOPPED, "stopped by stop()")
            self._buffer.close()

    def _step_live(self) -> None:
        t0 = self._clock.monotonic_ns()
        try:
            ok, image = self._read_frame(self._cap)
        except Stalled:
            self._stalled(t0)
            return
        read_ns = self._clock.monotonic_ns()
        frame_id = self._next_id
        self._next_id += 1
        rgb = _to_rgb(image) if _good(ok, image) else None
        if rgb is None:
            self._drop("read_failed")
            self._fail_run += 1
            if self._fail_run == 1:
                log.debug("%s: read failed (frame %d)", self._display, frame_id)
            stalled_s = (read_ns - self._last_frame_ns) / 1e9 if self._last_frame_ns else 0.0
            if self._fail_run >= self._max_failed or stalled_s >= (self._stall_s or LIVE_STALL_S):
                self._transition(StreamState.LOST, f"{self._fail_run} failed reads in a row "
                                 f"(frames {frame_id - self._fail_run + 1}-{frame_id}), "
                                 f"{stalled_s:.1f} s without a frame")
                self._fail_run = 0
            return
        self._fail_run = 0
        if self._stall_s and read_ns - t0 > max(0.5, 3 / (self._fps or DEFAULT_VIDEO_FPS)) * 1e9:
            # the camera paused and came back: what it buffered meanwhile comes out at
            # once and is stale, not live; skip it as after a connect
            try:
                frames = self._skip_backlog(self._cap, [(rgb, frame_id, read_ns)])
            except Stalled:
                self._stalled(read_ns)
                return
            for frame in frames:
                self._deliver(*frame)
            return
        self._deliver(rgb, frame_id, read_ns)

    def _stalled(self, since_ns: int) -> None:
        """A read hung past the stall limit: the source is LOST (and reconnects)."""
        if self._stop_event.is_set():
            return
        last = self._last_frame_ns or since_ns
        quiet_s = (self._clock.monotonic_ns() - last) / 1e9
        self._transition(StreamState.LOST, f"the source stopped sending: no frame for "
                         f"{quiet_s:.1f} s (stall limit {self._stall_s:g} s)")
        self._fail_run = 0

    def _step_file(self) -> None:
        ok, image = self._cap.read()
        frame_id = self._next_id
        self._next_id += 1
        rgb = _to_rgb(image) if _good(ok, image) else None
        if rgb is None:
            if self._fail_from is None:
                self._fail_from = frame_id
            count = self._frame_count
            if (count and frame_id >= count) or frame_id - self._fail_from + 1 >= self._max_failed:
                end = self._fail_from
                detail = f"end of {self._display} after {end} frames"
                if count and end < count:
                    self._drop("truncated", count - end)
                    detail += (f"; its header announces {count} (truncated or damaged file: "
                               f"{count - end} frames missing)")
                self._transition(StreamState.ENDED, detail)
            return
        if self._fail_from is not None:
            self._drop("read_failed", frame_id - self._fail_from)
            self._fail_from = None
        self._deliver(rgb, frame_id, self._clock.monotonic_ns())

    def _reconnect(self) -> bool:
        """Retry with backoff until connected (True), given up or stopped (False)."""
        backoff = self._backoff
        lost_ns = self._last_frame_ns or self._clock.monotonic_ns()
        attempt, last_error = 0, ""
        while not self._stop_event.is_set():
            attempt += 1
            if backoff.max_attempts is not None and attempt > backoff.max_attempts:
                self._transition(StreamState.ENDED, f"gave up reconnecting after "
                                 f"{backoff.max_attempts} attempts (last error: {last_error})")
                return False
            delay = backoff.delay(attempt, self._rng)
            of = f"/{backoff.max_attempts}" if backoff.max_attempts else ""
            detail = f"attempt {attempt}{of} in {delay:.2f} s"
            if last_error:
                detail += f" (previous attempt: {last_error})"
            self._transition(StreamState.RECONNECTING, detail, attempt=attempt)
            self._sleep(delay)
            if self._stop_event.is_set():
                return False
            try:
                first = self._connect()
            except _OpenFailed as exc:
                last_error = str(exc)
                log.debug("%s: reconnect attempt %d failed: %s", self._display, attempt, last_error)
                continue
            with self._counts_lock:
                self._reconnects += 1
            old, new = self._connect_prev_size, self._size
            gap_s = (self._clock.monotonic_ns() - lost_ns) / 1e9
            plural = "s" * (attempt > 1)
            detail = f"reconnected after {attempt} attempt{plural} ({gap_s:.1f} s without frames)"
            if old is not None and old != new:
                detail += f"; the frame size changed from {fmt_size(old)} to {fmt_size(new)}"
            self._transition(StreamState.CONNECTED, detail, attempt=attempt, size=new,
                             previous_size=old)
            for frame in first:
                self._deliver(*frame)
            return True
        return False

    def _sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        if isinstance(self._clock, SystemClock):
            self._stop_event.wait(seconds)   # stop() interrupts the wait
        else:
            self._clock.sleep(seconds)

    def _deliver(self, rgb: np.ndarray, frame_id: int, read_ns: int) -> None:
        size = (rgb.shape[1], rgb.shape[0])
        if size != self._size:
            old, self._size = self._size, size
            self._transition(StreamState.CONNECTED, f"the frame size changed from "
                             f"{fmt_size(old)} to {fmt_size(size)} at frame {frame_id}",
                             size=size, previous_size=old)
        if self.live:
            capture_ns = read_ns
        else:
            capture_ns = self._t0_ns + round(frame_id * 1e9 / self._fps)
            if self.realtime:
                wait_ns = capture_ns - self._clock.monotonic_ns()
                if wait_ns > 0:
                    self._sleep(wait_ns / 1e9)
                capture_ns = max(capture_ns, self._clock.monotonic_ns())
            read_ns = self._clock.monotonic_ns() if self.realtime else read_ns
        frame = Frame(rgb, frame_id, capture_ns,
                      self._wall0 + (capture_ns - self._mono0) / 1e9, self.stream_id, read_ns)
        with self._counts_lock:
            self._read += 1
            self._read_times.append(read_ns)
        self._last_frame_ns = capture_ns
        dropped, cause = self._buffer.put_frame(frame)
        if dropped is not None:
            self._drop(cause)

