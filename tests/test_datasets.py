"""training.datasets and training.transforms on small files in the real formats."""

import csv
import logging
import os
import pickle

import cv2
import numpy as np
import pytest
import torch

from microgesture.core.config import get_config
from microgesture.core.errors import MicrogestureError
from microgesture.core.labels import IMIGUE_CLASSES
from microgesture.core.layouts import get_layout
from microgesture.core.skeleton_io import SkeletonWriter
from microgesture.training.datasets import (ClipRecord, DatasetIndex, detect_coords, open_dataset,
                                            restricted_load)
from microgesture.core.sampling import sample_clip, sample_indices
from microgesture.training.transforms import ClipDataset, VideoClip, make_loader, set_epoch

TINY = get_config("clip-mg-tiny")  # R=4, P=8, S=32, coco18, heatmaps 16x16, sigma 1

# ----------------------------------------------------------------------------- helpers: poses

# Where each canonical joint sits on a person facing the camera, in units of the person's box.
_TEMPLATE = {
    "nose": (0.5, 0.15), "neck": (0.5, 0.27), "mid_hip": (0.5, 0.62),
    "left_eye": (0.54, 0.12), "right_eye": (0.46, 0.12), "left_ear": (0.58, 0.14), "right_ear": (0.42, 0.14),
    "left_shoulder": (0.64, 0.28), "right_shoulder": (0.36, 0.28),
    "left_elbow": (0.72, 0.44), "right_elbow": (0.28, 0.44),
    "left_wrist": (0.78, 0.58), "right_wrist": (0.25, 0.55),
    "left_hip": (0.57, 0.62), "right_hip": (0.43, 0.62),
    "left_knee": (0.58, 0.8), "right_knee": (0.42, 0.8),
    "left_ankle": (0.58, 0.97), "right_ankle": (0.42, 0.97),
}


def _template(canonical: str):
    if canonical in _TEMPLATE:
        return _TEMPLATE[canonical]
    side = "left" if canonical.startswith("left") else "right"
    if "tip" in canonical:  # fingertips: just beyond the wrist
        x, y = _TEMPLATE[f"{side}_wrist"]
        return x + (0.02 if side == "left" else -0.02), y + 0.04
    x, y = _TEMPLATE[f"{side}_ankle"]  # toes and heels
    return x, 0.99


def person(layout, n_frames, box=(20, 10, 100, 110), move=0.0):
    """keypoints (T, V, 2) and scores (T, V) of a person in ``box`` (pixels); the left
    wrist moves right by ``move`` pixels per frame."""
    lay = get_layout(layout)
    x0, y0, x1, y1 = box
    unit = np.array([_template(c) for c in lay.canonical])
    kp = np.repeat((unit * (x1 - x0, y1 - y0) + (x0, y0))[None], n_frames, 0).astype(np.float64)
    kp[:, lay.index("left_wrist"), 0] += move * np.arange(n_frames)
    return kp.astype(np.float32), np.full(kp.shape[:2], 0.9, np.float32)


# ----------------------------------------------------------------------------- helpers: files

def write_video(path, images_rgb, fps=25.0, fourcc="MJPG"):
    h, w = images_rgb[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened(), f"cannot write {path}"
    for img in images_rgb:
        writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def marker_frames(kp, size=(160, 120), joint=None, value=128):
    """Gray frames (value) with a white 5x5 marker at keypoints[:, joint] (if given)."""
    w, h = size
    out = []
    for t in range(len(kp)):
        img = np.full((h, w, 3), value, np.uint8)
        if joint is not None:
            x, y = np.round(kp[t, joint]).astype(int)
            img[y - 2:y + 3, x - 2:x + 3] = 255
        out.append(img)
    return out


def write_skeleton(path, kp, sc, layout="coco18", size=(160, 120), fps=25.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    with SkeletonWriter(path) as w:
        for t in range(len(kp)):
            w.write_arrays(t, t / fps, kp[t], sc[t], layout, *size)
    return path


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def make_own(root, clips, classes=None, n_frames=8, size=(160, 120), videos=True, marker=None, move=0.0):
    """An own-data folder: clips = [(clip, label, subject), ...]."""
    root.mkdir(parents=True, exist_ok=True)
    write_csv(root / "clips.csv", [("clip", "label", "subject"), *clips])
    if classes is not None:
        (root / "classes.txt").write_text("".join(c + "\n" for c in classes))
    if videos:
        (root / "videos").mkdir(exist_ok=True)
    for clip, _, _ in clips:
        kp, sc = person("coco18", n_frames, move=move)
        write_skeleton(root / "skeletons" / f"{clip}.jsonl", kp, sc, size=size)
        if videos:
            write_video(root / "videos" / f"{clip}.avi", marker_frames(kp, size, marker))
    return root


def light_hand_rows(kp, sc, header=False):
    """Rows of a _light_hand.csv as released: 106 columns, the frame index first."""
    rows = [[str(t)] + [f"{v:.2f}" for v in np.concatenate([kp[t], sc[t][:, None]], 1).ravel()]
            for t in range(len(kp))]
    return ([["frame"] + [f"{c}{j}" for j in range(35) for c in "xyc"]] if header else []) + rows


def make_imigue_raw(root, videos, size=(192, 108), with_video=True, release=False, header=False):
    """iMiGUE raw: videos = {name: (n_frames, [(raw id, start, end), ...])}, frames 0-based
    inclusive. Flat with split.csv (subject s<name>, alternating train/test), or with
    ``release=True`` the release's tree: imigue_skeleton_<split>/<name>/ (alternating
    train/validate/test) and RGB in imigue_rgb/<name>.mp4, no split file."""
    root.mkdir(parents=True, exist_ok=True)
    split_rows = [("video", "subject", "split")]
    for k, (name, (n, labels)) in enumerate(videos.items()):
        kp, sc = person("imigue35", n, box=(700, 200, 1200, 1000))
        folder = root / f"imigue_skeleton_{('train', 'validate', 'test')[k % 3]}" / name if release else root
        folder.mkdir(parents=True, exist_ok=True)
        write_csv(folder / f"{name}_light_hand.csv", light_hand_rows(kp, sc, header))
        write_csv(folder / f"{name}_label.csv", [list(r) for r in labels])
        if with_video:
            w, h = size
            frames = []
            for t in range(n):  # the frame index as the position of a white bar
                img = np.zeros((h, w, 3), np.uint8)
                img[:, 4 * t:4 * t + 4] = 255
                frames.append(img)
            (root / "imigue_rgb").mkdir(exist_ok=True)
            write_video((root / "imigue_rgb" if release else root) / f"{name}.mp4", frames, fourcc="mp4v")
        split_rows.append((name, f"s{name}", "train" if k % 2 == 0 else "test"))
    if not release:
        write_csv(root / "split.csv", split_rows)
    return root


def make_challenge(root, split="train", names=("vidA_1", "vidA_2", "vidB_1"), labels=(0, 5, 31), t=12,
                   coords="pixels", valid=9, videos=False, video_frames=20):
    """A challenge release: <split>_data.npy (N, 3, T, 22, 1) and <split>_label.pkl."""
    root.mkdir(parents=True, exist_ok=True)
    data = np.zeros((len(names), 3, t, 22, 1), np.float32)
    kp, sc = person("imigue22", valid, box=(700, 200, 1200, 1000))
    if coords == "unit":
        kp = kp / (1920, 1080)
    elif coords == "centred":
        kp = kp / (1920, 1080) - 0.5
    for i in range(len(names)):
        data[i, :2, :valid, :, 0] = kp.transpose(2, 0, 1)
        data[i, 2, :valid, :, 0] = sc
    np.save(root / f"{split}_data.npy", data)
    with open(root / f"{split}_label.pkl", "wb") as f:
        pickle.dump((list(names), list(labels)), f)
    if videos:
        (root / "videos").mkdir(exist_ok=True)
        for name in names:
            write_video(root / "videos" / f"{name}.mp4", [np.full((108, 192, 3), 90, np.uint8)] * video_frames,
                        fourcc="mp4v")
    return root


def unnormalise(frames):
    mean = torch.tensor(TINY.clip.mean).view(3, 1, 1)
    std = torch.tensor(TINY.clip.std).view(3, 1, 1)
    return frames * std + mean


def peak(image2d):
    """(x, y) of the maximum of a 2D array."""
    y, x = np.unravel_index(np.argmax(image2d), image2d.shape)
    return np.array([x, y], float)


# ----------------------------------------------------------------------------- own data

def test_own_data_records_classes_and_skips(tmp_path, caplog):
    root = make_own(tmp_path / "ds", [("c1", "wave", "alice"), ("c2", "nod", "bob"), ("c3", "wave", "carol"),
                                      ("c4", "1", "dave")], classes=["nod", "wave"])
    (root / "skeletons" / "c2.jsonl").write_text("{not json\n")
    (root / "videos" / "c3.avi").unlink()
    with caplog.at_level(logging.WARNING):
        index = open_dataset(root)
    assert index.kind == "clips" and index.layout == "coco18" and index.classes == ("nod", "wave")
    assert [r.clip_id for r in index.records] == ["c1", "c4"]
    assert [r.label for r in index.records] == [1, 1]  # a name, and an integer id
    assert index.records[0].video.name == "c1.avi" and (index.records[0].start, index.records[0].end) == (0, 8)
    assert index.subjects() == ("alice", "dave") and index.class_counts() == (0, 2)
    skipped = {p.name: reason for p, reason in index.skipped}
    assert len(index.skipped) == 2 and "unreadable skeleton" in skipped["c2.jsonl"]
    assert "no video" in skipped["c3"]
    assert "skipped 2" in caplog.text
    with pytest.raises(MicrogestureError, match=r"c2\.jsonl"):
        open_dataset(root, strict=True)


def test_own_data_classes_without_classes_txt(tmp_path):
    index = open_dataset(make_own(tmp_path / "a", [("c1", "wave", "s1"), ("c2", "nod", "s2")], videos=False))
    assert index.classes == ("nod", "wave") and [r.label for r in index.records] == [1, 0]
    assert all(r.video is None for r in index.records)  # no videos/ folder: pose-only data
    index = open_dataset(make_own(tmp_path / "b", [("c1", "2", "s1"), ("c2", "0", "s2")], videos=False))
    assert index.classes == ("class 0", "class 1", "class 2")


@pytest.mark.parametrize("clips,classes,match", [
    ([("c1", "jump", "s1")], ["nod", "wave"], r"clips\.csv:2: label 'jump' is not a class"),
    ([("c1", "nod", "s1"), ("c2", "7", "s1")], ["nod", "wave"], r"clips\.csv:3: label id 7 is out of range"),
    ([("c1", "nod", "s1"), ("c1", "nod", "s2")], None, r"clips\.csv:3: clip 'c1' is listed twice"),
])
def test_own_data_label_errors(tmp_path, clips, classes, match):
    root = make_own(tmp_path / "ds", clips, classes=classes, videos=False)
    with pytest.raises(MicrogestureError, match=match):
        open_dataset(root)


def test_empty_csv_and_wrong_layouts_name_the_missing_file(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    (root / "clips.csv").write_text("")
    with pytest.raises(MicrogestureError, match="clips.csv is empty"):
        open_dataset(root)
    (root / "clips.csv").write_text("clip,label,subject\n")
    with pytest.raises(MicrogestureError, match="no clips"):
        open_dataset(root)
    (root / "clips.csv").write_text("clip,label,subject\nc1,a,s1\n")
    with pytest.raises(MicrogestureError, match=r"missing folder .*skeletons"):
        open_dataset(root)
    (root / "clips.csv").write_text("name,label\nc1,a\n")
    with pytest.raises(MicrogestureError, match="lacks clip, subject"):
        open_dataset(root)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("hello")
    with pytest.raises(MicrogestureError, match="found no clips.csv"):
        open_dataset(other)
    with pytest.raises(MicrogestureError, match=r"missing .*other/clips\.csv"):
        open_dataset(other, kind="clips")
    with pytest.raises(MicrogestureError, match="does not exist"):
        open_dataset(tmp_path / "nowhere")


# ----------------------------------------------------------------------------- iMiGUE raw

def test_imigue_raw_records(tmp_path):
    root = make_imigue_raw(tmp_path / "raw", {
        "0001": (30, [("gestureID", "start", "end"), (1, 0, 9), (99, 11, 29)]),
        "0002": (25, [(32, 4, 4), (17, 2, 19)]),
    })
    index = open_dataset(root)
    assert index.kind == "imigue-raw" and index.layout == "imigue35" and index.classes == IMIGUE_CLASSES
    got = [(r.clip_id, r.label, r.start, r.end, r.subject, r.split) for r in index.records]
    assert got == [("0001_0", 0, 0, 10, "s0001", "train"), ("0001_1", 31, 11, 30, "s0001", "train"),
                   ("0002_0", 31, 4, 5, "s0002", "test"), ("0002_1", 16, 2, 20, "s0002", "test")]
    assert all(r.video.name == r.clip_id[:4] + ".mp4" and r.skeleton_format == "imigue-csv" for r in index.records)
    assert [r.clip_id for r in open_dataset(root, split="test").records] == ["0002_0", "0002_1"]


@pytest.mark.parametrize("row,match", [
    ((40, 1, 5), r"0001_label\.csv:2: iMiGUE gesture id 40 is out of range"),
    ((3, 9, 4), r"0001_label\.csv:2: start frame 9 is after end frame 4"),
    ((3, -1, 4), r"0001_label\.csv:2: start frame -1 is negative; iMiGUE frames are 0-based"),
])
def test_imigue_raw_label_errors_name_file_and_line(tmp_path, row, match):
    root = make_imigue_raw(tmp_path / "raw", {"0001": (30, [(1, 1, 2), row])}, with_video=False)
    with pytest.raises(MicrogestureError, match=match):
        open_dataset(root)


def test_imigue_raw_label_beyond_the_skeleton_is_skipped_and_named(tmp_path):
    root = make_imigue_raw(tmp_path / "raw", {"0001": (30, [(1, 0, 2), (3, 5, 30)])}, with_video=False)
    index = open_dataset(root)
    assert [r.clip_id for r in index] == ["0001_0"]
    assert "clip '0001_1' (label row 2): frames 5..30 go beyond the 30 frames (0..29)" in index.skipped[0][1]
    with pytest.raises(MicrogestureError, match=r"0001_label\.csv: clip '0001_1'.*go beyond"):
        open_dataset(root, strict=True)


def test_imigue_raw_split_file_problems(tmp_path):
    root = make_imigue_raw(tmp_path / "raw", {"0001": (10, [(1, 1, 2)]), "0002": (10, [(2, 1, 2)])},
                           with_video=False)
    write_csv(root / "split.csv", [("video", "subject", "split"), ("0001", "s1", "train")])
    index = open_dataset(root)  # 0002 is not in the split file: skipped, with the reason
    assert [r.clip_id for r in index.records] == ["0001_0"] and index.records[0].video is None
    assert "not in the split file" in index.skipped[0][1]
    with pytest.raises(MicrogestureError, match="0002.*not in the split file"):
        open_dataset(root, strict=True)
    with pytest.raises(MicrogestureError, match="no clips in split 'test'"):
        open_dataset(root, split="test")
    (root / "split.csv").unlink()
    with pytest.raises(MicrogestureError, match=r"not inside one of the release's folders.*split\.csv"):
        open_dataset(root)
    write_csv(root / "split.csv", [("video", "subject", "split"), ("0001", "s1", "train"), ("0002", "s1", "test")])
    with pytest.raises(MicrogestureError, match=r"subject\(s\) \['s1'\] appear in more than one split"):
        open_dataset(root)
    (root / "0002_light_hand.csv").unlink()
    write_csv(root / "split.csv", [("video", "subject", "split"), ("0001", "s1", "train"), ("0002", "s2", "test")])
    with pytest.raises(MicrogestureError, match=r"0002_light_hand\.csv: missing skeleton file"):
        open_dataset(root, strict=True)


def test_video_seek_reads_the_right_frames(tmp_path):
    root = make_imigue_raw(tmp_path / "raw", {"0001": (30, [(1, 1, 2)])})
    with VideoClip(root / "0001.mp4") as video:
        assert (video.width, video.height, video.frame_count) == (192, 108, 30)
        frames = video.read([21, 17, 29, 17])
    assert sorted(frames) == [17, 21, 29]
    for index, img in frames.items():
        columns = img.mean((0, 2))
        assert abs(np.argmax(columns) // 4 - index) <= 0 and img.shape == (108, 192, 3)
    with VideoClip(root / "0001.mp4") as video, pytest.raises(MicrogestureError, match="cannot decode frame 30"):
        video.read([28, 30])


# ----------------------------------------------------------------------------- iMiGUE challenge

@pytest.mark.parametrize("coords", ["pixels", "unit", "centred"])
def test_challenge_records_and_coordinates(tmp_path, coords):
    root = make_challenge(tmp_path / "ch", coords=coords)
    make_challenge(root, split="test", names=("vidC_1",), labels=(3,), coords=coords)
    index = open_dataset(root)
    assert index.kind == "imigue-challenge" and index.layout == "imigue22"
    got = [(r.clip_id, r.label, r.subject, r.split, r.pose_array_index, r.coords) for r in index.records]
    assert got == [("vidC_1", 3, "vidC", "test", 0, coords), ("vidA_1", 0, "vidA", "train", 0, coords),
                   ("vidA_2", 5, "vidA", "train", 1, coords), ("vidB_1", 31, "vidB", "train", 2, coords)]
    assert len(open_dataset(root, split="train")) == 3
    # every coordinate convention gives back the pixels make_challenge placed the person at
    # (box 700..1200 x 200..1000 of a 1920x1080 frame): joints in the model's crop, computed
    # here from those pixels and the documented crop (PoseCompact: padding 0.25, square)
    # (no videos: a pose-only model, whose window has no joints; its heatmaps at 128 px
    # place each joint to within half a pixel, 0.4 % of the crop)
    item = ClipDataset(open_dataset(root, split="train"),
                       TINY.replace({"modality": "pose", "pose.heatmap_size": 128}), train=False)[0]
    assert set(item) == {"heatmaps", "label", "index"}
    kp, _ = person("coco18", 1, box=(700, 200, 1200, 1000))
    present = np.array([c in get_layout("imigue22").canonical for c in get_layout("coco18").canonical])
    pts = kp[0][present] + 0.5                                    # pixel centres, slice convention
    centre, side = (pts.min(0) + pts.max(0)) / 2, 1.25 * (pts.max(0) - pts.min(0)).max()
    expected = (pts - (centre - side / 2)) / side
    heatmaps = item["heatmaps"].numpy()                           # (V, P, 128, 128)
    assert heatmaps[~present].max() == 0
    for v, (x, y) in zip(np.flatnonzero(present), expected * 128 - 0.5):
        assert np.abs(peak(heatmaps[v, 0]) - (x, y)).max() <= 0.5 + 1e-6, get_layout("coco18").joints[v]


def test_challenge_videos_subjects_and_errors(tmp_path):
    root = make_challenge(tmp_path / "ch", videos=True, video_frames=20)
    write_csv(root / "split.csv", [("video", "subject", "split"), ("vidA", "anna", "train"),
                                   ("vidB", "ben", "train")])
    index = open_dataset(root)
    assert [r.subject for r in index.records] == ["anna", "anna", "ben"]
    assert all(r.video is not None and r.video.parent.name == "videos" for r in index.records)
    item = ClipDataset(index, TINY, train=True)[1]  # 9 skeleton frames over a 20-frame video
    assert item["frames"].shape == (4, 3, 32, 32) and item["label"] == 5
    os.remove(root / "train_label.pkl")
    with pytest.raises(MicrogestureError, match=r"missing .*train_label\.pkl"):
        open_dataset(root)
    with open(root / "train_label.pkl", "wb") as f:
        pickle.dump((["vidA_1", "vidA_2", "vidB_1"], [0, 32, 1]), f)
    with pytest.raises(MicrogestureError, match="sample 1 \\(vidA_2\\) has the label 32"):
        open_dataset(root)
    with pytest.raises(MicrogestureError, match=r"missing .*test_data\.npy.*found splits \['train'\]"):
        open_dataset(root, split="test")


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_restricted_unpickler_refuses_code(tmp_path):
    target = tmp_path / "pwned"
    root = make_challenge(tmp_path / "ch")
    with open(root / "train_label.pkl", "wb") as f:
        pickle.dump((["vidA_1", "vidA_2", "vidB_1"], [0, 1, _Evil(target)]), f)
    with pytest.raises(MicrogestureError, match=r"train_label\.pkl was refused.*(posix|os)\.system"):
        open_dataset(root)
    assert not target.exists()
    with pytest.raises(pickle.UnpicklingError):
        restricted_load(pickle.dumps(np.arange(3)))
    for protocol in (0, 2, pickle.HIGHEST_PROTOCOL):
        data = (["a_1", "b_2"], [1, 2], {"x": {1.5, 2.5}}, frozenset({3}), True, None)
        assert restricted_load(pickle.dumps(data, protocol=protocol)) == data


def test_detect_coords():
    data = np.zeros((2, 3, 4, 22, 1), np.float32)
    data[:, 2] = 1
    data[:, :2] = 0.4
    assert detect_coords(data) == "unit"
    data[0, 0, 0, 0] = -0.3
    assert detect_coords(data) == "centred"
    data[1, 0, 0, 0] = 900
    assert detect_coords(data) == "pixels"


# ----------------------------------------------------------------------------- subjects

def _index(subjects):
    records = tuple(ClipRecord(f"c{i}", i % 2, s, "coco18", None) for i, s in enumerate(subjects))
    return DatasetIndex(records, ("a", "b"), "coco18", ".", "clips")


def test_split_by_subject_is_disjoint():
    index = _index(["s1", "s1", "s2", "s3", "s3", "s3", "s4", "s5", "s6", "s7"])
    train, test = index.split_by_subject(fraction=0.3, seed=1)
    assert not set(train.subjects()) & set(test.subjects())
    assert len(test.subjects()) == 2 and len(train) + len(test) == len(index)
    assert index.split_by_subject(0.3, seed=1)[1].subjects() == test.subjects()  # seeded
    for fraction in (0.01, 0.99):  # at least one subject on each side
        train, test = index.split_by_subject(fraction=fraction, seed=2)
        assert len(train.subjects()) >= 1 and len(test.subjects()) >= 1
    train, test = index.split_by_subject(test_subjects=["s3", "s7"])
    assert test.subjects() == ("s3", "s7") and len(test) == 4 and "s3" not in train.subjects()
    with pytest.raises(MicrogestureError, match="unknown test subject.*'s9'"):
        index.split_by_subject(["s9"])
    assert len(index.split_by_subject(index.subjects())[0]) == 0  # evaluating on named test subjects only
    with pytest.raises(MicrogestureError, match="at least 2 subjects"):
        _index(["s1", "s1"]).split_by_subject(fraction=0.5)
    with pytest.raises(MicrogestureError, match="fraction must lie in"):
        index.split_by_subject(fraction=1.0)
    with pytest.raises(MicrogestureError, match="no split information"):
        index.by_split("test")


# ----------------------------------------------------------------------------- sampling

@pytest.mark.parametrize("n", [1, 3, 7, 8, 16, 33, 100])
def test_sample_indices_segments_and_alignment(n):
    rng = np.random.default_rng(0)
    for train in (False, True):
        for _ in range(20 if train else 1):
            rgb, pose = sample_clip(n, 4, 8, train, rng)
            assert rgb.shape == (4,) and pose.shape == (8,) and rgb.dtype == np.int64
            assert (np.diff(pose) >= 0).all() and pose.min() >= 0 and pose.max() < n
            for k, i in enumerate(pose):  # frame k lies in segment k (floored)
                assert np.floor(k * n / 8) <= i <= max(np.ceil((k + 1) * n / 8) - 1, np.floor(k * n / 8))
            for r, i in enumerate(rgb):  # RGB frame r lies in the span of pose segments [2r, 2r + 2)
                lo, hi = np.floor(2 * r * n / 8), np.ceil((2 * r + 2) * n / 8) - 1
                assert lo <= i <= max(hi, lo)
    assert list(sample_indices(2, 4, False)) == [0, 0, 1, 1]  # short clips repeat frames
    assert list(sample_indices(32, 8, False)) == [2, 6, 10, 14, 18, 22, 26, 30]


def test_sample_indices_random_in_training_fixed_in_eval():
    a = sample_indices(100, 8, True, np.random.default_rng(1))
    b = sample_indices(100, 8, True, np.random.default_rng(2))
    assert not np.array_equal(a, b)
    assert np.array_equal(a, sample_indices(100, 8, True, np.random.default_rng(1)))
    assert np.array_equal(sample_indices(100, 8, False), sample_indices(100, 8, False, np.random.default_rng(5)))
    with pytest.raises(MicrogestureError, match="0 frames"):
        sample_indices(0, 8, False)


# ----------------------------------------------------------------------------- ClipDataset

def test_item_shapes_dtypes_and_normalisation(tmp_path):
    index = open_dataset(make_own(tmp_path / "ds", [("c1", "a", "s1"), ("c2", "b", "s2")]))
    item = ClipDataset(index, TINY, train=False)[1]
    assert item["frames"].shape == (4, 3, 32, 32) and item["frames"].dtype == torch.float32
    assert item["heatmaps"].shape == (18, 8, 16, 16) and item["heatmaps"].dtype == torch.float32
    assert item["joints"].shape == (4, 18, 3) and item["joints"].dtype == torch.float32
    assert item["label"].dtype == torch.int64 and int(item["label"]) == 1 and int(item["index"]) == 1
    # the frames are gray 128 and the crop lies inside the image: (128/255 - mean) / std everywhere
    expected = (128 / 255 - torch.tensor(TINY.clip.mean)) / torch.tensor(TINY.clip.std)
    assert torch.allclose(item["frames"][:, :, 8:24, 8:24].mean((0, 2, 3)), expected, atol=0.03)
    j = item["joints"]
    assert (j[..., 2] > 0).all() and (j[..., :2] > 0).all() and (j[..., :2] < 1).all()
    assert 0.5 < float(item["heatmaps"].max()) <= 0.9 + 1e-6  # score-weighted peaks


def test_heatmap_peaks_agree_with_joints(tmp_path):
    # 8 frames: eval samples pose frames 0..7 and RGB frames 1, 3, 5, 7 = pose frames 2r + 1
    index = open_dataset(make_own(tmp_path / "ds", [("c1", "a", "s1")], move=2.0))
    for train, flip in ((False, 0.0), (True, 0.0), (True, 1.0)):
        ds = ClipDataset(index, TINY, train=train, flip_prob=flip, crop_scale=(0.8, 1.0) if train else (1, 1))
        item = ds[0]
        rgb, pose = sample_clip(8, 4, 8, train, ds.rng(0) if train else None)
        hm, joints = item["heatmaps"].numpy(), item["joints"].numpy()
        for r in range(4):
            p = int(np.flatnonzero(pose == rgb[r])[0])  # a pose frame showing the same video frame
            for v in range(18):
                if joints[r, v, 2] > 0 and 0.05 < joints[r, v, 0] < 0.95 and 0.05 < joints[r, v, 1] < 0.95:
                    assert np.abs(peak(hm[v, p]) - (joints[r, v, :2] * 16 - 0.5)).max() <= 0.51, (train, flip, r, v)


@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_flip_moves_frames_heatmaps_and_joints_together(tmp_path, flip):
    lay = get_layout("coco18")
    left, right = lay.index("LWrist"), lay.index("RWrist")
    index = open_dataset(make_own(tmp_path / "ds", [("c1", "a", "s1")], marker=left))
    item = ClipDataset(index, TINY, train=True, flip_prob=flip, crop_scale=(1.0, 1.0))[0]
    # after a flip the person's left wrist, which carries the marker, is seen as a right wrist
    seen = right if flip else left
    joints = item["joints"].numpy()
    gray = unnormalise(item["frames"]).mean(1).numpy()  # (R, S, S)
    for r in range(4):
        where = joints[r, seen, :2] * 32 - 0.5
        assert np.abs(peak(gray[r]) - where).max() <= 1.5
        assert np.abs(peak(item["heatmaps"][seen, 2 * r].numpy()) - (joints[r, seen, :2] * 16 - 0.5)).max() <= 0.51
    other = right if seen == left else left
    # the person's left hand is on the image's right; the flip mirrors it to the left
    assert (joints[0, seen, 0] > 0.5) == (not flip) and (joints[0, other, 0] < 0.5) == (not flip)


def test_determinism_per_seed_epoch_and_index(tmp_path):
    index = open_dataset(make_own(tmp_path / "ds", [("c1", "a", "s1"), ("c2", "a", "s2")], n_frames=24,
                                  move=1.0))
    ds = ClipDataset(index, TINY, train=True, seed=3)
    a, b = ds[0], ClipDataset(index, TINY, train=True, seed=3)[0]
    assert all(torch.equal(a[k], b[k]) for k in a)
    ds.set_epoch(1)
    c = ds[0]
    assert not torch.equal(a["heatmaps"], c["heatmaps"])
    assert not torch.equal(ds[1]["joints"], c["joints"])
    ev = ClipDataset(index, TINY, train=False)
    assert torch.equal(ev[0]["frames"], ev[0]["frames"])
    ev.set_epoch(5)
    assert torch.equal(ev[0]["heatmaps"], ClipDataset(index, TINY, train=False)[0]["heatmaps"])


def test_bad_video_is_skipped_and_counted_or_raises(tmp_path, caplog):
    root = make_own(tmp_path / "ds", [("c1", "a", "s1"), ("c2", "b", "s2")])
    (root / "videos" / "c1.avi").write_bytes(b"this is not a video" * 10)
    index = open_dataset(root)  # the file exists: only decoding finds out
    ds = ClipDataset(index, TINY, train=False)
    with caplog.at_level(logging.WARNING):
        item = ds[0]
    assert int(item["index"]) == 1 and ds.bad == 1 and "c1.avi" in caplog.text
    ds[0]
    assert ds.bad == 1  # a known bad clip is not retried
    with pytest.raises(MicrogestureError, match=r"c1\.avi"):
        ClipDataset(index, TINY, train=False, skip_bad=False)[0]


def test_pose_only_data(tmp_path):
    index = open_dataset(make_own(tmp_path / "ds", [("c1", "a", "s1")], videos=False))
    item = ClipDataset(index, TINY.replace(modality="pose"), train=True)[0]
    assert "frames" not in item and "joints" not in item and item["heatmaps"].max() > 0.5
    with pytest.raises(MicrogestureError, match="no video.*modality='pose'"):
        ClipDataset(index, TINY, train=True)


def test_imigue_raw_item_converts_layout_and_seeks(tmp_path):
    root = make_imigue_raw(tmp_path / "raw", {"0001": (30, [(1, 0, 3), (5, 16, 23)])})
    ds = ClipDataset(open_dataset(root), TINY, train=False)
    item = ds[1]  # frames 16..23 of a 192x108 video whose skeleton is in 1920x1080 pixels
    assert item["heatmaps"].shape == (18, 8, 16, 16) and int(item["label"]) == 4
    coco = get_layout("coco18")
    assert item["joints"][:, coco.index("LWrist"), 2].min() > 0 and item["joints"][:, coco.index("LHip"), 2].min() > 0
    short = ds[0]  # 4 frames for 8 pose frames: repeated
    assert short["heatmaps"].shape == (18, 8, 16, 16)


def test_loader_with_workers_runs_the_model(tmp_path):
    from microgesture.core.models import create_model

    clips = [(f"c{i}", "ab"[i % 2], f"s{i}") for i in range(6)]
    index = open_dataset(make_own(tmp_path / "ds", clips))
    model = create_model("clip-mg-tiny", labels=index.classes, seed=0).eval()
    ds = ClipDataset(index, model.config, train=True)
    loader = make_loader(ds, batch_size=3, train=True, workers=2)
    set_epoch(loader, 1)
    batches = list(loader)
    assert len(batches) == 2 and sorted(torch.cat([b["index"] for b in batches]).tolist()) == list(range(6))
    with torch.no_grad():
        logits = model(batches[0]["frames"], batches[0]["heatmaps"], batches[0]["joints"])
    assert logits.shape == (3, 2) and torch.isfinite(logits).all()
    set_epoch(loader, 1)
    again = list(loader)  # same epoch: same order and same crops, from persistent workers
    assert torch.equal(again[0]["index"], batches[0]["index"])
    assert torch.equal(again[0]["frames"], batches[0]["frames"])
    set_epoch(loader, 2)
    other = list(loader)
    assert not torch.equal(torch.cat([b["index"] for b in other]), torch.cat([b["index"] for b in batches])) \
        or not torch.equal(other[0]["frames"], batches[0]["frames"])
    ev = make_loader(ClipDataset(index, model.config, train=False), batch_size=4, train=False)
    assert [b["index"].tolist() for b in ev] == [[0, 1, 2, 3], [4, 5]]
    dist = make_loader(ds, batch_size=2, train=True, distributed=True, num_replicas=2, rank=1)
    assert len(dist.sampler) == 3


def test_imigue_window_read_matches_the_whole_file_reader(tmp_path):
    from microgesture.core.skeleton_io import read_imigue_csv
    from microgesture.training.transforms import imigue_row_offsets, read_imigue_rows

    root = make_imigue_raw(tmp_path / "raw", {"0001": (12, [(1, 1, 2)])}, with_video=False)
    path = root / "0001_light_hand.csv"
    lines = path.read_text().splitlines()
    row = lines[5].split(",")
    row[4:7] = ["0", "0", "0"]  # joint 1 not found, as OpenPose writes it (column 0: the frame index)
    lines[5] = ",".join(row)
    path.write_text("\n".join(["h" + ",h" * 105, *lines[:7], "", *lines[7:]]) + "\n")  # a header, a blank line
    frames, _, kp, sc, layout, w, h = read_imigue_csv(path)
    offsets = imigue_row_offsets(path)
    assert len(offsets) == 13
    track = read_imigue_rows(path, 3, 9, offsets)
    assert np.array_equal(track.frames, frames[3:9]) and (track.layout, track.width, track.height) == (layout, w, h)
    np.testing.assert_array_equal(track.keypoints, kp[3:9])
    np.testing.assert_array_equal(track.scores, sc[3:9])
    assert np.isnan(track.keypoints[2, 1]).all() and track.scores[2, 1] == 0
    with pytest.raises(MicrogestureError, match="not within its 12 rows"):
        read_imigue_rows(path, 10, 13, offsets)


def test_own_data_split_column(tmp_path):
    root = make_own(tmp_path / "ds", [("c1", "a", "s1"), ("c2", "b", "s2"), ("c3", "a", "s3")], videos=False)
    write_csv(root / "clips.csv", [("clip", "label", "subject", "split"), ("c1", "a", "s1", "train"),
                                   ("c2", "b", "s2", "test"), ("c3", "a", "s3", "train")])
    index = open_dataset(root)
    assert index.splits() == ("test", "train")
    assert [r.clip_id for r in open_dataset(root, split="train")] == ["c1", "c3"]
    assert [r.clip_id for r in index.select([2, 0])] == ["c3", "c1"]
    write_csv(root / "clips.csv", [("clip", "label", "subject", "split"), ("c1", "a", "s1", "holdout")])
    with pytest.raises(MicrogestureError, match=r"clips\.csv:2: split 'holdout'"):
        open_dataset(root)


def test_test_time_views(tmp_path):
    index = open_dataset(make_own(tmp_path / "ds", [("c1", "a", "s1")], n_frames=24, move=1.0))
    plain = ClipDataset(index, TINY, train=False)[0]
    views = [ClipDataset(index, TINY, train=False, clip=k, num_clips=3)[0] for k in range(3)]
    assert torch.equal(views[1]["heatmaps"], plain["heatmaps"])  # the middle view is the centre
    assert not torch.equal(views[0]["heatmaps"], views[2]["heatmaps"])
    assert list(sample_indices(24, 8, False, offset=0.0)) == list(range(0, 24, 3))
    flipped = ClipDataset(index, TINY, train=False, flip=True)[0]
    assert torch.allclose(flipped["frames"], plain["frames"].flip(-1))
    perm = get_layout("coco18").flip_permutation.tolist()
    assert torch.allclose(flipped["heatmaps"], plain["heatmaps"][perm].flip(-1))
    assert torch.allclose(flipped["joints"][..., 2], plain["joints"][:, perm, 2])
    with pytest.raises(MicrogestureError, match="clip must lie"):
        ClipDataset(index, TINY, train=False, clip=3, num_clips=3)
    with pytest.raises(MicrogestureError, match="test-time views"):
        ClipDataset(index, TINY, train=True, flip=True)
