"""A real Triton Inference Server (the pip ``tritonserver``) serving the shipped demo
bundle's CPU repository on loopback: ``microgesture stream --triton`` gives the events
the in-process run gives, refuses a server holding other files, and rides out a
server restart in the middle of a stream."""

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytriton", reason="nvidia-pytriton (which ships tritonserver) is not "
                                       "installed: pip install 'microgesture[triton]'")
pytest.importorskip("tritonclient.http", reason="tritonclient is not installed: pip install "
                                                "'microgesture[triton]'")

from microgesture.core.errors import MicrogestureError  # noqa: E402
from microgesture.demo import SHIPPED_BUNDLE  # noqa: E402
from microgesture.export.triton_serve import TritonProcess, free_ports, serve_bundle  # noqa: E402
from microgesture.stream.pipeline import StreamOptions, run_stream  # noqa: E402


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    from microgesture.training.synth import make_long_video

    root = tmp_path_factory.mktemp("video")
    info = make_long_video(root / "long.mp4", 12, seed=1, size=(128, 128), progress=False)
    return Path(info["video"]), Path(info["video"]).with_suffix(".jsonl")


@pytest.fixture(scope="module")
def fp32_server(tmp_path_factory):
    server = serve_bundle(SHIPPED_BUNDLE, precision="fp32", ports=free_ports(),
                          log_path=tmp_path_factory.mktemp("log") / "tritonserver.log")
    yield server
    server.stop()
    server.cleanup()


def stream_cli(video, log, *extra):
    clip, skeleton = video
    done = subprocess.run(
        [sys.executable, "-m", "microgesture", "stream", "--bundle", str(SHIPPED_BUNDLE),
         "--source", str(clip), "--pose", f"recorded:{skeleton}", "--publish", "tcp://127.0.0.1:*",
         "--events-log", str(log), "--publish-windows", "--quiet", *extra],
        capture_output=True, text=True, timeout=300)
    return done


def read_log(path):
    events = [json.loads(line) for line in Path(path).read_text().splitlines()]
    windows = {e["window"]["index"]: np.array(e["scores"]) for e in events if e["type"] == "window"}
    gestures = [e for e in events if e["type"] == "gesture"]
    return events, windows, gestures


def test_stream_through_triton_gives_the_in_process_events(fp32_server, video, tmp_path):
    here = stream_cli(video, tmp_path / "local.jsonl", "--precision", "fp32")
    assert here.returncode == 0, here.stderr[-2000:]
    for url in (fp32_server.http_url, fp32_server.grpc_url):
        log = tmp_path / f"{url.split(':')[0]}.jsonl"
        there = stream_cli(video, log, "--precision", "fp32", "--triton", url)
        assert there.returncode == 0, there.stderr[-2000:]
        summary = json.loads(there.stdout.strip().splitlines()[-1])
        assert summary["providers"]["head"] == [f"Triton {url} model head (fp32)"]
        _, local, local_gestures = read_log(tmp_path / "local.jsonl")
        _, remote, remote_gestures = read_log(log)
        assert sorted(remote) == sorted(local) and len(local) >= 10
        for index in local:  # fp32 on both sides: the bundle's fp32 tolerance
            np.testing.assert_allclose(remote[index], local[index], atol=1e-4)
        assert local_gestures, "the demo model should find a gesture in this video"
        assert [(g["phase"], g["class_id"], g["window"]["index"]) for g in remote_gestures] == \
            [(g["phase"], g["class_id"], g["window"]["index"]) for g in local_gestures]
        for a, b in zip(remote_gestures, local_gestures):
            assert a["score"] == pytest.approx(b["score"], abs=1e-4)
    # the windows really ran on the server, and Triton batched them
    from microgesture.core.triton_backend import TritonConnection

    stats = {m["name"]: m for m in TritonConnection(fp32_server.http_url).statistics()}
    assert {"visual", "pose", "head"} <= set(stats)
    rows = sum(int(b["batch_size"]) * int(b["compute_infer"]["count"])
               for b in stats["head"]["batch_stats"])
    assert rows == 2 * len(local)  # every window of both streams, once each


def test_a_server_holding_other_files_or_none_is_refused(fp32_server, video, tmp_path):
    wrong = stream_cli(video, tmp_path / "a.jsonl", "--precision", "int8",
                       "--triton", fp32_server.http_url)
    assert wrong.returncode == 2
    assert "serves another model" in wrong.stderr and "visual.onnx" in wrong.stderr
    assert "Traceback" not in wrong.stderr
    nobody = stream_cli(video, tmp_path / "b.jsonl", "--triton", f"http://127.0.0.1:{free_ports(1)[0]}")
    assert nobody.returncode == 2 and "cannot reach a Triton server" in nobody.stderr
    bad = stream_cli(video, tmp_path / "c.jsonl", "--triton", "ftp://host/x")
    assert bad.returncode == 2 and "not a Triton address" in bad.stderr


def test_the_stream_reports_a_server_restart_and_recovers(video, tmp_path):
    ports = free_ports()
    repo = tmp_path / "repository"
    first = serve_bundle(SHIPPED_BUNDLE, repository=repo, ports=ports, precision="int8",
                         log_path=tmp_path / "first.log")
    url = first.http_url
    log = tmp_path / "events.jsonl"
    clip, skeleton = video
    options = StreamOptions(bundle=str(SHIPPED_BUNDLE), sources=[str(clip)], realtime=True,
                            publish="tcp://127.0.0.1:*", pose=f"recorded:{skeleton}",
                            events_log=str(log), publish_windows=True, triton=url,
                            heartbeat_s=60)
    result = {}
    thread = threading.Thread(target=lambda: result.update(run_stream(options)), daemon=True)
    second = None
    try:
        thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (
                not log.exists() or log.read_text().count('"type":"window"') < 2):
            time.sleep(0.1)
        first.stop()
        time.sleep(1.0)
        second = TritonProcess(repo, ports=ports, log_path=tmp_path / "second.log")
        thread.join(120)
        assert not thread.is_alive()
    finally:
        first.cleanup()
        if second is not None:
            second.stop()
            second.cleanup()
    events, windows, _ = read_log(log)
    server = [e for e in events if e["type"] == "source" and str(e["source"]).startswith("triton")]
    statuses = [e["status"] for e in server]
    assert statuses[0] == "lost" and statuses[-1] == "reconnected", statuses
    assert set(statuses[1:-1]) == {"reconnecting"}
    assert all(e["source"] == f"triton {url}" for e in server)
    back = server[-1]["seq"]
    assert any(e["type"] == "window" and e["seq"] > back for e in events), \
        "no window ran after the server came back"
    stream = result["streams"][clip.stem]
    assert stream["fatal"] is None and stream["inference_errors"] == 0
    assert windows and all(abs(s.sum() - 1) < 1e-3 for s in windows.values())


def test_serve_refuses_what_it_cannot_do(tmp_path):
    with pytest.raises(MicrogestureError, match="not a loopback address"):
        serve_bundle(SHIPPED_BUNDLE, address="0.0.0.0")
    with pytest.raises(MicrogestureError, match="no manifest.json"):
        serve_bundle(tmp_path)
    done = subprocess.run([sys.executable, "-m", "microgesture", "serve", str(SHIPPED_BUNDLE),
                           "--address", "10.1.2.3"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--allow-remote" in done.stderr


def test_serve_command_runs_until_interrupted(tmp_path):
    import signal
    import urllib.request

    http, grpc, metrics = free_ports()
    process = subprocess.Popen(
        [sys.executable, "-m", "microgesture", "serve", str(SHIPPED_BUNDLE), "--http-port",
         str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--log",
         str(tmp_path / "server.log")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = process.stdout.readline()  # printed once the server is ready
        assert first.startswith(f"Triton serves {SHIPPED_BUNDLE} (int8, CPU) on "
                                f"http://127.0.0.1:{http}"), first + process.stderr.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/models/head/config") as r:
            config = json.loads(r.read())
        assert config["backend"] == "python" and config["parameters"]["microgesture_file"] == {
            "string_value": "head.int8.onnx"}
        out = "".join(process.stdout.readline() for _ in range(4))
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert f"--triton http://127.0.0.1:{http}" in out and "docker run --gpus all" in out
    with pytest.raises(OSError):  # the server is gone with it
        urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/live", timeout=2)


def test_triton_urls():
    from microgesture.core.triton_backend import parse_url

    assert parse_url("http://gpu-box:9000") == ("http", "gpu-box:9000")
    assert parse_url("grpc://10.0.0.5") == ("grpc", "10.0.0.5:8001")
    assert parse_url("127.0.0.1") == ("http", "127.0.0.1:8000")
    assert parse_url("grpc://[::1]:8001/") == ("grpc", "[::1]:8001")
    for bad in ("https://x:8000/v2", "ftp://host", "http://"):
        with pytest.raises(MicrogestureError, match="not a Triton address"):
            parse_url(bad)
