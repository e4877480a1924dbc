"""The streaming 3D CNN: pose features computed once per segment and cached equal the
whole-window forward (fp32, 1e-4), in PyTorch and through ONNX Runtime."""

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from microgesture.core.models import create_model, example_inputs  # noqa: E402
from microgesture.stream.segments import SegmentCache, pose_stages, segment_pose  # noqa: E402


def _stream_of_heatmaps(model, frames=40, seed=3):
    """Per-frame heatmaps (frames, V, H, W) of a pose stream."""
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    v = model.pose_encoder.stages[0].in_channels
    hm = cfg.pose.heatmap_size
    return torch.rand(frames, v, hm, hm, generator=g)


def _windows(cfg, frames, hop_segments=1):
    """Pose frame ids of windows of P consecutive pose frames, one segment apart."""
    p, f = cfg.pose_frames, cfg.pose_frames // cfg.rgb_frames
    return [list(range(s, s + p)) for s in range(0, frames - p + 1, f * hop_segments)]


def test_segments_stacked_equal_the_whole_window_in_pytorch():
    model = create_model("clip-mg-tiny", seed=0).eval()
    assert model.config.pose.windows == "segments"
    cfg = model.config
    stream = _stream_of_heatmaps(model)
    f = cfg.pose_frames // cfg.rgb_frames
    cache, computed = {}, 0
    with torch.no_grad():
        for ids in _windows(cfg, len(stream)):
            feats = []
            for k in range(cfg.rgb_frames):
                key = tuple(ids[k * f:(k + 1) * f])
                if key not in cache:  # once per segment, as streaming does
                    cache[key] = model.encode_pose_segment(stream[list(key)].transpose(0, 1)[None])[0]
                    computed += 1
                feats.append(cache[key])
            streamed = torch.stack(feats)[None]
            whole = model.encode_pose(stream[ids].transpose(0, 1)[None])
            assert (streamed - whole).abs().max().item() < 1e-4
    windows = len(_windows(cfg, len(stream)))
    assert computed == cfg.rgb_frames + windows - 1  # one new segment per window


def test_a_strided_encoder_has_no_segment_stage():
    from microgesture.export.onnx_export import stage_modules

    model = create_model("clip-mg-tiny", {"pose.windows": "strided"}, seed=0).eval()
    assert "pose_segment" not in stage_modules(model)
    with pytest.raises(ValueError, match="segments"):
        model.encode_pose_segment(torch.zeros(1, 18, 2, 16, 16))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    from microgesture.export.onnx_export import export_onnx

    model = create_model("clip-mg-tiny", seed=0).eval()
    out = tmp_path_factory.mktemp("segments")
    stages = export_onnx(model, out)
    return model, out, stages


def test_segment_stage_through_onnx_runtime_equals_the_whole_window(exported):
    from microgesture.core.backends import open_stage

    model, out, stages = exported
    cfg = model.config
    seg = stages["pose_segment"]
    f = cfg.pose_frames // cfg.rgb_frames
    assert seg["role"] == "per-segment"
    assert seg["inputs"]["heatmaps"]["shape"][1:3] == [18, f]
    assert seg["outputs"]["pose"]["shape"] == ["batch", model.dim]
    manifest = {"root": str(out), "stages": stages, "files": {}}
    session = open_stage(manifest, "pose_segment", precision="fp32")
    whole_session = open_stage(manifest, "pose", precision="fp32")
    stream = _stream_of_heatmaps(model).numpy()
    cache = SegmentCache(capacity=2 * cfg.rgb_frames)

    class Job:
        def __init__(self, ids):
            self.segments = cache.prepare(ids, cfg.rgb_frames, lambda i: stream[i])

    windows = _windows(cfg, len(stream))
    for ids in windows:
        got = segment_pose(session, [Job(ids)])
        heatmaps = np.ascontiguousarray(stream[ids].transpose(1, 0, 2, 3))[None]
        whole = whole_session.run({"heatmaps": heatmaps})["pose"]
        with torch.no_grad():
            ref = model.encode_pose(torch.from_numpy(heatmaps)).numpy()
        assert got.shape == whole.shape == (1, cfg.rgb_frames, model.dim)
        assert np.abs(got - whole).max() < 1e-4 and np.abs(got - ref).max() < 1e-4
    assert cache.stats() == {"pose_segments_computed": cfg.rgb_frames + len(windows) - 1,
                             "pose_segments_reused": (len(windows) - 1) * (cfg.rgb_frames - 1)}


def test_windows_prepared_before_their_segments_ran_compute_each_segment_once():
    """Two windows queued together (inference behind) share segments: each runs once."""
    calls = []

    class Session:
        def run(self, feeds):
            calls.append(len(feeds["heatmaps"]))
            return {"pose": feeds["heatmaps"].sum(axis=(1, 3, 4))}  # (N, F): a stand-in CNN

    stream = np.random.default_rng(0).random((12, 3, 4, 4)).astype(np.float32)
    cache = SegmentCache()

    class Job:
        def __init__(self, ids):
            self.segments = cache.prepare(ids, 4, lambda i: stream[i])

    jobs = [Job(list(range(0, 8))), Job(list(range(2, 10)))]
    out = segment_pose(Session(), jobs)
    assert calls == [5]  # segments (0,1) (2,3) (4,5) (6,7) (8,9), once each
    for row, start in zip(out, (0, 2)):
        expected = [stream[start + 2 * k:start + 2 * k + 2].transpose(1, 0, 2, 3).sum(axis=(0, 2, 3))
                    for k in range(4)]
        assert np.allclose(row, np.stack(expected))
    segment_pose(Session(), [Job(list(range(4, 12)))])
    assert calls == [5, 1]  # only (10, 11) is new


def test_old_bundles_open_the_whole_window_stage():
    assert pose_stages({"stages": {"visual": {}, "pose": {}, "head": {}}}) == ("visual", "pose", "head")
    both = {"stages": {"visual": {}, "pose": {}, "pose_segment": {}, "head": {}}}
    assert pose_stages(both) == ("visual", "pose_segment", "head")
    assert pose_stages(both, segment_cache=False) == ("visual", "pose", "head")


@pytest.fixture(scope="module")
def stream_inputs(tmp_path_factory):
    """A tiny fp32 bundle with the segment stage, and a synthetic video with its skeletons."""
    from microgesture.core.checkpoint import save_checkpoint
    from microgesture.export.exporter import export_bundle
    from microgesture.training.synth import make_long_video

    root = tmp_path_factory.mktemp("stream")
    ckpt = save_checkpoint(create_model("clip-mg-tiny", seed=0).eval(), root / "tiny.safetensors")
    export_bundle(ckpt, root / "bundle", formats=("onnx",), verify=False, progress=False)
    info = make_long_video(root / "long.mp4", 8, seed=1, size=(96, 96), progress=False)
    return root / "bundle", info["video"], str(Path(info["video"]).with_suffix(".jsonl"))


def test_streaming_with_cached_segments_equals_the_whole_window_stage(stream_inputs, monkeypatch):
    """The pipeline's window scores with the segment cache equal those of the whole-window
    pose stage on the same stream (fp32, 1e-4); most segments are reused."""
    from types import SimpleNamespace

    from microgesture.stream import models
    from microgesture.stream.pipeline import StreamOptions, run_stream

    bundle, video, skeleton = stream_inputs

    def run(segment_cache):
        scores = {}
        # a dispatcher sink that records every window's scores (with publish_windows)
        sink = SimpleNamespace(name="record", window=lambda info, p, labels: scores.update(
            {info.last_frame: np.array(p)}))
        monkeypatch.setattr(models, "pose_stages",
                            lambda manifest, cache=True: pose_stages(manifest, segment_cache))
        holder = {}
        run_stream(StreamOptions(bundle=str(bundle), sources=[str(video)], stream_ids=["cam0"],
                                 publish="tcp://127.0.0.1:*", pose=f"recorded:{skeleton}",
                                 precision="fp32", span_s=32 / 15, publish_windows=True,
                                 sinks=[sink]),
                   on_ready=lambda address, workers: holder.update(workers=workers))
        return scores, holder["workers"][0]

    cached, worker = run(True)
    whole, plain = run(False)
    assert "pose_segment" in worker.rec.sessions and "pose" not in worker.rec.sessions
    assert "pose" in plain.rec.sessions and "pose_segment" not in plain.rec.sessions
    assert len(cached) >= 5 and cached.keys() == whole.keys()
    for key in cached:
        assert np.abs(cached[key] - whole[key]).max() < 1e-4
    stats = worker.stats()
    windows, r = len(cached), worker.rec.window["rgb_frames"]
    assert stats["pose_segments_computed"] + stats["pose_segments_reused"] == windows * r
    assert stats["pose_segments_computed"] <= r + windows - 1 + 2  # one new segment a window


def test_grid_sampling_streams_what_evaluation_samples_with_pose_only_where_sampled(stream_inputs):
    """sampling="grid": windows sample the frames evaluation samples from the same frames,
    pose runs only on sampled frames, and the scores equal PyTorch's whole-window forward."""
    from microgesture.core.checkpoint import load_checkpoint
    from microgesture.core.preprocess import normalize_frames
    from microgesture.core.sampling import sample_clip
    from microgesture.stream.pipeline import StreamOptions, run_stream

    bundle, video, skeleton = stream_inputs
    holder, infos = {}, []
    summary = run_stream(StreamOptions(bundle=str(bundle), sources=[str(video)], stream_ids=["cam0"],
                                       publish="tcp://127.0.0.1:*", pose=f"recorded:{skeleton}",
                                       precision="fp32", span_s=32 / 15, sampling="grid"),
                         on_ready=lambda address, workers: holder.update(workers=workers))
    worker = holder["workers"][0]
    s = summary["streams"]["cam0"]
    span, hop = 32, 32 // 4
    assert s["windows_run"] == (s["frames_processed"] - span) // hop + 1
    rgb_eval, pose_eval = sample_clip(span, 4, 8, train=False)
    sampled = set()
    for w in range(s["windows_run"]):
        sampled |= {w * hop + int(i) for i in rgb_eval} | {w * hop + int(i) for i in pose_eval}
    # pose (and heatmaps) only on frames some window samples
    assert s["frames_processed"] - s["pose_skipped"] <= len(sampled) + span
    assert s["pose_skipped"] >= s["frames_processed"] // 2
    scores, info = worker.last_scores
    first = info.index * hop
    assert info.frame_ids == tuple(first + int(i) for i in rgb_eval)
    assert info.pose_frame_ids == tuple(first + int(i) for i in pose_eval)
    entries = {e.frame_id: e.value for e in worker.frames.entries()}
    frames = normalize_frames(np.stack([entries[i].crop for i in info.frame_ids]),
                              worker.rec.mean, worker.rec.std)
    heatmaps = np.stack([entries[i].heatmap for i in info.pose_frame_ids], 1)
    joints = np.stack([entries[i].joints for i in info.frame_ids])
    model, _ = load_checkpoint(bundle.parent / "tiny.safetensors")
    with torch.no_grad():
        logits = model(torch.from_numpy(frames)[None], torch.from_numpy(heatmaps)[None],
                       torch.from_numpy(joints)[None]).numpy()[0]
    expected = np.exp(logits - logits.max())
    assert np.abs(expected / expected.sum() - scores).max() < 1e-4
