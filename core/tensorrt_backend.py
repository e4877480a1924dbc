"""The TensorRT half of the inference backends (:mod:`core.backends`): engine files, GPU
device memory and :class:`TensorRTBackend`, which runs an engine built by ``microgesture
export --formats engine``. ``tensorrt`` and ``cuda-python`` (or torch, for device buffers)
are imported inside the functions that need them, so this module imports without them.

TensorRT engine files (``<stage>.<precision>.engine``) carry their own metadata
as a length-prefixed JSON header before the serialized engine::

    4 bytes   little-endian unsigned length L of the header
    L bytes   UTF-8 JSON object: {"format": "microgesture-engine", "header_version": 1,
              "engine_sha256": ..., "engine_bytes": ..., "stage": ..., "precision": ...,
              "tensorrt": "10.x", "gpu": ..., "inputs": ..., "outputs": ..., "profiles": ...}
    rest      the engine exactly as ``builder.build_serialized_network`` returned it

:func:`write_engine_file` and :func:`read_engine_file` read and write it without
tensorrt, so the exporter and the runtime share one definition.
"""

from __future__ import annotations

import hashlib
import json
import struct
import threading
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from microgesture.core.backends import _BackendBase, tensor_spec, validate_feeds
from microgesture.core.errors import MicrogestureError
from microgesture.core.paths import atomic_write

CUDA_PYTHON = "cuda-python>=12.6.1,<13"
"""The cuda-python this runtime supports (CUDA 12 drivers): ``cuda.bindings`` appeared in
12.6.1; 13.x needs a CUDA 13 driver (its cudaSetDevice fails on a CUDA 12 one)."""

ENGINE_FORMAT = "microgesture-engine"
ENGINE_HEADER_VERSION = 1
_MAX_HEADER = 16 << 20


# --------------------------------------------------------------------------- engine files
def write_engine_file(path: str | Path, metadata: Mapping[str, Any], engine_bytes: bytes) -> Path:
    """Write ``metadata`` as a length-prefixed JSON header, then ``engine_bytes``.

    Adds ``format``, ``header_version`` and the engine's size and sha256, so a
    truncated or damaged engine is refused on reading. Written atomically.
    """
    path = Path(path)
    engine_bytes = bytes(engine_bytes)
    if not engine_bytes:
        raise MicrogestureError(f"refusing to write {path}: the engine is empty (the TensorRT "
                                "build failed)")
    header = {"format": ENGINE_FORMAT, "header_version": ENGINE_HEADER_VERSION, **metadata,
              "engine_bytes": len(engine_bytes),
              "engine_sha256": hashlib.sha256(engine_bytes).hexdigest()}
    try:
        blob = json.dumps(header, sort_keys=True).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise MicrogestureError(f"engine metadata for {path} is not JSON-serialisable: {exc}") \
            from exc
    if len(blob) > _MAX_HEADER:
        raise MicrogestureError(f"engine metadata for {path} is {len(blob)} bytes; the limit is "
                                f"{_MAX_HEADER}")
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<I", len(blob)))
            f.write(blob)
            f.write(engine_bytes)

    return atomic_write(path, write)


def read_engine_file(path: str | Path) -> tuple[dict[str, Any], bytes]:
    """``(metadata, engine_bytes)`` of an engine file written by :func:`write_engine_file`;
    refuses a file without our header, a damaged header and a damaged engine."""
    path = Path(path)
    if not path.is_file():
        raise MicrogestureError(f"TensorRT engine file {path} does not exist")
    data = path.read_bytes()
    rebuild = "rebuild it with microgesture export --formats engine on the GPU machine"
    if len(data) < 4:
        raise MicrogestureError(f"{path} is too short ({len(data)} bytes) to be a microgesture "
                                f"engine file; {rebuild}")
    (length,) = struct.unpack("<I", data[:4])
    if length == 0 or length > min(_MAX_HEADER, len(data) - 4):
        raise MicrogestureError(
            f"{path} has no valid microgesture engine header (its length field says {length} "
            f"bytes in a {len(data)}-byte file): it is damaged, or a bare TensorRT plan (from "
            f"trtexec) rather than one written by microgesture; {rebuild}")
    try:
        metadata = json.loads(data[4:4 + length].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MicrogestureError(f"{path}: the engine header is not valid JSON ({exc}); the file "
                                f"is damaged or not a microgesture engine; {rebuild}") from exc
    if not isinstance(metadata, dict) or metadata.get("format") != ENGINE_FORMAT:
        raise MicrogestureError(f"{path}: the header is not a microgesture engine header (format "
                                f"is not {ENGINE_FORMAT!r}); {rebuild}")
    version = metadata.get("header_version")
    if version != ENGINE_HEADER_VERSION:
        raise MicrogestureError(f"{path} has engine header version {version!r}; this "
                                f"microgesture reads version {ENGINE_HEADER_VERSION}; {rebuild}")
    engine = data[4 + length:]
    if len(engine) != metadata.get("engine_bytes") or \
            hashlib.sha256(engine).hexdigest() != metadata.get("engine_sha256"):
        raise MicrogestureError(f"{path}: the engine after the header does not match the size "
                                f"and checksum the header records (truncated or damaged); "
                                f"{rebuild}")
    return metadata, engine


# --------------------------------------------------------------------------- TensorRT
def _tensorrt():
    try:
        import tensorrt
    except ImportError as exc:
        raise MicrogestureError(
            "TensorRT is not installed: pip install tensorrt (from NVIDIA's index) on a machine "
            "with an NVIDIA GPU, or run the bundle's ONNX graphs instead (precision fp32/int8/"
            "fp16)") from exc
    return tensorrt


class _CudaPythonMemory:
    """Device buffers and a stream through cuda-python (``cuda.bindings.runtime``)."""

    kind = "cuda-python"

    def __init__(self, device_id: int):
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6.1
        self.cudart, self.device_id = cudart, device_id
        self.use_device()
        self.stream = self._check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._buffers: list[int] = []

    def use_device(self) -> None:
        """cudaSetDevice is per thread: called in every thread that runs the engine."""
        self._check(self.cudart.cudaSetDevice(self.device_id), "cudaSetDevice")

    def _check(self, result, what: str):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if err != self.cudart.cudaError_t.cudaSuccess:
            _, text = self.cudart.cudaGetErrorString(err)
            raise MicrogestureError(f"CUDA {what} failed: {text.decode() if text else err}")
        return rest[0] if len(rest) == 1 else rest

    @property
    def stream_handle(self) -> int:
        return int(self.stream)

    def alloc(self, nbytes: int) -> int:
        ptr = int(self._check(self.cudart.cudaMalloc(max(nbytes, 1)), "cudaMalloc"))
        self._buffers.append(ptr)
        return ptr

    def h2d(self, ptr: int, array: np.ndarray) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self.cudart.cudaMemcpyAsync(ptr, array.ctypes.data, array.nbytes, kind,
                                                self.stream), "cudaMemcpyAsync")

    def d2h(self, array: np.ndarray, ptr: int) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self.cudart.cudaMemcpyAsync(array.ctypes.data, ptr, array.nbytes, kind,
                                                self.stream), "cudaMemcpyAsync")

    def sync(self) -> None:
        self._check(self.cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    def close(self) -> None:
        for ptr in self._buffers:
            self.cudart.cudaFree(ptr)
        self._buffers = []
        if self.stream is not None:
            self.cudart.cudaStreamDestroy(self.stream)
            self.stream = None


class _TorchMemory:
    """The same through torch CUDA tensors, for machines with torch but not cuda-python."""

    kind = "torch"

    def __init__(self, device_id: int):
        import torch
        if not torch.cuda.is_available():
            raise MicrogestureError("torch sees no CUDA device; TensorRT engines need an "
                                    "NVIDIA GPU")
        self.torch = torch
        self.device = torch.device("cuda", device_id)
        self.use_device()
        self.stream = torch.cuda.Stream(device=self.device)
        self._buffers: dict[int, Any] = {}

    def use_device(self) -> None:
        """torch's current device is per thread too: set it in every thread that runs."""
        self.torch.cuda.set_device(self.device)

    @property
    def stream_handle(self) -> int:
        return int(self.stream.cuda_stream)

    def alloc(self, nbytes: int) -> int:
        tensor = self.torch.empty(max(nbytes, 1), dtype=self.torch.uint8, device=self.device)
        self._buffers[tensor.data_ptr()] = tensor
        return tensor.data_ptr()

    def h2d(self, ptr: int, array: np.ndarray) -> None:
        src = self.torch.from_numpy(array.reshape(-1).view(np.uint8))
        with self.torch.cuda.stream(self.stream):
            self._buffers[ptr][:array.nbytes].copy_(src)

    def d2h(self, array: np.ndarray, ptr: int) -> None:
        dst = self.torch.from_numpy(array.reshape(-1).view(np.uint8))
        with self.torch.cuda.stream(self.stream):
            dst.copy_(self._buffers[ptr][:array.nbytes])

    def sync(self) -> None:
        self.stream.synchronize()

    def close(self) -> None:
        self._buffers = {}


def _device_memory(device_id: int, allocator: str):
    """cuda-python if importable (``pip install cuda-python``), else torch CUDA tensors."""
    if allocator not in ("auto", "cuda-python", "torch"):
        raise MicrogestureError(f"allocator must be 'auto', 'cuda-python' or 'torch', got "
                                f"{allocator!r}")
    if allocator in ("auto", "cuda-python"):
        try:
            return _CudaPythonMemory(device_id)
        except ImportError:  # no cuda-python, or one older than 12.6.1 (no cuda.bindings)
            if allocator == "cuda-python":
                raise MicrogestureError(f"cuda-python with cuda.bindings is not installed: pip "
                                        f"install '{CUDA_PYTHON}'") from None
        except MicrogestureError as exc:  # e.g. cuda-python 13 on a CUDA 12 driver
            if allocator == "cuda-python":
                raise
            warnings.warn(f"{exc}: cuda-python ({CUDA_PYTHON} for CUDA 12 drivers) cannot drive "
                          "this GPU; using torch CUDA buffers instead", RuntimeWarning,
                          stacklevel=3)
    try:
        return _TorchMemory(device_id)
    except ImportError as exc:
        raise MicrogestureError("TensorRT engines need device memory from cuda-python or torch: "
                                "pip install cuda-python") from exc


def select_device(device_id: int = 0) -> None:
    """Make ``device_id`` the current CUDA device of the calling thread (cuda-python's
    cudaSetDevice, else torch); TensorRT builds and runs on the current device."""
    try:
        from cuda.bindings import runtime as cudart
        err, *_ = cudart.cudaSetDevice(device_id)
        if err == cudart.cudaError_t.cudaSuccess:
            return
    except ImportError:
        pass
    try:
        import torch
        if torch.cuda.is_available():
            torch.cuda.set_device(device_id)
            return
    except ImportError:
        pass
    if device_id != 0:
        raise MicrogestureError(f"cannot select CUDA device {device_id}: install "
                                f"'{CUDA_PYTHON}' (or torch with CUDA), or use device 0")


def gpu_name(device_id: int = 0) -> str:
    """The CUDA device's name through cuda-python or torch, or ``"unknown"``."""
    try:
        from cuda.bindings import runtime as cudart
        err, props = cudart.cudaGetDeviceProperties(device_id)
        if err == cudart.cudaError_t.cudaSuccess:
            name = props.name
            return (name.decode() if isinstance(name, bytes) else str(name)).rstrip("\x00")
    except ImportError:
        pass
    try:
        import torch
        if torch.cuda.is_available():
            return torch.cuda.get_device_name(device_id)
    except ImportError:
        pass
    return "unknown"


class TensorRTBackend(_BackendBase):
    """A TensorRT engine file with our header (see :func:`read_engine_file`).

    Deserialises with ``tensorrt.Runtime``; allocates one device buffer per input
    and output, sized for the engine profile's largest shapes, with cuda-python's
    ``cuda.bindings.runtime`` (or, when it is missing, torch CUDA tensors:
    ``allocator="torch"``); per call sets every input's shape (dynamic batch),
    copies in, runs ``execute_async_v3`` on its own stream and copies out. Calls
    from several threads take turns (one execution context, one set of buffers).
    """

    def __init__(self, engine_path: str | Path, *, device_id: int = 0, cast: bool = False,
                 allocator: str = "auto", name: str | None = None):
        self.path = Path(engine_path)
        self.metadata, engine_bytes = read_engine_file(self.path)
        self.name = name or self.metadata.get("stage") or self.path.stem
        self.cast = cast
        self._memory = None
        self._context = None
        self._lock = threading.Lock()
        trt = _tensorrt()
        self.trt = trt
        built = self.metadata.get("tensorrt")
        if built and built != trt.__version__:
            raise MicrogestureError(
                f"{self.path} was built with TensorRT {built}; this machine has {trt.__version__} "
                "and TensorRT engines only load in the version that built them: rebuild it here "
                "with microgesture export --formats engine")
        self._memory = _device_memory(device_id, allocator)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if self._engine is None:
            self.close()
            raise MicrogestureError(
                f"TensorRT could not deserialise {self.path} (built on {self.metadata.get('gpu')} "
                f"with TensorRT {built}); engines are specific to a GPU model and TensorRT "
                "version: rebuild it on this machine with microgesture export --formats engine")
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        is_input = {n: self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        dtypes = {n: np.dtype(trt.nptype(self._engine.get_tensor_dtype(n))) for n in names}
        declared = {t["name"]: t for t in self.metadata.get("inputs", []) +
                    self.metadata.get("outputs", []) if isinstance(t, dict) and "name" in t}

        def spec(n):
            shape = list(self._engine.get_tensor_shape(n))
            labels = declared.get(n, {}).get("shape", shape)
            return tensor_spec(n, [labels[i] if d < 0 and i < len(labels) else d
                                   for i, d in enumerate(shape)], dtypes[n].name)

        self._inputs = tuple(spec(n) for n in names if is_input[n])
        self._outputs = tuple(spec(n) for n in names if not is_input[n])
        # profile 0's largest shapes size the buffers
        self._max_shapes = {s.name: tuple(self._engine.get_tensor_profile_shape(s.name, 0)[2])
                            for s in self._inputs}
        for n, shape in self._max_shapes.items():
            self._context.set_input_shape(n, shape)
        self._host_dtypes = dtypes
        self._buffers = {}
        for s in self._inputs + self._outputs:
            shape = self._max_shapes.get(s.name) or tuple(self._context.get_tensor_shape(s.name))
            nbytes = int(np.prod(shape)) * dtypes[s.name].itemsize
            self._buffers[s.name] = self._memory.alloc(nbytes)
            self._context.set_tensor_address(s.name, self._buffers[s.name])
        self._providers = (f"TensorRT {trt.__version__} on {gpu_name(device_id)} "
                           f"({self._memory.kind} buffers)",)

    @property
    def providers(self) -> tuple[str, ...]:
        return self._providers

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = validate_feeds(self._inputs, feeds, cast=self.cast, where=self.name)
        with self._lock:
            if self._context is None:
                raise MicrogestureError(f"backend {self.name!r} is closed")
            return self._run(feeds)

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._memory.use_device()  # run() comes from worker threads: select our GPU in this one
        for name, array in feeds.items():
            top = self._max_shapes[name]
            if any(a > b for a, b in zip(array.shape, top)):
                raise MicrogestureError(
                    f"{self.name}: input {name!r} has shape {array.shape}, beyond the engine's "
                    f"largest profile shape {top}: run smaller batches (microgesture export "
                    "--formats engine builds for up to 8), or rebuild the engine with "
                    "export.tensorrt.build_engines(..., max_batch=N)")
            if not self._context.set_input_shape(name, array.shape):
                raise MicrogestureError(f"{self.name}: TensorRT refused shape {array.shape} for "
                                        f"input {name!r} (profile max {top})")
            self._memory.h2d(self._buffers[name], array)
        if not self._context.execute_async_v3(self._memory.stream_handle):
            raise MicrogestureError(f"{self.name}: TensorRT execute_async_v3 failed (see the "
                                    "TensorRT log above)")
        outputs = {}
        for spec in self._outputs:
            out = np.empty(tuple(self._context.get_tensor_shape(spec.name)),
                           self._host_dtypes[spec.name])
            self._memory.d2h(out, self._buffers[spec.name])
            outputs[spec.name] = out
        self._memory.sync()
        return outputs

    def close(self) -> None:
        with self._lock:
            self._context = None
            self._engine = None
            if self._memory is not None:
                self._memory.close()
                self._memory = None
