"""CLIP-MG on tiny configs: shapes, ablations, staged == whole, gradients, freezing."""

import pytest
import torch

from microgesture.core.config import MODELS, config_from_dict, get_config
from microgesture.core.errors import MicrogestureError, UnknownNameError
from microgesture.core.family import get_family
from microgesture.core.models import create_model, example_inputs

ABLATIONS = get_family("clip-mg").ablations



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


# ----------------------------------------------------------------- fusion, by the docstring's equations

def _fusion_by_hand(model, tokens, pose, joints):
    """The equations of core/clip_mg.py's docstring, written out from the submodules'
    weights (relevance and multi-head attention by hand): logits and the gate."""
    cfg, d = model.config, model.dim
    x_cls, x = tokens[:, :, 0], tokens[:, :, 1:]                   # (B, R, D), (B, R, P, D)
    b, r, p, _ = x.shape
    side = int(round(p ** 0.5))
    # w_t,p = normalise_p(1e-6 + sum_v s_v exp(-|c_p - j_v|^2 / 2 sigma^2)), distances in patch units
    cols, rows = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="xy")
    centres = torch.stack([cols.reshape(-1) + 0.5, rows.reshape(-1) + 0.5], -1).to(x)  # (P, 2) patches
    xy, s = joints[..., :2] * side, joints[..., 2]
    present = torch.isfinite(xy).all(-1) & torch.isfinite(s) & (s > 0)
    s = torch.where(present, s, torch.zeros_like(s))
    xy = torch.where(present[..., None], xy, torch.zeros_like(xy))
    d2 = ((centres[None, None, :, None] - xy[:, :, None]) ** 2).sum(-1)  # (B, R, P, V)
    sigma = cfg.relevance_sigma
    w = 1e-6 + (s[:, :, None] * torch.exp(-d2 / (2 * sigma ** 2))).sum(-1)
    w = w / w.sum(-1, keepdim=True)
    wq_f = pose @ model.pose_to_query.weight.T + model.pose_to_query.bias     # W_q f_t
    q = model.query_norm((w[..., None] * x).sum(2) + wq_f)                   # q_t = LN(sum_p w x + W_q f)
    g = torch.sigmoid(torch.cat([pose, x_cls], -1) @ model.gate.weight.T + model.gate.bias)
    q_hat = g * q + (1 - g) * x_cls
    z = (x + (g * wq_f)[:, :, None]).reshape(b, r * p, d)                 # all frames' tokens
    # MHA(q^, z, z) by hand: per-head scaled dot-product attention, then the output projection
    att = model.attention
    heads = att.num_heads
    wq, wk, wv = att.in_proj_weight.chunk(3)
    bq, bk, bv = att.in_proj_bias.chunk(3)
    split = lambda t: t.reshape(b, t.shape[1], heads, d // heads).transpose(1, 2)  # noqa: E731
    qh, kh, vh = split(q_hat @ wq.T + bq), split(z @ wk.T + bk), split(z @ wv.T + bv)
    a = torch.softmax(qh @ kh.transpose(-1, -2) / (d // heads) ** 0.5, -1) @ vh
    mha = a.transpose(1, 2).reshape(b, r, d) @ att.out_proj.weight.T + att.out_proj.bias
    h = model.out_norm(q_hat + mha).mean(1)                                  # mean_t LN(q^ + MHA)
    return model.head(h), g


def _double_tiny(seed=0):
    import copy

    model = copy.deepcopy(create_model("clip-mg-tiny", seed=seed)).double().eval()
    with torch.no_grad():   # gates spread over (0, 1), so g and 1 - g differ clearly
        model.gate.bias.normal_(0.0, 2.0, generator=torch.Generator().manual_seed(seed))
    return model


def test_fusion_computes_the_docstring_equations():
    model = _double_tiny()
    gen = torch.Generator().manual_seed(5)
    b, r, p, d, v = 2, 4, 16, model.dim, 18
    tokens = torch.randn(b, r, 1 + p, d, generator=gen, dtype=torch.float64)
    pose = torch.randn(b, r, d, generator=gen, dtype=torch.float64)
    joints = torch.rand(b, r, v, 3, generator=gen, dtype=torch.float64)
    joints[0, :, 3, 2] = 0.0                       # a joint with score 0
    joints[1, 2, 5, :2] = float("nan")             # a joint not found
    with torch.no_grad():
        logits, aux = model.fuse(tokens, pose, joints, return_aux=True)
        expected, gate = _fusion_by_hand(model, tokens, pose, joints)
    assert (gate - 0.5).abs().mean() > 0.15   # not all near 0.5, where g and 1 - g agree
    torch.testing.assert_close(aux["gate"], gate, rtol=0, atol=1e-12)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("gate", ["shut", "open"])
def test_gate_shut_ignores_the_skeleton_and_open_reacts_to_it(gate):
    """g = 0: the query is the CLS token and the tokens get no pose, so the logits do not
    depend on heatmaps or joints at all; g = 1: they react to both."""
    model = create_model("clip-mg-tiny", seed=0).eval()
    with torch.no_grad():
        model.gate.weight.zero_()
        model.gate.bias.fill_(-1e4 if gate == "shut" else 1e4)   # sigmoid: exactly 0 or 1
    inputs = example_inputs(model.config, batch=2, seed=1)
    joints = inputs["joints"].clone()
    joints[..., :2] = 1 - joints[..., :2]
    other_skeleton = dict(inputs, heatmaps=torch.rand_like(inputs["heatmaps"]), joints=joints)
    other_frames = dict(inputs, frames=torch.randn_like(inputs["frames"]))
    with torch.no_grad():
        logits, aux = model.fuse(model.encode_frames(inputs["frames"].flatten(0, 1)).unflatten(0, (2, 4)),
                                 model.encode_pose(inputs["heatmaps"]), inputs["joints"], return_aux=True)
        assert torch.equal(aux["gate"], torch.full_like(aux["gate"], 0.0 if gate == "shut" else 1.0))
        moved_skeleton = model(**other_skeleton)
        moved_joints = model(**dict(inputs, joints=joints))
        moved_frames = model(**other_frames)
    assert not torch.allclose(moved_frames, logits, atol=1e-4)   # the frames always count
    if gate == "shut":
        torch.testing.assert_close(moved_skeleton, logits, rtol=0, atol=1e-6)
    else:
        assert (moved_skeleton - logits).abs().max() > 1e-3
        assert (moved_joints - logits).abs().max() > 1e-3


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
