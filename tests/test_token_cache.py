"""The frozen CLIP blocks' token cache (issue 14, item 8): the split forward equals the
model's, cached items match the augmented items they stand for, training and resume."""

import json

import numpy as np
import pytest
import torch

from microgesture.core.models import create_model
from microgesture.training import token_cache
from microgesture.training.datasets import open_dataset
from microgesture.training.trainer import TrainOptions, train
from microgesture.training.transforms import ClipDataset

pytest.importorskip("microgesture.training.synth")


@pytest.mark.parametrize("name", ["clip-mg-tiny", "clip-mg-b32"])
def test_split_forward_equals_the_whole_tower(name):
    torch.manual_seed(0)
    model = create_model(name, seed=0).eval()
    size = model.config.clip.image_size
    frames = torch.randn(2, 3, size, size)
    count = token_cache.frozen_blocks(model.visual)
    assert count == len(model.visual.transformer.resblocks) - model.config.clip.trainable_blocks
    with torch.no_grad():
        whole = model.encode_frames(frames)
        split = token_cache.tokens_from_hidden(model, token_cache.frozen_tokens(model.visual, frames,
                                                                                count), count)
    torch.testing.assert_close(split, whole, rtol=1e-5, atol=1e-5)


def test_cached_items_are_the_augmented_items_they_stand_for(small_synth, tmp_path):
    model = create_model("clip-mg-tiny", {"num_classes": 3}, seed=0).eval()
    index = open_dataset(small_synth)
    plain = ClipDataset(index, model.config, train=True, seed=3)
    cached = token_cache.build(model, ClipDataset(index, model.config, train=True, seed=3),
                               tmp_path / "cache", "train", views=2, batch_size=4, progress=False)
    count = token_cache.frozen_blocks(model.visual)
    for epoch in (0, 1, 2, 3):              # epoch e trains on view e % 2
        plain.set_epoch(epoch % 2)
        cached.set_epoch(epoch)
        for i in (0, 5, len(plain) - 1):
            a, b = plain[i], cached[i]
            assert "frames" not in b
            for key in ("heatmaps", "joints", "label", "index"):
                torch.testing.assert_close(b[key], a[key], rtol=0, atol=0)
            with torch.no_grad():
                hidden = token_cache.frozen_tokens(model.visual, a["frames"], count)
            torch.testing.assert_close(b["hidden"].float(), hidden, rtol=2e-3, atol=2e-3)  # fp16
    # the two views differ (they are two augmentations), and logits through the cache match
    cached.set_epoch(0)
    first = cached[0]["hidden"].float()
    cached.set_epoch(1)
    assert not torch.allclose(first, cached[0]["hidden"].float())
    plain.set_epoch(1)
    batch = {k: v.unsqueeze(0) for k, v in cached[4].items()}
    full = {k: v.unsqueeze(0) for k, v in plain[4].items()}
    with torch.no_grad():
        torch.testing.assert_close(token_cache.forward(model, batch), token_cache.forward(model, full),
                                   rtol=1e-2, atol=1e-2)


def test_training_with_the_cache_and_resuming_reuses_it(small_synth, tmp_path):
    run = tmp_path / "run"
    options = TrainOptions(model="clip-mg-tiny", data=str(small_synth), out=str(run), epochs=2,
                           batch_size=4, workers=0, seed=0, test_subjects=("s02",), token_cache=2)
    summary = train(options, progress=False, stop_after=1)
    meta = run / "token_cache" / "train.json"
    record = json.loads(meta.read_text())
    assert tuple(record["shape"][:3]) == (2, 12, 4) and record["meta"]["views"] == 2
    assert json.loads((run / "token_cache" / "val.json").read_text())["shape"][:2] == [1, 6]
    stamp = meta.stat().st_mtime_ns
    summary = train(TrainOptions(model="", data="", out=str(run)), resume=True, progress=False)
    assert summary["epochs_done"] == 2 and meta.stat().st_mtime_ns == stamp   # reused
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2] and all(np.isfinite(r["train_loss"]) for r in lines)


def test_the_cache_refuses_a_model_without_frozen_blocks():
    from microgesture.core.errors import MicrogestureError

    model = create_model("clip-mg-tiny", {"clip.trainable_blocks": -1}, seed=0)
    with pytest.raises(MicrogestureError, match="train without --token-cache"):
        token_cache.frozen_blocks(model.visual)
