"""Generic stages while streaming: bundles made here from tiny ONNX graphs (a whole-window
stage on the window's frames, a per-window stage on limb heatmaps, an ensemble of both
with its own sampling per member) stream the scores numpy computes from the same frames;
heatmaps kept in float16 change the demo model's logits by less than 1e-2."""

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from microgesture.core.bundle import write_manifest
from microgesture.core.heatmaps import compact_box, joint_heatmaps, limb_heatmaps
from microgesture.core.layouts import get_layout
from microgesture.core.preprocess import normalize_frames, square_box
from microgesture.core.sampling import sample_indices
from microgesture.stream.pipeline import StreamOptions, run_stream

from onnx_graphs import stage_model

LABELS = ["a", "b", "c"]
MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
FPS = 15.0
SPAN_FRAMES = 16


def _bundle(root: Path, name: str, stage: dict, window: dict, seed: int) -> np.ndarray:
    """A bundle whose one stage ``head`` maps ``stage['inputs']`` to logits; returns its weight."""
    root.mkdir(parents=True)
    weight = stage_model(root / "head.onnx", stage["inputs"], {"logits": [len(LABELS)]}, seed=seed,
                         scale=3.0)
    io = lambda table: {k: {"shape": ["batch", *v], "dtype": "float32"} for k, v in table.items()}
    write_manifest(root, {
        "model": {"name": name, "arch": "fake"}, "labels": LABELS, "prompts": None,
        "preprocessing": {"mean": MEAN, "std": STD},
        "window": {"span_s": SPAN_FRAMES / FPS, "fps": FPS, "layout": "coco18", **window},
        "stages": {"head": {"role": stage["role"], "inputs": io(stage["inputs"]),
                            "outputs": io({"logits": [len(LABELS)]}), "files": {"fp32": "head.onnx"}}}})
    return weight


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    from microgesture.training.synth import make_long_video

    root = tmp_path_factory.mktemp("video")
    info = make_long_video(root / "long.mp4", 6, seed=3, size=(96, 96), fps=FPS, gesture_s=(1.0, 1.5),
                           gap_s=(1.0, 1.5), progress=False)
    return info["video"], str(Path(info["video"]).with_suffix(".jsonl"))


def _frames_bundle(root):  # whole-window: the window's 2 normalised RGB frames -> logits
    return _bundle(root, "frames-model", {"role": "whole-window", "inputs": {"frames": [2, 3, 8, 8]}},
                   {"rgb_frames": 2, "pose_frames": 2, "image_size": 8, "heatmap_size": 8,
                    "sigma": 1.0}, seed=1)


def _limbs_bundle(root):  # per-window: limb heatmaps of 4 pose frames -> logits
    limbs = len(get_layout("coco18").limb_set("anatomical"))
    return _bundle(root, "limbs-model", {"role": "per-window", "inputs": {"heatmaps": [limbs, 4, 8, 8]}},
                   {"rgb_frames": 1, "pose_frames": 4, "heatmap_size": 8, "sigma": 1.0,
                    "image_size": 8, "heatmap_kind": "limbs", "limbs": "anatomical"}, seed=2)


def _stream(bundle, video):
    path, skeleton = video
    holder, windows = {}, []
    sink = type("Record", (), {"name": "record", "window": lambda self, info, p, labels:
                               windows.append((info, np.array(p)))})()
    summary = run_stream(StreamOptions(bundle=str(bundle), sources=[path], stream_ids=["cam0"],
                                       publish="tcp://127.0.0.1:*", pose=f"recorded:{skeleton}",
                                       precision="fp32", publish_windows=True, sinks=[sink]),
                         on_ready=lambda address, workers: holder.update(worker=workers[0]))
    assert summary["streams"]["cam0"]["inference_errors"] == 0 and windows
    return windows, holder["worker"]


def _softmax(z):
    z = np.exp(z - z.max())
    return z / z.sum()


def _ids(entries, info, count):
    """What evaluation samples from the window's frames (``core.sampling``)."""
    span = sorted(i for i, e in entries.items()
                  if info.first_capture_ns <= e.capture_ns <= info.last_capture_ns and i <= info.last_frame)
    return [span[k] for k in sample_indices(len(span), count, False)]


def _frames_logits(weight, entries, ids):
    frames = normalize_frames(np.stack([entries[i].crop for i in ids]), MEAN, STD)
    return frames.reshape(1, -1) @ weight


def _limbs_logits(weight, entries, ids, model=0):
    limbs = get_layout("coco18").limb_set("anatomical")
    maps = np.stack([limb_heatmaps(entries[i].keypoints[None], entries[i].scores[None], limbs, (8, 8),
                                   1.0, box=entries[i].box)[:, 0] for i in ids], 1)
    return maps.reshape(1, -1) @ weight


def test_a_whole_window_stage_streams_the_windows_frames(tmp_path, video):
    weight = _frames_bundle(tmp_path / "b")
    windows, worker = _stream(tmp_path / "b", video)
    info, scores = windows[-1]
    entries = {e.frame_id: e.value for e in worker.frames.entries()}
    assert list(info.frame_ids) == _ids(entries, info, 2)
    expected = _softmax(_frames_logits(weight, entries, info.frame_ids)[0])
    assert np.abs(scores - expected).max() < 1e-5


def test_a_limb_heatmap_stage_streams_limb_heatmaps(tmp_path, video):
    weight = _limbs_bundle(tmp_path / "b")
    windows, worker = _stream(tmp_path / "b", video)
    info, scores = windows[-1]
    entries = {e.frame_id: e.value for e in worker.frames.entries()}
    assert entries[info.pose_frame_ids[0]].heatmap16.dtype == np.float16  # kept compact
    expected = _softmax(_limbs_logits(weight, entries, info.pose_frame_ids)[0])
    assert np.abs(scores - expected).max() < 1e-3  # the float16 heatmaps' rounding


def test_an_ensemble_samples_per_member_and_fuses_the_softmaxes(tmp_path, video):
    root = tmp_path / "ens"
    wa = _frames_bundle(root / "members" / "frames")
    wb = _limbs_bundle(root / "members" / "limbs")
    write_manifest(root, {
        "model": {"name": "ens", "arch": "ensemble"}, "labels": LABELS, "prompts": None,
        "preprocessing": {}, "window": {"span_s": SPAN_FRAMES / FPS, "fps": FPS},
        "members": [{"bundle": "members/frames", "weight": 0.3},
                    {"bundle": "members/limbs", "weight": 0.7}],
        "stages": {}})
    windows, worker = _stream(root, video)
    assert len(worker.rec.models) == 2
    for info, scores in windows[-3:]:
        entries = {e.frame_id: e.value for e in worker.frames.entries()}
        if info.first_frame < min(entries):
            continue  # frames already left the ring
        pa = _softmax(_frames_logits(wa, entries, _ids(entries, info, 2))[0])
        pb = _softmax(_limbs_logits(wb, entries, _ids(entries, info, 4))[0])
        assert np.abs(scores - (0.3 * pa + 0.7 * pb)).max() < 1e-3
        break
    else:
        pytest.fail("no window whose frames are still held")


def test_an_ensemble_member_outside_the_bundle_is_refused(tmp_path):
    from microgesture.core.errors import MicrogestureError
    from microgesture.stream.pipeline import Recognizer

    _frames_bundle(tmp_path / "elsewhere")
    root = tmp_path / "ens"
    root.mkdir()
    write_manifest(root, {"model": {"name": "ens", "arch": "ensemble"}, "labels": LABELS,
                          "prompts": None, "preprocessing": {}, "window": {"span_s": 1.0},
                          "members": [{"bundle": "../elsewhere", "weight": 1.0}], "stages": {}})
    with pytest.raises(MicrogestureError, match="outside the bundle"):
        Recognizer(str(root), None, precision="fp32")


def test_float16_heatmaps_change_the_demo_models_logits_by_under_1e_2():
    """The heatmap ring's float16 against float32 heatmaps, through the shipped demo
    bundle's stages (a trained tiny CLIP-MG whose logits move by about 25 when the
    heatmaps are zeroed), on 20 windows of drifting skeletons: max |logit difference|
    < 1e-2 (measured 1.8e-3)."""
    from microgesture.core.backends import open_stage
    from microgesture.core.bundle import read_manifest
    from microgesture.core.paths import DEMO_BUNDLE
    from microgesture.stream.stages import StagePlan

    m = read_manifest(DEMO_BUNDLE)
    w, pre = m["window"], m["preprocessing"]
    sessions = {n: open_stage(m, n, precision="fp32") for n in ("visual", "pose", "head")}
    plan = StagePlan(m, sessions)
    rng = np.random.default_rng(0)
    worst = moved = 0.0
    for _ in range(20):
        kp = rng.uniform(10, 90, (1, 18, 2)) + np.cumsum(rng.normal(0, 2, (w["pose_frames"], 18, 2)), 0)
        sc = rng.uniform(0.3, 1.0, (w["pose_frames"], 18))
        hm = joint_heatmaps(kp, sc, (w["heatmap_size"],) * 2, w["sigma"], box=(0, 0, 100, 100))[None]
        crops = rng.integers(0, 255, (w["rgb_frames"], w["image_size"], w["image_size"], 3), np.uint8)
        window = {"tokens": plan.per_frame_outputs(crops, pre["mean"], pre["std"])["tokens"][None],
                  "joints": rng.random((1, w["rgb_frames"], 18, 3)).astype(np.float32)}

        def logits(heatmaps):
            pose = sessions["pose"].run({"heatmaps": heatmaps})["pose"]
            return sessions["head"].run({**window, "pose": pose})["logits"]

        full = logits(hm)
        worst = max(worst, float(np.abs(full - logits(hm.astype(np.float16).astype(np.float32))).max()))
        moved = max(moved, float(np.abs(full - logits(np.zeros_like(hm))).max()))
    for s in sessions.values():
        s.close()
    print(f"max |logit diff| float16 vs float32 heatmaps: {worst:.2e} (zeroed heatmaps: {moved:.1f})")
    assert moved > 1 and worst < 1e-2


def test_pose_only_and_rgb_only_models_stream(tmp_path, video):
    """rgb_frames 0 (PoseC3D: whole-window on limb heatmaps, cropped to the skeleton over
    the window) and pose_frames 0 (the video CLIP: no heatmap size or sigma needed)."""
    limbs = get_layout("coco18").limb_set("anatomical")
    wp = _bundle(tmp_path / "pose", "pose-only", {"role": "whole-window",
                                                  "inputs": {"heatmaps": [len(limbs), 4, 8, 8]}},
                 {"rgb_frames": 0, "pose_frames": 4, "heatmap_size": 8, "sigma": 1.0,
                  "heatmap_kind": "limbs", "heatmap_crop": "skeleton"}, seed=5)
    windows, worker = _stream(tmp_path / "pose", video)
    info, scores = windows[-1]
    assert worker.stats()["frames_encoded"] == 0  # no RGB work at all
    entries = {e.frame_id: e.value for e in worker.frames.entries()}
    assert all(entries[i].crop is None and entries[i].heatmap16 is None for i in info.pose_frame_ids)
    kp = np.stack([entries[i].keypoints for i in info.pose_frame_ids])
    sc = np.stack([entries[i].scores for i in info.pose_frame_ids])
    box = square_box(compact_box(kp, sc, (96, 96)))
    maps = limb_heatmaps(kp, sc, limbs, (8, 8), 1.0, box=box)
    assert np.abs(scores - _softmax((maps.reshape(1, -1) @ wp)[0])).max() < 1e-5

    wr = _bundle(tmp_path / "rgb", "rgb-only", {"role": "whole-window", "inputs": {"frames": [2, 3, 8, 8]}},
                 {"rgb_frames": 2, "pose_frames": 0, "image_size": 8}, seed=6)
    windows, worker = _stream(tmp_path / "rgb", video)
    info, scores = windows[-1]
    entries = {e.frame_id: e.value for e in worker.frames.entries()}
    assert entries[info.frame_ids[0]].heatmap16 is None  # no heatmaps drawn
    assert np.abs(scores - _softmax(_frames_logits(wr, entries, info.frame_ids)[0])).max() < 1e-5


def test_a_failing_sink_is_turned_off_and_the_stream_goes_on(tmp_path, video):
    _limbs_bundle(tmp_path / "b")
    path, skeleton = video
    log = tmp_path / "events.jsonl"

    class Broken:
        name = "broken"

        def window(self, info, scores, labels):
            raise RuntimeError("a sink bug")

    summary = run_stream(StreamOptions(bundle=str(tmp_path / "b"), sources=[path], stream_ids=["cam0"],
                                       publish="tcp://127.0.0.1:*", pose=f"recorded:{skeleton}",
                                       precision="fp32", publish_windows=True, events_log=str(log),
                                       sinks=[Broken()]))
    s = summary["streams"]["cam0"]
    assert summary["sink_errors"] == s["sink_errors"] == {"broken": "RuntimeError: a sink bug"}
    assert s["windows_run"] > 1 and s["inference_errors"] == 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert sum(r["type"] == "window" for r in records) == s["windows_run"]  # the log got every one
    assert [r["status"] for r in records if r["type"] == "source"][-1] in ("ended", "stopped")


def test_frames_encoded_on_demand_are_encoded_on_the_encoder_thread(video):
    """The naive baseline encodes every window's frames on demand: all on the encoder
    thread, never on the frame thread (whose pose and heatmaps go on meanwhile)."""
    from microgesture.core.paths import DEMO_BUNDLE

    path, skeleton = video
    threads = []

    def spy(workers):
        session = workers[0].rec.models[0].sessions["visual"]
        run = session.run
        session.run = lambda feeds: threads.append(threading.current_thread().name) or run(feeds)

    summary = run_stream(StreamOptions(bundle=str(DEMO_BUNDLE), sources=[path], stream_ids=["cam0"],
                                       publish="tcp://127.0.0.1:*", pose=f"recorded:{skeleton}",
                                       precision="fp32", naive=True, span_s=SPAN_FRAMES / FPS),
                         on_ready=lambda address, workers: spy(workers))
    s = summary["streams"]["cam0"]
    assert s["encoded_on_demand"] == len(threads) > 0 and s["windows_run"] > 0
    assert all(name.startswith("encode") for name in threads), set(threads)


def test_a_live_stream_whose_encoder_falls_behind_skips_windows_and_keeps_its_queue_bounded(video):
    """Live, an encoder slower than the camera (B/16 on a small CPU) must not collect a queue
    of encodes that grows for as long as the stream runs (each window waiting longer than the
    one before, until none runs): windows that come due while a window's frames still wait
    for the encoder are skipped and counted, and the encodes pending stay within two windows."""
    import time as _time

    from microgesture.core.paths import DEMO_BUNDLE

    path, skeleton = video
    pending = []

    def slow(workers):
        worker = workers[0]
        session = worker.rec.models[0].sessions["visual"]
        run = session.run

        def run_slowly(feeds):
            pending.append(worker._pending_encodes())
            _time.sleep(0.15)
            return run(feeds)
        session.run = run_slowly

    summary = run_stream(StreamOptions(bundle=str(DEMO_BUNDLE), sources=[path], stream_ids=["cam0"],
                                       publish="tcp://127.0.0.1:*", pose=f"recorded:{skeleton}",
                                       precision="fp32", naive=True, realtime=True,
                                       span_s=SPAN_FRAMES / FPS),
                         on_ready=lambda address, workers: slow(workers))
    s = summary["streams"]["cam0"]
    rgb = 4  # the demo bundle's RGB frames per window
    assert s["windows_run"] > 0 and s["windows_skipped_encoder"] > 0
    assert pending and max(pending) <= 2 * rgb, max(pending)


def test_an_ensembles_rgb_only_member_takes_any_layout_and_a_weight_0_member_is_not_run(tmp_path, video):
    """`ensemble` of the student (RGB only, whose window names the default layout) and
    PoseC3D members in another layout streams (pose in the pose readers' layout), and a
    member the weight search gave nothing is left out rather than refused."""
    root = tmp_path / "ens"
    _bundle(root / "members" / "frames", "frames-model", {"role": "whole-window", "inputs": {"frames": [2, 3, 8, 8]}},
            {"rgb_frames": 2, "pose_frames": 0, "image_size": 8, "layout": "imigue22"}, seed=1)
    _limbs_bundle(root / "members" / "limbs")          # coco18, reads limb heatmaps
    _frames_bundle(root / "members" / "unused")
    write_manifest(root, {
        "model": {"name": "ens", "arch": "ensemble"}, "labels": LABELS, "prompts": None,
        "preprocessing": {}, "window": {"span_s": SPAN_FRAMES / FPS, "fps": FPS},
        "members": [{"bundle": "members/frames", "weight": 0.4}, {"bundle": "members/limbs", "weight": 0.6},
                    {"bundle": "members/unused", "weight": 0.0}],
        "stages": {}})
    windows, worker = _stream(root, video)
    assert [m.name for m in worker.rec.models] == ["frames-model", "limbs-model"]
    assert worker.rec.layout == "coco18" and windows
