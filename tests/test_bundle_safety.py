"""A bundle reads only its own files, and its manifest is validated before use.

Every test starts from a copy of the shipped demo bundle (never changed) and breaks
one thing the way an attacker or a careless edit would.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from microgesture.core import bundle as bundle_module
from microgesture.core.bundle import read_manifest, sha256_file
from microgesture.core.errors import MicrogestureError
from microgesture.core.paths import DEMO_BUNDLE


@pytest.fixture
def demo(tmp_path):
    root = tmp_path / "bundle"
    shutil.copytree(DEMO_BUNDLE, root)
    return root


def edit(root: Path, change) -> None:
    manifest = json.loads((root / "manifest.json").read_text())
    change(manifest)
    (root / "manifest.json").write_text(json.dumps(manifest))


def hashed_paths(monkeypatch) -> list:
    """Record every file the bundle reader opens to hash."""
    seen = []
    real = bundle_module.sha256_file

    def spy(path, *a, **k):
        seen.append(Path(path).resolve())
        return real(path, *a, **k)
    monkeypatch.setattr(bundle_module, "sha256_file", spy)
    return seen


def test_the_shipped_bundle_passes(demo):
    assert read_manifest(demo)["labels"]


@pytest.mark.parametrize("name", ["../outside.onnx", "/etc/passwd", "sub/../../outside.onnx"])
def test_a_file_name_leading_outside_is_refused_before_it_is_read(demo, tmp_path, name, monkeypatch):
    outside = tmp_path / "outside.onnx"
    shutil.copy(demo / "head.onnx", outside)
    (demo / "sub").mkdir()
    target = Path(name) if name.startswith("/") else (demo / name)

    def point_head_outside(m):
        meta = {"sha256": sha256_file(target), "bytes": target.stat().st_size}
        m["files"][name] = meta
        m["stages"]["head"]["files"]["fp32"] = name
    edit(demo, point_head_outside)
    seen = hashed_paths(monkeypatch)
    with pytest.raises(MicrogestureError, match="outside the bundle") as err:
        read_manifest(demo)
    assert "\n" not in str(err.value)
    assert target.resolve() not in seen            # never opened, never hashed


def test_a_symlinked_stage_leading_outside_is_refused(demo, tmp_path):
    outside = tmp_path / "elsewhere" / "head.onnx"
    outside.parent.mkdir()
    shutil.move(demo / "head.onnx", outside)
    os.symlink(outside, demo / "head.onnx")        # same bytes: the checksum would match
    with pytest.raises(MicrogestureError, match="symlink that leads outside"):
        read_manifest(demo)


def test_a_symlink_inside_the_bundle_is_fine(demo):
    shutil.move(demo / "head.onnx", demo / "head.real.onnx")
    os.symlink("head.real.onnx", demo / "head.onnx")
    assert read_manifest(demo)["stages"]["head"]["files"]["fp32"] == "head.onnx"


@pytest.mark.parametrize("change, words", [
    (lambda m: m.update(labels="turtle neck"), "labels is str"),
    (lambda m: m.update(labels=[]), "labels is empty"),
    (lambda m: m["labels"].__setitem__(3, 7), r"labels\[3\] is int"),
    (lambda m: m["window"].update(rgb_frames="4"), "window.rgb_frames is str"),
    (lambda m: m["window"].update(pose_frames=0), "window.pose_frames is 0"),
    (lambda m: m["window"].update(span_s=-1), "window.span_s is -1"),
    (lambda m: m.update(stages={k: v for k, v in m["stages"].items() if k != "head"}),
     "no stage that outputs 'logits'"),
    (lambda m: m["stages"]["head"].update(files=[]), "stages.head.files is list"),
    (lambda m: m["files"]["head.onnx"].update(bytes="big"), "bytes"),
    (lambda m: m.update(model="clip"), "model is str"),
    (lambda m: m.update(labels=m["labels"][:-1]), "scores 32 classes but the manifest lists 31"),
])
def test_a_malformed_manifest_gives_one_clear_error(demo, change, words):
    edit(demo, change)
    with pytest.raises(MicrogestureError, match=words) as err:
        read_manifest(demo)
    assert "\n" not in str(err.value) and str(demo) in str(err.value)


def test_streaming_needs_a_known_layout_and_the_window_fields(demo):
    from microgesture.stream.events import EventPublisher
    from microgesture.stream.pipeline import Recognizer

    for change, words in ((lambda m: m["window"].pop("layout"), "window.layout is missing"),
                          (lambda m: m["window"].update(layout="coco19"), "not a known layout"),
                          (lambda m: m["window"].pop("span_s"), "window.span_s is missing")):
        shutil.copy(DEMO_BUNDLE / "manifest.json", demo / "manifest.json")
        edit(demo, change)
        with EventPublisher("tcp://127.0.0.1:*") as pub:
            with pytest.raises(MicrogestureError, match=words):
                Recognizer(str(demo), pub, precision="fp32")


def test_a_model_whose_real_output_disagrees_with_the_labels_is_refused(demo):
    """The manifest's declared head shape agrees with its labels, but the ONNX graph
    outputs another number of classes: refused when the sessions open."""
    from microgesture.stream.events import EventPublisher
    from microgesture.stream.pipeline import Recognizer

    def relabel(m):
        m["labels"] = m["labels"][:-1]
        m["stages"]["head"]["outputs"]["logits"]["shape"] = ["batch", 31]
    edit(demo, relabel)
    read_manifest(demo)  # consistent on paper
    with EventPublisher("tcp://127.0.0.1:*") as pub:
        with pytest.raises(MicrogestureError, match="outputs 32 class scores but the manifest "
                                                    "lists 31 labels"):
            Recognizer(str(demo), pub, precision="fp32")


def test_stream_cli_refuses_a_wrong_label_count_with_exit_2(demo, tmp_path):
    edit(demo, lambda m: m.update(labels=m["labels"][:-1]))
    clip = tmp_path / "none.mp4"
    clip.write_bytes(b"")
    result = subprocess.run([sys.executable, "-m", "microgesture", "stream", "--bundle", str(demo),
                             "--source", str(clip), "--publish", "tcp://127.0.0.1:*", "--quiet"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "lists 31 labels" in result.stderr
