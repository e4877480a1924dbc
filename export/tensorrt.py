"""TensorRT engines for a bundle's stages, and the FP16 ONNX graphs they are built from.

One engine per stage, ``<stage>.<precision>.engine`` beside the stage's ONNX
file, written with :func:`microgesture.core.backends.write_engine_file` (a
length-prefixed JSON header before the serialized engine: precision, TensorRT
version, GPU name, the stage's inputs and outputs, the profile ranges).

How an engine is built (TensorRT 10 Python API):

- an explicit optimization profile with min/opt/max for EVERY dynamic axis
  (:func:`optimization_profiles`; the batch axis is the manifest's ``"batch"``);
- always a STRONGLY TYPED network (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``):
  every tensor's type comes from the ONNX graph itself. The plain FP16 builder
  flag lets TensorRT pick FP16 for any layer and is known to wreck CLIP ViT
  accuracy; for ``precision="fp16"`` the graph is first cast to FP16 by
  :func:`to_fp16_onnx`, which keeps LayerNorm, Softmax, the reductions and the
  residual additions in FP32 and the graph's inputs and outputs FP32;
- a timing cache file, read before and saved after every build, so the next
  build (of any bundle, same GPU and TensorRT) skips the tactic timing.

Everything here that does not need a GPU (profiles, the header, the FP16
conversion, the INT8 graph check) is a pure function tested on the CPU;
:func:`build_engines` itself needs ``tensorrt`` and an NVIDIA GPU.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from microgesture.core.backends import gpu_name, select_device, write_engine_file
from microgesture.core.bundle import sha256_file
from microgesture.core.errors import MicrogestureError
from microgesture.core.paths import atomic_write, cache_dir

ENGINE_PRECISIONS = ("fp16", "fp32", "int8")

DEFAULT_KEEP_FP32_OPS = ("LayerNormalization", "Softmax", "LogSoftmax", "ReduceMean", "Pow",
                         "Sqrt", "Reciprocal")
"""Ops :func:`to_fp16_onnx` keeps in FP32 by default: normalisation and softmax (and the
reductions, powers and roots a decomposed LayerNorm is made of). Residual additions are
kept FP32 too, by ``keep_residual_fp32``."""

# Ops whose float outputs are typed by an attribute, not by their inputs: left FP32.
_ALWAYS_FP32 = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                "EyeLike", "Multinomial", "Bernoulli"}
# Float inputs that must stay FP32 whatever the node's precision (op -> input indices).
_FP32_INPUTS = {"Resize": {1, 2}, "Upsample": {1}, "Dropout": {1}}
_DYNAMIC_INT8_OPS = {"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "QLinearConv",
                     "QLinearMatMul"}
_FP16_MAX = float(np.finfo(np.float16).max)

TENSORRT_MISSING = ("TensorRT is not installed: pip install tensorrt (from NVIDIA's index) on a "
                    "machine with an NVIDIA GPU")


def _onnx():
    try:
        import onnx
    except ImportError as exc:
        raise MicrogestureError("the onnx package is needed to convert graphs: pip install "
                                "'microgesture[train]' (or pip install onnx)") from exc
    return onnx


# --------------------------------------------------------------------------- profiles
def _check_range(what: str, lo, opt, hi) -> tuple[int, int, int]:
    values = (lo, opt, hi)
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        raise MicrogestureError(f"{what}: min/opt/max must be whole numbers, got {values}")
    if not 1 <= lo <= opt <= hi:
        raise MicrogestureError(f"{what}: need 1 <= min <= opt <= max, got min {lo}, opt {opt}, "
                                f"max {hi}")
    return int(lo), int(opt), int(hi)


def optimization_profiles(stage_manifest: Mapping[str, Any], min_batch: int = 1,
                          opt_batch: int = 1, max_batch: int = 8,
                          axes: Mapping[str, tuple[int, int, int]] | None = None,
                          ) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """Input name -> (min, opt, max) shapes for a stage, from its manifest shapes.

    A fixed axis (an int) is the same in all three; the ``"batch"`` axis gets
    ``min_batch``/``opt_batch``/``max_batch``; any other named dynamic axis needs a
    range in ``axes`` (``{"frames": (1, 8, 16)}``), else this refuses: TensorRT
    needs a range for every dynamic axis.
    """
    ranges = {"batch": _check_range("batch", min_batch, opt_batch, max_batch)}
    for name, value in (axes or {}).items():
        if not isinstance(value, (tuple, list)) or len(value) != 3:
            raise MicrogestureError(f"axis {name!r}: give its range as (min, opt, max), got "
                                    f"{value!r}")
        ranges[name] = _check_range(f"axis {name!r}", *value)
    inputs = stage_manifest.get("inputs")
    if not inputs:
        raise MicrogestureError("the stage declares no inputs; re-export the bundle")
    profiles = {}
    for name, spec in inputs.items():
        lo, opt, hi = [], [], []
        for axis, d in enumerate(spec["shape"]):
            if isinstance(d, int) and not isinstance(d, bool) and d >= 0:
                lo.append(d), opt.append(d), hi.append(d)
                continue
            if not isinstance(d, str) or d not in ranges:
                raise MicrogestureError(
                    f"input {name!r} axis {axis} is dynamic ({d!r}) and has no range: pass "
                    f"axes={{{str(d)!r}: (min, opt, max)}}")
            a, b, c = ranges[d]
            lo.append(a), opt.append(b), hi.append(c)
        profiles[name] = (tuple(lo), tuple(opt), tuple(hi))
    return profiles


def engine_header(stage: str, stage_manifest: Mapping[str, Any], precision: str,
                  profiles: Mapping[str, tuple], *, tensorrt_version: str, gpu: str,
                  source: str | None = None, source_sha256: str | None = None,
                  strongly_typed: bool = True, workspace_gb: float | None = None,
                  created: str | None = None) -> dict[str, Any]:
    """The JSON metadata written before an engine (see core.backends.write_engine_file)."""
    from microgesture import __version__

    def io(table):
        return [{"name": n, "shape": list(s["shape"]), "dtype": s.get("dtype", "float32")}
                for n, s in table.items()]

    return {
        "stage": stage,
        "role": stage_manifest.get("role"),
        "precision": precision,
        "strongly_typed": strongly_typed,
        "tensorrt": tensorrt_version,
        "gpu": gpu,
        "inputs": io(stage_manifest.get("inputs", {})),
        "outputs": io(stage_manifest.get("outputs", {})),
        "profiles": [{"input": n, "min": list(p[0]), "opt": list(p[1]), "max": list(p[2])}
                     for n, p in profiles.items()],
        "source": {"file": source, "sha256": source_sha256},
        "workspace_gb": workspace_gb,
        "microgesture": __version__,
        "created": created or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


# --------------------------------------------------------------------------- FP16 graphs
def _constants_to_initializers(graph, onnx) -> None:
    """Float ``Constant`` nodes become initializers, so one rule types every constant."""
    from onnx import TensorProto, numpy_helper
    keep = []
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and \
                len(node.attribute) == 1:
            attr = node.attribute[0]
            array = None
            if attr.name == "value" and attr.t.data_type == TensorProto.FLOAT:
                array = numpy_helper.to_array(attr.t)
            elif attr.name == "value_float":
                array = np.array(attr.f, np.float32)
            elif attr.name == "value_floats":
                array = np.array(list(attr.floats), np.float32)
            if array is not None:
                graph.initializer.append(numpy_helper.from_array(array, node.output[0]))
                continue
        keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)


def to_fp16_onnx(src: str | Path, dst: str | Path,
                 keep_fp32_ops: Iterable[str] = DEFAULT_KEEP_FP32_OPS, *,
                 keep_residual_fp32: bool = True, keep_io_types: bool = True) -> dict[str, int]:
    """Cast an FP32 ONNX graph to FP16 for a strongly typed TensorRT build.

    Nodes whose op is in ``keep_fp32_ops`` (and, with ``keep_residual_fp32``, every
    ``Add`` of two computed tensors: the residual stream of a transformer) stay
    FP32, as do nodes of other domains and nodes whose op cannot take FP16 at the
    graph's opset (per its ONNX schema); every other node computes in FP16. Casts
    are inserted where an FP16 tensor meets an FP32 node and back; float weights
    are stored once per precision that uses them (clipped to FP16's range);
    ``Cast(to=FLOAT)`` and ``ConstantOfShape`` in FP16 regions produce FP16. With
    ``keep_io_types`` the graph's inputs and outputs stay FP32, so the stage's
    interface does not change. Graphs with control flow (If/Loop/Scan) are
    refused. Returns counts: ``fp16_nodes``, ``fp32_nodes``, ``casts``, ``clipped``.

    On the CPU, open the result with ONNX Runtime's ``NchwcTransformer`` disabled
    (:data:`core.backends.FP16_DISABLED_OPTIMIZERS`; ``open_stage`` does): onnxruntime
    1.31 segfaults in it on some FP16 transformer graphs.
    """
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper
    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise MicrogestureError(f"ONNX model {src} does not exist")
    model = onnx.load(str(src))
    if model.functions:
        model = onnx.inliner.inline_local_functions(model)
    graph = model.graph
    for node in graph.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for a in node.attribute):
            raise MicrogestureError(f"{src}: node {node.name or node.op_type} ({node.op_type}) has "
                                    "a subgraph; to_fp16_onnx does not convert control flow")
    _constants_to_initializers(graph, onnx)
    del graph.value_info[:]
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception as exc:  # onnx raises InferenceError and others
        raise MicrogestureError(f"{src}: ONNX shape inference failed ({exc}); cannot type the "
                                "graph for FP16 conversion") from exc
    graph = model.graph
    types: dict[str, int] = {}
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
        types[vi.name] = vi.type.tensor_type.elem_type
    inits = {t.name: t for t in graph.initializer}
    for name, t in inits.items():
        types[name] = t.data_type
    keep = set(keep_fp32_ops)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 18)

    def is_float(name: str) -> bool:
        return bool(name) and types.get(name) == FLOAT

    def fp16_plan(node) -> set[int] | None:
        """None when the op's schema (at this opset) cannot take FP16 where the node has
        floats (IsInf before opset 20, ...); else the float inputs that must stay FP32
        (Resize's scales, ...)."""
        try:
            schema = onnx.defs.get_schema(node.op_type, opset, node.domain)
        except Exception:  # an op onnx does not know
            return None
        allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}
        out_params = {f.type_str for f in schema.outputs}
        fixed = set(_FP32_INPUTS.get(node.op_type, ()))
        for j, name in enumerate(node.input):
            if not is_float(name) or not schema.inputs or j in fixed:
                continue
            formal = schema.inputs[min(j, len(schema.inputs) - 1)]
            if "tensor(float16)" not in allowed.get(formal.type_str, {formal.type_str}):
                if formal.type_str in out_params:
                    return None
                fixed.add(j)
        for k, name in enumerate(node.output):
            if is_float(name) and schema.outputs:
                formal = schema.outputs[min(k, len(schema.outputs) - 1)]
                if "tensor(float16)" not in allowed.get(formal.type_str, {formal.type_str}):
                    return None
        return fixed

    def runs_fp32(node) -> bool:
        if node.domain not in ("", "ai.onnx") or node.op_type in keep or \
                node.op_type in _ALWAYS_FP32 or fp16_plan(node) is None:
            return True
        return (keep_residual_fp32 and node.op_type == "Add" and len(node.input) == 2
                and all(is_float(i) and i not in inits for i in node.input))

    consumed = {i for n in graph.node for i in n.input if i}
    for node in graph.node:
        for out in node.output:
            if out and (out in consumed or out in {o.name for o in graph.output}) and \
                    out not in types:
                raise MicrogestureError(f"{src}: shape inference left tensor {out!r} (output of "
                                        f"{node.op_type}) untyped; cannot convert to FP16")

    # Which precision produces each float tensor; graph outputs that would come out in the
    # wrong precision are renamed, and a final Cast writes the real output name.
    io_type = FLOAT if keep_io_types else HALF
    produced: dict[str, int] = {}
    for vi in graph.input:
        if is_float(vi.name) and vi.name not in inits:
            produced[vi.name] = io_type
            vi.type.tensor_type.elem_type = io_type
    # node positions, not id(): protobuf may hand out a new wrapper object on every access
    fp32_nodes = {k for k, n in enumerate(graph.node) if runs_fp32(n)}
    fixed32 = {k: fp16_plan(n) for k, n in enumerate(graph.node) if k not in fp32_nodes}
    for k, node in enumerate(graph.node):
        for out in node.output:
            if is_float(out):
                produced[out] = FLOAT if k in fp32_nodes else HALF
    output_names = {o.name for o in graph.output}
    final_cast: dict[str, str] = {}  # renamed internal tensor -> graph output name
    for node in graph.node:
        for k, out in enumerate(node.output):
            if out in output_names and is_float(out) and produced[out] != io_type:
                inner = f"{out}__{'fp16' if produced[out] == HALF else 'fp32'}"
                final_cast[inner] = out
                produced[inner], types[inner] = produced.pop(out), FLOAT
                node.output[k] = inner
                for other in graph.node:
                    for j, name in enumerate(other.input):
                        if name == out:
                            other.input[j] = inner
    for vi in graph.output:
        if is_float(vi.name) or vi.name in final_cast.values():
            vi.type.tensor_type.elem_type = io_type

    # What each consumer needs.
    stats = {"fp16_nodes": 0, "fp32_nodes": 0, "casts": 0, "clipped": 0}
    need: dict[tuple[str, int], str] = {}  # (tensor, dtype) -> name holding it in that dtype
    init_uses: dict[str, set[int]] = {}
    for k, node in enumerate(graph.node):
        fp32 = k in fp32_nodes
        stats["fp32_nodes" if fp32 else "fp16_nodes"] += 1
        if not fp32:
            if node.op_type == "Cast":
                to = next(a for a in node.attribute if a.name == "to")
                if to.i == FLOAT:
                    to.i = HALF
            elif node.op_type == "ConstantOfShape":
                for a in node.attribute:
                    if a.name == "value" and a.t.data_type == FLOAT:
                        a.t.CopyFrom(numpy_helper.from_array(
                            numpy_helper.to_array(a.t).astype(np.float16), a.t.name))
        for j, name in enumerate(node.input):
            if not is_float(name):
                continue
            if node.op_type == "Cast" and not fp32:
                want = produced.get(name, FLOAT)  # a Cast takes either
            elif fp32 or j in fixed32[k]:
                want = FLOAT
            else:
                want = HALF
            if name in inits:
                init_uses.setdefault(name, set()).add(want)
                if want == HALF:
                    node.input[j] = need.setdefault((name, HALF), name)
            elif produced[name] != want:
                if name in final_cast and want == io_type:
                    target = final_cast[name]  # the graph output's own Cast makes it
                else:
                    target = f"{name}__{'fp16' if want == HALF else 'fp32'}"
                node.input[j] = need.setdefault((name, want), target)

    # Weights: converted in place when only FP16 nodes read them, duplicated when both do.
    new_inits = []
    for t in graph.initializer:
        uses = init_uses.get(t.name, set())
        if t.data_type != FLOAT or HALF not in uses:
            new_inits.append(t)
            continue
        array = numpy_helper.to_array(t)
        stats["clipped"] += int(np.count_nonzero(np.abs(array) > _FP16_MAX))
        half = numpy_helper.from_array(np.clip(array, -_FP16_MAX, _FP16_MAX).astype(np.float16),
                                       t.name if FLOAT not in uses else f"{t.name}__fp16")
        if FLOAT in uses:
            new_inits.append(t)
            for k, node in enumerate(graph.node):
                for j, name in enumerate(node.input):
                    if name == t.name and k not in fp32_nodes and j not in fixed32[k] and \
                            node.op_type != "Cast":
                        node.input[j] = half.name
        new_inits.append(half)
    del graph.initializer[:]
    graph.initializer.extend(new_inits)

    # Casts, each placed right after the node (or graph input) that produces its source.
    def cast(source: str, target: str, to: int):
        stats["casts"] += 1
        return helper.make_node("Cast", [source], [target], to=to, name=f"{target}__cast")

    pending = {k: v for k, v in need.items() if k[0] not in inits}
    nodes = [cast(src_name, target, to) for (src_name, to), target in pending.items()
             if src_name in {vi.name for vi in graph.input}]
    for node in graph.node:
        nodes.append(node)
        for out in node.output:
            for to in (FLOAT, HALF):
                target = pending.get((out, to))
                if target is not None:
                    nodes.append(cast(out, target, to))
            if out in final_cast and (out, io_type) not in pending:
                nodes.append(cast(out, final_cast[out], io_type))
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # the types inferred before conversion are stale now
    try:
        model = onnx.shape_inference.infer_shapes(model)
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise MicrogestureError(f"the FP16 graph made from {src} is invalid ({exc}); keep more "
                                "ops in FP32 (keep_fp32_ops) or report this graph") from exc
    dst.parent.mkdir(parents=True, exist_ok=True)
    large = model.ByteSize() > 1_800_000_000
    onnx.save(model, str(dst), save_as_external_data=large,
              location=f"{dst.name}.data" if large else None)
    return stats


def onnx_agreement(reference: str | Path, candidate: str | Path,
                   feeds: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Run two ONNX graphs on the CPU with the same feeds; per output the largest
    absolute difference, that relative to the reference's largest magnitude, and
    the cosine similarity of the flattened outputs."""
    from microgesture.core.backends import FP16_DISABLED_OPTIMIZERS, OrtBackend
    with OrtBackend(reference, threads=1) as a, \
            OrtBackend(candidate, threads=1, disabled_optimizers=FP16_DISABLED_OPTIMIZERS) as b:
        ra, rb = a.run(feeds), b.run(feeds)
    report = {}
    for name, x in ra.items():
        x, y = x.astype(np.float64).ravel(), rb[name].astype(np.float64).ravel()
        diff = float(np.max(np.abs(x - y))) if x.size else 0.0
        scale = float(np.max(np.abs(x))) if x.size else 0.0
        norm = float(np.linalg.norm(x) * np.linalg.norm(y))
        report[name] = {"max_abs": diff, "max_rel": diff / scale if scale else diff,
                        "cosine": float(x @ y / norm) if norm else 1.0}
    return report


def write_fp16_onnx(bundle_dir: str | Path, stages: Mapping[str, Mapping[str, Any]],
                    keep_fp32_ops: Iterable[str] = DEFAULT_KEEP_FP32_OPS,
                    **options) -> dict[str, dict[str, str]]:
    """``<stage>.fp16.onnx`` from every stage's ``fp32`` graph (no TensorRT needed).
    Returns manifest entries ``{stage: {"fp16": file}}`` to merge into the stages'
    ``files``."""
    bundle = Path(bundle_dir)
    entries = {}
    for stage, manifest in stages.items():
        source = manifest.get("files", {}).get("fp32")
        if not source:
            raise MicrogestureError(f"stage {stage!r} has no fp32 ONNX file to convert to FP16")
        name = f"{stage}.fp16.onnx"
        to_fp16_onnx(bundle / source, bundle / name, keep_fp32_ops, **options)
        entries[stage] = {"fp16": name}
    return entries


def check_qdq_int8(path: str | Path) -> None:
    """Refuse an INT8 graph TensorRT cannot build: TensorRT takes explicit
    QuantizeLinear/DequantizeLinear (static, QDQ) graphs, not ONNX Runtime's
    dynamic-quantization or QOperator ops."""
    onnx = _onnx()
    ops = {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}
    bad = sorted(ops & _DYNAMIC_INT8_OPS)
    if bad:
        raise MicrogestureError(
            f"{Path(path).name} uses {', '.join(bad)} (ONNX Runtime's dynamic or QOperator INT8), "
            "which TensorRT cannot build: quantize statically in QDQ format for an INT8 engine, "
            "or build an fp16 engine")
    if "QuantizeLinear" not in ops or "DequantizeLinear" not in ops:
        raise MicrogestureError(f"{Path(path).name} has no QuantizeLinear/DequantizeLinear "
                                "nodes: it is not a QDQ INT8 graph")
    _check_zero_points(path, onnx)


def _check_zero_points(path: str | Path, onnx) -> None:
    """TensorRT takes signed int8 with zero points of 0 (symmetric) only."""
    model = onnx.load(str(path), load_external_data=False)
    consts = {t.name: t for t in model.graph.initializer}
    consts.update({n.output[0]: n.attribute[0].t for n in model.graph.node
                   if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3:
            continue
        zero = consts.get(node.input[2])
        if zero is None:
            continue
        values = onnx.numpy_helper.to_array(zero)
        if values.dtype != np.int8 or np.any(values != 0):
            raise MicrogestureError(
                f"{Path(path).name}: {node.op_type} {node.name or node.output[0]!r} has "
                f"{values.dtype} zero point(s) {np.unique(values)[:4].tolist()}; TensorRT "
                "needs signed int8 with zero points of 0: quantize for TensorRT with "
                "export.quantize.quantize_static_stage(..., for_tensorrt=True)")


# --------------------------------------------------------------------------- engines
def _tensorrt():
    try:
        import tensorrt
    except ImportError as exc:
        raise MicrogestureError(TENSORRT_MISSING) from exc
    return tensorrt


def default_timing_cache(tensorrt_version: str, gpu: str = "unknown") -> Path:
    """``<cache>/tensorrt/timing-<version>-<gpu>.cache`` (:func:`core.paths.cache_dir`):
    shared by every build on this machine with this TensorRT on this GPU model (a
    timing cache from another GPU is rejected by TensorRT)."""
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", gpu).strip("-") or "unknown"
    return cache_dir("tensorrt") / f"timing-{tensorrt_version}-{slug}.cache"


def _set_timing_cache(config, cache_bytes: bytes, cache_path: Path) -> None:
    """Give the builder the saved timing cache; one TensorRT rejects (another GPU or
    version, damaged) is replaced by an empty one, with a warning, never ignored."""
    try:
        cache = config.create_timing_cache(cache_bytes)
        accepted = cache is not None and config.set_timing_cache(cache, False)
    except Exception:  # noqa: BLE001 - TensorRT raises on a damaged cache
        accepted = False
    if not accepted and cache_bytes:
        warnings.warn(f"TensorRT rejected the timing cache {cache_path} (another GPU or TensorRT "
                      "version, or damaged): building with an empty one, which replaces it",
                      RuntimeWarning, stacklevel=3)
        cache = config.create_timing_cache(b"")
        accepted = config.set_timing_cache(cache, False)
    if not accepted:
        raise MicrogestureError("TensorRT refused even an empty timing cache; check the TensorRT "
                                "install")


def build_engines(bundle_dir: str | Path, stages: Mapping[str, Mapping[str, Any]],
                  precision: str = "fp16", workspace_gb: float = 4, timing_cache=None,
                  max_batch: int = 8, opt_batch: int = 1, *, min_batch: int = 1,
                  axes: Mapping[str, tuple[int, int, int]] | None = None,
                  keep_fp32_ops: Iterable[str] = DEFAULT_KEEP_FP32_OPS, device_id: int = 0,
                  verbose: bool = False) -> dict[str, dict[str, str]]:
    """Build one TensorRT engine per stage of ``stages`` (the manifest's ``stages``).

    ``precision``: ``fp16`` (from :func:`to_fp16_onnx` graphs, also written to the
    bundle as ``<stage>.fp16.onnx``), ``fp32`` (from the fp32 graphs) or ``int8``
    (from the stages' ``int8`` graphs, which must be QDQ). Every network is strongly
    typed. ``timing_cache``: a file read before and written after each build
    (default :func:`default_timing_cache`).

    Returns manifest entries to merge into each stage's ``files``:
    ``{stage: {"engine": "<stage>.<precision>.engine", "fp16": "<stage>.fp16.onnx"}}``
    (``fp16`` only for fp16 builds). Arguments are checked before any work.
    """
    bundle = Path(bundle_dir)
    if precision not in ENGINE_PRECISIONS:
        raise MicrogestureError(f"TensorRT precision must be one of {', '.join(ENGINE_PRECISIONS)},"
                                f" got {precision!r}")
    if not stages:
        raise MicrogestureError("no stages to build engines for")
    if not workspace_gb or workspace_gb <= 0:
        raise MicrogestureError(f"workspace_gb must be > 0, got {workspace_gb!r}")
    profiles = {s: optimization_profiles(m, min_batch, opt_batch, max_batch, axes)
                for s, m in stages.items()}
    source_key = "int8" if precision == "int8" else "fp32"
    for stage, manifest in stages.items():
        name = manifest.get("files", {}).get(source_key)
        if not name or not (bundle / name).is_file():
            raise MicrogestureError(f"stage {stage!r} has no {source_key} ONNX file in {bundle} "
                                    f"to build a {precision} engine from")
        if precision == "int8":
            check_qdq_int8(bundle / name)
    trt = _tensorrt()

    entries: dict[str, dict[str, str]] = {s: {} for s in stages}
    if precision == "fp16":
        for stage, entry in write_fp16_onnx(bundle, stages, keep_fp32_ops).items():
            entries[stage].update(entry)
    select_device(device_id)  # the builder builds on the current device of this thread
    gpu = gpu_name(device_id)
    cache_path = (Path(timing_cache) if timing_cache
                  else default_timing_cache(trt.__version__, gpu))
    cache_bytes = cache_path.read_bytes() if cache_path.is_file() else b""
    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    try:
        builder = trt.Builder(logger)
    except Exception as exc:  # TypeError/RuntimeError when no CUDA device or driver
        raise MicrogestureError(f"TensorRT cannot create a builder ({exc}): an NVIDIA GPU with a "
                                "working driver is needed to build engines") from exc
    if builder is None:
        raise MicrogestureError("TensorRT cannot create a builder: an NVIDIA GPU with a working "
                                "driver is needed to build engines")
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    for stage, manifest in stages.items():
        source = entries[stage].get("fp16") or manifest["files"][source_key]
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(bundle / source)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise MicrogestureError(f"TensorRT cannot parse {source}: {errors}")
        names = {network.get_input(i).name for i in range(network.num_inputs)}
        if names != set(profiles[stage]):
            raise MicrogestureError(f"{source} has inputs {sorted(names)} but the manifest "
                                    f"declares {sorted(profiles[stage])}; re-export the bundle")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
        _set_timing_cache(config, cache_bytes, cache_path)
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in profiles[stage].items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise MicrogestureError(f"TensorRT failed to build an engine for stage {stage!r} "
                                    "(see its log above; a larger workspace_gb may help)")
        cache_bytes = bytes(config.get_timing_cache().serialize())
        atomic_write(cache_path, lambda tmp: tmp.write_bytes(cache_bytes))
        header = engine_header(stage, manifest, precision, profiles[stage],
                               tensorrt_version=trt.__version__, gpu=gpu, source=source,
                               source_sha256=sha256_file(bundle / source),
                               workspace_gb=workspace_gb)
        engine_name = f"{stage}.{precision}.engine"
        write_engine_file(bundle / engine_name, header, bytes(serialized))
        entries[stage]["engine"] = engine_name
    return entries
