"""CLIP-MG on tiny configs: shapes, ablations, staged == whole, gradients, freezing."""

import pytest
import torch

from microgesture.core.config import ABLATIONS, MODELS, config_from_dict, get_config
from microgesture.core.errors import MicrogestureError, UnknownNameError
from microgesture.core.models import create_model, example_inputs



@pytest.fixture(scope="module")
def tiny():
    return create_model("clip-mg-tiny", seed=0).eval()


@pytest.mark.parametrize("ablation", ABLATIONS)
def test_forward_each_ablation(ablation):
    model = create_model("clip-mg-tiny", ABLATIONS[ablation], seed=0).eval()
    inputs = example_inputs(model.config, batch=3)
    logits = model(**inputs)
    assert logits.shape == (3, 32)
    assert torch.isfinite(logits).all()
    # the model reacts to the modalities it uses and ignores the others
    changed_frames = dict(inputs, frames=torch.randn_like(inputs["frames"]))
    changed_pose = dict(inputs, heatmaps=torch.rand_like(inputs["heatmaps"]))
    frames_matter = not torch.allclose(model(**changed_frames), logits)
    pose_matters = not torch.allclose(model(**changed_pose), logits)
    assert frames_matter == (ablation != "pose-only")
    assert pose_matters == (ablation != "visual-only")


def test_joints_steer_relevance_only_with_pose_guidance():
    inputs = example_inputs(get_config("clip-mg-tiny"), batch=2)
    joints = inputs["joints"].clone()
    joints[..., :2] = 1 - joints[..., :2]  # mirror every joint's position
    moved = dict(inputs, joints=joints)
    guided = create_model("clip-mg-tiny", seed=0).eval()
    unguided = create_model("clip-mg-tiny", {"pose_guidance": False}, seed=0).eval()
    assert not torch.allclose(guided(**inputs), guided(**moved))
    torch.testing.assert_close(unguided(**inputs), unguided(**moved))


def test_relevance_peaks_at_the_joint_patch(tiny):
    # one joint at the centre of patch (row 1, col 2) of the 4x4 grid
    joints = torch.zeros(1, 4, 18, 3)
    joints[0, :, 0] = torch.tensor([2.5 / 4, 1.5 / 4, 1.0])
    w = tiny.relevance(joints)
    assert w.shape == (1, 4, 16)
    torch.testing.assert_close(w.sum(-1), torch.ones(1, 4))
    assert int(w[0, 0].argmax()) == 1 * 4 + 2
    # no joints at all (score 0, or NaN coordinates): uniform relevance
    missing = torch.full((1, 4, 18, 3), float("nan"))
    torch.testing.assert_close(tiny.relevance(missing), torch.full((1, 4, 16), 1 / 16))
    joints[..., 2] = 0
    torch.testing.assert_close(tiny.relevance(joints), torch.full((1, 4, 16), 1 / 16))


def test_staged_equals_whole_window(tiny):
    """Streaming encodes each frame once as it arrives; the window result must
    equal the whole-window forward (fp32, max abs error < 1e-5)."""
    inputs = example_inputs(tiny.config, batch=2, seed=3)
    with torch.no_grad():
        whole = tiny(**inputs)
        frames = inputs["frames"]
        tokens = torch.stack([
            torch.stack([tiny.encode_frames(frames[b, t:t + 1])[0] for t in range(frames.shape[1])])
            for b in range(frames.shape[0])])
        staged = tiny.fuse(tokens, tiny.encode_pose(inputs["heatmaps"]), inputs["joints"])
    assert (staged - whole).abs().max().item() < 1e-5


def test_aux_outputs_for_the_papers_checks(tiny):
    inputs = example_inputs(tiny.config, batch=2)
    with torch.no_grad():
        tokens = tiny.encode_frames(inputs["frames"].flatten(0, 1)).unflatten(0, (2, 4))
        logits, aux = tiny.fuse(tokens, tiny.encode_pose(inputs["heatmaps"]), inputs["joints"],
                                return_aux=True)
    assert aux["relevance"].shape == (2, 4, 16)
    assert aux["gate"].shape == (2, 4, 32)
    assert ((aux["gate"] > 0) & (aux["gate"] < 1)).all()


def test_training_step_updates_only_unfrozen_parts():
    model = create_model("clip-mg-tiny", seed=0).train()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    # trainable_blocks=1 on a 2-block tower: block 0 and the patch embedding are frozen
    assert "visual.conv1.weight" in frozen and "visual.transformer.resblocks.0.mlp.c_fc.weight" in frozen
    assert "visual.transformer.resblocks.1.mlp.c_fc.weight" not in frozen
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss = torch.nn.functional.cross_entropy(model(**example_inputs(model.config)),
                                             torch.tensor([1, 2]))
    loss.backward()
    opt.step()
    for name, p in model.named_parameters():
        moved = not torch.equal(before[name], p.detach())
        if name in frozen:
            assert not moved, name
    assert not torch.equal(before["head.3.weight"], model.head[3].weight)
    assert not torch.equal(before["pose_encoder.stages.0.weight"],
                           model.pose_encoder.stages[0].weight)


def test_registered_configs_and_paper_shapes():
    assert {"clip-mg-b16", "clip-mg-b32", "clip-mg-tiny"} <= set(MODELS)
    b16 = get_config("clip-mg-b16")
    assert (b16.clip.arch, b16.clip.image_size, b16.clip.trainable_blocks) == ("ViT-B-16-quickgelu", 224, 2)
    assert (b16.rgb_frames, b16.pose_frames, b16.pose.layout) == (8, 32, "coco18")
    assert (b16.pose.heatmap_size, b16.pose.sigma, b16.pose.channels) == (256, 2.5, (64, 128, 256))
    assert b16.num_classes == 32


@pytest.mark.parametrize("name", ["clip-mg-b16", "clip-mg-b32"])
def test_full_size_models_build_and_run_one_window(name):
    model = create_model(name, seed=0).eval()
    assert model.dim == 512  # pose features projected to 512, the CLIP embedding
    with torch.no_grad():
        logits = model(**example_inputs(model.config, batch=1))
    assert logits.shape == (1, 32)


def test_config_round_trip_and_overrides():
    cfg = get_config("clip-mg-tiny", {"pose.sigma": 2.0, "gate": False}, num_classes=5)
    assert cfg.pose.sigma == 2.0 and cfg.gate is False and cfg.num_classes == 5
    assert config_from_dict(cfg.to_dict()) == cfg
    with pytest.raises(MicrogestureError, match="Did you mean 'gate'"):
        get_config("clip-mg-tiny", gates=False)
    with pytest.raises(MicrogestureError, match="Did you mean 'sigma'"):
        get_config("clip-mg-tiny", {"pose.sigmaa": 1.0})
    with pytest.raises(UnknownNameError, match="Did you mean 'clip-mg-b16'"):
        create_model("clip-mg-b61")
    with pytest.raises(MicrogestureError, match="multiple of rgb_frames"):
        get_config("clip-mg-tiny", pose_frames=10)
    with pytest.raises(MicrogestureError, match="modality"):
        get_config("clip-mg-tiny", modality="audio")
    with pytest.raises(MicrogestureError, match="unknown field"):
        config_from_dict({**cfg.to_dict(), "future_field": 1})


@pytest.mark.parametrize("windows", ["segments", "strided"])
def test_each_rgb_frame_gets_the_pose_of_its_own_segment(windows):
    """Perturb one pose frame: with the paper's aligned windows only the feature of
    the RGB frame whose segment holds it changes; the first (strided) version also
    changed the next window's feature (its receptive field reached back 1.5 frames)."""
    cfg = get_config("clip-mg-b16", {"pose.windows": windows, "pose.channels": (4, 4, 4),
                                     "pose.heatmap_size": 16, "pose.spatial_strides": (2, 2, 2)})
    torch.manual_seed(0)
    model = create_model(cfg, {"modality": "pose"}, seed=0).eval()
    r, p = cfg.rgb_frames, cfg.pose_frames  # 8 windows of 4 pose frames
    heatmaps = torch.rand(1, 18, p, 16, 16)
    with torch.no_grad():
        base = model.encode_pose(heatmaps)[0]
        for frame in (0, 5, 13, 31):
            moved = heatmaps.clone()
            moved[:, :, frame] += 1.0
            changed = ((model.encode_pose(moved)[0] - base).abs().amax(-1) > 1e-6).nonzero().flatten().tolist()
            own = frame // (p // r)
            if windows == "segments":
                assert changed == [own], (frame, changed)
            else:
                assert own + 1 in changed or frame >= p - 2, (frame, changed)


def test_configs_written_before_pose_windows_read_as_strided():
    old = get_config("clip-mg-tiny").to_dict()
    del old["pose"]["windows"]
    assert config_from_dict(old).pose.windows == "strided"
    assert get_config("clip-mg-tiny").pose.windows == "segments"
    with pytest.raises(MicrogestureError, match="pose.windows must be one of segments, strided"):
        get_config("clip-mg-tiny", {"pose.windows": "centred"})
