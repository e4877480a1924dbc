"""One helper per job, and the places that used to do the job themselves now give the same
answers through it: stream ids, ONNX Runtime session options, the cache folder, progress."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from microgesture.core.errors import MicrogestureError
from microgesture.core.stream_ids import STREAM_ID, check_stream_id, stream_id_for
from microgesture.stream.client import Subscriber
from microgesture.stream.sources import FakeCapture, FakeOpener, default_stream_id, open_source, parse_spec

SECRET_URL = "rtsp://admin:s3cretpw@10.0.0.5:554/live?token=t0ps3cret&channel=1"


@pytest.mark.parametrize("spec,expected", [
    ("0", "camera0"),
    (3, "camera3"),
    ("/dev/video2", "video2"),
    ("/data/clips/interview 3.mp4", "interview-3"),
    ("/data/frames/shot_1.png", "shot_1"),
    ("rtsp://10.1.2.3:554/live", "10.1.2.3:554-live"),
    ("_hidden.mp4", "hidden"),
    ("rtsp://admin:pw@/", "stream"),
])
def test_a_source_gets_a_valid_stream_id(spec, expected):
    parsed = parse_spec(spec)
    assert default_stream_id(parsed) == stream_id_for(parsed.kind, parsed.target) == expected
    assert check_stream_id(expected) == expected


def test_a_default_stream_id_never_carries_credentials():
    source = open_source(SECRET_URL, opener=FakeOpener(FakeCapture(FakeCapture.numbered_frames(1))))
    try:
        sid = source.stream_id
        assert STREAM_ID.fullmatch(sid) and "10.0.0.5" in sid
        assert not any(s in sid for s in ("admin", "s3cretpw", "t0ps3cret"))
    finally:
        source.stop()


def test_a_long_name_is_cut_to_a_valid_id():
    sid = stream_id_for("file", "/x/" + "a" * 100 + ".mp4")
    assert sid == "a" * 64 and check_stream_id(sid)


@pytest.mark.parametrize("bad", ["", "cam 0", "-cam", "a" * 65, None, 3])
def test_the_publisher_rule_and_the_client_rule_are_one(bad):
    with pytest.raises(MicrogestureError, match="stream id .* is not valid"):
        check_stream_id(bad)
    if isinstance(bad, str) and bad:
        with pytest.raises(MicrogestureError, match="stream id .* is not valid"):
            Subscriber("tcp://127.0.0.1:9", streams=[bad])


# ---------------------------------------------------------------- ONNX Runtime sessions

def test_every_session_gets_the_same_options():
    ort = pytest.importorskip("onnxruntime")
    from microgesture.core.backends import session_options

    options = session_options(2, spinning=False, optimization="basic", log_severity=3)
    assert options.intra_op_num_threads == 2 and options.inter_op_num_threads == 1
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.log_severity_level == 3
    assert session_options(spinning=True).get_session_config_entry("session.inter_op.allow_spinning") == "1"
    with pytest.raises(MicrogestureError, match="optimization level"):
        session_options(optimization="fastest")


# ---------------------------------------------------------------- the cache folder

def test_the_tensorrt_provider_cache_follows_the_cache_folder(monkeypatch, tmp_path):
    pytest.importorskip("onnxruntime")
    from microgesture.core.backends import provider_list
    from microgesture.core.paths import cache_dir

    monkeypatch.setenv("MICROGESTURE_CACHE", str(tmp_path / "cache"))
    trt = provider_list("tensorrt", cache_key="abc")[0][1]
    assert Path(trt["trt_engine_cache_path"]).is_relative_to(cache_dir("ort-tensorrt"))
    assert cache_dir("ort-tensorrt") == tmp_path / "cache" / "ort-tensorrt"
    monkeypatch.delenv("MICROGESTURE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    trt = provider_list("tensorrt", cache_key="abc")[0][1]
    assert Path(trt["trt_engine_cache_path"]).is_relative_to(tmp_path / "xdg" / "microgesture")


# ---------------------------------------------------------------- progress

class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_in_a_log_is_a_line_every_few_seconds_and_the_final_count():
    from microgesture.core.progress import LOG_EVERY_S, Progress

    out, clock = _Stream(tty=False), _Clock()
    bar = Progress("pose", 10, "frames", rate="fps", stream=out, clock=clock)
    for done in range(1, 11):   # one frame a second: only the one LOG_EVERY_S in is shown
        clock.now = float(done)
        bar.update(done)
    bar.finish()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines == [f"pose: {int(LOG_EVERY_S)}/10 frames, 1.0 fps", "pose: 10/10 frames, 1.0 fps"]


def test_progress_on_a_terminal_redraws_in_place_and_ends_the_line():
    from microgesture.core.progress import Progress

    out, clock = _Stream(tty=True), _Clock()
    bar = Progress("synth", 3, "clips", stream=out, clock=clock)
    for done in (1, 2, 3):
        clock.now = float(done)
        bar(done)
    bar.finish(3)
    assert out.getvalue() == "\rsynth: 1/3 clips \rsynth: 2/3 clips \rsynth: 3/3 clips \n"


def test_progress_off_prints_nothing_and_iter_counts_every_item():
    from microgesture.core.progress import Progress, progress_iter

    quiet = _Stream(tty=True)
    bar = Progress("x", 2, enabled=False, stream=quiet)
    bar.update(1, force=True)
    bar.finish(2)
    assert quiet.getvalue() == ""
    out = _Stream(tty=False)
    assert list(progress_iter(range(4), "eval", unit="batches", stream=out)) == [0, 1, 2, 3]
    assert out.getvalue() == "eval: 4/4 batches\n"


# ---------------------------------------------------------------- video files

@pytest.fixture
def small_video(tmp_path):
    cv2 = pytest.importorskip("cv2")
    import numpy as np

    path = tmp_path / "five.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (48, 32))
    for k in range(5):
        writer.write(np.full((32, 48, 3), 40 * k + 20, np.uint8))
    writer.release()
    return path


def test_probing_and_seeking_a_video_file(small_video, tmp_path):
    from microgesture.core.video import probe_video, read_video_frame
    from microgesture.stream.online_eval import video_fps

    info = probe_video(small_video)
    assert (info.fps, info.frame_count, info.size) == (pytest.approx(10.0), 5, (48, 32))
    assert video_fps(small_video) == pytest.approx(10.0)
    frame = read_video_frame(small_video, 3)
    assert frame.shape == (32, 48, 3) and abs(float(frame.mean()) - 140) < 6
    assert read_video_frame(small_video, 99) is None
    (tmp_path / "not_a_video.mp4").write_bytes(b"nothing here")
    for bad in (tmp_path / "missing.mp4", tmp_path / "not_a_video.mp4"):
        assert probe_video(bad) is None and read_video_frame(bad, 0) is None
    assert video_fps(tmp_path / "missing.mp4") == 30.0


@pytest.mark.parametrize("value,expected", [(25, 25.0), ("29.97", 29.97), (0, None), (-5, None),
                                            (float("nan"), None), (90000.0, None), (None, None)])
def test_a_reported_frame_rate_is_kept_only_when_believable(value, expected):
    from microgesture.core.video import sane_fps

    assert sane_fps(value) == expected
