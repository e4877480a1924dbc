"""--clip-weights: every weights format from small files the test writes; nothing downloads."""

import json
import os
import pickle

import pytest
import torch
from torch import nn

from microgesture.core.clip import create_clip, read_weights_file, training_weights
from microgesture.core.config import get_config
from microgesture.core.errors import MicrogestureError
from microgesture.core.models import create_model

TINY_QUICK = {"clip.arch": "mg-tiny-vit-quickgelu"}  # a test-size ViT with OpenAI's activation


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    """Any attempt to fetch weights fails as it does offline."""
    import open_clip.factory

    def offline(*args, **kwargs):
        raise RuntimeError("Failed to resolve 'huggingface.co' ([Errno -3] Temporary failure in name "
                           "resolution)\nsecond line of a long trace")

    monkeypatch.setattr(open_clip.factory, "download_pretrained", offline)
    monkeypatch.setattr(open_clip.factory, "download_pretrained_from_hf", offline)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _visual_equal(model, reference_state):
    for name, value in model.visual.state_dict().items():
        torch.testing.assert_close(value, reference_state[f"visual.{name}"].float(), rtol=0, atol=0, msg=name)


class _Holder(nn.Module):
    """Modules and buffers named like a state dict's keys (for a TorchScript archive)."""

    def __init__(self, state):
        super().__init__()
        for key, value in state.items():
            *path, leaf = key.split(".")
            node = self
            for part in path:
                if not hasattr(node, part):
                    node.add_module(part, nn.Module())
                node = getattr(node, part)
            node.register_buffer(leaf, value.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def write_openai_archive(path, state):
    """A TorchScript archive shaped like OpenAI's ViT-B-16.pt: the CLIP weights in fp16 and
    OpenAI's metadata entries (input_resolution, context_length, vocab_size)."""
    state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    state.update(input_resolution=torch.tensor(32), context_length=torch.tensor(77),
                 vocab_size=torch.tensor(49408))
    torch.jit.save(torch.jit.script(_Holder(state)), str(path))
    return path


def test_open_clip_checkpoint_files(tmp_path):
    cfg = get_config("clip-mg-tiny").clip
    torch.manual_seed(5)
    reference = create_clip(cfg).state_dict()
    plain, wrapped, safe = tmp_path / "plain.pt", tmp_path / "epoch_3.pt", tmp_path / "w.safetensors"
    torch.save(reference, plain)
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in reference.items()}}, wrapped)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in reference.items()}, str(safe))
    for path, kind in ((plain, "open_clip"), (wrapped, "open_clip"), (safe, "safetensors")):
        assert read_weights_file(path)[1] == kind
        _visual_equal(create_model("clip-mg-tiny", clip_weights=str(path), seed=0), reference)


def test_openai_torchscript_archive(tmp_path):
    cfg = get_config("clip-mg-tiny", TINY_QUICK).clip
    torch.manual_seed(6)
    reference = {k: v.half().float() for k, v in create_clip(cfg).state_dict().items()}
    archive = write_openai_archive(tmp_path / "ViT-B-16.pt", reference)
    state, kind = read_weights_file(archive)
    assert kind == "openai-torchscript" and "input_resolution" not in state
    _visual_equal(create_model("clip-mg-tiny", TINY_QUICK, clip_weights=str(archive), seed=0), reference)
    # OpenAI's weights with a GELU architecture: refused, with the architecture to use
    with pytest.raises(MicrogestureError, match="trained with QuickGELU.*uses GELU.*"
                                                "--set clip.arch=mg-tiny-vit-quickgelu"):
        create_model("clip-mg-tiny", clip_weights=str(archive), seed=0)
    # the same weights as a plain state dict with OpenAI's metadata keys are recognised too
    torch.save({**reference, "input_resolution": torch.tensor(32)}, tmp_path / "openai_state.pt")
    assert read_weights_file(tmp_path / "openai_state.pt")[1] == "openai"
    with pytest.raises(MicrogestureError, match="trained with QuickGELU"):
        create_model("clip-mg-tiny", clip_weights=str(tmp_path / "openai_state.pt"), seed=0)


def test_weights_for_another_architecture_are_refused(tmp_path):
    torch.manual_seed(0)
    torch.save(create_clip(get_config("clip-mg-tiny", TINY_QUICK).clip).state_dict(), tmp_path / "q.pt")
    small = {k: v for k, v in torch.load(tmp_path / "q.pt").items() if not k.startswith("visual.transformer.resblocks.1")}
    torch.save(small, tmp_path / "short.pt")
    with pytest.raises(MicrogestureError, match=r"does not fit the architecture mg-tiny-vit: missing \['visual"):
        create_model("clip-mg-tiny", clip_weights=str(tmp_path / "short.pt"), seed=0)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo owned > /dev/null",))


def test_damaged_or_malicious_files_give_one_line(tmp_path):
    (tmp_path / "cut.pt").write_bytes(b"PK\x03\x04 truncated zip")
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"visual.proj": _Evil()}, f)
    torch.save({"weights": [1, 2, 3]}, tmp_path / "list.pt")
    for name, match in (("cut.pt", "cannot be read safely"), ("evil.pt", "cannot be read safely"),
                        ("list.pt", "not a state dict of tensors"), ("nope.pt", "does not exist")):
        with pytest.raises(MicrogestureError, match=match) as info:
            create_model("clip-mg-tiny", clip_weights=str(tmp_path / name), seed=0)
        assert "\n" not in str(info.value) and name in str(info.value)


def test_tag_offline_names_both_ways_out():
    with pytest.raises(MicrogestureError) as info:
        create_model("clip-mg-tiny", TINY_QUICK | {"clip.arch": "ViT-B-32-quickgelu"}, clip_weights="openai")
    text = str(info.value)
    assert "\n" not in text and "--clip-weights PATH" in text and "--clip-weights random" in text
    assert "name resolution" in text  # what actually failed
    # a tag whose activation does not match the architecture is refused before any download
    with pytest.raises(MicrogestureError, match="'openai' were trained with QuickGELU.*ViT-B-32 uses GELU"):
        create_model("clip-mg-b32", {"clip.arch": "ViT-B-32"}, clip_weights="openai")
    with pytest.raises(MicrogestureError, match="neither a file nor an open_clip tag"):
        create_model("clip-mg-b32", clip_weights="laion9000")


def test_paper_sized_models_start_pretrained_by_default():
    assert training_weights(get_config("clip-mg-b16").clip, None) == ("pretrained", "open_clip:openai")
    assert training_weights(get_config("clip-mg-b32").clip, None) == ("pretrained", "open_clip:openai")
    assert training_weights(get_config("clip-mg-b16").clip, "random") == (None, "random")
    assert training_weights(get_config("clip-mg-tiny").clip, None) == (None, "random")


def test_the_run_records_its_clip_weights(tmp_path):
    from microgesture.core.checkpoint import read_metadata
    from microgesture.training.synth import write_synthetic
    from microgesture.training.trainer import TrainOptions, train

    data = write_synthetic(tmp_path / "set", subjects=2, clips_per_class=1, classes=2, seed=0,
                           progress=False)["out_dir"]
    torch.manual_seed(1)
    weights = tmp_path / "tiny_clip.pt"
    torch.save(create_clip(get_config("clip-mg-tiny").clip).state_dict(), weights)
    train(TrainOptions(model="clip-mg-tiny", data=str(data), out=str(tmp_path / "run"), epochs=1,
                       batch_size=2, workers=0, clip_weights=str(weights), test_subjects=("s01",)),
          progress=False)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    source = info["config"]["clip"]["weights_source"]
    assert source.startswith("file:tiny_clip.pt sha256:") and source.endswith("(file)")
    assert read_metadata(tmp_path / "run" / "best.safetensors")["config"].clip.weights_source == source
    # a damaged training state is refused in one line when resuming
    (tmp_path / "run" / "last.pt").write_bytes(b"not a zip")
    with pytest.raises(MicrogestureError, match=r"the training state .*last\.pt cannot be read safely") as e:
        train(TrainOptions(model="", data="", out=str(tmp_path / "run")), resume=True, progress=False)
    assert "\n" not in str(e.value)
