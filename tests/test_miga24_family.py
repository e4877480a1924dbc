"""The MiGA 2024 families on the model-family contract: configs, windows, losses, stages, ONNX."""

import numpy as np
import pytest
import torch

from microgesture.core.errors import MicrogestureError
from microgesture.core.family import get_family, run_stages
from microgesture.core.layouts import get_layout

LABELS = ("touching jaw", "folding arms", "pressing lips")
ARCHS = ("miga24-vclip", "miga24-posec3d")


def tiny(arch, name=None, **overrides):
    fam = get_family(arch)
    return fam, fam.configs[name or fam.tiny].replace({"labels": LABELS, **overrides})


def torch_runner(stages):
    modules = {s.name: s.module for s in stages}

    def run(name, feeds):
        with torch.no_grad():
            out = modules[name](*feeds.values())
        return {"logits": out}
    return run


def test_each_family_owns_its_configs():
    assert set(get_family("miga24-vclip").configs) == {"miga24-vclip-b16", "miga24-vclip-b32", "miga24-vclip-tiny"}
    assert set(get_family("miga24-posec3d").configs) == {
        "miga24-posec3d-joint", "miga24-posec3d-limb", "miga24-posec3d-joint-tiny", "miga24-posec3d-limb-tiny"}
    for arch in ARCHS:
        fam = get_family(arch)
        assert all(c.arch == arch for c in fam.configs.values())
        for cfg in fam.configs.values():
            assert fam.config_from_dict(cfg.to_dict()) == cfg


def test_window_specs():
    rgb = get_family("miga24-vclip")
    spec = rgb.window(rgb.configs["miga24-vclip-b16"])
    assert (spec.rgb_frames, spec.pose_frames, spec.image_size, spec.heatmaps, spec.text) == (8, 0, 224, None, True)
    assert spec.keys() == ("frames",)
    assert rgb.configs["miga24-vclip-b16"].pose_frames == 0  # what checkpoints and bundles record
    pose = get_family("miga24-posec3d")
    for name, kind in (("miga24-posec3d-joint", "joints"), ("miga24-posec3d-limb", "limbs")):
        spec = pose.window(pose.configs[name])
        hm = spec.heatmaps
        assert (spec.rgb_frames, spec.pose_frames, spec.keys(), spec.layout) == (0, 48, ("heatmaps",), "imigue22")
        assert (hm.kind, hm.size, hm.size_for(train=True), hm.sigma, hm.crop) == (kind, 64, 56, 0.6, "skeleton")
    # the example batch has the channels the network reads (joints, or the layout's limbs)
    for name in ("miga24-posec3d-joint-tiny", "miga24-posec3d-limb-tiny"):
        fam, cfg = tiny("miga24-posec3d", name)
        assert fam.example_batch(cfg)["heatmaps"].shape[1] == cfg.in_channels
    assert cfg.in_channels == len(get_layout("imigue22").limbs)


def test_vclip_loss_terms_and_checkpoints_without_the_teacher():
    fam, cfg = tiny("miga24-vclip")
    assert fam.uses_clip_weights(cfg) and fam.backbone_prefixes == ("clip.",)
    torch.manual_seed(0)
    model = fam.build(cfg)
    batch = {**fam.example_batch(cfg), "label": torch.tensor([0, 2])}
    terms = fam.loss(model, batch)
    assert set(terms) == {"loss_ce", "loss_distill_visual", "loss_distill_text"}
    sum(terms.values()).backward()
    state = model.state_dict()
    assert state and not any(k.startswith("teacher.") for k in state)  # never saved
    loaded = fam.build_for_inference(cfg)
    assert loaded.teacher is None
    loaded.load_state_dict(state, strict=True)  # what eval/export load
    model.load_state_dict(state, strict=True)   # resuming: the teacher is rebuilt, not loaded
    model.eval()
    loaded.eval()
    frames = batch["frames"]
    torch.testing.assert_close(fam.predict(loaded, {"frames": frames}), fam.predict(model, {"frames": frames}))
    assert set(fam.loss(loaded, batch)) == {"loss_ce"}


def test_posec3d_text_alignment_off_without_text_from(capsys):
    fam, cfg = tiny("miga24-posec3d")
    model = fam.build(cfg).eval()  # no dropout: the cross-entropy can be recomputed
    batch = {**fam.example_batch(cfg), "label": torch.tensor([1, 2])}
    terms = fam.loss(model, batch)
    assert set(terms) == {"loss_ce"} and not model.has_text_targets
    torch.testing.assert_close(terms["loss_ce"], torch.nn.functional.cross_entropy(model(batch["heatmaps"]),
                                                                                   batch["label"]))
    assert "text alignment is off" in capsys.readouterr().err
    fam.loss(model, batch)
    assert capsys.readouterr().err == ""  # said once


def test_posec3d_text_from_sets_the_students_embeddings_at_the_first_step(monkeypatch, tmp_path):
    import microgesture.core.models.miga24_posec3d as module

    rgb, rgb_cfg = tiny("miga24-vclip")
    student = rgb.build_for_inference(rgb_cfg)
    wanted = []

    def fake_targets(run, labels):  # stands for loading the run's checkpoint
        wanted.append((run, tuple(labels)))
        return rgb.text_embeddings(student, labels)

    monkeypatch.setattr(module, "text_targets_from", fake_targets)
    fam, cfg = tiny("miga24-posec3d", text_from=str(tmp_path))
    model = fam.build(cfg)
    assert wanted == [] and not model.has_text_targets  # building (also for eval and export) reads nothing
    batch = {**fam.example_batch(cfg), "label": torch.tensor([1, 2])}
    assert set(fam.loss(model, batch)) == {"loss_ce", "loss_text"}
    assert wanted == [(str(tmp_path), LABELS)]
    torch.testing.assert_close(model.text_targets, student.class_text_embeddings())
    fam.loss(model, batch)
    assert len(wanted) == 1  # read once; a resumed or loaded model carries its targets
    loaded = fam.build(cfg)
    loaded.load_state_dict(model.state_dict())
    fam.loss(loaded, batch)
    assert len(wanted) == 1
    # reordered classes get their own embeddings, not the student's row order
    fam2, cfg2 = tiny("miga24-posec3d", labels=LABELS[::-1], text_from=str(tmp_path))
    other = fam2.build(cfg2)
    fam2.loss(other, batch)
    torch.testing.assert_close(other.text_targets, model.text_targets.flip(0), atol=1e-6, rtol=1e-5)
    # a student whose text has another width is refused with the fix
    with pytest.raises(MicrogestureError, match="text_dim=32"):
        fam.loss(fam.build(cfg.replace(text_dim=16)), batch)


def test_text_from_refuses_a_missing_run_and_a_model_without_text(tmp_path):
    from microgesture.core.models.miga24_posec3d import text_targets_from

    with pytest.raises(MicrogestureError, match="no such run"):
        text_targets_from(tmp_path / "nope", LABELS)
    fam, cfg = tiny("miga24-posec3d")
    with pytest.raises(MicrogestureError, match="no class text embeddings"):
        fam.text_embeddings(fam.build_for_inference(cfg), LABELS)
    with pytest.raises(MicrogestureError, match="cannot take a new class list"):
        fam.set_classes(fam.build_for_inference(cfg), ["yawning"])


@pytest.mark.parametrize("arch", ARCHS)
def test_stages_compose_to_predict(arch):
    fam, cfg = tiny(arch)
    torch.manual_seed(0)
    model = fam.build_for_inference(cfg).eval()
    stages = fam.stages(model, batch=3)
    assert len(stages) == 1
    roles = {"miga24-vclip": "whole-window", "miga24-posec3d": "per-window"}
    assert stages[0].role == roles[arch] and stages[0].outputs == ("logits",)
    example = dict(stages[0].example)
    assert set(example) == set(fam.window(cfg).keys())
    got = run_stages(stages, example, torch_runner(stages))["logits"]
    with torch.no_grad():
        want = fam.predict(model, example)
    assert got.shape == (3, len(LABELS))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_vclip_stage_bakes_in_the_classes_set_before_export():
    fam, cfg = tiny("miga24-vclip")
    model = fam.build_for_inference(cfg).eval()
    fam.set_classes(model, ["yawning", "touching jaw"], ["a video of someone {}."])
    stage = fam.stages(model)[0]
    with torch.no_grad():
        logits = stage.module(stage.example["frames"])
    assert logits.shape == (2, 2)
    assert torch.equal(stage.module.class_embeddings, model.class_text_embeddings())
    assert model.config.labels == ("yawning", "touching jaw")


@pytest.mark.parametrize("arch", ARCHS)
def test_onnx_export_matches_pytorch(arch, tmp_path):
    pytest.importorskip("onnxruntime")
    from microgesture.core.backends import cpu_session
    from microgesture.export.onnx_export import export_stage

    fam, cfg = tiny(arch)
    torch.manual_seed(1)
    model = fam.build_for_inference(cfg).eval()
    stage = fam.stages(model, batch=2)[0]
    path = tmp_path / f"{stage.name}.onnx"
    export_stage(stage.module, dict(stage.example), path)  # also runs it at batch 1 and 3
    session = cpu_session(path, 1, ())
    inputs = fam.example_batch(cfg, batch=3, seed=5)
    feeds = {n: inputs[n].numpy() for n in stage.inputs}
    (got,) = session.run(["logits"], feeds)
    with torch.no_grad():
        want = fam.predict(model, inputs).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
