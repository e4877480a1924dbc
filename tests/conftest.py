"""Test-wide settings: no GPU, no network, tiny everything."""

import os

# Set before torch / huggingface_hub are imported: tests never see a GPU and never
# try the network (a download attempt fails at once instead of retrying).
os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "2")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def small_synth(tmp_path_factory):
    """18 synthetic clips (3 subjects x 3 classes x 2), 16 frames of 64x64: fast training."""
    pytest.importorskip("torch")
    from microgesture.training.synth import write_synthetic

    out = tmp_path_factory.mktemp("small_synth") / "set"
    write_synthetic(out, subjects=3, clips_per_class=2, classes=3, seed=0, frames=16,
                    size=(64, 64), progress=False)
    return out
