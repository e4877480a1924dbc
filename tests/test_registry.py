"""Every registered model family's tiny configuration, as timm tests its models: build,
forward, losses, the staged forward against the whole window, ONNX export against
PyTorch, and windows read from clips with the keys and shapes the family declares.
A family added to ``core.family.FAMILY_MODULES`` gets these tests for free."""

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from microgesture.core.family import FAMILY_MODULES, ROLES, get_family, run_stages  # noqa: E402
from microgesture.core.models import create_model  # noqa: E402

ARCHS = sorted(FAMILY_MODULES)


def _torch_runner(stages):
    by_name = {s.name: s for s in stages}

    @torch.no_grad()
    def run(name, feeds):
        spec = by_name[name]
        out = spec.module(*(feeds[n] for n in spec.inputs))
        out = out if isinstance(out, (tuple, list)) else (out,)
        return dict(zip(spec.outputs, out))

    return run


@pytest.fixture(scope="module", params=ARCHS)
def tiny(request):
    family = get_family(request.param)
    model = create_model(family.tiny, seed=0).eval()
    batch = family.example_batch(model.config, batch=3, seed=1)
    return family, model, batch


def test_registry_lists_every_family_config():
    from microgesture.core.config import MODELS, config_from_dict, get_config

    for arch in ARCHS:
        family = get_family(arch)
        assert family.arch == arch and family.tiny in family.configs
        for name, config in family.configs.items():
            assert config.arch == arch and isinstance(config, family.config_type)
            assert MODELS[name] == get_config(name) == config
            assert config_from_dict(config.to_dict()) == config


def test_window_keys_are_the_example_batch(tiny):
    family, model, batch = tiny
    spec = family.window(model.config)
    assert set(batch) == set(spec.keys())
    if "frames" in batch:
        assert batch["frames"].shape[1:] == (spec.rgb_frames, 3, spec.image_size, spec.image_size)
    if "heatmaps" in batch:
        assert batch["heatmaps"].shape[2:] == (spec.pose_frames, spec.heatmaps.size, spec.heatmaps.size)
    assert spec.to_dict()["rgb_frames"] == spec.rgb_frames   # the manifest's "spec" is plain data


def test_forward_and_losses(tiny):
    family, model, batch = tiny
    with torch.no_grad():
        logits = family.predict(model, batch)
    assert logits.shape == (3, model.config.num_classes) and torch.isfinite(logits).all()
    model.train()
    try:
        labels = torch.tensor([0, 1, 2]) % model.config.num_classes
        terms = family.loss(model, {**batch, "label": labels})
        assert terms and all(t.ndim == 0 and torch.isfinite(t) for t in terms.values())
        model.zero_grad()
        sum(terms.values()).backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads)
    finally:
        model.eval()


def test_staged_forward_equals_whole_window(tiny):
    family, model, batch = tiny
    stages = family.stages(model)
    assert stages and all(s.role in ROLES for s in stages)
    assert "logits" in {o for s in stages for o in s.outputs}
    spec = family.window(model.config)
    run = _torch_runner(stages)
    with torch.no_grad():
        whole = family.predict(model, batch)
    staged = run_stages(stages, batch, run, spec.segments)["logits"]
    torch.testing.assert_close(staged, whole, rtol=0, atol=1e-5)
    # a stage standing in for others (a per-segment cache) gives the same answer
    replaced = {r for s in stages for r in s.replaces}
    if replaced:
        use = [s.name for s in stages if s.name not in replaced]
        staged = run_stages(stages, batch, run, spec.segments, use=use)["logits"]
        torch.testing.assert_close(staged, whole, rtol=0, atol=1e-5)


def test_onnx_export_matches_pytorch(tiny, tmp_path):
    pytest.importorskip("onnxruntime")
    from microgesture.export.onnx_export import export_onnx, ort_session

    family, model, batch = tiny
    manifest = export_onnx(model, tmp_path)
    stages = [dataclasses.replace(s, module=None, example=None) for s in family.stages(model)]
    assert list(manifest) == [s.name for s in stages]
    for s in stages:
        entry = manifest[s.name]
        assert entry["role"] == s.role and list(entry["inputs"]) == list(s.inputs)
        assert list(entry["outputs"]) == list(s.outputs) and entry.get("replaces", []) == list(s.replaces)
    sessions = {n: ort_session(tmp_path / m["files"]["fp32"]) for n, m in manifest.items()}

    def run(name, feeds):
        session = sessions[name]
        outs = session.run(None, {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feeds.items()})
        return dict(zip([o.name for o in session.get_outputs()], outs))

    window = {k: v.numpy() for k, v in batch.items()}
    got = run_stages(stages, window, run, family.window(model.config).segments)["logits"]
    with torch.no_grad():
        want = family.predict(model, batch).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_windows_from_clips_have_the_declared_shapes(tiny, tmp_path):
    """A dataset clip read through core.windowing (training and evaluation sizes) gives
    the keys and per-window shapes of the family's example batch."""
    from microgesture.core.dataset_index import open_dataset
    from microgesture.core.windowing import WindowReader
    from test_datasets import make_own

    family, model, batch = tiny
    spec = family.window(model.config)
    record = open_dataset(make_own(tmp_path / "ds", [("c1", "a", "s1")], n_frames=12)).records[0]
    reader = WindowReader(spec)
    for train in (False, True):
        rng = np.random.default_rng(0) if train else None
        window = reader.read(record, train, rng)
        assert set(window) == set(spec.keys())
        for key, value in window.items():
            want = tuple(batch[key].shape[1:])
            if key == "heatmaps":
                size = spec.heatmaps.size_for(train)
                want = want[:2] + (size, size)
            assert value.shape == want and value.dtype == np.float32 and np.isfinite(value).all(), key
