"""Quiet output: OpenCV, FFmpeg and MediaPipe log lines are silenced unless --verbose."""

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from microgesture.core.paths import DEMO_BUNDLE
from microgesture.core.quiet import is_native_log

NATIVE = [
    b"[ WARN:0@0.033] global cap.cpp:215 open VIDEOIO(FFMPEG): backend is generally available",
    b"[mov,mp4,m4a,3gp,3g2,mj2 @ 0x55eb479ea080] moov atom not found",
    b"[tcp @ 0x55a849ff3f00] Connection to tcp://127.0.0.1:9?timeout=0 failed: Connection refused",
    b"W0000 00:00:1795942275.729388    5463 inference_feedback_manager.cc:114] Feedback manager",
    b"I0000 00:00:1732.25    17 gl_context.cc:357] GL version: 2.1",
    b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
]
OURS = [
    b"microgesture stream: error: cannot open /tmp/x.mp4: the file could not be opened.",
    b"Traceback (most recent call last):",
    b"WARNING microgesture.stream.sources: cam: lost: 3 failed reads",
    b"publishing on tcp://127.0.0.1:5555: microgesture listen --connect tcp://127.0.0.1:5555",
    b"[gap: 3 missed]",
]


def test_native_lines_are_recognised_and_ours_are_not():
    assert all(is_native_log(line) for line in NATIVE)
    assert not any(is_native_log(line) for line in OURS)


def run(*args):
    return subprocess.run([sys.executable, "-m", "microgesture", *args], capture_output=True,
                          text=True, timeout=300)


def test_a_bad_video_gives_one_line_and_verbose_shows_ffmpeg(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"")
    args = ("stream", "--bundle", str(DEMO_BUNDLE), "--source", str(bad), "--publish",
            "tcp://127.0.0.1:*", "--quiet")
    quiet = run(*args)
    assert quiet.returncode == 2
    assert quiet.stderr.strip().splitlines() == [quiet.stderr.strip()]   # one line
    assert quiet.stderr.startswith("microgesture stream: error: cannot open")
    loud = run(*args, "--verbose")
    assert loud.returncode == 2 and "moov atom not found" in loud.stderr


@pytest.mark.skipif(importlib.util.find_spec("mediapipe") is None, reason="needs mediapipe")
def test_mediapipe_is_quiet(tmp_path):
    import cv2

    image = tmp_path / "person.png"
    rng = np.random.default_rng(0)
    cv2.imwrite(str(image), rng.integers(0, 255, (96, 96, 3), np.uint8))
    result = run("pose", str(image), "--out", str(tmp_path / "p.jsonl"), "--estimator",
                 "mediapipe-pose", "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
