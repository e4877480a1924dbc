"""Inference backends (core.backends) and the bundle checks they rely on (core.bundle).

Tiny ONNX graphs made with onnx.helper; no torch. GPU paths are marked ``gpu``.
"""

import json
import re
import struct
import subprocess
import sys
import types
import warnings

import numpy as np
import onnxruntime as ort
import pytest

from microgesture.core import backends, tensorrt_backend
from microgesture.core.backends import (Backend, OrtBackend, TensorRTBackend, available_devices,
                                        open_stage, read_engine_file, validate_feeds,
                                        write_engine_file)
from microgesture.core.bundle import read_manifest, stage_file, write_manifest
from microgesture.core.errors import MicrogestureError
from onnx_graphs import stage_model


# --------------------------------------------------------------------------- tiny graphs


def io_table(shapes):
    return {n: {"shape": ["batch", *s], "dtype": "float32"} for n, s in shapes.items()}


def make_bundle(root, stages, labels=("a", "b", "c")):
    """Write every stage's graphs and a manifest. ``stages``: name -> (role, inputs,
    outputs, precisions)."""
    root.mkdir(parents=True, exist_ok=True)
    table = {}
    for k, (name, (role, ins, outs, precisions)) in enumerate(stages.items()):
        files = {}
        for j, precision in enumerate(precisions):
            file = f"{name}.onnx" if precision == "fp32" else f"{name}.{precision}.onnx"
            stage_model(root / file, ins, outs, seed=10 * k + j)
            files[precision] = file
        table[name] = {"role": role, "inputs": io_table(ins), "outputs": io_table(outs),
                       "files": files}
    write_manifest(root, {"model": {"name": "tiny", "arch": "test", "config": {}},
                          "labels": list(labels), "prompts": None, "preprocessing": {},
                          "window": {"rgb_frames": 2, "pose_frames": 4}, "stages": table})
    return read_manifest(root)


@pytest.fixture
def linear(tmp_path):
    path = tmp_path / "linear.onnx"
    weight = stage_model(path, {"x": (4,)}, {"y": (3,)})
    return path, weight


@pytest.fixture
def bundle(tmp_path):
    return make_bundle(tmp_path / "bundle", {
        "head": ("per-window", {"tokens": (2, 3), "pose": (2, 2)}, {"logits": (3,)},
                 ("fp32", "int8")),
        "visual": ("per-frame", {"frames": (3, 4, 4)}, {"tokens": (3,)}, ("fp32",)),
    })


# --------------------------------------------------------------------------- OrtBackend
def test_ort_backend_runs_and_reports_cpu(linear):
    path, weight = linear
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    with OrtBackend(path) as backend:
        assert isinstance(backend, Backend)
        assert backend.providers == ("CPUExecutionProvider",)
        (spec,) = backend.inputs
        assert (spec.name, spec.shape, spec.dtype, spec.dims) == ("x", (None, 4), "float32",
                                                                 ("batch", "4"))
        assert spec.describe() == "(batch, 4)"
        assert [o.name for o in backend.outputs] == ["y"]
        out = backend.run({"x": x})
    np.testing.assert_allclose(out["y"], x @ weight, rtol=1e-5, atol=1e-6)
    with pytest.raises(MicrogestureError, match="closed"):
        backend.run({"x": x})


def test_threads_and_spinning_reach_the_session(linear):
    path, _ = linear
    default = OrtBackend(path).session.get_session_options()
    assert default.intra_op_num_threads == 1
    assert default.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert default.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options = OrtBackend(path, threads=2, spinning=True).session.get_session_options()
    assert options.intra_op_num_threads == 2
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    with pytest.raises(MicrogestureError, match="threads"):
        OrtBackend(path, threads=-1)


def test_missing_or_broken_model_file(tmp_path):
    with pytest.raises(MicrogestureError, match="does not exist"):
        OrtBackend(tmp_path / "nope.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(MicrogestureError, match="cannot load"):
        OrtBackend(tmp_path / "bad.onnx")
    with pytest.raises(MicrogestureError, match="unknown device"):
        OrtBackend(tmp_path / "bad.onnx", device="gpu")


@pytest.mark.parametrize("device,provider", [("cuda", "CUDAExecutionProvider"),
                                             ("tensorrt", "TensorrtExecutionProvider")])
def test_gpu_device_on_a_cpu_machine(linear, device, provider):
    if device in available_devices():
        pytest.skip(f"this machine really has {device}")
    path, weight = linear
    with pytest.raises(MicrogestureError, match=provider) as info:
        OrtBackend(path, device=device)
    assert "onnxruntime-gpu" in str(info.value) or "libraries" in str(info.value)
    with pytest.warns(RuntimeWarning, match=provider):
        backend = OrtBackend(path, device=device, allow_fallback=True)
    assert backend.providers == ("CPUExecutionProvider",)
    x = np.ones((1, 4), np.float32)
    np.testing.assert_allclose(backend.run({"x": x})["y"], x @ weight, rtol=1e-5)


def test_silent_provider_fallback_is_caught(linear, monkeypatch):
    """onnxruntime-gpu without CUDA libraries lists the provider, then runs on the CPU:
    simulated by claiming CUDA is available to an onnxruntime that has none."""
    if "cuda" in available_devices():
        pytest.skip("this machine really has CUDA")
    path, _ = linear
    real = ort.get_available_providers()
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", *real])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # onnxruntime's own complaint about the provider
        with pytest.raises(MicrogestureError, match="asked for CUDAExecutionProvider but ONNX "
                                                    "Runtime runs CPUExecutionProvider"):
            OrtBackend(path, device="cuda")
        with pytest.warns(RuntimeWarning, match="running on the CPU"):
            backend = OrtBackend(path, device="cuda", allow_fallback=True)
    assert backend.providers == ("CPUExecutionProvider",)


def test_provider_lists_carry_options(tmp_path):
    assert backends.provider_list("cpu") == ["CPUExecutionProvider"]
    trt, cuda, cpu = backends.provider_list("tensorrt", device_id=1, cache_dir=tmp_path,
                                            provider_options={"TensorrtExecutionProvider": {
                                                "trt_builder_optimization_level": "5"}})
    assert trt[0] == "TensorrtExecutionProvider" and cuda[0] == "CUDAExecutionProvider"
    assert cpu == "CPUExecutionProvider"
    options = trt[1]
    assert options["device_id"] == "1" and cuda[1]["device_id"] == "1"
    assert options["trt_engine_cache_enable"] == "True"
    assert options["trt_engine_cache_path"] == str(tmp_path)
    assert options["trt_timing_cache_enable"] == "True"
    assert options["trt_fp16_enable"] == "False"  # the weak FP16 flag hurts CLIP ViTs
    assert options["trt_builder_optimization_level"] == "5"


def test_explicit_tensorrt_profiles_from_the_manifest(bundle):
    profiles = backends.batch_profiles(bundle["stages"]["head"], max_batch=4)
    assert profiles == {"tokens": ((1, 2, 3), (1, 2, 3), (4, 2, 3)),
                        "pose": ((1, 2, 2), (1, 2, 2), (4, 2, 2))}
    trt = backends.provider_list("tensorrt", trt_profiles=profiles)[0][1]
    assert trt["trt_profile_min_shapes"] == "tokens:1x2x3,pose:1x2x2"
    assert trt["trt_profile_opt_shapes"] == "tokens:1x2x3,pose:1x2x2"
    assert trt["trt_profile_max_shapes"] == "tokens:4x2x3,pose:4x2x2"
    assert "trt_profile_min_shapes" not in backends.provider_list("tensorrt")[0][1]
    other = {"inputs": {"clip": {"shape": ["batch", "frames", 3]}}}
    assert backends.batch_profiles(other) is None


def test_available_devices():
    devices = available_devices()
    assert devices[0] == "cpu" and set(devices) <= set(backends.DEVICES)
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert devices == ["cpu"]
    assert available_devices(refresh=True) == devices


# --------------------------------------------------------------------------- feeds
@pytest.fixture
def two_inputs(tmp_path):
    path = tmp_path / "two.onnx"
    stage_model(path, {"a": (2, 3), "b": (4,)}, {"out": (2,)})
    return OrtBackend(path)


def test_feed_validation_errors(two_inputs):
    backend = two_inputs
    a, b = np.zeros((2, 2, 3), np.float32), np.zeros((2, 4), np.float32)
    assert backend.run({"a": a, "b": b})["out"].shape == (2, 2)
    with pytest.raises(MicrogestureError, match=r"missing input\(s\) 'b'.*b \(batch, 4\)"):
        backend.run({"a": a})
    with pytest.raises(MicrogestureError, match=r"unknown input\(s\) 'c'"):
        backend.run({"a": a, "b": b, "c": b})
    with pytest.raises(MicrogestureError, match="'a' has dtype float64, expected float32.*cast"):
        backend.run({"a": a.astype(np.float64), "b": b})
    with pytest.raises(MicrogestureError, match="'b' has dtype int64, expected float32"):
        backend.run({"a": a, "b": b.astype(np.int64)})
    with pytest.raises(MicrogestureError, match=r"'a' has shape \(2, 6\) \(rank 2\), expected "
                                                r"\(batch, 2, 3\) \(rank 3\)"):
        backend.run({"a": a.reshape(2, 6), "b": b})
    with pytest.raises(MicrogestureError, match=r"'b' has shape \(2, 5\), expected \(batch, 4\): "
                                                r"axis 1 is 5, not 4"):
        backend.run({"a": a, "b": np.zeros((2, 5), np.float32)})
    with pytest.raises(MicrogestureError,
                       match="axis 'batch' is 3 in input 'b' but 2 in input 'a'"):
        backend.run({"a": a, "b": np.zeros((3, 4), np.float32)})
    with pytest.raises(MicrogestureError, match="dict"):
        backend.run([a, b])


def test_cast_float64_only_when_asked(tmp_path):
    path = tmp_path / "m.onnx"
    weight = stage_model(path, {"x": (4,)}, {"y": (3,)})
    x = np.arange(8, dtype=np.float64).reshape(2, 4)
    out = OrtBackend(path, cast=True).run({"x": x})["y"]
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, x.astype(np.float32) @ weight, rtol=1e-5)
    specs = OrtBackend(path).inputs
    # non-contiguous arrays and array-likes are accepted
    fed = validate_feeds(specs, {"x": np.zeros((4, 2), np.float32).T})
    assert fed["x"].flags.c_contiguous
    with pytest.raises(MicrogestureError, match="int64"):
        validate_feeds(specs, {"x": [[1, 2, 3, 4]]}, cast=True)  # ints are never cast


def test_two_outputs_come_back_under_their_own_names(tmp_path):
    """A graph with two outputs of different sizes (names not in alphabetical order):
    each output is returned under its own name, with its own values."""
    path = tmp_path / "two.onnx"
    outputs = {"tokens": (2, 2), "logits": (3,), "pose": (3,)}
    weight = stage_model(path, {"x": (4,)}, outputs)
    x = np.random.default_rng(2).standard_normal((5, 4)).astype(np.float32)
    mixed = x @ weight
    expected = {"tokens": mixed[:, :4].reshape(5, 2, 2), "logits": mixed[:, 4:7], "pose": mixed[:, 7:]}
    backend = OrtBackend(path)
    assert [o.name for o in backend.outputs] == ["tokens", "logits", "pose"]
    assert [o.shape for o in backend.outputs] == [(None, 2, 2), (None, 3), (None, 3)]
    out = backend.run({"x": x})
    assert sorted(out) == ["logits", "pose", "tokens"]
    for name, want in expected.items():
        np.testing.assert_allclose(out[name], want, rtol=1e-5, atol=1e-6, err_msg=name)
    # the same through a bundle stage
    make_bundle(tmp_path / "bundle", {"head": ("per-window", {"x": (4,)}, outputs, ("fp32",))})
    out = open_stage(tmp_path / "bundle", "head").run({"x": x})   # make_bundle's first stage: seed 0
    for name, want in expected.items():
        np.testing.assert_allclose(out[name], want, rtol=1e-5, atol=1e-6, err_msg=name)


# --------------------------------------------------------------------------- bundles
def test_open_stage_picks_files_and_lists_precisions(bundle):
    fp32 = open_stage(bundle, "head")
    int8 = open_stage(bundle, "head", "int8")
    assert fp32.path.name == "head.onnx" and int8.path.name == "head.int8.onnx"
    assert fp32.name == "head" and fp32.providers == ("CPUExecutionProvider",)
    feeds = {"tokens": np.ones((1, 2, 3), np.float32), "pose": np.ones((1, 2, 2), np.float32)}
    assert fp32.run(feeds)["logits"].shape == (1, 3)
    assert not np.allclose(fp32.run(feeds)["logits"], int8.run(feeds)["logits"])
    with pytest.raises(MicrogestureError, match="no 'fp16' file for stage 'visual'; it has: fp32"):
        open_stage(bundle, "visual", "fp16")
    with pytest.raises(MicrogestureError, match="it has: fp32, int8"):
        open_stage(bundle, "head", "engine")
    with pytest.raises(MicrogestureError, match="unknown stage 'pose'.*Known stages: head, visual"):
        open_stage(bundle, "pose")
    # a directory works too; threads reach the session
    backend = open_stage(bundle["root"], "visual", threads=2)
    assert backend.session.get_session_options().intra_op_num_threads == 2
    assert stage_file(bundle, "head", "int8").name == "head.int8.onnx"


def test_open_stage_refuses_engine_on_cpu_and_mismatched_graphs(bundle, tmp_path):
    root = tmp_path / "bundle"
    write_engine_file(root / "head.fp16.engine", {"stage": "head"}, b"engine")
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["stages"]["head"]["files"]["engine"] = "head.fp16.engine"
    manifest["stages"]["visual"]["inputs"] = {"images": manifest["stages"]["visual"]["inputs"]
                                              ["frames"]}
    for key in ("schema_version", "format", "created", "files"):
        manifest.pop(key)
    write_manifest(root, manifest)
    with pytest.raises(MicrogestureError, match="NVIDIA GPU, not on 'cpu'"):
        open_stage(root, "head", "engine", device="cpu")
    with pytest.raises(MicrogestureError, match=r"takes inputs \['frames'\] but the manifest "
                                                r"declares \['images'\]"):
        open_stage(root, "visual")


def _rewrite(root, edit):
    manifest = json.loads((root / "manifest.json").read_text())
    edit(manifest)
    (root / "manifest.json").write_text(json.dumps(manifest))


def test_tampered_bundles_are_refused(bundle, tmp_path):
    root = tmp_path / "bundle"
    assert read_manifest(root)["root"] == str(root)
    # one flipped byte in a graph
    graph = root / "head.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0x01
    graph.write_bytes(bytes(data))
    with pytest.raises(MicrogestureError, match="head.onnx does not match its checksum"):
        read_manifest(root)
    with pytest.raises(MicrogestureError, match="checksum"):
        open_stage(root, "visual")
    data[len(data) // 2] ^= 0x01
    graph.write_bytes(bytes(data))
    read_manifest(root)
    # a missing file
    (root / "head.int8.onnx").rename(root / "moved.onnx")
    with pytest.raises(MicrogestureError, match="head.int8.onnx is missing"):
        read_manifest(root)
    (root / "moved.onnx").rename(root / "head.int8.onnx")
    # a stage naming a file without a checksum
    _rewrite(root, lambda m: m["stages"]["visual"]["files"].update(fp16="visual.fp16.onnx"))
    with pytest.raises(MicrogestureError, match="visual.fp16.onnx, which has no checksum"):
        read_manifest(root)
    _rewrite(root, lambda m: m["stages"]["visual"]["files"].pop("fp16"))
    # a wrong schema version, both ways
    _rewrite(root, lambda m: m.update(schema_version=2))
    with pytest.raises(MicrogestureError, match="schema version 2.*upgrade microgesture"):
        read_manifest(root)
    _rewrite(root, lambda m: m.update(schema_version="1"))
    with pytest.raises(MicrogestureError, match="schema version '1'.*re-export"):
        read_manifest(root)
    _rewrite(root, lambda m: m.update(schema_version=1))
    # a missing field, a bad role, another format
    _rewrite(root, lambda m: m.pop("labels"))
    with pytest.raises(MicrogestureError, match="lacks the 'labels' field"):
        read_manifest(root)
    _rewrite(root, lambda m: m.update(labels=["a"]))
    _rewrite(root, lambda m: m["stages"]["head"].update(role="sometimes"))
    with pytest.raises(MicrogestureError, match="role 'sometimes'"):
        read_manifest(root)
    _rewrite(root, lambda m: m.update(format="something-else"))
    with pytest.raises(MicrogestureError, match="not a microgesture bundle manifest"):
        read_manifest(root)
    # invalid JSON, no manifest at all
    (root / "manifest.json").write_text('{"schema_version": 1,')
    with pytest.raises(MicrogestureError, match="is not valid JSON"):
        read_manifest(root)
    (root / "manifest.json").unlink()
    with pytest.raises(MicrogestureError, match="no manifest.json"):
        read_manifest(root)


def test_every_file_the_manifest_lists_is_checked(tmp_path):
    """Each file of ``files`` (fp32 and int8 graphs, and extra files) changed on its own,
    at the same size, is refused by name; put back, the bundle opens again."""
    root = tmp_path / "bundle"
    make_bundle(root, {
        "head": ("per-window", {"tokens": (2, 3), "pose": (2, 2)}, {"logits": (3,)}, ("fp32", "int8")),
        "pose": ("per-window", {"heatmaps": (2, 4)}, {"pose": (2, 2)}, ("fp32", "int8", "fp16")),
        "visual": ("per-frame", {"frames": (3, 4, 4)}, {"tokens": (3,)}, ("fp32", "int8"))})
    np.save(root / "text_embeddings.npy", np.ones((3, 4), np.float32))
    manifest = json.loads((root / "manifest.json").read_text())
    for key in ("schema_version", "format", "created", "files"):
        manifest.pop(key)
    write_manifest(root, {**manifest, "extra_files": ["text_embeddings.npy"]})
    listed = sorted(read_manifest(root)["files"])
    assert listed == sorted(["head.onnx", "head.int8.onnx", "pose.onnx", "pose.int8.onnx",
                             "pose.fp16.onnx", "visual.onnx", "visual.int8.onnx", "text_embeddings.npy"])
    for name in listed:
        original = (root / name).read_bytes()
        changed = bytearray(original)
        changed[len(changed) // 2] ^= 0x01   # one bit, same size: only the sha256 can tell
        (root / name).write_bytes(bytes(changed))
        with pytest.raises(MicrogestureError, match=f"{re.escape(name)} does not match its checksum"):
            read_manifest(root)
        with pytest.raises(MicrogestureError, match="checksum"):
            open_stage(root, "head")
        (root / name).write_bytes(original)
        read_manifest(root)


def test_stage_file_needs_a_read_manifest(bundle):
    manifest = dict(bundle)
    manifest.pop("root")
    with pytest.raises(MicrogestureError, match="read_manifest"):
        stage_file(manifest, "head")


# --------------------------------------------------------------------------- engine files
def test_engine_file_round_trip(tmp_path):
    path = tmp_path / "head.fp16.engine"
    engine = bytes(range(256)) * 10
    meta = {"stage": "head", "precision": "fp16", "tensorrt": "10.3.0", "gpu": "NVIDIA L4",
            "inputs": [{"name": "x", "shape": ["batch", 4]}]}
    write_engine_file(path, meta, engine)
    header, body = read_engine_file(path)
    assert body == engine
    assert {k: header[k] for k in meta} == meta
    assert header["format"] == "microgesture-engine" and header["header_version"] == 1
    assert header["engine_bytes"] == len(engine)
    raw = path.read_bytes()
    (length,) = struct.unpack("<I", raw[:4])
    assert json.loads(raw[4:4 + length])["stage"] == "head" and raw[4 + length:] == engine
    with pytest.raises(MicrogestureError, match="empty"):
        write_engine_file(tmp_path / "e.engine", meta, b"")
    with pytest.raises(MicrogestureError, match="not JSON-serialisable"):
        write_engine_file(tmp_path / "e.engine", {"bad": object()}, b"x")


def test_damaged_engine_files_are_refused(tmp_path):
    path = tmp_path / "e.engine"
    write_engine_file(path, {"stage": "head"}, b"ENGINE" * 100)
    raw = path.read_bytes()
    (length,) = struct.unpack("<I", raw[:4])

    def refused(data, match):
        path.write_bytes(data)
        with pytest.raises(MicrogestureError, match=match):
            read_engine_file(path)

    refused(raw[:-1], "does not match the size and checksum")            # truncated engine
    refused(raw[:-1] + b"X", "does not match the size and checksum")     # flipped engine byte
    refused(raw[:2], "too short")
    refused(struct.pack("<I", 1 << 30) + raw[4:], "no valid microgesture engine header")
    refused(struct.pack("<I", 0) + raw[4:], "no valid microgesture engine header")
    refused(raw[:4] + b"\xff" + raw[5:], "not valid JSON")               # damaged header
    other = json.dumps({"format": "other"}).encode()
    refused(struct.pack("<I", len(other)) + other + b"x", "not a microgesture engine header")
    newer = json.dumps({"format": "microgesture-engine", "header_version": 9}).encode()
    refused(struct.pack("<I", len(newer)) + newer + b"x", "header version 9")
    refused(b"ftrt" + bytes(1000), "bare TensorRT plan")                 # trtexec output
    with pytest.raises(MicrogestureError, match="does not exist"):
        read_engine_file(tmp_path / "missing.engine")
    assert length > 0


def test_tensorrt_backend_without_tensorrt(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    path = tmp_path / "head.fp16.engine"
    write_engine_file(path, {"stage": "head"}, b"engine")
    with pytest.raises(MicrogestureError, match="TensorRT is not installed: pip install tensorrt"):
        TensorRTBackend(path)


def test_unnamed_dynamic_axes_are_not_tied_together():
    specs = (backends.tensor_spec("a", [None, 2], "float32"),
             backends.tensor_spec("b", [-1, "n"], "float32"))
    assert specs[0].describe() == "(?, 2)" and specs[1].dims == ("?", "n")
    fed = validate_feeds(specs, {"a": np.zeros((3, 2), np.float32),
                                 "b": np.zeros((5, 7), np.float32)})
    assert fed["b"].shape == (5, 7)


def test_cuda_python_without_a_gpu_is_a_clear_error():
    runtime = pytest.importorskip("cuda.bindings.runtime")
    if runtime.cudaGetDeviceCount()[0] == runtime.cudaError_t.cudaSuccess:
        pytest.skip("this machine has a CUDA device")
    with pytest.raises(MicrogestureError, match="CUDA cudaSetDevice failed"):
        backends._device_memory(0, "cuda-python")
    with warnings.catch_warnings():   # auto: cuda-python failed, torch tried next
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(MicrogestureError, match="no CUDA device|cudaSetDevice failed"):
            backends._device_memory(0, "auto")
    with pytest.raises(MicrogestureError, match="allocator"):
        backends._device_memory(0, "pycuda")


def test_runtime_needs_neither_torch_nor_tensorrt():
    code = ("import sys; import microgesture.core.backends as b, microgesture.core.bundle;"
            "assert 'torch' not in sys.modules and 'tensorrt' not in sys.modules, "
            "sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorrt'))")
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- TensorRT logic
class _FakeEngine:
    """Just enough of TensorRT's documented ICudaEngine/IExecutionContext to drive
    TensorRTBackend without a GPU: the 'engine' computes out = 2 * x + 1 and its
    'device memory' is host memory."""

    def __init__(self, memory):
        self.memory = memory
        self.num_io_tensors = 2

    def get_tensor_name(self, i):
        return ["x", "out"][i]

    def get_tensor_mode(self, name):
        return "IN" if name == "x" else "OUT"

    def get_tensor_dtype(self, name):
        return "float"

    def get_tensor_shape(self, name):
        return [-1, 4]

    def get_tensor_profile_shape(self, name, profile):
        return [(1, 4), (2, 4), (6, 4)]

    def create_execution_context(self):
        engine = self

        class Context:
            shapes, addresses = {}, {}

            def set_input_shape(self, name, shape):
                self.shapes[name] = tuple(shape)
                return shape[0] <= 6

            def get_tensor_shape(self, name):
                return self.shapes["x"]

            def set_tensor_address(self, name, ptr):
                self.addresses[name] = ptr

            def execute_async_v3(self, stream):
                n = int(np.prod(self.shapes["x"]))
                x = np.frombuffer(engine.memory.buffers[self.addresses["x"]], np.float32, n)
                out = np.frombuffer(engine.memory.buffers[self.addresses["out"]], np.float32, n)
                out[:] = 2 * x + 1
                return True

        return Context()


class _HostMemory:
    kind = "host"
    stream_handle = 0

    def __init__(self):
        self.buffers = {}
        self.device_threads = []   # threads that selected the device (use_device)

    def use_device(self):
        import threading
        self.device_threads.append(threading.get_ident())

    def alloc(self, nbytes):
        ptr = len(self.buffers) + 1
        self.buffers[ptr] = bytearray(nbytes)
        return ptr

    def h2d(self, ptr, array):
        self.buffers[ptr][:array.nbytes] = array.tobytes()

    def d2h(self, array, ptr):
        array.reshape(-1).view(np.uint8)[:] = np.frombuffer(self.buffers[ptr], np.uint8,
                                                             array.nbytes)

    def sync(self):
        pass

    def close(self):
        self.buffers = {}


def test_tensorrt_backend_logic_with_a_fake_runtime(tmp_path, monkeypatch):
    memory = _HostMemory()
    fake = types.SimpleNamespace(
        __version__="10.0.fake", Logger=lambda level: None,
        TensorIOMode=types.SimpleNamespace(INPUT="IN"),
        nptype=lambda dtype: np.float32,
        Runtime=lambda logger: types.SimpleNamespace(
            deserialize_cuda_engine=lambda data: _FakeEngine(memory) if data == b"OK" else None))
    fake.Logger.WARNING = 2
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(tensorrt_backend, "_device_memory", lambda device_id, allocator: memory)
    monkeypatch.setattr(tensorrt_backend, "gpu_name", lambda device_id=0: "Fake GPU")
    path = tmp_path / "visual.fp16.engine"
    write_engine_file(path, {"stage": "visual", "tensorrt": "10.0.fake",
                             "inputs": [{"name": "x", "shape": ["batch", 4]}]}, b"OK")
    backend = TensorRTBackend(path)
    assert backend.name == "visual"
    assert backend.providers == ("TensorRT 10.0.fake on Fake GPU (host buffers)",)
    assert backend.inputs[0].shape == (None, 4) and backend.inputs[0].dims == ("batch", "4")
    for batch in (3, 1, 6):  # shapes set per call, buffers sized for the profile's max
        x = np.arange(batch * 4, dtype=np.float32).reshape(batch, 4)
        np.testing.assert_array_equal(backend.run({"x": x})["out"], 2 * x + 1)
    with pytest.raises(MicrogestureError, match=r"beyond the engine's largest profile shape"):
        backend.run({"x": np.zeros((7, 4), np.float32)})
    with pytest.raises(MicrogestureError, match="expected"):
        backend.run({"x": np.zeros((2, 5), np.float32)})
    backend.close()
    with pytest.raises(MicrogestureError, match="closed"):
        backend.run({"x": np.zeros((1, 4), np.float32)})
    # an engine from another TensorRT version, and one TensorRT cannot deserialise
    write_engine_file(path, {"stage": "visual", "tensorrt": "8.6.1"}, b"OK")
    with pytest.raises(MicrogestureError, match="built with TensorRT 8.6.1.*rebuild"):
        TensorRTBackend(path)
    write_engine_file(path, {"stage": "visual", "tensorrt": "10.0.fake", "gpu": "A100"}, b"??")
    with pytest.raises(MicrogestureError, match="could not deserialise.*A100"):
        TensorRTBackend(path)


class _TwoOutputEngine(_FakeEngine):
    """The fake engine with two outputs: ``double`` = 2 * x and ``plus_one`` = x + 1,
    declared in the order plus_one, double."""

    names = ["x", "plus_one", "double"]

    def __init__(self, memory):
        super().__init__(memory)
        self.num_io_tensors = 3

    def get_tensor_name(self, i):
        return self.names[i]

    def create_execution_context(self):
        context = super().create_execution_context()
        engine = self

        def execute_async_v3(stream):
            n = int(np.prod(context.shapes["x"]))
            buffers, at = engine.memory.buffers, context.addresses
            x = np.frombuffer(buffers[at["x"]], np.float32, n)
            np.frombuffer(buffers[at["double"]], np.float32, n)[:] = 2 * x
            np.frombuffer(buffers[at["plus_one"]], np.float32, n)[:] = x + 1
            return True

        context.execute_async_v3 = execute_async_v3
        return context


def test_tensorrt_backend_returns_each_output_by_name(tmp_path, monkeypatch):
    memory = _HostMemory()
    fake = types.SimpleNamespace(
        __version__="10.0.fake", Logger=lambda level: None,
        TensorIOMode=types.SimpleNamespace(INPUT="IN"), nptype=lambda dtype: np.float32,
        Runtime=lambda logger: types.SimpleNamespace(deserialize_cuda_engine=lambda data: _TwoOutputEngine(memory)))
    fake.Logger.WARNING = 2
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(tensorrt_backend, "_device_memory", lambda device_id, allocator: memory)
    monkeypatch.setattr(tensorrt_backend, "gpu_name", lambda device_id=0: "Fake GPU")
    path = tmp_path / "head.fp16.engine"
    write_engine_file(path, {"stage": "head", "tensorrt": "10.0.fake"}, b"OK")
    backend = TensorRTBackend(path)
    assert [o.name for o in backend.outputs] == ["plus_one", "double"]
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = backend.run({"x": x})
    assert sorted(out) == ["double", "plus_one"]
    np.testing.assert_array_equal(out["double"], 2 * x)
    np.testing.assert_array_equal(out["plus_one"], x + 1)


# --------------------------------------------------------------------------- GPU only
@pytest.mark.gpu
def test_ort_cuda_runs_on_the_gpu(linear):
    """Needs onnxruntime-gpu with CUDA 12 and cuDNN 9 and an NVIDIA GPU."""
    if "cuda" not in available_devices():
        pytest.skip("no working CUDAExecutionProvider on this machine")
    path, weight = linear
    backend = OrtBackend(path, device="cuda")
    assert backend.providers[0] == "CUDAExecutionProvider"
    x = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(backend.run({"x": x})["y"], x @ weight, rtol=1e-3, atol=1e-4)


@pytest.mark.gpu
def test_ort_tensorrt_runs_on_the_gpu(linear, tmp_path):
    """Needs onnxruntime-gpu, TensorRT 10 libraries and an NVIDIA GPU."""
    if "tensorrt" not in available_devices():
        pytest.skip("no working TensorrtExecutionProvider on this machine")
    path, weight = linear
    backend = OrtBackend(path, device="tensorrt", cache_dir=tmp_path / "cache")
    assert backend.providers[0] == "TensorrtExecutionProvider"
    x = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(backend.run({"x": x})["y"], x @ weight, rtol=1e-3, atol=1e-3)
    assert any((tmp_path / "cache").iterdir())  # the engine cache was written
