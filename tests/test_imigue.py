"""iMiGUE as released: the raw release's tree and formats, the challenge release's parts and
its last-90-frames rule, split names as users write them, and a tiny model trained and
evaluated on each with the split respected."""

import json
import pickle
import shutil

import numpy as np
import pytest

from microgesture.core.config import get_config
from microgesture.core.errors import MicrogestureError
from microgesture.core.imigue import read_label_csv
from microgesture.training.datasets import open_dataset
from microgesture.training.transforms import ClipDataset, challenge_frames

from test_datasets import make_imigue_raw, person, write_csv, write_video

TINY = get_config("clip-mg-tiny")
RAW = {  # name: (frames, 0-based inclusive label rows); the release tree puts them in train/validate/test
    "0001": (30, [("gestureID", "start", "end"), (1, 0, 9), (4, 10, 19), (99, 20, 29)]),
    "0002": (30, [(2, 0, 14), (5, 15, 29)]),
    "0003": (30, [(1, 0, 9), (4, 10, 19), (2, 20, 29)]),
    "0004": (30, [(5, 0, 14), (99, 15, 29)]),
    "0005": (30, [(1, 3, 12), (2, 13, 29)]),
    "0006": (30, [(4, 0, 29)]),
}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("imigue") / "iMiGUE"
    make_imigue_raw(root, RAW, release=True)
    # newer copies carry a header row: one video written that way
    make_imigue_raw(root / "tmp", {"0004": RAW["0004"]}, release=True, with_video=False, header=True)
    (root / "tmp/imigue_skeleton_train/0004/0004_light_hand.csv").replace(
        root / "imigue_skeleton_train/0004/0004_light_hand.csv")
    shutil.rmtree(root / "tmp")
    return root


def test_label_csv_is_zero_based_and_inclusive(tmp_path):
    path = write_csv(tmp_path / "0001_label.csv", [("gestureID", "start", "end"), (3, 0, 0), (99, 5, 9)])
    assert read_label_csv(path) == [(2, 0, 0), (31, 5, 9)]  # a one-frame gesture at frame 0


def test_the_release_tree_is_read_as_it_unpacks(release):
    index = open_dataset(release)  # no split.csv: the folders are the split
    assert index.kind == "imigue-raw" and index.splits() == ("test", "train", "val")
    by_id = {r.clip_id: r for r in index}
    first = by_id["0001_0"]  # 0-based ids, the gesture at frame 0, frames [0, 9] inclusive
    assert (first.label, first.start, first.end, first.split) == (0, 0, 10, "train")
    assert first.video == release / "imigue_rgb" / "0001.mp4"  # RGB from its own tree
    assert by_id["0002_1"].split == "val" and by_id["0003_2"].split == "test"
    assert by_id["0001_2"].label == 31  # 99 is the last class
    assert len(index) == sum(len([r for r in rows if isinstance(r[0], int)]) for _, rows in RAW.values())
    assert first.subject == "0001" and not index.skipped  # the release names videos, not athletes
    assert len(open_dataset(release, split="validation")) == 4  # the "validate" folder: 0002 and 0005
    # the frame a clip starts at is the video frame (the white bar marks frame t at x = 4t)
    item = ClipDataset(open_dataset(release, split="train"), TINY, train=False, crop_scale=(1, 1))
    assert item[0]["frames"].shape == (4, 3, 32, 32)


def test_release_rows_of_the_wrong_width_are_refused(tmp_path):
    root = make_imigue_raw(tmp_path / "r", {"0001": (5, [(1, 0, 2)])}, release=True, with_video=False)
    path = root / "imigue_skeleton_train/0001/0001_light_hand.csv"
    lines = path.read_text().splitlines()
    lines[2] = ",".join(lines[2].split(",")[1:])  # 105 values: the frame index left out
    path.write_text("\n".join(lines) + "\n")
    ds = ClipDataset(open_dataset(root), TINY.replace(modality="pose"), train=False, skip_bad=False)
    with pytest.raises(MicrogestureError, match=r"0001_light_hand\.csv: data row 3 has 105 values "
                                                r"\(no leading frame index\?\).*has 106 numbers"):
        ds[0]


def _options(data, out, **kw):
    from microgesture.training.trainer import TrainOptions

    base = dict(model="clip-mg-tiny", data=str(data), out=str(out), epochs=1, batch_size=4, workers=0, seed=0)
    return TrainOptions(**{**base, **kw})


def test_train_and_eval_respect_the_release_folders(release, tmp_path, capsys):
    from microgesture.training.evaluate import evaluate
    from microgesture.training.trainer import train

    summary = train(_options(release, tmp_path / "run"), progress=False)
    split = json.loads((tmp_path / "run" / "run.json").read_text())["split"]
    assert split["by"] == "dataset" and (split["val_split"], split["test_split"]) == ("val", "test")
    counts = {s: len(open_dataset(release, split=s)) for s in ("train", "val", "test")}
    assert (summary["train_clips"], summary["val_clips"]) == (counts["train"], counts["val"])
    err = capsys.readouterr().err
    assert "validating on the dataset's 'val' split (4 clips" in err and "eval will score the 'test' split" in err
    report = evaluate(tmp_path / "run", workers=0, progress=False)
    assert report["clips"] == counts["test"]


def make_challenge_part(root, part, clips, t=90):
    """<part>_data.npy (N, 3, 90, 22, 1) and <part>_label.pkl as the converter writes them, and
    videos/<name>.mp4 (192x108) whose frame f has gray level 2f (so a decoded frame says its index).
    clips: [(name, label, video frames)]: longer clips keep their last 90 frames."""
    data = np.zeros((len(clips), 3, t, 22, 1), np.float32)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    for i, (name, _, n) in enumerate(clips):
        kp, sc = person("imigue22", min(n, t), box=(700, 200, 1200, 1000))
        data[i, :2, :min(n, t), :, 0] = (kp / (1920, 1080)).transpose(2, 0, 1)  # normalised, as released
        data[i, 2, :min(n, t), :, 0] = sc
        write_video(root / "videos" / f"{name}.mp4",
                    [np.full((108, 192, 3), 2 * f, np.uint8) for f in range(n)], fourcc="mp4v")
    np.save(root / f"{part}_data.npy", data)
    with open(root / f"{part}_label.pkl", "wb") as f:
        pickle.dump(([c[0] for c in clips], [c[1] for c in clips]), f)


def test_challenge_clips_longer_than_90_frames_keep_their_last_90(tmp_path):
    assert challenge_frames(90, 90, 120).tolist() == list(range(30, 120))
    assert challenge_frames(50, 90, 50).tolist() == list(range(50))
    root = tmp_path / "challenge"
    make_challenge_part(root, "train", [("0001_0", 3, 120), ("0001_1", 4, 50)])
    ds = ClipDataset(open_dataset(root), TINY, train=False)
    mean, std = np.array(TINY.clip.mean), np.array(TINY.clip.std)
    for i, offset in ((0, 30), (1, 0)):
        frames = ds[i]["frames"].numpy()  # (R, 3, S, S), normalised
        gray = ((frames[:, :, 12:20, 12:20].mean((2, 3)) * std + mean) * 255).mean(1)
        n = 90 if i == 0 else 50
        expected = 2 * (offset + np.floor((np.arange(4) + 0.5) * n / 4))  # the centre of each segment
        np.testing.assert_allclose(gray, expected, atol=6)


def test_challenge_train_and_valid_parts_are_the_split(tmp_path, capsys):
    from microgesture.cli import main
    from microgesture.training.trainer import train

    root = tmp_path / "challenge"
    make_challenge_part(root, "train", [(f"00{v}1_{k}", k % 3, 40) for v in range(3) for k in range(3)], t=40)
    make_challenge_part(root, "valid", [(f"0091_{k}", k % 3, 40) for k in range(3)], t=40)
    index = open_dataset(root)
    assert index.splits() == ("train", "val")
    assert main(["data", "info", str(root), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["splits"] == ["train", "val"] and info["clips_per_split"] == {"train": 9, "val": 3}
    summary = train(_options(root, tmp_path / "run"), progress=False)
    assert (summary["train_clips"], summary["val_clips"]) == (9, 3)
    split = json.loads((tmp_path / "run" / "run.json").read_text())["split"]
    assert split["test_subjects"] == ["0091"] and split["val_split"] == split["test_split"] == "val"


@pytest.mark.parametrize("name", ["val", "valid", "validation", "test", "Valid"])
def test_own_data_split_names_as_users_write_them(tmp_path, name):
    from test_datasets import make_own
    from microgesture.training.splits import choose

    clips = [(f"c{i}", "ab"[i % 2], f"s{i % 3}") for i in range(6)]
    root = make_own(tmp_path / "ds", clips, videos=False)
    write_csv(root / "clips.csv", [("clip", "label", "subject", "split")]
              + [(*c, name if i >= 4 else "train") for i, c in enumerate(clips)])
    train_part, held, info = choose(open_dataset(root))
    assert info["by"] == "dataset" and [r.clip_id for r in held] == ["c4", "c5"]
    assert [r.clip_id for r in train_part] == ["c0", "c1", "c2", "c3"]
    assert info["shared_subjects"] == ["s1", "s2"]  # the user's split shares subjects: said, not hidden


def test_data_check_reports_and_draws(release, tmp_path, capsys):
    import cv2

    from microgesture.cli import main

    assert main(["data", "check", str(release), "--out", str(tmp_path / "check")]) == 0
    text = capsys.readouterr().out
    assert "train: " in text and "val: " in text and "test: " in text and "problems: 0" in text
    report = json.loads((tmp_path / "check" / "check.json").read_text())
    assert report["splits"]["train"]["clips"] == len(open_dataset(release, split="train"))
    assert report["splits"]["val"]["sides"]["left_on_image_right"] == 1.0  # the subject faces the camera
    for split in ("train", "val", "test"):
        image = cv2.imread(str(tmp_path / "check" / f"{split}.png"))
        assert image.shape == (540, 960, 3)  # the 192x108 frame, enlarged for the names
    # a label beyond the skeleton, and a skeleton whose sides are swapped, are reported
    broken = tmp_path / "broken"
    make_imigue_raw(broken, {"0001": (20, [(1, 0, 9), (2, 5, 25)])}, release=True, with_video=False)
    csv_path = broken / "imigue_skeleton_train/0001/0001_light_hand.csv"
    rows = [line.split(",") for line in csv_path.read_text().splitlines()]
    for row in rows:  # swap OpenPose's RShoulder (2) and LShoulder (5): a mirrored file
        row[1 + 3 * 2:1 + 3 * 3], row[1 + 3 * 5:1 + 3 * 6] = row[1 + 3 * 5:1 + 3 * 6], row[1 + 3 * 2:1 + 3 * 3]
    csv_path.write_text("\n".join(",".join(r) for r in rows) + "\n")
    assert main(["data", "check", str(broken), "--out", str(tmp_path / "c2"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "frames 5..25 go beyond the 20 frames" in report["skipped"][0]["reason"]
    assert any("left and right look swapped" in p for p in report["problems"])
    assert (tmp_path / "c2" / "train.png").is_file()
