"""A real RTSP stream on loopback: frames arrive, the server dies, the source reconnects.

The server is tests/rtsp_server.py, run by the system python (GStreamer's RTSP server
through python3-gi); the stream is an H.264 mp4 made with ffmpeg. Skipped, with the
reason, when ffmpeg or the GStreamer RTSP server bindings are missing. Needs the Debian
packages: ffmpeg python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base
gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-libav.
"""

import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from microgesture.stream.sources import Backoff, Frame, SourceStatus, StreamState, open_source

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER = Path(__file__).with_name("rtsp_server.py")
WIDTH, HEIGHT, FPS = 320, 240, 15
BUDGET_S = 60.0            # the whole test, server starts included


def _missing() -> str | None:
    if shutil.which("ffmpeg") is None:
        return "ffmpeg is not installed (apt-get install ffmpeg)"
    if not os.path.exists(SYSTEM_PYTHON):
        return f"{SYSTEM_PYTHON} does not exist (the RTSP test server runs on the system python)"
    probe = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
             "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
             "missing = [e for e in ('qtdemux', 'h264parse', 'rtph264pay') "
             "if Gst.ElementFactory.find(e) is None]; print(' '.join(missing))")
    try:
        out = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{SYSTEM_PYTHON} could not be run: {exc}"
    if out.returncode != 0:
        return (f"{SYSTEM_PYTHON} cannot import gi / GstRtspServer (apt-get install python3-gi "
                f"gir1.2-gst-rtsp-server-1.0): {out.stderr.strip().splitlines()[-1:]}")
    if out.stdout.strip():
        return (f"GStreamer elements missing: {out.stdout.strip()} (apt-get install "
                "gstreamer1.0-plugins-good gstreamer1.0-plugins-bad)")
    return None


@pytest.fixture(scope="module")
def h264_clip(tmp_path_factory):
    reason = _missing()
    if reason:
        pytest.skip(reason)
    path = tmp_path_factory.mktemp("rtsp") / "testsrc.mp4"
    # 30 s so that the stream outlasts the test; a key frame every second so that a
    # reconnecting reader decodes at once
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
           "-i", f"testsrc=size={WIDTH}x{HEIGHT}:rate={FPS}", "-t", "30", "-c:v", "libx264",
           "-pix_fmt", "yuv420p", "-g", str(FPS), "-preset", "ultrafast", "-tune", "zerolatency",
           str(path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        pytest.skip(f"ffmpeg could not encode H.264 (libx264): {out.stderr.strip()[-300:]}")
    return path


class Server:
    """tests/rtsp_server.py in a subprocess; ``url`` once it is ready."""

    def __init__(self, clip: Path, port: int = 0, timeout: float = 15.0):
        self.proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(SERVER), str(clip), "--port", str(port), "--lifetime", "90"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline().strip() if ready else ""
        if not line.startswith("URL "):
            self.kill()
            err = self.proc.stderr.read()[-500:] if self.proc.stderr else ""
            raise RuntimeError(f"the RTSP server did not start: {line!r} {err}")
        self.url = line.split(" ", 1)[1]
        self.port = int(self.url.split(":")[2].split("/")[0])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def restart(clip: Path, port: int, deadline: float) -> Server:
    """The server again on the same port (the port may take a moment to be free)."""
    while True:
        try:
            return Server(clip, port)
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def consume_until(source, predicate, timeout: float, what: str) -> list:
    """Frames and statuses in order (``next_item``) up to the first item matching."""
    items, deadline = [], time.monotonic() + timeout
    while True:
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        item = source.next_item(timeout=0.5)
        if item is None:
            continue
        items.append(item)
        if predicate(item):
            return items


def is_status(event: str, min_attempt: int = 0):
    return lambda item: (isinstance(item, SourceStatus) and item.event == event
                         and item.attempt >= min_attempt)


def frames_in(items) -> list[Frame]:
    return [i for i in items if isinstance(i, Frame)]


def check(frames: list[Frame]) -> None:
    for f in frames:
        assert f.image.shape == (HEIGHT, WIDTH, 3) and f.image.dtype == np.uint8
        assert f.image.mean() > 5                      # testsrc is colourful, never black
    assert np.all(np.diff([f.frame_id for f in frames]) > 0)
    assert np.all(np.diff([f.capture_ns for f in frames]) >= 0)


def live_rate(frames: list[Frame]) -> bool:
    """The frames span at least 40 % of the time they take at the stream's rate."""
    span_s = (frames[-1].capture_ns - frames[0].capture_ns) / 1e9
    return span_s >= 0.4 * (len(frames) - 1) / FPS


def test_rtsp_frames_then_server_dies_then_reconnects(h264_clip):
    start = time.monotonic()
    server = Server(h264_clip)
    statuses, source = [], None
    try:
        source = open_source(server.url, stream_id="rtsp-test", max_failed_reads=3,
                             reconnect=Backoff(base_s=0.2, max_s=1.0, max_attempts=60),
                             on_status=[statuses.append])
        assert source.kind == "network" and source.live and source.size == (WIDTH, HEIGHT)
        count = 0

        def tenth_frame(item):
            nonlocal count
            count += isinstance(item, Frame)
            return count == 10
        before = frames_in(consume_until(source, tenth_frame, 15, "10 frames"))
        check(before)
        # frames come at the stream's rate, not in the burst FFmpeg buffered while opening
        # (26 frames in a few ms here); generous bounds: the machine may be loaded
        assert live_rate(before)

        server.kill()                                  # the camera goes away
        # at least one reconnect attempt fails against the dead port before the restart
        items = consume_until(source, is_status("reconnecting", min_attempt=2), 20,
                              "the source to notice the server died and retry")
        events = [s.event for s in source.statuses]   # callbacks run just after recording
        assert events[:5] == ["connecting", "connected", "lost", "reconnecting", "reconnecting"]
        leftovers = frames_in(items)                   # frames read before the loss
        check(before + leftovers)

        server = restart(h264_clip, server.port, deadline=start + BUDGET_S - 15)
        items = consume_until(source, is_status("reconnected"), 25, "the source to reconnect")
        back = items[-1]
        assert back.state is StreamState.CONNECTED and back.previous is StreamState.RECONNECTING
        assert back.size == (WIDTH, HEIGHT) and not back.size_changed and back.attempt >= 2
        assert not frames_in(items)                    # no frame while disconnected
        count = 0
        after = frames_in(consume_until(source, lambda i: tenth_frame(i) if count < 8 else True,
                                        15, "frames after reconnecting"))[:8]
        check(before + leftovers + after)
        assert after[0].frame_id > (before + leftovers)[-1].frame_id
        assert live_rate(after)                        # live again, no burst
        assert source.stats().reconnects == 1

        history = source.statuses
        for a, b in zip(history, history[1:]):         # every change was an allowed one
            assert a.state.can_go_to(b.state) and b.previous is a.state
        assert statuses == history                     # the callback saw them all, in order
    finally:
        if source is not None:
            source.stop()
        server.kill()
    assert source.state is StreamState.STOPPED
    assert time.monotonic() - start < BUDGET_S


STALL_S = 2.0


def nth_frame(n: int):
    """A predicate for consume_until: true at the n-th frame it sees."""
    seen = [0]

    def predicate(item) -> bool:
        seen[0] += isinstance(item, Frame)
        return seen[0] == n
    return predicate


def test_a_frozen_rtsp_server_is_lost_within_the_stall_limit_and_comes_back(h264_clip):
    """kill -STOP keeps the TCP connection open and sends nothing: the source must say
    `lost` within the stall limit, reconnect after SIGCONT, and never deliver the frames
    of the frozen connection as live ones."""
    import signal

    start = time.monotonic()
    server = Server(h264_clip)
    source = None
    try:
        source = open_source(server.url, stream_id="frozen", stall_s=STALL_S,
                             reconnect=Backoff(base_s=0.2, max_s=0.5))
        before = frames_in(consume_until(source, nth_frame(10), 15, "10 frames"))
        os.kill(server.proc.pid, signal.SIGSTOP)      # the camera hangs
        frozen_at = time.monotonic_ns()
        items = consume_until(source, is_status("lost"), STALL_S + 10, "`lost` after the freeze")
        noticed_s = (items[-1].capture_ns - frozen_at) / 1e9
        assert noticed_s < STALL_S + 3.0, f"lost reported {noticed_s:.1f} s after the freeze"
        # nothing captured after the freeze was delivered (a frame already waiting in
        # the socket may arrive just after SIGSTOP: allow a few frame intervals)
        assert all(f.capture_ns < frozen_at + 0.5e9 for f in frames_in(items))
        time.sleep(max(0.0, 4.0 - (time.monotonic_ns() - frozen_at) / 1e9))  # a 4 s freeze
        os.kill(server.proc.pid, signal.SIGCONT)
        resumed_at = time.monotonic_ns()
        items = consume_until(source, is_status("reconnected"), 30, "the source to reconnect")
        assert not [f for f in frames_in(items) if f.capture_ns > frozen_at + 0.5e9]
        after = frames_in(consume_until(source, nth_frame(10), 15, "frames after reconnecting"))
        check(before + after)
        assert after[0].capture_ns > resumed_at
        assert live_rate(after)                        # live frames, not a burst of old ones
        assert source.stats().reconnects >= 1
    finally:
        if source is not None:
            source.stop()
        if server.proc.poll() is None:
            os.kill(server.proc.pid, signal.SIGCONT)
        server.kill()
    assert time.monotonic() - start < BUDGET_S


def test_bench_on_an_rtsp_source_with_a_password_stores_and_prints_it_redacted(h264_clip, tmp_path):
    import json
    import sys

    server = Server(h264_clip)
    try:
        url = server.url.replace("rtsp://", "rtsp://admin:S3cr3tPw@")  # the server ignores it
        result = subprocess.run(
            [sys.executable, "-m", "microgesture", "bench", "--source", url, "--precisions", "int8",
             "--pose", "mediapipe-pose", "--duration", "2", "--out", str(tmp_path), "--json"],
            capture_output=True, text=True, timeout=300)
    finally:
        server.kill()
    assert result.returncode == 0, result.stderr[-2000:]
    stored = (tmp_path / "bench.json").read_text()
    assert "S3cr3tPw" not in stored + result.stdout + result.stderr
    report = json.loads(stored)
    assert report["source"].startswith("rtsp://***@127.0.0.1:")
    assert report["results"][0]["config"]["source"] == report["source"]
    assert report["results"][0]["frames"]["captured"] > 0
