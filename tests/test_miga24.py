"""The MiGA 2024 video CLIP student on its tiny config: VCLIP attention, token decay, FROSTER."""

import math

import pytest
import torch
import torch.nn.functional as F

from microgesture.core.errors import MicrogestureError
from microgesture.core.miga24 import ResidualProjector, create_vclip
from microgesture.core.miga24_config import get_miga24_config, miga24_config_from_dict
from microgesture.core.prompts import TEMPLATES, class_prompts, training_prompts
from microgesture.core.vclip import decay_tokens, embed, vclip_block, vclip_encode

LABELS = ("touching jaw", "folding arms", "pressing lips")


def tiny_config(**overrides):
    return get_miga24_config("miga24-vclip-tiny", {"labels": LABELS, **overrides})


@pytest.fixture(scope="module")
def student():
    return create_vclip(tiny_config(), seed=0)


def frames(batch=2, t=4, seed=0):
    return torch.randn(batch, t, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def tokens(student, batch=1, t=6, seed=0):
    with torch.no_grad():
        return embed(student.clip.visual, frames(batch, t, seed).flatten(0, 1))  # (B*T, 17, 64)


def reference_block(block, x, t, pad="zeros"):
    """One block by hand, frame by frame and head by head: frame t's queries against the keys
    [t+1 | t-1 | t]; a missing neighbour is a zero block (pad="zeros") or left out (pad="mask")."""
    attn, h = block.attn, block.ln_1(x)
    heads = attn.num_heads
    q, k, v = F.linear(h, attn.in_proj_weight, attn.in_proj_bias).chunk(3, -1)
    out = torch.empty_like(q)
    d = q.shape[-1] // heads
    for n in range(x.shape[0]):
        b, f = divmod(n, t)
        keys, values = [], []
        for g in (f + 1, f - 1, f):
            if 0 <= g < t:
                keys.append(k[b * t + g]), values.append(v[b * t + g])
            elif pad == "zeros":
                keys.append(torch.zeros_like(k[n])), values.append(torch.zeros_like(v[n]))
        kk, vv = torch.cat(keys), torch.cat(values)
        for i in range(heads):
            s = slice(i * d, (i + 1) * d)
            w = torch.softmax(q[n, :, s] @ kk[:, s].T / math.sqrt(d), -1)
            out[n, :, s] = w @ vv[:, s]
    x = x + attn.out_proj(out)
    return x + block.mlp(block.ln_2(x))


# ----------------------------------------------------------------------------- VCLIP attention

def test_without_temporal_attention_it_is_open_clips_image_encoder(student):
    clip = frames(2, 3)
    with torch.no_grad():
        ours = vclip_encode(student.clip.visual, clip, temporal=False)
        theirs = student.clip.encode_image(clip.flatten(0, 1)).unflatten(0, (2, 3))
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_frame_t_sees_frames_t_minus_1_t_and_t_plus_1_only(student):
    block, t = student.clip.visual.transformer.resblocks[0], 6
    x = tokens(student, batch=2, t=t)
    with torch.no_grad():
        base, _ = vclip_block(block, x, t)
        for j in range(t):
            moved = x.clone()
            moved[t + j] += torch.randn_like(moved[t + j])  # change frame j of the second clip
            out, _ = vclip_block(block, moved, t)
            changed = [(out[n] - base[n]).abs().max().item() > 1e-6 for n in range(2 * t)]
            assert changed[:t] == [False] * t  # the other clip is untouched
            assert changed[t:] == [abs(f - j) <= 1 for f in range(t)], j


def test_missing_neighbours_are_zero_blocks_not_masked(student):
    """The padding checked: at the first and last frames the missing neighbour is a block of
    zero keys and values that still takes softmax mass (the public code), not a mask."""
    block, t = student.clip.visual.transformer.resblocks[1], 4
    x = tokens(student, batch=2, t=t, seed=1)
    with torch.no_grad():
        ours, _ = vclip_block(block, x, t)
        zeros = reference_block(block, x, t, pad="zeros")
        masked = reference_block(block, x, t, pad="mask")
    torch.testing.assert_close(ours, zeros, atol=1e-5, rtol=1e-5)
    ends = [n for n in range(2 * t) if n % t in (0, t - 1)]
    middle = [n for n in range(2 * t) if n not in ends]
    torch.testing.assert_close(ours[middle], masked[middle], atol=1e-5, rtol=1e-5)
    assert (ours[ends] - masked[ends]).abs().amax(dim=(1, 2)).min() > 1e-4  # padding, not masking


# ----------------------------------------------------------------------------- token decay

def test_token_decay_keeps_cls_and_the_top_k_patches(student):
    block, t = student.clip.visual.transformer.resblocks[0], 4
    x = tokens(student, batch=2, t=t, seed=2)
    with torch.no_grad():
        full, _ = vclip_block(block, x, t)
        kept, index = vclip_block(block, x, t, keep=0.5)
        # the CLS query's similarity to the frame's own keys, by hand
        attn = block.attn
        q, k, _ = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, -1)
        heads, d = attn.num_heads, q.shape[-1] // attn.num_heads
        q, k = q.unflatten(-1, (heads, d)), k.unflatten(-1, (heads, d))
        score = torch.softmax(torch.einsum("nhd,nlhd->nhl", q[:, 0], k) / math.sqrt(d), -1).mean(1)[:, 1:]
    assert kept.shape == (2 * t, 1 + 8, 64) and index.shape == (2 * t, 9)  # ceil(0.5 * 16) = 8 patches
    assert (index[:, 0] == 0).all()  # CLS first, always
    for n in range(2 * t):
        assert set(index[n, 1:].tolist()) == set((score[n].topk(8).indices + 1).tolist())
    # tokens are dropped after the attention: the kept ones are the full block's tokens
    torch.testing.assert_close(kept, full.gather(1, index[..., None].expand(-1, -1, 64)))


def test_token_decay_keeping_everything_is_full_attention(student):
    clip = frames(2, 4, seed=3)
    visual = student.clip.visual
    with torch.no_grad():
        full = vclip_encode(visual, clip)
        record = []
        all_kept = vclip_encode(visual, clip, decay={0: 1.0, 1: 1.0}, kept=record)
        decayed = vclip_encode(visual, clip, decay={0: 0.5})
    assert [r.shape for r in record] == [(8, 17), (8, 17)]
    torch.testing.assert_close(all_kept, full, atol=0, rtol=0)
    assert not torch.allclose(decayed, full)


def test_kept_tokens_are_ceil_of_keep_times_patches_and_compound(student):
    x = torch.randn(3, 1 + 16, 64)
    q, k = torch.randn(3, 4, 1, 16), torch.randn(3, 4, 17, 16)
    out, index = decay_tokens(x, q, k, 0.7)
    assert out.shape == (3, 1 + 12, 64)  # ceil(0.7 * 16) = 12
    record = []
    with torch.no_grad():
        student.encode_video(frames(1, 4), kept=record)  # the tiny config: keep 0.7 at block 1
        vclip_encode(student.clip.visual, frames(1, 4), decay={0: 0.5, 1: 0.5}, kept=record)
    assert [r.shape for r in record] == [(4, 1 + 12), (4, 1 + 8), (4, 1 + 4)]  # 16 -> 8 -> 4 patches


def test_decay_blocks_beyond_the_tower_are_refused():
    with pytest.raises(MicrogestureError, match="beyond the 2 blocks"):
        create_vclip(tiny_config(decay_blocks=(3,)))
    with pytest.raises(MicrogestureError, match="decay_keep"):
        tiny_config(decay_keep=0.0)


# ----------------------------------------------------------------------------- FROSTER

def test_projectors_are_the_identity_at_initialisation():
    p = ResidualProjector(32, alpha=0.1)
    f = torch.randn(5, 7, 32)
    torch.testing.assert_close(p(f), f, atol=0, rtol=0)
    p(f).square().sum().backward()
    assert p.mlp[2].weight.grad.abs().sum() > 0  # zero-initialised, not frozen


def test_prompts_train_with_one_template_and_the_bare_name_evaluate_with_all():
    import random

    assert len(TEMPLATES) == 28
    train = training_prompts(LABELS, TEMPLATES, random.Random(0))
    assert [p[0] for p in train] == list(LABELS)
    template = train[0][1].replace(LABELS[0], "{}")
    assert template in TEMPLATES and all(p[1] == template.format(n) for p, n in zip(train, LABELS))
    evaluation = class_prompts(LABELS, TEMPLATES)
    assert [len(p) for p in evaluation] == [29] * 3 and evaluation[1][0] == "folding arms"
    with pytest.raises(MicrogestureError, match="exactly one"):
        class_prompts(LABELS, ["no slot"])


def test_evaluation_class_embeddings_average_every_prompt(student):
    with torch.no_grad():
        emb = student.refresh_text()
        tok = student.tokenizer(class_prompts(LABELS, TEMPLATES)[2])
        by_hand = F.normalize(F.normalize(student.clip.encode_text(tok), dim=-1).mean(0), dim=-1)
    assert emb.shape == (3, 32)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(emb[2], by_hand, atol=1e-6, rtol=1e-5)


def test_loss_is_ce_plus_weighted_cosine_distillation():
    model = create_vclip(tiny_config(distill_visual=0.5, distill_text=3.0), seed=1).train()
    batch = {"frames": frames(2, 4, seed=4), "label": torch.tensor([2, 0])}
    state = model.rng.getstate()
    terms = model.loss(batch)
    assert set(terms) == {"loss_ce", "loss_distill_visual", "loss_distill_text"}
    model.rng.setstate(state)
    prompts = training_prompts(LABELS, TEMPLATES, model.rng)
    with torch.no_grad():
        student = model.encode_video(batch["frames"])
        text = model.encode_prompts(prompts)
        ce = F.cross_entropy(model.logits(student, text), batch["label"])
        teacher = model.teacher.encode_image(batch["frames"].flatten(0, 1)).unflatten(0, (2, 4))
        visual = 1 - F.cosine_similarity(F.normalize(student, dim=-1), teacher, dim=-1).mean()
    torch.testing.assert_close(terms["loss_ce"], ce, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(terms["loss_distill_visual"], 0.5 * visual, atol=1e-5, rtol=1e-5)
    # the teacher is the student as built: identical text towers and identity projectors
    assert abs(terms["loss_distill_text"].item()) < 1e-5
    assert terms["loss_distill_visual"].item() > 1e-4  # temporal attention and decay make the frames differ

    sum(terms.values()).backward()
    assert model.clip.visual.conv1.weight.grad is not None and model.clip.logit_scale.grad is not None
    assert model.visual_projector.mlp[2].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.teacher.parameters())


def test_per_frame_student_distils_to_zero_at_initialisation():
    model = create_vclip(tiny_config(temporal=False, decay_blocks=()), seed=2)
    terms = model.loss({"frames": frames(2, 4, seed=5), "label": torch.tensor([0, 1])})
    assert abs(terms["loss_distill_visual"].item()) < 1e-5 and abs(terms["loss_distill_text"].item()) < 1e-5


def test_no_teacher_without_distillation():
    model = create_vclip(tiny_config(distill_visual=0.0, distill_text=0.0), seed=0)
    assert model.teacher is None
    assert set(model.loss({"frames": frames(1, 4), "label": torch.tensor([1])})) == {"loss_ce"}


def test_forward_classifies_with_eval_prompts_and_new_classes_need_no_retraining():
    model = create_vclip(tiny_config(), seed=0, teacher=False).eval()
    clip = frames(2, 4, seed=6)
    with torch.no_grad():
        logits = model(clip)
        expected = model.logits(model.encode_video(clip), model.refresh_text())
        assert logits.shape == (2, 3)
        torch.testing.assert_close(logits, expected)
        model.set_classes(["touching jaw", "scratching head", "rubbing eyes", "biting nails"])
        assert model(clip).shape == (2, 4)
        torch.testing.assert_close(model(clip)[:, 0], logits[:, 0])  # same class, same score
    with pytest.raises(MicrogestureError, match="class name"):
        model.set_classes([])


def test_configs_round_trip_and_sizes():
    for name in ("miga24-vclip-b16", "miga24-vclip-b32", "miga24-vclip-tiny"):
        cfg = get_miga24_config(name)
        assert miga24_config_from_dict(cfg.to_dict()) == cfg
    b16 = get_miga24_config("miga24-vclip-b16")
    assert (b16.decay_blocks, b16.decay_keep, b16.rgb_frames) == ((3, 6, 9), 0.7, 8)
    assert (b16.distill_visual, b16.distill_text, b16.projector_alpha) == (2.0, 2.0, 0.1)


def test_onnx_export_matches_pytorch(tmp_path):
    """dynamo export of ``forward(frames) -> logits`` at tiny size; ONNX Runtime agrees with
    PyTorch within 1e-4 absolute (+1e-4 relative) on the logits (scale ~14 at random init)."""
    pytest.importorskip("onnxruntime")
    from microgesture.export.onnx_export import export_stage, ort_session

    model = create_vclip(tiny_config(), seed=0, teacher=False).eval()
    model.refresh_text()  # class embeddings are constants of the graph
    example = {"frames": frames(2, 4, seed=7)}
    info = export_stage(model, example, tmp_path / "vclip.onnx", exporters=("dynamo",))
    assert info["exporter"] == "dynamo"
    clip = frames(3, 4, seed=8)
    (onnx_logits,) = ort_session(tmp_path / "vclip.onnx").run(None, {"frames": clip.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(onnx_logits), model(clip), atol=1e-4, rtol=1e-4)


def test_a_few_training_steps_fit_a_fixed_batch():
    model = create_vclip(tiny_config(), seed=3).train()
    batch = {"frames": frames(3, 4, seed=9), "label": torch.tensor([0, 1, 2])}
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(8):
        optimiser.zero_grad()
        terms = model.loss(batch)
        total = sum(terms.values())
        total.backward()
        optimiser.step()
        losses.append(terms["loss_ce"].item())
    assert losses[-1] < losses[0]
    assert all(p.grad is None for p in model.teacher.parameters())
