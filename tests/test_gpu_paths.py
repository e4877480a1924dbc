"""The GPU path, checked with fakes of ONNX Runtime, TensorRT and cuda-python (no GPU
here): engine caches keyed by the model's checksum, timing caches named by GPU and
checked, the device selected in every thread, cuda-python falling back to torch,
INT8 for TensorRT with zero points of 0, Triton plans that say what built them, and
the gpu extra. The `gpu`-marked tests elsewhere are the ones to run on a GPU."""

import sys
import threading
import types
import warnings

import numpy as np
import pytest

from microgesture.core import backends, tensorrt_backend
from microgesture.core.errors import MicrogestureError


# --------------------------------------------------------------------------- ORT engine cache
class _FakeSession:
    def __init__(self, path, options, providers, disabled_optimizers=()):
        self.providers = providers
        _FakeOrt.sessions.append(self)

    def get_providers(self):
        return ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]

    def get_inputs(self):
        return [types.SimpleNamespace(name="x", shape=["batch", 4], type="tensor(float)")]

    get_outputs = get_inputs


class _FakeOrt(types.SimpleNamespace):
    sessions: list = []


def fake_ort():
    _FakeOrt.sessions = []
    options = types.SimpleNamespace
    return _FakeOrt(
        __version__="1.99-fake", InferenceSession=_FakeSession,
        get_available_providers=lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                         "CPUExecutionProvider"],
        SessionOptions=lambda: types.SimpleNamespace(add_session_config_entry=lambda k, v: None),
        GraphOptimizationLevel=options(ORT_ENABLE_ALL=3, ORT_ENABLE_EXTENDED=2,
                                       ORT_ENABLE_BASIC=1, ORT_DISABLE_ALL=0),
        ExecutionMode=options(ORT_SEQUENTIAL=0))


def test_tensorrt_engine_caches_are_keyed_by_the_model_checksum(tmp_path, monkeypatch):
    """Two bundles with the same file and tensor names but other weights must not share
    an engine; the same file twice does."""
    monkeypatch.setattr(backends, "_ort", fake_ort)
    paths = []
    for k, weights in enumerate((b"weights-A", b"weights-B", b"weights-A")):
        path = tmp_path / f"bundle{k}" / "head.onnx"
        path.parent.mkdir()
        path.write_bytes(weights)
        paths.append(path)
    cache_dirs = []
    for path in paths:
        backends.OrtBackend(path, device="tensorrt", cache_dir=tmp_path / "cache")
        trt_options = _FakeOrt.sessions[-1].providers[0][1]
        cache_dirs.append(trt_options["trt_engine_cache_path"])
        assert trt_options["trt_timing_cache_path"] == str(tmp_path / "cache")
    assert cache_dirs[0] != cache_dirs[1] and cache_dirs[0] == cache_dirs[2]
    assert cache_dirs[0].endswith(backends.engine_cache_key(paths[0]))


# --------------------------------------------------------------------------- device per thread
def test_the_engine_selects_its_gpu_in_every_calling_thread(tmp_path, monkeypatch):
    from test_backends import _FakeEngine, _HostMemory

    memory = _HostMemory()
    fake = types.SimpleNamespace(
        __version__="10.0.fake", Logger=lambda level: None,
        TensorIOMode=types.SimpleNamespace(INPUT="IN"), nptype=lambda dtype: np.float32,
        Runtime=lambda logger: types.SimpleNamespace(
            deserialize_cuda_engine=lambda data: _FakeEngine(memory)))
    fake.Logger.WARNING = 2
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(tensorrt_backend, "_device_memory", lambda device_id, allocator: memory)
    monkeypatch.setattr(tensorrt_backend, "gpu_name", lambda device_id=0: "Fake GPU")
    path = tmp_path / "head.fp16.engine"
    backends.write_engine_file(path, {"stage": "head", "tensorrt": "10.0.fake",
                                      "inputs": [{"name": "x", "shape": ["batch", 4]}]}, b"OK")
    backend = backends.TensorRTBackend(path, device_id=1)
    worker = threading.Thread(target=lambda: backend.run({"x": np.ones((2, 4), np.float32)}))
    worker.start()
    worker.join(10)
    assert worker.ident in memory.device_threads


# --------------------------------------------------------------------------- cuda-python
def _fake_cudart(error_text: bytes):
    runtime = types.SimpleNamespace(
        cudaError_t=types.SimpleNamespace(cudaSuccess=0),
        cudaSetDevice=lambda device: (35,),
        cudaGetErrorString=lambda err: (0, error_text))
    cuda = types.ModuleType("cuda")
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = runtime
    cuda.bindings = bindings
    return {"cuda": cuda, "cuda.bindings": bindings, "cuda.bindings.runtime": runtime}


def test_cuda_python_that_cannot_drive_the_gpu_falls_back_to_torch(monkeypatch):
    """cuda-python 13 on a CUDA 12 driver: cudaSetDevice fails."""
    for name, module in _fake_cudart(b"CUDA driver version is insufficient").items():
        monkeypatch.setitem(sys.modules, name, module)

    class FakeTorchMemory:
        kind = "torch"

        def __init__(self, device_id):
            self.device_id = device_id
    monkeypatch.setattr(tensorrt_backend, "_TorchMemory", FakeTorchMemory)
    with pytest.warns(RuntimeWarning, match="driver version is insufficient.*torch CUDA buffers"):
        memory = backends._device_memory(1, "auto")
    assert memory.kind == "torch" and memory.device_id == 1
    with pytest.raises(MicrogestureError, match="cudaSetDevice failed"):
        backends._device_memory(1, "cuda-python")       # asked for it: the error, not a fallback


def test_old_cuda_python_without_bindings_falls_back_to_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "cuda", types.ModuleType("cuda"))   # < 12.6.1
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    monkeypatch.setattr(tensorrt_backend, "_TorchMemory", lambda device_id: types.SimpleNamespace(
        kind="torch"))
    assert backends._device_memory(0, "auto").kind == "torch"
    with pytest.raises(MicrogestureError, match="cuda-python>=12.6.1,<13"):
        backends._device_memory(0, "cuda-python")


# --------------------------------------------------------------------------- TensorRT builds
def _fake_trt_rejecting(monkeypatch, prefix=b"OTHER"):
    """The fake TensorRT of test_tensorrt, whose builder rejects timing caches starting
    with ``prefix`` (as TensorRT rejects one from another GPU)."""
    from test_tensorrt import _FakeTensorRT

    fake = _FakeTensorRT(["x"])
    make_config = fake.Builder.create_builder_config

    def create_builder_config(self):
        config = make_config(self)

        def set_timing_cache(cache, ignore_mismatch):
            fake.calls.append(("set_timing_cache", bytes(cache.data), ignore_mismatch))
            return not cache.data.startswith(prefix)
        config.set_timing_cache = set_timing_cache
        return config
    fake.Builder.create_builder_config = create_builder_config
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    return fake


def test_a_timing_cache_from_another_gpu_is_replaced_not_ignored(tmp_path, monkeypatch):
    from microgesture.export import tensorrt as trt_export
    from test_tensorrt import _linear_bundle

    fake = _fake_trt_rejecting(monkeypatch)
    monkeypatch.setenv("MICROGESTURE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(trt_export, "gpu_name", lambda device_id=0: "NVIDIA A100-SXM4-40GB")
    monkeypatch.setattr(trt_export, "select_device",
                        lambda device_id: fake.calls.append(("select_device", device_id)))
    root = tmp_path / "bundle"
    stages = _linear_bundle(root)
    cache = trt_export.default_timing_cache("10.99.0", "NVIDIA A100-SXM4-40GB")
    assert cache.name == "timing-10.99.0-NVIDIA-A100-SXM4-40GB.cache"   # named by GPU too
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"OTHER-GPU")
    with pytest.warns(RuntimeWarning, match="rejected the timing cache"):
        entries = trt_export.build_engines(root, stages, precision="fp32", device_id=1)
    assert entries["head"]["engine"] == "head.fp32.engine"
    assert ("set_timing_cache", b"OTHER-GPU", False) in fake.calls
    assert ("set_timing_cache", b"", False) in fake.calls           # fell back to an empty one
    assert cache.read_bytes() == b"+"                                # and saved the new one
    # the device is selected before anything is built on it
    names = [c[0] for c in fake.calls]
    assert ("select_device", 1) in fake.calls
    assert names.index("select_device") < names.index("create_network")


# --------------------------------------------------------------------------- INT8 for TensorRT
def test_int8_for_tensorrt_is_signed_symmetric_and_checked(tmp_path):
    """ONNX Runtime's default static QDQ (uint8, asymmetric activations) cannot build a
    TensorRT engine: refused by the zero-point check; quantized for TensorRT it passes."""
    pytest.importorskip("onnx")
    from onnx_graphs import stage_model

    from microgesture.export.quantize import quantize_static_stage
    from microgesture.export.tensorrt import check_qdq_int8

    src = tmp_path / "head.onnx"
    stage_model(src, {"x": (8,)}, {"y": (4,)})
    calibration = np.random.default_rng(0).uniform(0.2, 3.0, (8, 8)).astype(np.float32)
    cpu, trt = tmp_path / "head.int8.onnx", tmp_path / "head.int8-trt.onnx"
    assert quantize_static_stage(src, cpu, calibration, "x")["activations"] == "uint8"
    with pytest.raises(MicrogestureError, match="zero point.*for_tensorrt=True"):
        check_qdq_int8(cpu)
    info = quantize_static_stage(src, trt, calibration, "x", for_tensorrt=True)
    assert info["activations"] == "int8 symmetric"
    check_qdq_int8(trt)
    import onnx
    zeros = [onnx.numpy_helper.to_array(t) for t in onnx.load(str(trt)).graph.initializer
             if t.name.endswith("zero_point")]
    assert zeros and all(z.dtype == np.int8 and not z.any() for z in zeros)


# --------------------------------------------------------------------------- packaging
def test_the_gpu_extra_and_a_cpu_wheel_hiding_the_gpu_providers(linear_model, monkeypatch):
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    gpu = project["project"]["optional-dependencies"]["gpu"]
    assert any(r.startswith("onnxruntime-gpu") for r in gpu)
    assert "cuda-python>=12.6.1,<13" in gpu and backends.CUDA_PYTHON == "cuda-python>=12.6.1,<13"
    # both wheels installed (what `pip install .[gpu]` alone leaves): a clear way out
    monkeypatch.setattr(backends, "ort_distributions", lambda: ["onnxruntime", "onnxruntime-gpu"])
    if "cuda" in backends.available_devices():
        pytest.skip("this machine really has CUDA")
    with pytest.raises(MicrogestureError, match="both onnxruntime and onnxruntime-gpu are "
                                                "installed.*pip uninstall -y onnxruntime"):
        backends.OrtBackend(linear_model, device="cuda")


@pytest.fixture
def linear_model(tmp_path):
    from onnx_graphs import stage_model

    path = tmp_path / "linear.onnx"
    stage_model(path, {"x": (4,)}, {"y": (3,)})
    return path
