"""Sources: buffer policies, gaps, reconnects, pacing, redaction, bad specs, real files."""

import logging
import threading
import time

import cv2
import numpy as np
import pytest

from microgesture.core.errors import MicrogestureError
from microgesture.stream.sources import (
    Backoff,
    BufferPolicy,
    FakeCapture,
    FakeClock,
    FakeOpener,
    Frame,
    OpenCVOpener,
    SourceStatus,
    StreamState,
    open_source,
    parse_spec,
    redact,
    redact_text,
)

S = StreamState
frames_of = FakeCapture.numbered_frames
number = FakeCapture.frame_number


def drain(source, timeout=10.0):
    """Every frame until the source is finished (fails instead of hanging)."""
    out, deadline = [], time.monotonic() + timeout
    while not source.finished:
        assert time.monotonic() < deadline, f"source did not finish: {source!r}"
        frame = source.get(timeout=0.2)
        if frame is not None:
            out.append(frame)
    return out


def events(source):
    return [s.event for s in source.statuses]


def assert_transitions_allowed(statuses):
    assert statuses[0].state is S.CONNECTING and statuses[0].previous is None
    for before, after in zip(statuses, statuses[1:]):
        assert after.previous is before.state
        assert before.state.can_go_to(after.state), (before.state, after.state)
        assert after.capture_ns >= before.capture_ns


# ------------------------------------------------------------------ buffer policies

def test_file_wait_loses_nothing_and_the_reader_waits():
    cap = FakeCapture(frames_of(200), frame_count=200)
    opener = FakeOpener(cap)
    source = open_source("clip.mp4", opener=opener, buffer=4, clock=FakeClock())
    assert source.policy is BufferPolicy.WAIT and not source.live
    time.sleep(0.2)                                      # nobody reads: the reader waits
    st = source.stats()
    assert st.buffered == 4 and st.frames_read == 5 and st.dropped == {}
    frames = drain(source)
    assert [f.frame_id for f in frames] == list(range(200))
    assert [number(f.image) for f in frames] == list(range(200))
    st = source.stats()
    assert st.frames_read == st.frames_delivered == 200 and st.dropped == {}
    assert source.state is S.ENDED and events(source) == ["connecting", "connected", "ended"]
    assert opener.calls == ["clip.mp4"] and cap.released             # ended, never reopened
    assert source.get(timeout=0.05) is None and source.finished


def test_live_drop_oldest_keeps_the_newest_and_counts_drops():
    source = open_source(0, opener=FakeOpener(FakeCapture(frames_of(100))), buffer=4,
                         reconnect=False, clock=FakeClock())
    assert source.policy is BufferPolicy.DROP_OLDEST and source.live
    assert source.join(10)
    frames = drain(source)
    assert [f.frame_id for f in frames] == [96, 97, 98, 99]
    assert [number(f.image) for f in frames] == [96, 97, 98, 99]
    st = source.stats()
    assert st.dropped == {"buffer_full": 96, "read_failed": 5}    # 5 failed reads: LOST
    assert st.frames_read == 100 and st.frames_delivered == 4
    assert events(source) == ["connecting", "connected", "lost", "ended"]
    assert "reconnect=False" in source.statuses[-1].detail


def test_drop_latest_keeps_the_buffered_frames():
    source = open_source("0", opener=FakeOpener(FakeCapture(frames_of(50))), buffer=4,
                         policy="drop_latest", reconnect=False, clock=FakeClock())
    assert source.policy is BufferPolicy.DROP_LATEST
    source.join(10)
    assert [f.frame_id for f in drain(source)] == [0, 1, 2, 3]
    assert source.stats().dropped["buffer_full"] == 46


def test_policy_names():
    assert BufferPolicy.parse("DROP_OLDEST") is BufferPolicy.DROP_OLDEST
    with pytest.raises(MicrogestureError, match="drop_oldest"):
        BufferPolicy.parse("drop_old")


def test_statuses_are_interleaved_with_frames_in_order():
    source = open_source("clip.mp4", opener=FakeOpener(FakeCapture(frames_of(3), frame_count=3)),
                         clock=FakeClock())
    items = list(source.items())
    kinds = [i.event if isinstance(i, SourceStatus) else i.frame_id for i in items]
    assert kinds == ["connecting", "connected", 0, 1, 2, "ended"]
    assert isinstance(items[2], Frame) and items[2].image.shape == (24, 32, 3)


# ------------------------------------------------------------------ gaps

def test_failed_live_reads_are_gaps_not_black_frames():
    clock = FakeClock()
    f = frames_of(6)
    cap = FakeCapture([f[0], f[1], None, None, f[4], f[5]], fps=30, clock=clock)
    source = open_source(0, opener=FakeOpener(cap), clock=clock, reconnect=False,
                         max_failed_reads=3, buffer=16)
    frames = drain(source)
    assert [f.frame_id for f in frames] == [0, 1, 4, 5]            # the ids show the gap
    assert [number(f.image) for f in frames] == [0, 1, 4, 5]
    assert all(f.image.mean() > 0.5 for f in frames)               # no black frame anywhere
    dt = round(1e9 / 30)
    times = [f.capture_ns for f in frames]
    assert np.diff(times).tolist() == pytest.approx([dt, 3 * dt, dt], abs=2)   # time too
    assert source.stats().dropped == {"read_failed": 2 + 3}
    assert all(f.image.dtype == np.uint8 and f.image.shape == (24, 32, 3) for f in frames)


def test_a_live_source_stalled_for_seconds_is_lost_before_many_reads_fail():
    clock = FakeClock()
    f = frames_of(2)
    cap = FakeCapture([f[0], f[1], None, None, None], clock=clock, interval_s=2.0)   # slow reads
    source = open_source(0, opener=FakeOpener(cap), clock=clock, reconnect=False)
    assert len(drain(source)) == 2
    lost = next(s for s in source.statuses if s.state is S.LOST)
    assert "3 failed reads" in lost.detail and "6.0 s without a frame" in lost.detail
    assert source.stats().dropped == {"read_failed": 3}


def test_a_source_whose_read_hangs_is_lost_within_the_stall_limit_and_reconnects():
    """A frozen camera: read() blocks with the connection open. The source says `lost`
    within the stall limit, reconnects, and the frames the frozen capture returns
    afterwards are never delivered; it is released once its read returns."""
    freeze = threading.Event()
    cap1 = FakeCapture(frames_of(8) + [freeze] + frames_of(5, start=8), fps=100)
    cap2 = FakeCapture(frames_of(5, start=100), fps=100)
    source = open_source(0, opener=FakeOpener(cap1, cap2), stall_s=0.3, buffer=64,
                         reconnect=Backoff(base_s=0.05, max_attempts=1))
    t0 = time.monotonic()
    items = []
    while not any(isinstance(i, SourceStatus) and i.event == "reconnected" for i in items):
        assert time.monotonic() - t0 < 10, events(source)
        item = source.next_item(timeout=0.2)
        if item is not None:
            items.append(item)
    lost = next(i for i in items if isinstance(i, SourceStatus) and i.event == "lost")
    assert "stopped sending" in lost.detail and "stall limit 0.3 s" in lost.detail
    assert (lost.capture_ns - time.monotonic_ns()) / 1e9 + (time.monotonic() - t0) < 3.0
    assert not cap1.released                      # still stuck in its read
    freeze.set()                                  # the camera sends again: too late
    rest = drain(source)
    numbers = [number(f.image) for f in [i for i in items if isinstance(i, Frame)] + rest]
    assert numbers == [*range(8), 100, 101, 102, 103, 104]
    deadline = time.monotonic() + 5
    while not cap1.released and time.monotonic() < deadline:
        time.sleep(0.02)
    assert cap1.released and cap2.released        # the abandoned capture released itself
    assert events(source)[:5] == ["connecting", "connected", "lost", "reconnecting", "reconnected"]


class _PausingCapture(FakeCapture):
    """A network stream (with stream timestamps) that pauses for ``pause_s`` before read
    ``at``, then returns ``burst`` frames it had buffered at once."""

    def __init__(self, frames, clock, at, pause_s, burst, fps=10.0):
        super().__init__(frames, fps=fps, clock=clock, timestamps=True)
        self.at, self.pause_s, self.burst = at, pause_s, burst

    def read(self):
        if self.reads == self.at:
            self.clock.advance(self.pause_s - self.interval_s)
        elif self.at < self.reads <= self.at + self.burst:   # already buffered: no wait
            index = self.reads
            self.reads += 1
            return True, self._script[index]
        return super().read()


def test_frames_buffered_during_a_short_pause_are_not_delivered_as_live():
    clock = FakeClock()
    cap = _PausingCapture(frames_of(40), clock, at=20, pause_s=2.0, burst=6)
    source = open_source("rtsp://cam/live", opener=FakeOpener(cap), clock=clock, buffer=64,
                         reconnect=False)
    got = [number(f.image) for f in drain(source)]
    assert 20 not in got and not set(range(20, 26)) & set(got)   # the paused and buffered ones
    assert 26 in got and got == sorted(got)                      # the live edge onwards
    assert source.stats().dropped["stale"] == 6


def test_the_stall_limit_is_checked():
    for bad in (0, -1, "5", float("inf")):
        with pytest.raises(MicrogestureError, match="stall limit"):
            open_source(0, opener=FakeOpener(FakeCapture(frames_of(2))), stall_s=bad)


def test_reading_a_source_that_was_not_started():
    source = open_source(0, opener=FakeOpener(FakeCapture(frames_of(3))), start=False)
    with pytest.raises(MicrogestureError, match="start"):
        next(iter(source))
    source.start()
    assert next(iter(source)).frame_id == 0
    source.stop()


def test_failed_file_reads_keep_their_frame_numbers():
    f = frames_of(4)
    source = open_source("clip.mp4", opener=FakeOpener(FakeCapture([f[0], None, f[2], f[3]],
                                                                   fps=10, frame_count=4)),
                         clock=FakeClock(5_000))
    frames = drain(source)
    assert [f.frame_id for f in frames] == [0, 2, 3]
    assert [f.capture_ns for f in frames] == [5_000, 5_000 + 200_000_000, 5_000 + 300_000_000]
    assert source.stats().dropped == {"read_failed": 1}
    assert source.state is S.ENDED


def test_a_truncated_file_reports_the_missing_frames():
    source = open_source("clip.mp4", opener=FakeOpener(FakeCapture(frames_of(5), frame_count=8)),
                         clock=FakeClock(), max_failed_reads=4)
    assert len(drain(source)) == 5
    assert source.stats().dropped == {"truncated": 3}
    assert "truncated" in source.statuses[-1].detail


def test_a_frame_size_change_mid_stream_is_reported():
    big, small = frames_of(2), frames_of(2, width=16, height=12, start=2)
    source = open_source("clip.mp4", opener=FakeOpener(FakeCapture(big + small, frame_count=4)),
                         clock=FakeClock())
    frames = drain(source)
    assert [f.image.shape[:2] for f in frames] == [(24, 32)] * 2 + [(12, 16)] * 2
    change = [s for s in source.statuses if s.event == "size_changed"]
    assert len(change) == 1 and change[0].size == (16, 12) and change[0].previous_size == (32, 24)
    assert source.size == (16, 12)


def test_a_live_stream_skips_the_backlog_buffered_while_opening():
    clock = FakeClock()
    cap = FakeCapture(frames_of(40), fps=10, clock=clock, backlog=10, timestamps=True)
    source = open_source("rtsp://cam/live", opener=FakeOpener(cap), clock=clock, buffer=64,
                         reconnect=False)
    frames = drain(source)
    assert [f.frame_id for f in frames] == list(range(9, 40))     # 0-8 were waiting: stale
    assert np.diff([f.capture_ns for f in frames]).tolist() == [100_000_000] * 30
    assert source.stats().dropped == {"stale": 9, "read_failed": 5}
    # without stream timestamps nothing can be judged stale: nothing is dropped
    clock = FakeClock()
    cap = FakeCapture(frames_of(40), fps=10, clock=clock, backlog=10)
    source = open_source("rtsp://cam/live", opener=FakeOpener(cap), clock=clock, buffer=64,
                         reconnect=False)
    assert [f.frame_id for f in drain(source)] == list(range(40))


# ------------------------------------------------------------------ reconnecting

def test_reconnect_with_exponential_backoff_and_size_check():
    clock = FakeClock()
    cap1 = FakeCapture(frames_of(5), clock=clock)
    cap2 = FakeCapture(frames_of(5, width=48, height=36, start=100), clock=clock)
    opener = FakeOpener(cap1, None, RuntimeError("connection refused"), cap2)
    seen = []
    source = open_source(0, opener=opener, clock=clock, buffer=64, max_failed_reads=3,
                         reconnect=Backoff(base_s=0.5, factor=2.0, max_s=1.5, max_attempts=4),
                         on_status=[seen.append])
    assert source.join(10)
    items = list(source.items())
    # delays grow exponentially up to max_s, and start over after a successful reconnect
    assert clock.sleeps == [0.5, 1.0, 1.5, 0.5, 1.0, 1.5, 1.5]
    assert events(source) == (["connecting", "connected", "lost"] + ["reconnecting"] * 3
                              + ["reconnected", "lost"] + ["reconnecting"] * 4 + ["ended"])
    statuses = source.statuses
    assert seen == statuses                                   # callbacks saw every status
    assert_transitions_allowed(statuses)
    retry = [s for s in statuses if s.state is S.RECONNECTING]
    assert [s.attempt for s in retry] == [1, 2, 3, 1, 2, 3, 4]
    assert np.diff([s.capture_ns for s in retry[:3]]).tolist() == [500_000_000, 1_000_000_000]
    assert "connection refused" in retry[2].detail            # why the previous attempt failed
    back = next(s for s in statuses if s.event == "reconnected")
    assert back.size_changed and back.size == (48, 36) and back.previous_size == (32, 24)
    assert back.attempt == 3 and "32x24 to 48x36" in back.detail
    assert "gave up" in statuses[-1].detail and source.state is S.ENDED
    # frames, in order with the statuses: ids keep counting across the reconnect
    frames = [i for i in items if isinstance(i, Frame)]
    assert [f.frame_id for f in frames] == [0, 1, 2, 3, 4, 8, 9, 10, 11, 12]
    assert [number(f.image) for f in frames] == [0, 1, 2, 3, 4, 100, 101, 102, 103, 104]
    kinds = [i.event if isinstance(i, SourceStatus) else "f" for i in items]
    assert kinds.index("reconnected") == kinds.index("f", 7) - 1   # status before its frames
    assert source.stats().reconnects == 1 and cap1.released and cap2.released
    assert len(opener.calls) == 1 + 3 + 4


def test_backoff_delays_and_jitter():
    b = Backoff(base_s=0.25, factor=3, max_s=5)
    assert [b.delay(k) for k in range(1, 6)] == [0.25, 0.75, 2.25, 5, 5]
    import random
    jittered = Backoff(base_s=1, max_s=8, jitter=0.5)
    delays = [jittered.delay(3, random.Random(k)) for k in range(50)]
    assert all(2.0 <= d <= 4.0 for d in delays) and len(set(delays)) > 10
    for bad in (dict(base_s=0), dict(base_s=2, max_s=1), dict(factor=0.5), dict(jitter=1),
                dict(max_attempts=0)):
        with pytest.raises(MicrogestureError):
            Backoff(**bad)


def test_stop_interrupts_a_backoff_wait_and_releases():
    opener = FakeOpener(FakeCapture(frames_of(3)))
    source = open_source("rtsp://127.0.0.1:9/cam", opener=opener, max_failed_reads=2,
                         reconnect=Backoff(base_s=30, max_s=30))        # real clock
    deadline = time.monotonic() + 5
    while source.state is not S.RECONNECTING:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    t0 = time.monotonic()
    source.stop()
    assert time.monotonic() - t0 < 2
    assert source.state is S.STOPPED and events(source)[-1] == "stopped"
    source.stop()                                                       # idempotent
    assert events(source).count("stopped") == 1


def test_stop_and_context_manager_release_the_capture():
    cap = FakeCapture(frames_of(5_000, width=8, height=8))
    with open_source(0, opener=FakeOpener(cap)) as source:
        first = next(iter(source))
        assert isinstance(first, Frame)
    assert source.state is S.STOPPED and cap.released
    assert_transitions_allowed(source.statuses)
    # a file whose reader waits on a full buffer stops too
    cap = FakeCapture(frames_of(100), frame_count=100)
    source = open_source("clip.mp4", opener=FakeOpener(cap), buffer=2)
    time.sleep(0.05)
    source.stop()
    assert source.join(2) and cap.released and source.stats().dropped.get("stopped") == 1


def test_a_failing_status_callback_cannot_stop_the_source(caplog):
    def broken(status):
        raise ValueError("callback bug")
    good = []
    source = open_source("clip.mp4", opener=FakeOpener(FakeCapture(frames_of(3), frame_count=3)),
                         on_status=[broken, good.append])
    assert len(drain(source)) == 3
    assert [s.event for s in good] == ["connecting", "connected", "ended"]
    assert "callback bug" in caplog.text


def test_measured_fps():
    clock = FakeClock()
    source = open_source(0, opener=FakeOpener(FakeCapture(frames_of(40), fps=0, interval_s=0.04,
                                                          clock=clock)),
                         clock=clock, reconnect=False, buffer=64)
    source.join(10)
    assert source.stats().fps_measured == pytest.approx(25.0)
    assert source.fps == pytest.approx(25.0)               # the capture reported none


# ------------------------------------------------------------------ pacing

def test_realtime_paces_a_file_at_its_frame_rate():
    clock = FakeClock(start_ns=10**9)
    cap = FakeCapture(frames_of(10), fps=10, frame_count=10)
    source = open_source("clip.mp4", opener=FakeOpener(cap), clock=clock, realtime=True, buffer=16)
    assert source.policy is BufferPolicy.DROP_OLDEST
    frames = drain(source)
    assert [f.capture_ns for f in frames] == [10**9 + k * 10**8 for k in range(10)]
    assert [f.read_ns for f in frames] == [f.capture_ns for f in frames]
    assert clock.sleeps == pytest.approx([0.1] * 9)
    # without pacing the times are the same, but nobody sleeps
    clock = FakeClock(start_ns=10**9)
    source = open_source("clip.mp4", opener=FakeOpener(FakeCapture(frames_of(10), fps=10,
                                                                   frame_count=10)), clock=clock)
    assert [f.capture_ns for f in drain(source)] == [10**9 + k * 10**8 for k in range(10)]
    assert clock.sleeps == []


# ------------------------------------------------------------------ credentials

SECRET_URL = "rtsp://admin:s3cretpw@10.0.0.5:554/live?token=t0ps3cret&channel=1"


def test_redact():
    assert redact(SECRET_URL) == "rtsp://***@10.0.0.5:554/live?token=***&channel=1"
    assert redact("rtsp://u:p@ss@host/x") == "rtsp://***@host/x"
    assert redact("http://user@host/x?api_key=abc&q=1") == "http://***@host/x?api_key=***&q=1"
    assert redact("rtsp://10.0.0.5/live") == "rtsp://10.0.0.5/live"
    assert redact("videos/clip.mp4") == "videos/clip.mp4" and redact(3) == "3"
    text = f"failed: {SECRET_URL} (password s3cretpw)"
    assert redact_text(text, ["s3cretpw"]) == (
        "failed: rtsp://***@10.0.0.5:554/live?token=***&channel=1 (password ***)")


def leaks(text):
    return [s for s in ("s3cretpw", "t0ps3cret", "admin") if s in text]


def test_credentials_never_leak(caplog):
    caplog.set_level(logging.DEBUG, logger="microgesture")
    clock = FakeClock()
    opener = FakeOpener(FakeCapture(frames_of(3), clock=clock),
                        RuntimeError(f"cannot connect to {SECRET_URL}: user admin, password s3cretpw"))
    source = open_source(SECRET_URL, opener=opener, clock=clock, max_failed_reads=2,
                         reconnect=Backoff(base_s=0.01, max_attempts=1))
    frames = drain(source)
    texts = [repr(source), str(source.stats()), source.spec, source.stream_id, caplog.text,
             *(repr(s) for s in source.statuses), *(repr(f) for f in frames)]
    assert opener.calls == [SECRET_URL] * 2              # the opener does get the real URL
    assert not leaks("\n".join(texts))
    assert "10.0.0.5" in source.spec and "cannot connect" in source.statuses[-1].detail
    named = open_source(SECRET_URL, stream_id=SECRET_URL, opener=FakeOpener(FakeCapture(frames_of(1))))
    assert not leaks(named.stream_id) and "10.0.0.5" in named.stream_id
    named.stop()
    # an error raised when the first connection fails
    with pytest.raises(MicrogestureError) as err:
        open_source(SECRET_URL, opener=FakeOpener(RuntimeError(f"bad {SECRET_URL} s3cretpw")))
    assert not leaks(str(err.value)) and "10.0.0.5" in str(err.value)
    assert "user and password" in str(err.value)
    # a spec that is no source at all
    with pytest.raises(MicrogestureError) as err:
        open_source("rtps://admin:s3cretpw@10.0.0.5/live")
    assert not leaks(str(err.value)) and "Did you mean 'rtsp" in str(err.value)
    assert not leaks(caplog.text)


# ------------------------------------------------------------------ specs

def test_parse_spec_kinds(tmp_path):
    assert parse_spec(0).kind == parse_spec("1").kind == "webcam"
    assert parse_spec("/dev/video2").kind == "webcam"
    assert parse_spec("RTSP://cam/x").kind == parse_spec("https://cam/x.m3u8").kind == "network"
    assert parse_spec(tmp_path).kind == "folder"
    assert parse_spec(str(tmp_path / "a.mp4")).kind == "file"
    assert parse_spec(f"file://{tmp_path}/a.png").kind == "image"


def test_bad_specs_fail_clearly(tmp_path):
    with pytest.raises(MicrogestureError, match="does not exist.*camera index.*URL"):
        open_source(tmp_path / "missing.mp4")
    with pytest.raises(MicrogestureError, match="unknown URL scheme 'ftp'.*rtsp"):
        open_source("ftp://host/x.mp4")
    with pytest.raises(MicrogestureError, match="empty"):
        open_source("  ")
    for bad in (None, True, 2.5, -1):
        with pytest.raises(MicrogestureError):
            open_source(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MicrogestureError, match="no image files"):
        open_source(tmp_path / "empty")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 100)
    with pytest.raises(MicrogestureError, match="cannot open .*junk.mp4.*not a video"):
        open_source(junk)
    fake = FakeOpener(FakeCapture(frames_of(1)))
    with pytest.raises(MicrogestureError, match="buffer"):
        open_source(0, opener=fake, buffer=0)
    with pytest.raises(MicrogestureError, match="reconnect"):
        open_source(0, opener=fake, reconnect="yes")
    with pytest.raises(MicrogestureError, match="cannot open camera 7.*indices start at 0"):
        open_source(7, opener=FakeOpener(FakeCapture(opened=False)))


def test_state_transitions_table():
    assert S.CONNECTING.can_go_to(S.CONNECTED) and not S.CONNECTING.can_go_to(S.LOST)
    assert S.CONNECTED.can_go_to(S.LOST) and S.LOST.can_go_to(S.RECONNECTING)
    assert S.RECONNECTING.can_go_to(S.CONNECTED) and not S.LOST.can_go_to(S.CONNECTED)
    assert not any(S.ENDED.can_go_to(s) or S.STOPPED.can_go_to(s) for s in S)


def test_rtsp_is_read_over_tcp_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", raising=False)
    opener = OpenCVOpener(open_timeout_s=1, read_timeout_s=1)
    opener("rtsp://127.0.0.1:9/nothing").release()     # port 9: refused at once
    import os
    assert os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] == "rtsp_transport;tcp"
    monkeypatch.setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;udp")
    opener("rtsp://127.0.0.1:9/nothing").release()
    assert os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] == "rtsp_transport;udp"


# ------------------------------------------------------------------ real files

def test_real_video_file_reads_every_frame_in_order(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (64, 48))
    assert writer.isOpened()
    for k in range(40):
        bgr = np.zeros((48, 64, 3), np.uint8)
        bgr[..., 0] = 200                   # blue
        bgr[..., 1] = 5 * k                 # the frame's number, in green
        bgr[..., 2] = 20                    # red
        writer.write(bgr)
    writer.release()
    source = open_source(path, buffer=3)
    assert source.policy is BufferPolicy.WAIT and source.fps == pytest.approx(30.0)
    frames = drain(source)
    assert [f.frame_id for f in frames] == list(range(40))
    greens = [f.image[..., 1].mean() for f in frames]
    assert np.allclose(greens, 5 * np.arange(40), atol=3)
    img = frames[0].image
    assert img.shape == (48, 64, 3) and img.dtype == np.uint8
    assert abs(img[..., 2].mean() - 200) < 6 and abs(img[..., 0].mean() - 20) < 6   # RGB
    assert np.diff([f.capture_ns for f in frames]) == pytest.approx(1e9 / 30, abs=1)
    assert source.stats().dropped == {} and events(source)[-1] == "ended"
    assert source.stream_id == path.stem and source.size == (64, 48)   # a valid event stream id


def test_image_folder_in_natural_order(tmp_path):
    for name, value in (("1.png", 10), ("2.png", 20), ("10.png", 100)):
        cv2.imwrite(str(tmp_path / name), np.full((12, 16, 3), value, np.uint8))
    (tmp_path / "3.png").write_bytes(b"corrupt")
    (tmp_path / "notes.txt").write_text("not an image")
    source = open_source(tmp_path, fps=5, stream_id="folder")
    frames = drain(source)
    assert [f.frame_id for f in frames] == [0, 1, 3]            # 3.png (id 2) is a gap
    assert [int(f.image.mean()) for f in frames] == [10, 20, 100]
    assert np.diff([f.capture_ns for f in frames]).tolist() == [200_000_000, 400_000_000]
    assert source.stats().dropped == {"read_failed": 1}
    assert frames[0].stream_id == "folder" and source.state is S.ENDED
    one = open_source(tmp_path / "10.png")
    assert [int(f.image.mean()) for f in drain(one)] == [100]


def test_frame_repr_and_equality():
    f = Frame(np.zeros((4, 6, 3), np.uint8), 3, 100, 0.0, "cam")
    assert repr(f) == "Frame(stream_id='cam', frame_id=3, capture_ns=100, image=uint8[4x6x3])"
    assert f != Frame(f.image, 3, 100, 0.0, "cam")              # identity: no array compare
    with pytest.raises(AttributeError):
        f.frame_id = 4


def test_sources_do_not_import_torch():
    import subprocess
    import sys
    code = ("import sys, microgesture.stream.sources, microgesture.stream.rings, "
            "microgesture.stream.scheduler; "
            "bad = [m for m in ('torch', 'microgesture.training', 'microgesture.export') "
            "if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_threads_do_not_leak():
    before = threading.active_count()
    for _ in range(5):
        source = open_source(0, opener=FakeOpener(FakeCapture(frames_of(10))), reconnect=False)
        source.join(5)
        drain(source)
    assert threading.active_count() <= before


def test_every_name_of_the_old_single_module_still_imports_from_the_package():
    """stream.sources became a package of focused modules; its names stay where they were."""
    import microgesture.stream.sources as package

    names = ("CAP_PROP_POS_MSEC CAP_PROP_POS_FRAMES CAP_PROP_FRAME_WIDTH CAP_PROP_FRAME_HEIGHT "
             "CAP_PROP_FPS CAP_PROP_FRAME_COUNT NETWORK_SCHEMES LIVE_BUFFER FILE_BUFFER "
             "LIVE_MAX_FAILED_READS FILE_MAX_FAILED_READS LIVE_STALL_S STATUS_HISTORY BufferPolicy "
             "StreamState Frame SourceStatus SourceStats Clock SystemClock FakeClock SourceSpec "
             "parse_spec ImageFolderCapture OpenCVOpener FakeCapture FakeOpener Backoff "
             "StatusCallback VideoSource default_stream_id open_source redact redact_text").split()
    assert [n for n in names if not hasattr(package, n)] == []
    assert set(names) <= set(package.__all__)
