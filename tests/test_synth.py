"""training.synth: the synthetic micro-gesture set (files, determinism, rendering, learnability)."""

import csv
import json
import warnings

import cv2
import numpy as np
import pytest

from microgesture.core.errors import MicrogestureError
from microgesture.core.labels import IMIGUE_CLASSES
from microgesture.core.layouts import get_layout
from microgesture.core.skeleton_io import read_jsonl
from microgesture.training.synth import (generate_skeletons, is_synthetic_set, make_long_video,
                                         write_synthetic)

L = get_layout("imigue22")
NOSE, NECK = L.index("nose"), L.index("neck")
LSH, RSH = L.index("left_shoulder"), L.index("right_shoulder")
LHAND, RHAND = L.index("left_wrist"), L.index("right_wrist")
LEAR, REAR = L.index("left_ear"), L.index("right_ear")
SET = dict(subjects=3, clips_per_class=1, classes=8, seed=0, frames=24, size=(128, 96))


def read_video(path):
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def read_clips(out):
    with open(out / "clips.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "set"
    summary = write_synthetic(out, progress=False, **SET)
    return out, summary


@pytest.fixture(scope="module")
def all_classes():
    """Skeletons only (nothing drawn): every class, 6 subjects."""
    return generate_skeletons(subjects=6, clips_per_class=2, classes=32, seed=1, frames=40)


# ----------------------------------------------------------------------------- files

def test_files_exist_and_parse(small_set):
    out, summary = small_set
    n = SET["subjects"] * SET["clips_per_class"] * SET["classes"]
    assert summary["clips"] == n
    rows = read_clips(out)
    assert list(rows[0]) == ["clip", "label", "subject"] and len(rows) == n
    names = (out / "classes.txt").read_text().splitlines()
    assert names == list(IMIGUE_CLASSES[:SET["classes"]])
    assert {r["label"] for r in rows} == set(names)
    assert sorted({r["subject"] for r in rows}) == ["s00", "s01", "s02"]
    meta = json.loads((out / "synth.json").read_text())
    assert meta["complete"] and meta["params"]["seed"] == 0 and is_synthetic_set(out)
    w, h = SET["size"]
    for r in rows:
        frames = read_video(out / "videos" / f"{r['clip']}.mp4")
        assert len(frames) == SET["frames"] and frames[0].shape == (h, w, 3)
        idx, t, kp, sc, layout, width, height = read_jsonl(out / "skeletons" / f"{r['clip']}.jsonl")
        assert layout == "imigue22" and (width, height) == (w, h)
        assert kp.shape == (SET["frames"], 22, 2) and list(idx) == list(range(SET["frames"]))
        assert np.allclose(t, idx / 15.0)
        assert (sc > 0).mean() > 0.9      # a few joints missing, most present


def test_files_hold_the_same_skeletons_as_generate_skeletons(small_set):
    out, _ = small_set
    arrays = generate_skeletons(**SET)
    for i, name in enumerate(arrays["clips"]):
        _, _, kp, sc, *_ = read_jsonl(out / "skeletons" / f"{name}.jsonl")
        assert np.array_equal(np.isnan(kp), np.isnan(arrays["keypoints"][i]))
        assert np.nanmax(np.abs(kp - arrays["keypoints"][i])) < 0.01
        assert np.abs(sc - arrays["scores"][i]).max() < 1e-3


def test_same_seed_same_files_other_seed_differs_and_rewrite(tmp_path, capsys):
    args = dict(subjects=2, clips_per_class=1, classes=3, frames=12, size=(64, 64))
    write_synthetic(tmp_path / "a", seed=5, progress=True, **args)
    assert "synth: 6/6 clips" in capsys.readouterr().err
    write_synthetic(tmp_path / "b", seed=5, progress=False, **args)
    write_synthetic(tmp_path / "c", seed=6, progress=False, **args)
    for row in read_clips(tmp_path / "a"):
        name = row["clip"]
        a, b, c = ((tmp_path / d / "skeletons" / f"{name}.jsonl").read_bytes() for d in "abc")
        assert a == b and a != c
        va, vb = (read_video(tmp_path / d / "videos" / f"{name}.mp4") for d in "ab")
        assert all(np.array_equal(x, y) for x, y in zip(va, vb)) and len(va) == len(vb) == 12
    # a synthetic set may be re-written; nothing of the old one is left behind
    write_synthetic(tmp_path / "a", seed=5, progress=False, **{**args, "classes": 1})
    assert len(read_clips(tmp_path / "a")) == 2
    assert len(list((tmp_path / "a" / "videos").iterdir())) == 2
    assert len(list((tmp_path / "a" / "skeletons").iterdir())) == 2


# ----------------------------------------------------------------------------- rendering

def test_rendering_agrees_with_the_skeleton(small_set):
    out, _ = small_set
    meta = json.loads((out / "synth.json").read_text())
    skin = {s["name"]: np.array(s["skin"][::-1], float) for s in meta["subjects"]}   # BGR
    hand_hits, cheek_hits = [], []
    for r in read_clips(out):
        frames = read_video(out / "videos" / f"{r['clip']}.mp4")
        _, _, kp, sc, _, w, h = read_jsonl(out / "skeletons" / f"{r['clip']}.jsonl")
        colour = skin[r["subject"]]

        def is_skin(frame, p):
            x, y = int(round(p[0])), int(round(p[1]))
            return 0 <= x < w and 0 <= y < h and np.abs(frame[y, x] - colour).max() < 40

        for f, frame in enumerate(frames):
            frame = frame.astype(float)
            for j in (LHAND, RHAND):
                if sc[f, j] > 0.5:          # visible (hidden hands have low scores)
                    hand_hits.append(is_skin(frame, kp[f, j]))
            if sc[f, [NOSE, LEAR, REAR]].min() > 0.5:
                # the face ellipse is around the nose: the cheeks, between nose and ears, are skin
                cheeks = [kp[f, NOSE] + 0.6 * (kp[f, e] - kp[f, NOSE]) for e in (LEAR, REAR)]
                cheek_hits.append(all(is_skin(frame, p) for p in cheeks))
    assert np.mean(hand_hits) > 0.8, np.mean(hand_hits)
    assert np.mean(cheek_hits) > 0.8, np.mean(cheek_hits)


# ----------------------------------------------------------------------------- motion

def _clips_of(data, name):
    return np.flatnonzero(data["labels"] == IMIGUE_CLASSES.index(name))


def test_touching_jaw_brings_a_hand_to_the_chin(all_classes):
    d = all_classes
    for i in _clips_of(d, "touching jaw"):
        start, end, ramp = d["spans"][i]
        kp = d["keypoints"][i].astype(float)
        hand = (LHAND, RHAND)[d["hands"][i]]
        dist = np.linalg.norm(kp[:, hand] - kp[:, NOSE], axis=-1)
        idle, held = np.nanmean(dist[:start]), np.nanmean(dist[start + ramp:end - ramp])
        assert held < 0.5 * idle, (d["clips"][i], idle, held)


def test_shaking_shoulders_move_more_than_pressing_lips(all_classes):
    d = all_classes

    def shoulder_var(i):
        start, end, _ = d["spans"][i]
        kp = d["keypoints"][i].astype(float)
        width = np.nanmedian(np.linalg.norm(kp[:, LSH] - kp[:, RSH], axis=-1))
        return np.nanmean(np.nanvar(kp[start:end, [LSH, RSH], 1] / width, axis=0))

    shaking = [shoulder_var(i) for i in _clips_of(d, "shaking shoulders")]
    pressing = [shoulder_var(i) for i in _clips_of(d, "pressing lips")]
    assert np.median(shaking) > 4 * np.median(pressing), (shaking, pressing)


def _features(kp):
    """Hand-crafted per-clip features, invariant to which hand leads, position and size."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)    # all-NaN slices of missing joints
        kp = kp.astype(float)
        width = np.nanmedian(np.linalg.norm(kp[:, LSH] - kp[:, RSH], axis=-1))
        x = (kp - np.nanmedian(kp[:3, NECK], 0)) / width
        start = np.nanmedian(x[:3], 0)
        moved = [np.nanmax(np.linalg.norm(x[:, j] - start[j], axis=-1)) for j in (LHAND, RHAND)]
        if moved[0] > moved[1]:          # mirror so that the leading hand is always the right one
            x, start = x[:, L.flip_permutation] * (-1, 1), start[L.flip_permutation] * (-1, 1)
        body = x[:, :12]
        disp = body - start[:12]
        peak = np.nanargmax(np.nan_to_num(np.linalg.norm(disp[:, RHAND], axis=-1), nan=-1.0))
        f = [np.nanmean(disp, 0), np.nanstd(body, 0), body[peak] - body[peak, NOSE],
             3 * np.nanmean(np.abs(np.diff(body, 2, axis=0)), 0),
             np.nanmean(x[:, 12:17], 1).mean(0) - x[:, RHAND].mean(0),
             np.nanstd(x[:, 12:17], 1).mean(0), np.nanstd(x[:, 17:22], 1).mean(0)]
        return np.nan_to_num(np.concatenate([np.ravel(v) for v in f]))


def test_classes_are_learnable_across_subjects(all_classes):
    d = all_classes
    feats = np.stack([_features(kp) for kp in d["keypoints"]])
    train, test = d["subjects"] < 4, d["subjects"] >= 4        # held-out SUBJECTS
    mu, sd = feats[train].mean(0), feats[train].std(0) + 1e-6
    z = (feats - mu) / sd
    centroids = np.stack([z[train & (d["labels"] == c)].mean(0) for c in range(32)])
    pred = np.argmin(((z[test][:, None] - centroids[None]) ** 2).sum(-1), 1)
    accuracy = (pred == d["labels"][test]).mean()
    assert accuracy > 0.5, accuracy        # chance is 1/32


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("changes, words", [
    (dict(subjects=1), "subjects"), (dict(clips_per_class=0), "clips_per_class"),
    (dict(classes=0), "classes"), (dict(classes=33), "classes"), (dict(frames=7), "frames"),
    (dict(size=(16, 16)), "size"), (dict(fps=0), "fps"), (dict(subjects=2.5), "subjects"),
])
def test_bad_arguments(tmp_path, changes, words):
    with pytest.raises(MicrogestureError, match=words):
        write_synthetic(tmp_path / "out", progress=False, **changes)
    assert not (tmp_path / "out").exists()    # checked before anything is written


def test_refuses_to_overwrite_other_data(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.txt").write_text("precious")
    with pytest.raises(MicrogestureError, match="not a synthetic set.*new or empty folder"):
        write_synthetic(tmp_path / "mine", progress=False)
    assert (tmp_path / "mine" / "thesis.txt").read_text() == "precious"
    (tmp_path / "file").write_text("x")
    with pytest.raises(MicrogestureError, match="is a file"):
        write_synthetic(tmp_path / "file", progress=False)


# ----------------------------------------------------------------------------- long video

def test_long_video_and_its_ground_truth(tmp_path):
    chosen = ["touching jaw", "arms akimbo", "head up"]
    r = make_long_video(tmp_path / "demo" / "long.mp4", duration_s=20, classes=chosen, seed=2,
                        size=(96, 96), progress=False)
    frames = read_video(r["video"])
    assert len(frames) == r["frames"] == 300 and frames[0].shape == (96, 96, 3)
    idx, *_ = read_jsonl(r["skeletons"])
    assert len(idx) == r["frames"]
    with open(r["ground_truth"], newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["label", "start_frame", "end_frame"] and len(rows) >= 4
    last_end = 0
    for label, start, end in rows[1:]:
        assert label in chosen
        assert last_end <= int(start) < int(end) <= r["frames"]
        last_end = int(end)
    with pytest.raises(MicrogestureError, match="unknown class"):
        make_long_video(tmp_path / "x.mp4", classes=["touching jaws"], progress=False)


def test_worker_processes_write_the_same_files(tmp_path):
    args = dict(subjects=2, clips_per_class=1, classes=2, frames=10, size=(48, 48), seed=3, progress=False)
    one = write_synthetic(tmp_path / "one", workers=1, **args)
    two = write_synthetic(tmp_path / "two", workers=2, **args)
    assert one["workers"] == 1 and two["workers"] == 2
    for row in read_clips(tmp_path / "one"):
        a, b = ((tmp_path / d / "skeletons" / f"{row['clip']}.jsonl").read_bytes() for d in ("one", "two"))
        assert a == b
    assert (tmp_path / "one" / "clips.csv").read_bytes() == (tmp_path / "two" / "clips.csv").read_bytes()
