"""Order and startup: the last gesture's `end` comes before the source's `ended` /
`stopped`; source events name their source; a pose estimator that fails to start
stops the source it opened; a bad second --source fails at once."""

import json
import subprocess
import sys
import threading
import time

import pytest

from microgesture.core.errors import MicrogestureError
from microgesture.core.paths import DEMO_BUNDLE
from microgesture.stream.pipeline import SmoothingOptions, StreamOptions, run_stream

from test_no_person import EAGER, red_video, skeleton


def events_of(log):
    return [json.loads(line) for line in log.read_text().splitlines()]


def options(tmp_path, video, pose, **kw):
    return StreamOptions(bundle=str(DEMO_BUNDLE), sources=[str(video)], stream_ids=["cam"],
                         publish="tcp://127.0.0.1:*", pose=pose, precision="fp32",
                         events_log=str(tmp_path / "events.jsonl"), hop=4, smoothing=EAGER, **kw)


def test_the_last_end_comes_before_ended_and_source_events_name_their_source(tmp_path):
    video = red_video(tmp_path / "red.mp4")
    pose = f"recorded:{skeleton(tmp_path / 's.jsonl', lambda i: True)}"   # a person throughout
    run_stream(options(tmp_path, video, pose))
    events = events_of(tmp_path / "events.jsonl")
    gestures = [e for e in events if e["type"] == "gesture"]
    sources = [e for e in events if e["type"] == "source"]
    assert gestures[-1]["phase"] == "end" and gestures[-1]["reason"] == "flush"
    assert sources[-1]["status"] == "ended"
    assert gestures[-1]["seq"] < sources[-1]["seq"]          # end first, then ended
    assert all(e["source"] == str(video) for e in sources)


def test_the_last_end_comes_before_stopped(tmp_path):
    video = red_video(tmp_path / "red.mp4")
    pose = f"recorded:{skeleton(tmp_path / 's.jsonl', lambda i: True)}"
    stop = threading.Event()

    def stop_after_a_gesture(address, workers):
        def watch():
            while not stop.is_set():
                if workers[0].active is not None:
                    stop.set()
                time.sleep(0.01)
        threading.Thread(target=watch, daemon=True).start()

    run_stream(options(tmp_path, video, pose, realtime=True), stop=stop,
               on_ready=stop_after_a_gesture)
    events = events_of(tmp_path / "events.jsonl")
    gestures = [e for e in events if e["type"] == "gesture"]
    sources = [e for e in events if e["type"] == "source"]
    assert sources[-1]["status"] == "stopped"
    assert gestures[-1]["phase"] == "end" and gestures[-1]["seq"] < sources[-1]["seq"]


def _source_threads():
    return [t for t in threading.enumerate()
            if t.name.startswith(("microgesture-source-", "microgesture-read-")) and t.is_alive()]


def test_a_pose_estimator_that_fails_to_start_stops_the_source(tmp_path):
    video = red_video(tmp_path / "red.mp4")
    before = set(_source_threads())
    with pytest.raises(MicrogestureError, match="does not exist"):
        run_stream(options(tmp_path, video, f"recorded:{tmp_path / 'missing.jsonl'}"))
    deadline = time.monotonic() + 5
    while set(_source_threads()) - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not set(_source_threads()) - before


def test_a_bad_second_source_fails_at_once(tmp_path):
    video = red_video(tmp_path / "red.mp4")
    pose = f"recorded:{skeleton(tmp_path / 's.jsonl', lambda i: True)}"
    opts = options(tmp_path, video, pose)
    opts.sources = [str(video), str(tmp_path / "missing.mp4")]
    opts.stream_ids = ["a", "b"]
    started = time.monotonic()
    with pytest.raises(MicrogestureError, match="missing.mp4 does not exist"):
        run_stream(opts)
    assert time.monotonic() - started < 20      # it used to wait 30 s for the first source


def test_stream_cli_with_a_pose_estimator_that_cannot_start_exits_2(tmp_path):
    video = red_video(tmp_path / "red.mp4")
    for _ in range(3):   # it aborted (SIGABRT) about one run in six
        result = subprocess.run(
            [sys.executable, "-m", "microgesture", "stream", "--bundle", str(DEMO_BUNDLE),
             "--source", str(video), "--pose", f"recorded:{tmp_path / 'missing.jsonl'}",
             "--publish", "tcp://127.0.0.1:*", "--quiet"], capture_output=True, text=True,
            timeout=120)
        assert result.returncode == 2, result.stderr[-2000:]
        assert "Traceback" not in result.stderr


def test_stall_and_reconnect_options_are_checked(tmp_path, capsys):
    from microgesture.cli import main

    base = ["stream", "--bundle", str(DEMO_BUNDLE), "--source", "rtsp://cam/live", "--quiet",
            "--publish", "tcp://127.0.0.1:*"]
    assert main(base + ["--reconnect-min", "0"]) == 2
    assert "base_s" in capsys.readouterr().err
    assert main(base + ["--reconnect-min", "5", "--reconnect-max", "1"]) == 2
    assert main(base + ["--stall-timeout", "0"]) == 2
    assert "stall limit" in capsys.readouterr().err
