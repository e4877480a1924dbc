"""``microgesture bench``: precisions side by side, from a fresh process each."""

import json
import subprocess
import sys

import pytest

from microgesture.core.errors import MicrogestureError
from microgesture.stream.bench import parse_size, render_source


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    from microgesture.training.synth import make_long_video

    out = tmp_path_factory.mktemp("bench") / "long.mp4"
    make_long_video(out, 8.0, seed=2, size=(128, 128), progress=False)
    return out


def cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "microgesture", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_bench_compares_precisions_and_writes_json_and_png(long_video, tmp_path):
    out = tmp_path / "results"
    done = cli("bench", "--source", str(long_video), "--pose", f"recorded:{long_video.with_suffix('.jsonl')}",
               "--duration", "8", "--out", str(out), "--json", "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "bench.json").read_text())
    # the baseline first, then the naive pipeline (whole-window forward per window) side by side
    assert [r["name"] for r in report["results"]] == ["fp32", "int8", "int8-naive"]
    ours, naive = report["results"][1:]
    assert naive["naive"] and not ours["naive"] and naive["precision"] == "int8"
    # the demo bundle (strided windows) has no segment stage: both run the whole-window CNN,
    # but only the naive run encodes every window's RGB frames anew
    assert naive["frames"]["encoded"] > ours["frames"]["encoded"]
    # ours samples on the grid: pose only on the frames windows sample; the naive run on all
    assert naive["frames"]["posed"] == naive["frames"]["processed"]
    assert ours["frames"]["posed"] < 0.75 * ours["frames"]["processed"]
    assert report["span_s"] > 0 and report["throughput_fps"] == ours["frames"]["fps_processed"]
    assert report["naive_cpu_cores"] == naive["cpu"]["cores_busy"]
    # a naive window encodes all its RGB frames: it costs more model time than ours
    assert report["naive_model_ms_per_window"] > report["model_ms_per_window"] > 0
    assert set(report["event_latency_ms"]) == {"p50", "p90", "p99"}
    stages = report["stages"]
    assert set(stages) == {"matmul_ceiling_gflop_per_s", "visual", "pose", "head"}
    assert stages["visual"]["gflop"] > 0 and 0 < stages["visual"]["share_of_ceiling"]
    assert (out / "bench.png").stat().st_size > 10_000
    for r in report["results"]:
        assert r["precision"] == r["name"].removesuffix("-naive")
        assert r["frames"]["captured"] == 8 * 15  # the whole file, paced at 15 fps
        assert r["windows"]["run"] > 0 and r["latency_ms"]["total"]["n"] == r["windows"]["run"]
        lat = r["latency_ms"]["total"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]  # paced: real capture-to-publish times
        assert {"pose", "heatmaps", "window"} <= set(r["latency_ms"])
        assert r["samples"] and all(s["rss_mb"] > 0 for s in r["samples"])
        assert r["memory_mb"]["max"] >= r["memory_mb"]["start"]
    table = done.stdout.splitlines()
    assert any(line.startswith("latency p99 ms") for line in table)
    assert json.loads(table[-1])["baseline"] == "fp32"
    assert any("window span" in line for line in table) and any("% of ceiling" in line for line in table)


def test_render_source_loops_and_resizes(long_video, tmp_path):
    import cv2

    path, info = render_source(long_video, (64, 48), 30.0, 10.0, cache=tmp_path)
    cap = cv2.VideoCapture(str(path))
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (64, 48)
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(30.0)
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 300 > info["source_frames"]  # looped
    written = path.stat().st_mtime_ns
    again, again_info = render_source(long_video, (64, 48), 30.0, 10.0, cache=tmp_path)
    assert again == path and path.stat().st_mtime_ns == written  # cached: not written again
    assert again_info["source_frames"] == info["source_frames"]


def test_bad_bench_input_is_a_clear_error(long_video, tmp_path):
    with pytest.raises(MicrogestureError, match="WIDTHxHEIGHT"):
        parse_size("640by480")
    done = cli("bench", "--source", str(long_video), "--precisions", "fp16", "--out", str(tmp_path))
    assert done.returncode == 2 and "no fp16 stages" in done.stderr and "Traceback" not in done.stderr
    done = cli("bench", "--source", str(long_video), "--pose", f"recorded:{long_video.with_suffix('.jsonl')}",
               "--size", "640x480")
    assert done.returncode == 2 and "recorded pose" in done.stderr
    done = cli("bench", "--source", str(tmp_path / "nope.mp4"))
    assert done.returncode == 2 and "nope.mp4" in done.stderr
