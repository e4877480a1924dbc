"""The command line: help, version, suggestions, exit codes, no tracebacks."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from microgesture import __version__
from microgesture.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args):
    """The installed command in a subprocess: what a user sees."""
    return subprocess.run([sys.executable, "-m", "microgesture", *args],
                          capture_output=True, text=True, timeout=300)


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_command_has_help(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0
    assert "usage: microgesture " + name in capsys.readouterr().out


def test_version(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"microgesture {__version__}"


def test_unknown_command_and_option_suggest_the_nearest(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["modles"])
    assert exit_.value.code == 2
    assert "Did you mean 'models'?" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["models", "--jsn"])
    assert exit_.value.code == 2
    assert "Did you mean '--json'?" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["pose", "a.png", "--ouut", "x.jsonl"])
    assert "Did you mean '--out'?" in capsys.readouterr().err


def test_models_lists_and_describes(capsys):
    assert main(["models", "--json"]) == 0
    names = {m["name"] for m in json.loads(capsys.readouterr().out)}
    assert {"clip-mg-b16", "clip-mg-b32", "clip-mg-tiny"} <= names
    assert main(["models", "clip-mg-b32"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["clip"]["arch"] == "ViT-B-32-quickgelu" and cfg["pose"]["heatmap_size"] == 64
    assert main(["models", "clip-mg-b61"]) == 2
    assert "Did you mean 'clip-mg-b16'?" in capsys.readouterr().err


def test_user_mistakes_exit_2_without_traceback(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    for args in (["pose", str(broken), "--out", str(tmp_path / "o.jsonl")],
                 ["pose", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "o.jsonl")],
                 ["pose", str(broken), "--out", str(tmp_path / "o.jsonl"), "--layout", "coco19"]):
        result = run_cli(*args)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert re.search(r"microgesture pose: error: .+", result.stderr)


def test_pose_on_the_astronaut_photo(tmp_path):
    skimage = pytest.importorskip("skimage")
    import cv2

    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), skimage.data.astronaut()[:, :, ::-1])
    out = tmp_path / "astronaut.jsonl"
    result = run_cli("pose", str(photo), "--out", str(out), "--json", "--quiet")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["frames"] == 1
    record = json.loads(out.read_text().splitlines()[0])
    assert record["layout"] == "coco18" and (record["width"], record["height"]) == (512, 512)
    k = {name: record["keypoints"][i] for i, name in
         enumerate(["nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist"])}
    assert k["nose"][1] < min(k["r_shoulder"][1], k["l_shoulder"][1])


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    commands = re.findall(r"```bash\n(python3 -m venv[^\n]*)\n```", readme)
    assert len(commands) == 2, "README must show the two set-up commands"
    assert commands[1] in ci.splitlines()
    assert commands[0].endswith("microgesture demo"), "the main job is the built-in demo"
