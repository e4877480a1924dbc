"""The demo a fresh install runs: the shipped bundle, streamed, subscribed and scored."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_demo_bundle_is_intact_and_verified():
    from microgesture.core.bundle import read_manifest
    from microgesture.demo import SHIPPED_BUNDLE

    manifest = read_manifest(SHIPPED_BUNDLE)  # checks every file's sha256
    assert manifest["model"]["name"] == "clip-mg-tiny"
    assert len(manifest["labels"]) == 32
    assert manifest["verification"]["fp32"]["passed"] and manifest["verification"]["int8"]["passed"]
    # a window covers a training clip of the synthetic set: 40 frames at 15 fps
    assert manifest["window"]["span_s"] == pytest.approx(40 / 15, abs=1e-3)


def test_demo_detects_the_performed_gestures(tmp_path):
    env = {**os.environ, "MICROGESTURE_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "demo.json"
    done = subprocess.run([sys.executable, "-m", "microgesture", "demo", "--fast", "--duration", "40",
                           "--quiet", "--json", str(out)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["performed"] >= 5
    # the shipped model finds most gestures and mostly only them (60 s realtime: 10/11, 10/10)
    assert result["recall"] >= 0.6 and result["precision"] >= 0.5, result
    assert result["latency_ms"] is None  # --fast: no wall-clock latency claimed
    assert "recall" in done.stdout and "not measured" in done.stdout
    log = [json.loads(line) for line in Path(result["events_log"]).read_text().splitlines()]
    gestures = [e for e in log if e["type"] == "gesture"]
    assert len([e for e in gestures if e["phase"] == "start"]) == result["detected"]


def test_wheel_carries_the_demo_bundle_and_data_files(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "-q", "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    wheel = next(tmp_path.glob("microgesture-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("microgesture/demo_bundle/manifest.json", "microgesture/demo_bundle/visual.int8.onnx",
                   "microgesture/stream/event.schema.json", "microgesture/cli.py",
                   "microgesture/export/exporter.py"):
        assert needed in names, f"{needed} missing from the wheel"
    assert not any(n.startswith(("core/", "tests/")) for n in names)
