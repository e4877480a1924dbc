"""Every registered model family streams: its tiny configuration, exported to a bundle,
gives for one streamed window the probabilities of its PyTorch whole-window forward
(``family.predict``) on the same window's inputs (fp32, 1e-4). A new family in
``core.family.FAMILY_MODULES`` gets this test for free."""

import importlib.util

import numpy as np
import pytest
from test_stream_stages import FPS, SPAN_FRAMES, video  # noqa: F401  (video: the fixture)

from microgesture.core.family import FAMILY_MODULES

torch = pytest.importorskip("torch")


def stream_one_window(bundle, video, tmp_path):
    """Stream exactly one window of ``video``; its probabilities and its inputs as the
    stream assembled them ({frames, heatmaps, joints}, numpy, batch of 1)."""
    from microgesture.core.preprocess import normalize_frames
    from microgesture.stream.pipeline import StreamOptions, run_stream

    path, skeleton = video
    holder = {}
    summary = run_stream(StreamOptions(bundle=str(bundle), sources=[path], stream_ids=["cam0"],
                                       publish="tcp://127.0.0.1:*", pose=f"recorded:{skeleton}",
                                       precision="fp32", span_s=SPAN_FRAMES / FPS,
                                       max_frames=SPAN_FRAMES),
                         on_ready=lambda address, workers: holder.update(worker=workers[0]))
    assert summary["streams"]["cam0"]["windows_run"] == 1
    worker = holder["worker"]
    scores, info = worker.last_scores
    entries = {e.frame_id: e.value for e in worker.frames.entries()}
    model = worker.rec.models[0]
    batch = {}
    if model.rgb_frames:
        crops = np.stack([entries[i].crop for i in info.frame_ids])
        batch["frames"] = normalize_frames(crops, model.mean, model.std)[None]
        batch["joints"] = np.stack([entries[i].joints for i in info.frame_ids])[None]
    if model.pose_frames:
        batch["heatmaps"] = worker.makers[0].window_heatmaps(entries, info.pose_frame_ids)[None]
    return scores, batch


def export_tiny(name, tmp_path):
    from microgesture.core.checkpoint import save_checkpoint
    from microgesture.core.models import create_model
    from microgesture.export.exporter import export_bundle

    model = create_model(name, seed=0).eval()
    ckpt = save_checkpoint(model, tmp_path / "tiny.safetensors")
    export_bundle(ckpt, tmp_path / "bundle", formats=("onnx",), verify=False, progress=False)
    return model, tmp_path / "bundle"


def softmax(logits):
    z = np.exp(logits - logits.max())
    return z / z.sum()


def _declared(arch: str) -> bool:
    try:
        return importlib.util.find_spec(FAMILY_MODULES[arch]) is not None
    except ModuleNotFoundError:  # core.models is not a package yet
        return False


@pytest.mark.parametrize("arch", [pytest.param(a, marks=pytest.mark.skipif(
    not _declared(a), reason="no family module yet")) for a in sorted(FAMILY_MODULES)])
def test_one_streamed_window_equals_the_whole_window_forward(arch, video, tmp_path):
    from microgesture.core.family import get_family

    family = get_family(arch)
    model, bundle = export_tiny(family.tiny, tmp_path)
    scores, batch = stream_one_window(bundle, video, tmp_path)
    keys = family.window(model.config).keys()
    with torch.no_grad():
        logits = family.predict(model, {k: torch.from_numpy(batch[k]) for k in keys})
    assert np.abs(softmax(logits.numpy()[0]) - scores).max() < 1e-4
