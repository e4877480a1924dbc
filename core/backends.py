"""Inference backends: one small interface over the engines that run a bundle's stages.

A :class:`Backend` takes named numpy arrays and returns named numpy arrays. Two
implementations:

- :class:`OrtBackend`: an ONNX Runtime session on the CPU, or on an NVIDIA GPU
  through ONNX Runtime's CUDA or TensorRT execution provider (needs
  ``onnxruntime-gpu``, which replaces ``onnxruntime``).
- :class:`TensorRTBackend`: a TensorRT engine file written by
  ``microgesture export --formats engine`` (needs ``tensorrt`` and an NVIDIA GPU).

:func:`open_stage` opens one stage of a bundle at a precision on a device;
:func:`available_devices` says which devices this machine can really run.

Nothing here needs torch: the streaming runtime imports only numpy and
onnxruntime; tensorrt and cuda-python are imported inside the functions that
need them.

What actually runs a session is reported, never assumed: ``onnxruntime-gpu``
lists the CUDA and TensorRT providers even when their libraries are missing and
then silently runs on the CPU, so :class:`OrtBackend` reads
``session.get_providers()`` after creating the session and refuses (or, with
``allow_fallback=True``, warns) when the provider asked for is not the one that
runs.

The TensorRT half (engine files, device memory, :class:`TensorRTBackend`) lives in
:mod:`core.tensorrt_backend`; its names can be imported from here too.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from microgesture.core.errors import MicrogestureError, UnknownNameError
from microgesture.core.paths import cache_dir as cache_dir_of

DEVICES = ("cpu", "cuda", "tensorrt")
PRECISIONS = ("fp32", "int8", "fp16", "engine")
"""Keys of a stage's ``files`` table: ONNX graphs (fp32, int8, fp16) and a TensorRT engine."""

FP16_DISABLED_OPTIMIZERS = ("NchwcTransformer",)
"""ONNX Runtime optimisers :func:`open_stage` turns off for FP16 graphs: onnxruntime 1.31's
CPU provider segfaults in its NCHWc layout pass on some FP16 transformer graphs (the tiny
CLIP-MG head; a ViT with FP16 LayerNorms) while building the session. FP16 graphs are
meant for GPUs, so the CPU loses nothing that matters."""

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
             "tensorrt": "TensorrtExecutionProvider"}

_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16",
               "tensor(double)": "float64", "tensor(bfloat16)": "bfloat16",
               "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int16)": "int16",
               "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(bool)": "bool"}

# A one-node ONNX model (Relu on a float[1]), serialized with onnx.helper (opset 13, IR 7):
# enough to ask a provider whether it really constructs a session, without the onnx package.
_PROBE_MODEL = (b'\x08\x07\x12\x0cmicrogesture:7\n\x0c\n\x01x\x12\x01y"\x04Relu\x12\x05probeZ\x0f'
                b'\n\x01x\x12\n\n\x08\x08\x01\x12\x04\n\x02\x08\x01b\x0f\n\x01y\x12\n\n\x08\x08'
                b'\x01\x12\x04\n\x02\x08\x01B\x04\n\x00\x10\r')


# --------------------------------------------------------------------------- interface
@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a backend: ``shape`` has None for a dynamic axis;
    ``dims`` names every axis (the symbolic name of a dynamic one, e.g. ``batch``, or
    ``?`` when it has none)."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str
    dims: tuple[str, ...] = ()

    def describe(self) -> str:
        """The shape as a user reads it: ``(batch, 3, 224, 224)``."""
        labels = self.dims or tuple("?" if d is None else str(d) for d in self.shape)
        return "(" + ", ".join(labels) + ("," if len(labels) == 1 else "") + ")"


def tensor_spec(name: str, shape, dtype: str) -> TensorSpec:
    """A :class:`TensorSpec` from a shape whose dynamic axes are names, None or -1
    (as ONNX Runtime, TensorRT and bundle manifests write them)."""
    dims, fixed = [], []
    for i, d in enumerate(shape):
        if isinstance(d, (int, np.integer)) and d >= 0:
            fixed.append(int(d))
            dims.append(str(int(d)))
        else:
            fixed.append(None)
            dims.append(d if isinstance(d, str) and d else "?")  # "?": a dynamic axis, unnamed
    return TensorSpec(name, tuple(fixed), str(dtype), tuple(dims))


@runtime_checkable
class Backend(Protocol):
    """An inference engine behind one small interface."""

    name: str

    @property
    def inputs(self) -> tuple[TensorSpec, ...]: ...

    @property
    def outputs(self) -> tuple[TensorSpec, ...]: ...

    @property
    def providers(self) -> tuple[str, ...]:
        """What ACTUALLY runs it: ``("CPUExecutionProvider",)``, ``("TensorRT 10.x on <gpu>",)``."""
        ...

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


class _BackendBase:
    name: str
    _inputs: tuple[TensorSpec, ...] = ()
    _outputs: tuple[TensorSpec, ...] = ()

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self._outputs

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, providers={list(self.providers)})"


def validate_feeds(specs: tuple[TensorSpec, ...], feeds: Mapping[str, Any], *, cast: bool = False,
                   where: str = "model") -> dict[str, np.ndarray]:
    """Check ``feeds`` against the input ``specs`` and return contiguous arrays.

    Refuses missing and unknown names, wrong dtypes (floating arrays are cast to
    the expected floating dtype only with ``cast=True``), wrong ranks, wrong fixed
    axes, and one symbolic axis (``batch``) given different sizes in two inputs.
    """
    if not isinstance(feeds, Mapping):
        raise MicrogestureError(f"{where}: feeds must be a dict of input name -> array, got "
                                f"{type(feeds).__name__}")
    expected = {s.name: s for s in specs}
    missing = [n for n in expected if n not in feeds]
    extra = [n for n in feeds if n not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing input(s) {', '.join(map(repr, missing))}")
        if extra:
            parts.append(f"unknown input(s) {', '.join(map(repr, extra))}")
        wanted = ", ".join(f"{s.name} {s.describe()} {s.dtype}" for s in specs)
        raise MicrogestureError(f"{where}: {' and '.join(parts)}; it takes: {wanted}")
    out: dict[str, np.ndarray] = {}
    sizes: dict[str, tuple[int, str]] = {}
    for spec in specs:
        value = feeds[spec.name]
        array = value if isinstance(value, np.ndarray) else np.asarray(value)
        if array.dtype != np.dtype(spec.dtype):
            floating = (np.issubdtype(array.dtype, np.floating)
                        and np.issubdtype(np.dtype(spec.dtype), np.floating))
            if not (cast and floating):
                hint = (f"convert it with .astype(np.{spec.dtype})"
                        + (" or open the backend with cast=True" if floating else ""))
                raise MicrogestureError(f"{where}: input {spec.name!r} has dtype {array.dtype}, "
                                        f"expected {spec.dtype}: {hint}")
            array = array.astype(spec.dtype)
        if array.ndim != len(spec.shape):
            raise MicrogestureError(
                f"{where}: input {spec.name!r} has shape {tuple(array.shape)} (rank {array.ndim}), "
                f"expected {spec.describe()} (rank {len(spec.shape)})")
        for axis, (size, want) in enumerate(zip(array.shape, spec.shape)):
            label = spec.dims[axis] if spec.dims else "?"
            if want is not None and size != want:
                raise MicrogestureError(
                    f"{where}: input {spec.name!r} has shape {tuple(array.shape)}, expected "
                    f"{spec.describe()}: axis {axis} is {size}, not {want}")
            if want is None and label != "?":  # a named axis must agree across inputs
                if label in sizes and sizes[label][0] != size:
                    other = sizes[label][1]
                    raise MicrogestureError(
                        f"{where}: axis {label!r} is {size} in input {spec.name!r} but "
                        f"{sizes[label][0]} in input {other!r}; every input must agree on it")
                sizes.setdefault(label, (size, spec.name))
        out[spec.name] = np.ascontiguousarray(array)
    return out


# --------------------------------------------------------------------------- ONNX Runtime
def _ort():
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - a runtime dependency
        raise MicrogestureError("onnxruntime is not installed: pip install onnxruntime (CPU) or "
                                "onnxruntime-gpu (NVIDIA GPU)") from exc
    return onnxruntime


def session_options(threads: int = 1, spinning: bool = False, optimization: str = "all",
                    log_severity: int | None = None):
    """The ``SessionOptions`` of every ONNX Runtime session we open: ``threads`` intra-op
    threads (0: all cores), one inter-op thread, sequential execution, spinning on or off,
    the graph optimisation level (``all``, ``extended``, ``basic`` or ``disabled``) and,
    when given, the log severity (3: errors only, 4: fatal only)."""
    ort = _ort()
    levels = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}
    if optimization not in levels:
        raise UnknownNameError("optimization level", optimization, levels)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = levels[optimization]
    spin = "1" if spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spin)
    options.add_session_config_entry("session.inter_op.allow_spinning", spin)
    if log_severity is not None:
        options.log_severity_level = log_severity
    return options


def cpu_session(model: str | Path | bytes, threads: int = 1, disabled_optimizers: tuple[str, ...] = ()):
    """A plain CPU ONNX Runtime session on ``model`` (a path or serialized bytes):
    ``threads`` intra-op threads, no spinning, warnings only; ``disabled_optimizers``:
    ONNX Runtime optimisers to skip (:data:`FP16_DISABLED_OPTIMIZERS`). For checks and
    measurements; streaming opens its stages as :class:`OrtBackend`."""
    ort = _ort()
    options = session_options(threads, log_severity=3)
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                providers=["CPUExecutionProvider"], disabled_optimizers=list(disabled_optimizers))


def provider_list(device: str, *, device_id: int = 0, fp16: bool = False,
                  cache_dir: str | Path | None = None, workspace_gb: float = 4.0,
                  trt_profiles: Mapping[str, tuple] | None = None,
                  provider_options: Mapping[str, Mapping[str, Any]] | None = None,
                  cache_key: str | None = None) -> list:
    """ONNX Runtime's ``providers=`` list for ``device``, best first, with options.

    TensorRT: engine and timing caches under ``cache_dir`` (default
    ``~/.cache/microgesture/ort-tensorrt``, see :func:`core.paths.cache_dir`) so the second
    start skips the build.
    ONNX Runtime names cached engines by file and tensor names, not weights, so the
    engines go into a subfolder named by ``cache_key`` (the model file's sha256,
    which :class:`OrtBackend` passes): a re-exported bundle never runs another
    bundle's engine. The timing cache (keyed by layer shapes) stays shared.
    ``fp16=True`` sets TensorRT's (weakly typed) FP16 flag, which is known to
    wreck CLIP ViT accuracy; prefer the bundle's fp16 ONNX graph
    (``precision="fp16"``), which ONNX Runtime builds as a strongly typed network
    when the flag is off. ``trt_profiles`` (input name -> (min, opt, max) shapes,
    for every dynamic input) become TensorRT's explicit optimisation profile, so one
    engine covers every batch size instead of a rebuild at each larger one.
    ``provider_options`` (provider name -> options) are merged over ours.
    """
    if device not in DEVICES:
        raise UnknownNameError("device", device, DEVICES)
    extra = {k: dict(v) for k, v in (provider_options or {}).items()}
    cuda = ("CUDAExecutionProvider", {"device_id": str(device_id),
                                      "cudnn_conv_algo_search": "HEURISTIC",
                                      **extra.get("CUDAExecutionProvider", {})})
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        return [cuda, "CPUExecutionProvider"]
    cache = Path(cache_dir) if cache_dir else cache_dir_of("ort-tensorrt")
    trt = ("TensorrtExecutionProvider", {
        "device_id": str(device_id),
        "trt_fp16_enable": "True" if fp16 else "False",
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(cache / "engines" / cache_key if cache_key else cache),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(cache),
        "trt_max_workspace_size": str(int(workspace_gb * (1 << 30))),
        **_profile_options(trt_profiles),
        **extra.get("TensorrtExecutionProvider", {}),
    })
    return [trt, cuda, "CPUExecutionProvider"]


def _profile_options(profiles: Mapping[str, tuple] | None) -> dict[str, str]:
    """``trt_profile_{min,opt,max}_shapes`` as ``"frames:1x3x224x224,joints:..."``."""
    if not profiles:
        return {}
    keys = ("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes")
    return {key: ",".join(f"{name}:{'x'.join(str(int(d)) for d in shapes[k])}"
                          for name, shapes in profiles.items())
            for k, key in enumerate(keys)}


def batch_profiles(stage_manifest: Mapping[str, Any], max_batch: int = 8,
                   opt_batch: int = 1) -> dict[str, tuple] | None:
    """(min, opt, max) shapes per input of a manifest stage whose only dynamic axis is
    ``batch``; None when another axis is dynamic (ONNX Runtime then profiles by itself)."""
    profiles = {}
    for name, spec in stage_manifest.get("inputs", {}).items():
        shape = list(spec["shape"])
        if any(isinstance(d, str) and d != "batch" for d in shape):
            return None
        profiles[name] = tuple(tuple(b if d == "batch" else d for d in shape)
                               for b in (1, opt_batch, max_batch))
    return profiles or None


class OrtBackend(_BackendBase):
    """An ONNX Runtime session over one ONNX file.

    ``threads`` is the session's intra-op thread count (0: ONNX Runtime's
    default, all cores); ``spinning`` lets idle intra-op threads busy-wait (off
    by default: one thread per session with stages pipelined, and no spinning
    when the machine is shared, see DESIGN.md). ``optimization``: ONNX Runtime's
    graph optimisation level, ``all`` (default), ``extended``, ``basic`` or
    ``disabled``; ``disabled_optimizers`` names single ONNX Runtime optimisers to
    skip (see :data:`FP16_DISABLED_OPTIMIZERS`: onnxruntime 1.31 can crash on FP16
    graphs at level ``all``; :func:`open_stage` skips them for ``fp16``).

    ``device`` is ``cpu``, ``cuda`` or ``tensorrt``. When the provider asked for
    is not the one that runs the session (not installed, or its libraries
    missing), this raises :class:`MicrogestureError`; with ``allow_fallback=True``
    it warns and runs on what it got (see :attr:`providers`).
    """

    def __init__(self, path: str | Path, device: str = "cpu", threads: int = 1,
                 spinning: bool = False, *, allow_fallback: bool = False, cast: bool = False,
                 device_id: int = 0, fp16: bool = False, cache_dir: str | Path | None = None,
                 workspace_gb: float = 4.0, trt_profiles: Mapping[str, tuple] | None = None,
                 provider_options: Mapping[str, Mapping[str, Any]] | None = None,
                 optimization: str = "all", disabled_optimizers: tuple[str, ...] = (),
                 name: str | None = None):
        ort = _ort()
        path = Path(path)
        self.path, self.device, self.cast = path, device, cast
        self.name = name or path.stem
        self._session = None
        if not path.is_file():
            raise MicrogestureError(f"ONNX model {path} does not exist")
        if not isinstance(threads, int) or threads < 0:
            raise MicrogestureError(f"threads must be a whole number >= 0 (0: all cores), "
                                    f"got {threads!r}")
        options = session_options(threads, spinning, optimization)
        providers = provider_list(device, device_id=device_id, fp16=fp16, cache_dir=cache_dir,
                                  workspace_gb=workspace_gb, trt_profiles=trt_profiles,
                                  provider_options=provider_options,
                                  cache_key=engine_cache_key(path) if device == "tensorrt" else None)
        wanted = PROVIDERS[device]
        available = ort.get_available_providers()
        if wanted not in available:
            self._missing_provider(ort, wanted, available, allow_fallback)
            providers = ["CPUExecutionProvider"]
        else:
            # keep only what this onnxruntime knows, so it does not warn about the rest
            providers = [p for p in providers
                         if (p[0] if isinstance(p, tuple) else p) in available]
            if device == "tensorrt":
                Path(providers[0][1]["trt_engine_cache_path"]).mkdir(parents=True, exist_ok=True)
        try:
            self._session = ort.InferenceSession(str(path), options, providers=providers,
                                                 disabled_optimizers=list(disabled_optimizers))
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise MicrogestureError(f"ONNX Runtime cannot load {path}: {exc}") from exc
        got = tuple(self._session.get_providers())
        if got[0] != wanted and wanted in available:
            msg = (f"{path.name}: asked for {wanted} but ONNX Runtime runs {got[0]} (its "
                   f"libraries are missing or failed to load: check CUDA 12, cuDNN 9"
                   + (" and TensorRT" if device == "tensorrt" else "")
                   + " are installed and on the library path, and ONNX Runtime's log above)")
            if not allow_fallback:
                self.close()
                raise MicrogestureError(msg + "; pass allow_fallback=True to run on the CPU anyway")
            warnings.warn(msg + "; running on the CPU", RuntimeWarning, stacklevel=2)
        self._providers = got
        self._inputs = tuple(tensor_spec(i.name, i.shape, _ORT_DTYPES.get(i.type, i.type))
                             for i in self._session.get_inputs())
        self._outputs = tuple(tensor_spec(o.name, o.shape, _ORT_DTYPES.get(o.type, o.type))
                              for o in self._session.get_outputs())
        self._output_names = [o.name for o in self._outputs]

    @staticmethod
    def _missing_provider(ort, wanted: str, available: list[str], allow_fallback: bool) -> None:
        msg = (f"this onnxruntime ({ort.__version__}) has no {wanted} (it has "
               f"{', '.join(available)}): install onnxruntime-gpu in place of onnxruntime "
               f"({GPU_INSTALL}) on a machine with an NVIDIA GPU, CUDA 12 and cuDNN 9")
        both = ort_distributions()
        if "onnxruntime" in both and len(both) > 1:
            msg = (f"both {' and '.join(both)} are installed: they share the onnxruntime "
                   f"package and the CPU wheel's files hide the GPU providers ({wanted} is "
                   f"missing); keep only the GPU one: {GPU_INSTALL}")
        if not allow_fallback:
            raise MicrogestureError(msg + ", or use device='cpu'")
        warnings.warn(msg + "; running on the CPU", RuntimeWarning, stacklevel=3)

    @property
    def session(self):
        """The ONNX Runtime ``InferenceSession`` (for options and profiling)."""
        if self._session is None:
            raise MicrogestureError(f"backend {self.name!r} is closed")
        return self._session

    @property
    def providers(self) -> tuple[str, ...]:
        return self._providers

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self.session
        feeds = validate_feeds(self._inputs, feeds, cast=self.cast, where=self.name)
        try:
            outputs = session.run(self._output_names, feeds)
        except Exception as exc:
            raise MicrogestureError(f"{self.name}: ONNX Runtime failed on inputs "
                                    f"{ {k: v.shape for k, v in feeds.items()} }: {exc}") from exc
        return dict(zip(self._output_names, outputs))

    def close(self) -> None:
        self._session = None


GPU_INSTALL = ("pip uninstall -y onnxruntime onnxruntime-gpu && pip install "
               "'onnxruntime-gpu>=1.17'")
"""How onnxruntime-gpu takes the place of onnxruntime (``pip install -e '.[gpu]'`` alone
keeps the CPU wheel, a base dependency, beside it)."""


def ort_distributions() -> list[str]:
    """The installed distributions that provide the ``onnxruntime`` package."""
    from importlib import metadata

    found = []
    for name in ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml"):
        try:
            metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


def engine_cache_key(path: str | Path) -> str:
    """The first 16 hex digits of the model file's sha256: names its TensorRT engine cache."""
    from microgesture.core.bundle import sha256_file
    return sha256_file(path)[:16]


# --------------------------------------------------------------------------- bundles
def open_stage(bundle_manifest: Mapping[str, Any] | str | Path, stage: str,
               precision: str = "fp32", device: str | None = None, threads: int = 1,
               **options) -> Backend:
    """A backend for ``stage`` of a bundle at ``precision`` on ``device``.

    ``bundle_manifest`` is :func:`core.bundle.read_manifest`'s result (or a bundle
    directory, read and checked here). ``precision`` picks the stage's file:
    ``fp32``/``int8``/``fp16`` ONNX graphs run with ONNX Runtime on ``device``
    (default ``cpu``); ``engine`` runs the TensorRT engine (on the GPU). On
    ``device="tensorrt"`` the stage's batch axis gets an explicit profile up to
    ``max_batch`` (default 8). Other keyword options go to :class:`OrtBackend` or
    :class:`TensorRTBackend`.
    """
    from microgesture.core.bundle import read_manifest, stage_file
    manifest = bundle_manifest if isinstance(bundle_manifest, Mapping) \
        else read_manifest(bundle_manifest)
    path = stage_file(manifest, stage, precision)
    declared = manifest["stages"][stage]
    if precision == "engine":
        if device not in (None, "cuda", "tensorrt"):
            raise MicrogestureError(f"a TensorRT engine runs on an NVIDIA GPU, not on {device!r}: "
                                    "use precision fp32, int8 or fp16 for the CPU")
        from microgesture.core.tensorrt_backend import TensorRTBackend

        backend: Backend = TensorRTBackend(path, name=stage, **options)
        built_for = backend.metadata.get("stage")
        if built_for not in (None, stage):
            backend.close()
            raise MicrogestureError(f"{path} holds stage {built_for!r}, not {stage!r}; "
                                    "re-export the bundle")
    else:
        max_batch = options.pop("max_batch", 8)
        if precision == "fp16":
            options.setdefault("disabled_optimizers", FP16_DISABLED_OPTIMIZERS)
        if device == "tensorrt" and "trt_profiles" not in options:
            options["trt_profiles"] = batch_profiles(declared, max_batch)
        backend = OrtBackend(path, device=device or "cpu", threads=threads, name=stage, **options)
    want = set(declared.get("inputs", {}))
    have = {s.name for s in backend.inputs}
    if want and want != have:
        backend.close()
        raise MicrogestureError(f"{path} takes inputs {sorted(have)} but the manifest declares "
                                f"{sorted(want)} for stage {stage!r}; re-export the bundle")
    return backend


@functools.lru_cache(maxsize=1)
def _probe_devices() -> tuple[str, ...]:
    ort = _ort()
    devices = ["cpu"]
    available = ort.get_available_providers()
    for device in ("cuda", "tensorrt"):
        if PROVIDERS[device] not in available:
            continue
        options = session_options(log_severity=4)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                no_cache = {"TensorrtExecutionProvider": {"trt_engine_cache_enable": "False",
                                                          "trt_timing_cache_enable": "False"}}
                session = ort.InferenceSession(_PROBE_MODEL, options, providers=provider_list(
                    device, provider_options=no_cache))
                session.run(None, {"x": np.ones(1, np.float32)})
        except Exception:
            continue
        if session.get_providers()[0] == PROVIDERS[device]:
            devices.append(device)
    return tuple(devices)


def available_devices(refresh: bool = False) -> list[str]:
    """The ``device`` values this machine can really run: ``cpu`` always; ``cuda`` and
    ``tensorrt`` only when their ONNX Runtime provider constructs a session that
    really uses it. Probed once per process (``refresh=True`` probes again)."""
    if refresh:
        _probe_devices.cache_clear()
    return list(_probe_devices())


_TENSORRT_NAMES = frozenset({
    "CUDA_PYTHON", "ENGINE_FORMAT", "ENGINE_HEADER_VERSION", "TensorRTBackend", "gpu_name",
    "read_engine_file", "select_device", "write_engine_file", "_CudaPythonMemory", "_TorchMemory",
    "_device_memory", "_tensorrt"})


def __getattr__(name: str):
    """The TensorRT half's names, from :mod:`core.tensorrt_backend` (imported on first use)."""
    if name in _TENSORRT_NAMES:
        from microgesture.core import tensorrt_backend
        return getattr(tensorrt_backend, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
