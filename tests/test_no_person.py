"""Nothing is classified without a person: an empty scene gives no gesture.

Streams a plain red video through the shipped demo bundle with thresholds so low
that any classified window would start a gesture; pose is replayed from a skeleton
file (no person, a person, a person who leaves) or, when mediapipe is installed,
estimated by MediaPipe on a 1x1 red video.
"""

import importlib.util
import json

import numpy as np
import pytest

from microgesture.core.layouts import get_layout
from microgesture.core.paths import DEMO_BUNDLE
from microgesture.stream.pipeline import SmoothingOptions, StreamOptions, run_stream
from microgesture.stream.presence import person_in_frame, person_in_window

FPS, FRAMES = 15, 90
EAGER = SmoothingOptions(window=1, start_threshold=0.01, end_threshold=0.005, min_duration_s=0.0)


def red_video(path, size=(64, 64), frames=FRAMES):
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, size)
    for _ in range(frames):
        writer.write(np.full((size[1], size[0], 3), (0, 0, 255), np.uint8))
    writer.release()
    return path


def skeleton(path, present, size=(64, 64)):
    """A coco18 skeleton file: frame i has a person when ``present(i)``."""
    v = get_layout("coco18").num_joints
    rng = np.random.default_rng(0)
    with open(path, "w") as f:
        for i in range(FRAMES):
            if present(i):
                xy = rng.uniform(16, 48, (v, 2))
                kps = [[float(x), float(y), 0.9] for x, y in xy]
            else:
                kps = [[None, None, 0.0]] * v
            f.write(json.dumps({"frame": i, "t": i / FPS, "layout": "coco18", "width": size[0],
                                "height": size[1], "keypoints": kps}) + "\n")
    return path


def stream(tmp_path, video, pose):
    log = tmp_path / "events.jsonl"
    options = StreamOptions(bundle=str(DEMO_BUNDLE), sources=[str(video)], stream_ids=["cam"],
                            publish="tcp://127.0.0.1:*", pose=pose, precision="fp32",
                            events_log=str(log), heartbeat_s=0.05, hop=4, smoothing=EAGER)
    summary = run_stream(options)
    events = [json.loads(line) for line in log.read_text().splitlines()]
    return summary["streams"]["cam"], events


def test_presence_rules():
    v = 18
    kp = np.full((v, 2), 10.0, np.float32)
    assert person_in_frame(kp, np.full(v, 0.9))
    assert not person_in_frame(kp, np.zeros(v))
    few = np.zeros(v)
    few[:3] = 0.9                      # 3 of 18 joints: too few for a person
    assert not person_in_frame(kp, few)
    nan = kp.copy()
    nan[:] = np.nan
    assert not person_in_frame(nan, np.full(v, 0.9))
    yes, no = (kp, np.full(v, 0.9)), (kp, np.zeros(v))
    assert person_in_window([yes, yes, no, no]) and not person_in_window([yes, no, no, no])
    assert not person_in_window([])


def test_an_empty_scene_gives_no_gesture(tmp_path):
    video = red_video(tmp_path / "red.mp4")
    stats, events = stream(tmp_path, video, f"recorded:{skeleton(tmp_path / 's.jsonl', lambda i: False)}")
    assert not [e for e in events if e["type"] == "gesture"]
    assert stats["windows_run"] == 0 and stats["windows_no_person"] > 0
    beats = [e for e in events if e["type"] == "heartbeat"]
    assert beats and all("windows_no_person" in e["stats"] for e in beats)


def test_a_person_is_classified_and_a_leaving_person_ends_the_gesture(tmp_path):
    video = red_video(tmp_path / "red.mp4")
    stats, events = stream(tmp_path, video,
                           f"recorded:{skeleton(tmp_path / 's.jsonl', lambda i: i < 60)}")
    gestures = [e for e in events if e["type"] == "gesture"]
    assert stats["windows_run"] > 0 and stats["windows_no_person"] > 0
    assert gestures and gestures[0]["phase"] == "start" and gestures[-1]["phase"] == "end"
    # no gesture comes from a window where most pose frames have nobody (the person
    # is gone from frame 60; a window spans 40 frames)
    assert all(e["window"]["last_frame"] < 60 + 20 for e in gestures)


@pytest.mark.skipif(importlib.util.find_spec("mediapipe") is None, reason="needs mediapipe")
def test_a_1x1_red_video_with_mediapipe_gives_no_gesture(tmp_path):
    import cv2

    folder = tmp_path / "red1"          # 1x1 frames (no video codec takes that size)
    folder.mkdir()
    for i in range(100):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((1, 1, 3), (0, 0, 255), np.uint8))
    stats, events = stream(tmp_path, folder, "mediapipe-pose")
    assert not [e for e in events if e["type"] == "gesture"]
    assert stats["windows_run"] == 0 and stats["windows_no_person"] > 0
