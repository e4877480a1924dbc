"""Commands of the training side, run without the train extra, end in one line naming it;
``data check`` needs no torch at all."""

import subprocess
import sys

import pytest

HIDE_TORCH = "import sys; sys.modules['torch'] = None; from microgesture.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.mark.parametrize("argv", [
    ["train", "--model", "clip-mg-tiny", "--data", "data", "--out", "run"],
    ["eval", "run"],
    ["ablate", "--model", "clip-mg-tiny", "--data", "data", "--out", "runs"],
])
def test_without_torch_the_error_names_the_extra(argv, tmp_path):
    done = subprocess.run([sys.executable, "-c", HIDE_TORCH, *argv], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"microgesture {argv[0]}: error: this command needs the training extra (torch is not installed): "
        "pip install 'microgesture[train]'"]


def test_data_check_runs_without_torch(tmp_path):
    from test_datasets import make_imigue_raw

    make_imigue_raw(tmp_path / "raw", {"0001": (12, [(1, 0, 5)])}, release=True)
    done = subprocess.run([sys.executable, "-c", HIDE_TORCH, "data", "check", "raw", "--out", "check"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "check" / "train.png").is_file() and "train: 1 clips" in done.stdout
