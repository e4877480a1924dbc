"""PoseC3D (MiGA 2024 skeleton models): the SlowOnly-50 shape, heads, text alignment."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from microgesture.core.errors import MicrogestureError
from microgesture.core.heatmaps import joint_heatmaps, limb_heatmaps
from microgesture.core.layouts import get_layout
from microgesture.core.miga24_config import get_miga24_config, miga24_config_from_dict
from microgesture.core.posec3d import Bottleneck3d, create_posec3d

LABELS = ("touching jaw", "folding arms", "pressing lips")


def tiny(kind="joint", **overrides):
    return get_miga24_config(f"miga24-posec3d-{kind}-tiny", {"labels": LABELS, **overrides})


def test_slowonly50_as_the_paper():
    cfg = get_miga24_config("miga24-posec3d-joint")
    model = create_posec3d(cfg, seed=0).eval()
    stages = model.backbone.stages
    assert [len(s) for s in stages] == [4, 6, 3]
    assert model.backbone.stem[0].kernel_size == (1, 7, 7) and model.backbone.stem[0].stride == (1, 1, 1)
    assert model.backbone.pool.stride in (1, (1, 1, 1))
    # inflation (0, 1, 1): the first conv of every block of stages 2 and 3 is temporal (3, 1, 1)
    assert [{b.conv1[0].kernel_size for b in s} for s in stages] == [{(1, 1, 1)}, {(3, 1, 1)}, {(3, 1, 1)}]
    assert [s[0].conv2[0].stride for s in stages] == [(1, 2, 2), (1, 2, 2), (2, 2, 2)]
    assert [s[-1].conv3[0].out_channels for s in stages] == [128, 256, 512]
    assert all(b.conv3[1].weight.abs().sum() == 0 for s in stages for b in s)  # zero-init residual BN
    with torch.no_grad():
        features = model.backbone(torch.rand(1, 22, 48, 56, 56))
    assert features.shape == (1, 512, 24, 7, 7)
    assert cfg.sigma == 0.6 and cfg.dropout == 0.5 and cfg.text_dim == 512 and cfg.text_weight == 20.0


def test_in_channels_follow_the_heatmap_kind():
    layout = get_layout("imigue22")
    assert get_miga24_config("miga24-posec3d-joint").in_channels == layout.num_joints
    assert get_miga24_config("miga24-posec3d-limb").in_channels == len(layout.limbs)
    for name in ("miga24-posec3d-joint", "miga24-posec3d-limb-tiny"):
        cfg = get_miga24_config(name)
        assert miga24_config_from_dict(cfg.to_dict()) == cfg
    with pytest.raises(MicrogestureError, match="heatmap must be"):
        tiny(heatmap="bones")


@pytest.mark.parametrize("kind", ["joint", "limb"])
def test_tiny_model_reads_the_shared_heatmaps_at_train_and_test_size(kind):
    cfg = tiny(kind)
    layout = get_layout(cfg.layout)
    rng = np.random.default_rng(0)
    kp = rng.uniform(40, 200, (cfg.pose_frames, layout.num_joints, 2))
    sc = rng.uniform(0.2, 1.0, (cfg.pose_frames, layout.num_joints))
    box = (0, 0, 256, 256)
    model = create_posec3d(cfg, seed=0).eval()
    for size in (cfg.heatmap_size, 24):  # fully convolutional: another test size works too
        if kind == "joint":
            hm = joint_heatmaps(kp, sc, (size, size), cfg.sigma, box)
        else:
            hm = limb_heatmaps(kp, sc, layout, (size, size), cfg.sigma, box)
        assert hm.shape[0] == cfg.in_channels
        with torch.no_grad():
            logits = model(torch.from_numpy(hm)[None].repeat(2, 1, 1, 1, 1))
        assert logits.shape == (2, 3) and torch.isfinite(logits).all()


def test_text_targets_are_the_students_prompt_averaged_class_embeddings():
    from microgesture.core.miga24 import create_vclip
    from microgesture.core.prompts import class_prompts

    student = create_vclip(get_miga24_config("miga24-vclip-tiny", labels=LABELS), seed=0, teacher=False)
    targets = student.class_text_embeddings()
    with torch.no_grad():
        tok = student.tokenizer(class_prompts(LABELS, student.config.templates)[1])
        by_hand = F.normalize(F.normalize(student.clip.encode_text(tok), dim=-1).mean(0), dim=-1)
    torch.testing.assert_close(targets[1], by_hand, atol=1e-6, rtol=1e-5)
    model = create_posec3d(tiny(), seed=0)
    model.set_text_targets(3 * targets)  # stored normalised
    torch.testing.assert_close(model.text_targets, targets, atol=1e-6, rtol=1e-5)
    assert "text_targets" in model.state_dict()  # a checkpoint carries them
    with pytest.raises(MicrogestureError, match=r"\(classes, text_dim\) = \(3, 32\)"):
        model.set_text_targets(torch.randn(4, 32))


def test_text_aligned_loss_is_ce_plus_gamma_times_squared_distance():
    cfg = tiny(text_weight=5.0)
    model = create_posec3d(cfg, seed=1).eval()  # eval: no dropout, so the features are comparable
    with pytest.raises(MicrogestureError, match="set_text_targets"):
        model.loss({"heatmaps": torch.rand(2, 22, 8, 16, 16), "label": torch.tensor([0, 1])})
    targets = F.normalize(torch.randn(3, 32), dim=-1)
    model.set_text_targets(targets)
    batch = {"heatmaps": torch.rand(4, 22, 8, 16, 16), "label": torch.tensor([0, 2, 2, 1])}
    terms = model.loss(batch)
    x = model.embed(batch["heatmaps"])
    assert x.shape == (4, 32)  # classification reads the projected feature
    torch.testing.assert_close(terms["loss_ce"], F.cross_entropy(model.fc(x), batch["label"]))
    expected = 5.0 * torch.stack([(x[i] - targets[y]).square().sum() for i, y in enumerate([0, 2, 2, 1])]).mean()
    torch.testing.assert_close(terms["loss_text"], expected)
    # the alignment term pulls the projected features towards their class's text embedding
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01)  # eval mode: BN statistics stay fixed
    before = terms["loss_text"].item()
    for _ in range(5):
        optimiser.zero_grad()
        model.loss(batch)["loss_text"].backward()
        optimiser.step()
    assert model.loss(batch)["loss_text"].item() < before


def test_plain_head_without_text_alignment():
    model = create_posec3d(tiny(text_dim=0), seed=0)
    assert model.project is None and model.fc.in_features == 128  # 4 * base 8 * 2^2
    terms = model.loss({"heatmaps": torch.rand(2, 22, 8, 16, 16), "label": torch.tensor([0, 1])})
    assert set(terms) == {"loss_ce"}
    with pytest.raises(MicrogestureError, match="no text alignment"):
        model.set_text_targets(torch.randn(3, 32))


def test_bottleneck_shortcut_only_when_the_shape_changes():
    assert Bottleneck3d(128, 32, 1, 1, False).downsample is None
    assert Bottleneck3d(32, 32, 1, 1, False).downsample is not None
    assert Bottleneck3d(128, 32, 2, 1, True).downsample[0].stride == (1, 2, 2)


def test_a_few_training_steps_fit_a_fixed_batch():
    # eval mode: fixed BN statistics and no dropout, so the descent is deterministic
    cfg = tiny("limb")
    model = create_posec3d(cfg, seed=2).eval()
    model.set_text_targets(torch.randn(3, 32))
    batch = {"heatmaps": torch.rand(6, cfg.in_channels, 8, 16, 16), "label": torch.tensor([0, 1, 2, 0, 1, 2])}
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)  # gamma 20: SGD crawls
    losses = []
    for _ in range(24):
        optimiser.zero_grad()
        total = sum(model.loss(batch).values())
        total.backward()
        optimiser.step()
        losses.append(total.item())
    assert losses[-1] < 0.5 * losses[0]


def test_onnx_export_matches_pytorch(tmp_path):
    """dynamo export of ``forward(heatmaps) -> logits`` at tiny size; ONNX Runtime agrees with
    PyTorch within 1e-4 absolute (+1e-4 relative)."""
    pytest.importorskip("onnxruntime")
    from microgesture.export.onnx_export import export_stage, ort_session

    cfg = tiny("limb")
    model = create_posec3d(cfg, seed=0).eval()
    model.set_text_targets(torch.randn(3, 32))
    example = {"heatmaps": torch.rand(2, cfg.in_channels, 8, 16, 16)}
    assert export_stage(model, example, tmp_path / "posec3d.onnx", exporters=("dynamo",))["exporter"] == "dynamo"
    heatmaps = torch.rand(3, cfg.in_channels, 8, 16, 16)
    (onnx_logits,) = ort_session(tmp_path / "posec3d.onnx").run(None, {"heatmaps": heatmaps.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(onnx_logits), model(heatmaps), atol=1e-4, rtol=1e-4)
