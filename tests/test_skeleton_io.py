"""core.skeleton_io: the skeleton JSONL format and iMiGUE's raw CSV."""

import json

import numpy as np
import pytest

from microgesture.core.errors import MicrogestureError
from microgesture.core.pose import Pose
from microgesture.core.skeleton_io import (SkeletonWriter, iter_jsonl, read_imigue_csv,
                                           read_jsonl, write_jsonl)


def coco18_pose(seed=0, width=640, height=480, missing=(3, 17)):
    rng = np.random.default_rng(seed)
    kp = (rng.random((18, 2)) * (width, height)).astype(np.float32)
    sc = rng.uniform(0.1, 1.0, 18).astype(np.float32)
    kp[list(missing)] = np.nan
    sc[list(missing)] = 0.0
    return Pose(kp, sc, "coco18", width, height, 0)


def write_lines(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def good_record(frame=0, **changes):
    rec = {"frame": frame, "t": frame / 30, "layout": "coco18", "width": 640, "height": 480,
           "keypoints": [[1.0, 2.0, 0.5]] * 18}
    rec.update(changes)
    return rec


def test_jsonl_round_trip_with_missing_joints(tmp_path):
    poses = [coco18_pose(i) for i in range(4)]
    path = tmp_path / "sub" / "clip.jsonl"   # the folder is created
    with write_jsonl(path) as writer:
        for i, pose in enumerate(poses):
            writer.write(2 * i, 2 * i / 30, pose)   # every other frame, as after skips
        assert writer.frames_written == 4
    frames, times, kps, scores, layout, width, height = read_jsonl(path)
    assert (layout, width, height) == ("coco18", 640, 480)
    np.testing.assert_array_equal(frames, [0, 2, 4, 6])
    np.testing.assert_allclose(times, [0, 2 / 30, 4 / 30, 6 / 30], atol=1e-6)
    assert kps.shape == (4, 18, 2) and kps.dtype == np.float32
    assert scores.shape == (4, 18) and scores.dtype == np.float32
    np.testing.assert_allclose(kps, np.stack([p.keypoints for p in poses]), atol=0.005)
    np.testing.assert_allclose(scores, np.stack([p.scores for p in poses]), atol=5e-5)
    assert np.isnan(kps[:, [3, 17]]).all() and (scores[:, [3, 17]] == 0).all()
    first = json.loads(path.read_text().splitlines()[0])
    assert first["keypoints"][3] == [None, None, 0.0]   # NaN is written as null


def test_writer_flushes_every_line(tmp_path):
    path = tmp_path / "live.jsonl"
    writer = SkeletonWriter(path)
    writer.write(0, 0.0, coco18_pose())
    writer.write(1, 0.033, coco18_pose(1))
    assert len(read_jsonl(path)[0]) == 2   # readable before close: a killed run keeps it
    writer.close()


def test_writer_errors(tmp_path):
    with SkeletonWriter(tmp_path / "a.jsonl") as writer:
        writer.write(5, 0.0, coco18_pose())
        with pytest.raises(MicrogestureError, match="must increase"):
            writer.write(5, 0.1, coco18_pose())
        other = Pose(np.zeros((33, 2), np.float32), np.zeros(33, np.float32), "mediapipe33",
                     640, 480, 0)
        with pytest.raises(MicrogestureError, match="holds layout 'coco18'"):
            writer.write(6, 0.1, other)
        with pytest.raises(MicrogestureError, match=r"18 joints.*got \(17, 2\)"):
            writer.write_arrays(6, 0.1, np.zeros((17, 2)), np.zeros(17), "coco18", 640, 480)
    with pytest.raises(MicrogestureError, match="unknown layout 'coco19'. Did you mean"):
        SkeletonWriter(tmp_path / "b.jsonl").write_arrays(0, 0, np.zeros((18, 2)), np.zeros(18),
                                                          "coco19", 1, 1)


def test_null_reads_as_nan_with_score_zero(tmp_path):
    kp = [[1.0, 2.0, 0.5]] * 18
    kp[4] = [None, None, 0.7]   # a score with no coordinates: read as missing
    path = write_lines(tmp_path / "a.jsonl", [good_record(keypoints=kp)])
    _, _, kps, scores, *_ = read_jsonl(path)
    assert np.isnan(kps[0, 4]).all() and scores[0, 4] == 0
    assert scores[0, 5] == pytest.approx(0.5)


def test_blank_lines_are_ignored(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps(good_record(0)) + "\n\n" + json.dumps(good_record(1)) + "\n\n")
    assert len(read_jsonl(path)[0]) == 2


@pytest.mark.parametrize("line2,match", [
    ("{not json", r":2: not valid JSON"),
    ("[1, 2]", r":2: expected a JSON object"),
    (good_record(1, keypoints=[[1.0, 2.0, 0.5]] * 17), r":2: 'keypoints' must hold 18"),
    (good_record(1, keypoints=[[1.0, 2.0]] * 18), r":2: 'keypoints' must hold 18"),
    (good_record(1, keypoints=[[1.0, "x", 0.5]] * 18), r":2: 'keypoints' must be a list"),
    (good_record(1, keypoints=[[1.0, 2.0, 1.5]] * 18), r":2: joint 0: score must be .* \[0, 1\]"),
    (good_record(1, layout="coco81"), r":2: unknown layout 'coco81'. Did you mean 'coco18'"),
    (good_record(1, layout="coco17", keypoints=[[1.0, 2.0, 0.5]] * 17), r":2: layout 'coco17' differs"),
    (good_record(0), r":2: frame 0 does not follow frame 0"),
    (good_record(1, width=0), r":2: 'width' must be an integer >= 1"),
    (good_record(1, t="soon"), r":2: 't' must be a number"),
    ({"frame": 1, "t": 0.1}, r":2: missing 'layout', 'width', 'height', 'keypoints'"),
])
def test_bad_lines_name_path_and_line(tmp_path, line2, match):
    path = tmp_path / "bad.jsonl"
    text = line2 if isinstance(line2, str) else json.dumps(line2)
    path.write_text(json.dumps(good_record(0)) + "\n" + text + "\n")
    with pytest.raises(MicrogestureError, match=match) as e:
        read_jsonl(path)
    assert str(e.value).startswith(f"{path}:2:")


def test_incomplete_last_line_hint(tmp_path):
    path = tmp_path / "killed.jsonl"
    path.write_text(json.dumps(good_record(0)) + "\n" + json.dumps(good_record(1))[:40])
    with pytest.raises(MicrogestureError, match="killed while writing"):
        read_jsonl(path)


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(MicrogestureError, match="holds no frames"):
        read_jsonl(tmp_path / "empty.jsonl")
    with pytest.raises(MicrogestureError, match="cannot read skeletons from .*nope.jsonl"):
        read_jsonl(tmp_path / "nope.jsonl")


def test_mixed_frame_sizes(tmp_path):
    path = write_lines(tmp_path / "photos.jsonl",
                       [good_record(0), good_record(1, width=800, height=600)])
    assert [(r.width, r.height) for r in iter_jsonl(path)] == [(640, 480), (800, 600)]
    with pytest.raises(MicrogestureError, match="use iter_jsonl"):
        read_jsonl(path)


# ----------------------------------------------------------------------------- iMiGUE CSV

def imigue_rows(n=3, seed=0):
    """n rows of 35 joints x (x, y, confidence); joint 9 is missing (0,0,0) in every row."""
    rng = np.random.default_rng(seed)
    arr = np.empty((n, 35, 3))
    arr[..., 0] = rng.uniform(0, 1920, (n, 35)).round(3)
    arr[..., 1] = rng.uniform(0, 1080, (n, 35)).round(3)
    arr[..., 2] = rng.uniform(0.05, 1, (n, 35)).round(6)
    arr[:, 9] = 0
    return arr


def write_csv(path, arr, header=False, trailing_comma=False):
    lines = ["frame," + "x,y,c," * 34 + "x,y,c"] if header else []
    for t, row in enumerate(arr.reshape(len(arr), -1)):  # 106 columns: the frame index first
        lines.append(",".join([str(t)] + [f"{v:g}" for v in row]) + ("," if trailing_comma else ""))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("header,trailing_comma", [(False, False), (True, True)])
def test_read_imigue_csv(tmp_path, header, trailing_comma):
    arr = imigue_rows()
    path = write_csv(tmp_path / "0001_light_hand.csv", arr, header, trailing_comma)
    frames, times, kps, scores, layout, width, height = read_imigue_csv(path, fps=25.0)
    assert (layout, width, height) == ("imigue35", 1920, 1080)
    np.testing.assert_array_equal(frames, [0, 1, 2])
    np.testing.assert_allclose(times, [0, 0.04, 0.08])
    assert kps.shape == (3, 35, 2) and scores.shape == (3, 35)
    keep = np.arange(35) != 9
    np.testing.assert_allclose(kps[:, keep], arr[:, keep, :2], rtol=1e-5)
    np.testing.assert_allclose(scores[:, keep], arr[:, keep, 2], rtol=1e-5)
    assert np.isnan(kps[:, 9]).all() and (scores[:, 9] == 0).all()   # OpenPose's 0,0,0


def test_imigue_csv_errors(tmp_path):
    arr = imigue_rows(3)
    path = write_csv(tmp_path / "a.csv", arr)
    lines = path.read_text().splitlines()
    lines[1] = ",".join(lines[1].split(",")[:-3])   # one joint short
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(MicrogestureError, match=r"a.csv: data row 2 has 103 values; .* has 106 numbers"):
        read_imigue_csv(path)
    lines = write_csv(tmp_path / "b.csv", arr).read_text().splitlines()
    lines[2] = lines[2].replace(lines[2].split(",")[4], "oops", 1)
    (tmp_path / "b.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(MicrogestureError, match=r"b.csv: data row 3, column 5 is 'oops', not a number"):
        read_imigue_csv(tmp_path / "b.csv")
    (tmp_path / "c.csv").write_text("a,b,c\n")
    with pytest.raises(MicrogestureError, match="holds no frames"):
        read_imigue_csv(tmp_path / "c.csv")
