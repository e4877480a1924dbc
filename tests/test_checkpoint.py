"""Self-describing checkpoints and the CLIP weight sources."""

import json

import pytest
import torch

from microgesture.core.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from microgesture.core.clip import create_clip
from microgesture.core.config import get_config
from microgesture.core.errors import MicrogestureError
from microgesture.core.models import create_model, example_inputs


def test_round_trip_restores_model_config_and_preprocessing(tmp_path):
    model = create_model("clip-mg-tiny", {"gate": False}, num_classes=5, seed=1).eval()
    path = save_checkpoint(model, tmp_path / "run" / "best.safetensors", extra={"epoch": 3})
    loaded, meta = load_checkpoint(path)
    assert meta["config"] == model.config and meta["config"].gate is False
    assert meta["config"].labels == tuple(f"class {i}" for i in range(5))
    assert meta["extra"] == {"epoch": 3}
    pre = meta["preprocessing"]
    assert (pre["image_size"], pre["layout"], pre["rgb_frames"], pre["pose_frames"]) == (32, "coco18", 4, 8)
    assert pre["mean"] == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    assert {"torch", "python"} <= set(meta["versions"])
    inputs = example_inputs(model.config)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs), model(**inputs), rtol=0, atol=0)
    assert [p.name for p in path.parent.iterdir()] == ["best.safetensors"]  # no temporary left


def test_refuses_files_that_are_not_our_checkpoints(tmp_path):
    pickled = tmp_path / "model.pt"
    torch.save({"state_dict": {}}, pickled)  # pickles are never unpickled
    with pytest.raises(MicrogestureError, match="not a readable safetensors"):
        load_checkpoint(pickled)
    with pytest.raises(MicrogestureError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(MicrogestureError, match="not a microgesture checkpoint"):
        load_checkpoint(foreign)


def test_refuses_a_newer_format_and_a_mismatched_state(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = save_checkpoint(create_model("clip-mg-tiny", seed=0), tmp_path / "a.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    state = load_file(str(path))
    save_file(state, str(tmp_path / "new.safetensors"), metadata={**meta, "format_version": "99"})
    with pytest.raises(MicrogestureError, match="upgrade microgesture"):
        read_metadata(tmp_path / "new.safetensors")
    state.pop("head.3.weight")
    save_file(state, str(tmp_path / "cut.safetensors"), metadata=meta)
    with pytest.raises(MicrogestureError, match="does not match its own config"):
        load_checkpoint(tmp_path / "cut.safetensors")


def test_clip_weights_from_a_local_open_clip_file(tmp_path):
    cfg = get_config("clip-mg-tiny").clip
    torch.manual_seed(123)
    reference = create_clip(cfg)
    weights = tmp_path / "tiny_clip.pt"
    torch.save(reference.state_dict(), weights)
    model = create_model("clip-mg-tiny", clip_weights=str(weights), seed=0)
    for name, value in reference.visual.state_dict().items():
        torch.testing.assert_close(model.visual.state_dict()[name], value, rtol=0, atol=0)
    with pytest.raises(MicrogestureError, match="does not exist"):
        create_model("clip-mg-tiny", clip_weights=str(tmp_path / "nope.pt"))


def test_pretrained_without_a_tag_names_the_ways_out():
    # the offline tag path is tested in test_clip_weights.py, with downloads blocked
    with pytest.raises(MicrogestureError, match="no pretrained tag.*--clip-weights PATH or --clip-weights random"):
        create_model("clip-mg-tiny", clip_weights="pretrained")


def test_metadata_is_plain_json(tmp_path):
    from safetensors import safe_open

    path = save_checkpoint(create_model("clip-mg-tiny", seed=0), tmp_path / "m.safetensors")
    with safe_open(str(path), framework="pt") as f:
        raw = f.metadata()
    config = json.loads(raw["config"])
    assert config["arch"] == "clip-mg" and len(config["labels"]) == 32
