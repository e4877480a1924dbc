"""TensorRT export (export.tensorrt): profiles, headers, FP16 graphs on the CPU; the
builder's wiring against a fake of TensorRT's documented API; real builds marked ``gpu``."""

import importlib.util
import json
import math
import subprocess
import sys
import types
from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from microgesture.core.backends import OrtBackend, open_stage, read_engine_file, write_engine_file
from microgesture.core.bundle import read_manifest, write_manifest
from microgesture.core.errors import MicrogestureError
from microgesture.export.tensorrt import (TENSORRT_MISSING, build_engines, check_qdq_int8,
                                          engine_header, onnx_agreement, optimization_profiles,
                                          to_fp16_onnx, write_fp16_onnx)

FP16_TOLERANCE = {"cosine": 0.9999, "max_rel": 1e-2}
"""FP16 graph vs FP32 graph, per output: cosine similarity at least 0.9999 and largest
absolute error at most 1% of the output's largest magnitude."""

VISUAL = {"role": "per-frame",
          "inputs": {"frames": {"shape": ["batch", 3, 32, 32], "dtype": "float32"}},
          "outputs": {"tokens": {"shape": ["batch", 17, 32], "dtype": "float32"}},
          "files": {"fp32": "visual.onnx"}}


# --------------------------------------------------------------------------- profiles
def test_profiles_cover_every_dynamic_axis():
    head = {"inputs": {"tokens": {"shape": ["batch", 8, 50, 512]},
                       "joints": {"shape": ["batch", 8, 18, 3]}}}
    profiles = optimization_profiles(head, 1, 2, 16)
    assert profiles == {"tokens": ((1, 8, 50, 512), (2, 8, 50, 512), (16, 8, 50, 512)),
                        "joints": ((1, 8, 18, 3), (2, 8, 18, 3), (16, 8, 18, 3))}
    window = {"inputs": {"clip": {"shape": ["batch", "frames", 3, 224, 224]}}}
    with pytest.raises(MicrogestureError, match=r"axis 1 is dynamic \('frames'\).*axes="):
        optimization_profiles(window)
    assert optimization_profiles(window, axes={"frames": (4, 8, 16)}) == {
        "clip": ((1, 4, 3, 224, 224), (1, 8, 3, 224, 224), (8, 16, 3, 224, 224))}
    for shapes in (optimization_profiles(head), optimization_profiles(window, 2, 3, 4,
                                                                       axes={"frames": (1, 1, 2)})):
        for lo, opt, hi in shapes.values():  # every axis ordered min <= opt <= max
            assert all(a <= b <= c for a, b, c in zip(lo, opt, hi))


@pytest.mark.parametrize("args,match", [((0, 1, 8), "1 <= min <= opt <= max"),
                                        ((2, 1, 8), "1 <= min <= opt <= max"),
                                        ((1, 9, 8), "1 <= min <= opt <= max"),
                                        ((1, 1.5, 8), "whole numbers")])
def test_profile_ranges_are_checked(args, match):
    with pytest.raises(MicrogestureError, match=match):
        optimization_profiles(VISUAL, *args)
    with pytest.raises(MicrogestureError, match="no inputs"):
        optimization_profiles({"inputs": {}})
    with pytest.raises(MicrogestureError, match=r"\(min, opt, max\)"):
        optimization_profiles(VISUAL, axes={"frames": (1, 2)})


def test_engine_header_is_json_and_round_trips(tmp_path):
    profiles = optimization_profiles(VISUAL, 1, 1, 8)
    header = engine_header("visual", VISUAL, "fp16", profiles, tensorrt_version="10.3.0",
                           gpu="NVIDIA L4", source="visual.fp16.onnx", source_sha256="ab",
                           workspace_gb=4, created="2026-11-22T03:00:00Z")
    assert header["inputs"] == [{"name": "frames", "shape": ["batch", 3, 32, 32],
                                 "dtype": "float32"}]
    assert header["outputs"][0]["name"] == "tokens"
    assert header["profiles"] == [{"input": "frames", "min": [1, 3, 32, 32],
                                   "opt": [1, 3, 32, 32], "max": [8, 3, 32, 32]}]
    assert (header["precision"], header["tensorrt"], header["gpu"], header["strongly_typed"]) == (
        "fp16", "10.3.0", "NVIDIA L4", True)
    write_engine_file(tmp_path / "visual.fp16.engine", header, b"plan")
    back, engine = read_engine_file(tmp_path / "visual.fp16.engine")
    assert engine == b"plan" and {k: back[k] for k in header} == json.loads(json.dumps(header))


# --------------------------------------------------------------------------- FP16 graphs
@pytest.fixture(scope="module")
def visual_onnx(tmp_path_factory):
    """The tiny CLIP-MG visual stage (a 2-layer ViT of width 64 on 32x32 frames),
    exported the way the exporter does it: dynamo, opset 18, dynamic batch."""
    torch = pytest.importorskip("torch")
    from microgesture.core.models import create_model

    class Visual(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, frames):
            return self.model.encode_frames(frames)

    torch.manual_seed(0)
    model = Visual(create_model("clip-mg-tiny")).eval()
    path = tmp_path_factory.mktemp("visual") / "visual.onnx"
    batch = torch.export.Dim("batch", min=1)
    torch.onnx.export(model, (torch.randn(2, 3, 32, 32),), str(path), dynamo=True,
                      input_names=["frames"], output_names=["tokens"], opset_version=18,
                      dynamic_shapes={"frames": {0: batch}}, verbose=False)
    return path


def _types(model):
    model = onnx.shape_inference.infer_shapes(model)
    table = {v.name: v.type.tensor_type.elem_type
             for v in list(model.graph.input) + list(model.graph.value_info)
             + list(model.graph.output)}
    table.update({t.name: t.data_type for t in model.graph.initializer})
    return table


def test_fp16_visual_stage_matches_fp32_on_cpu(visual_onnx, tmp_path):
    dst = tmp_path / "visual.fp16.onnx"
    stats = to_fp16_onnx(visual_onnx, dst)
    assert stats["fp16_nodes"] > stats["fp32_nodes"] > 0 and stats["clipped"] == 0
    model = onnx.load(str(dst))
    kinds = _types(model)
    # the interface is unchanged: fp32 in and out, dynamic batch kept
    assert [(v.name, v.type.tensor_type.elem_type) for v in model.graph.input] == [
        ("frames", TensorProto.FLOAT)]
    assert [(v.name, v.type.tensor_type.elem_type) for v in model.graph.output] == [
        ("tokens", TensorProto.FLOAT)]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    ops = Counter(n.op_type for n in model.graph.node)
    assert ops["LayerNormalization"] >= 5 and ops["Softmax"] == 2
    for node in model.graph.node:
        floats = [kinds[i] for i in node.input if i and kinds.get(i) in
                  (TensorProto.FLOAT, TensorProto.FLOAT16)]
        if node.op_type in ("LayerNormalization", "Softmax"):  # kept fp32
            assert set(floats) == {TensorProto.FLOAT}, node.name
        if node.op_type in ("MatMul", "Gemm", "Conv"):  # the heavy work in fp16
            assert set(floats) == {TensorProto.FLOAT16}, node.name
        if node.op_type == "Add" and len(floats) == 2 and not any(
                i in {t.name for t in model.graph.initializer} for i in node.input):
            assert set(floats) == {TensorProto.FLOAT}, node.name  # residual stream
    # loads in ONNX Runtime on the CPU and agrees with fp32
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    report = onnx_agreement(visual_onnx, dst, {"frames": x})["tokens"]
    assert report["cosine"] >= FP16_TOLERANCE["cosine"], report
    assert report["max_rel"] <= FP16_TOLERANCE["max_rel"], report
    # keeping nothing in fp32 still gives a valid graph: casts only at the interface
    to_fp16_onnx(visual_onnx, tmp_path / "all.onnx", keep_fp32_ops=(), keep_residual_fp32=False)
    every = onnx.load(str(tmp_path / "all.onnx"))
    onnx.checker.check_model(every, full_check=True)
    assert Counter(n.op_type for n in every.graph.node)["Cast"] == 2
    # onnxruntime 1.31 segfaults building a CPU session on this graph at level "all" unless
    # its NchwcTransformer is off, as open_stage does for fp16: checked in a child process
    code = ("import sys, numpy as np; from microgesture.core.backends import OrtBackend, "
            "FP16_DISABLED_OPTIMIZERS as off; b = OrtBackend(sys.argv[1], disabled_optimizers=off);"
            " t = b.run({'frames': np.ones((2, 3, 32, 32), np.float32)})['tokens'];"
            " assert t.shape == (2, 17, 32) and np.isfinite(t).all()")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "all.onnx")], check=True,
                   timeout=120)


def test_fp16_conversion_edge_cases(tmp_path):
    """Constant nodes, Cast(to=FLOAT), ConstantOfShape, Resize scales, a weight read by
    fp16 and fp32 nodes, an output also read inside the graph, a clipped weight."""
    n = helper.make_node
    big = np.array([1e6, -2.0, 3.0, 0.5], np.float32)
    nodes = [
        n("Constant", [], ["half"], value_float=0.5),
        n("Mul", ["x", "half"], ["scaled"]),                               # fp16
        n("Add", ["scaled", "w"], ["biased"]),                             # fp16, w shared
        n("Softmax", ["biased"], ["probs"], axis=-1),                      # fp32
        n("Add", ["probs", "scaled"], ["resid"]),                          # residual: fp32
        n("LayerNormalization", ["resid", "w"], ["out"], axis=-1),        # fp32, w shared
        n("Shape", ["x"], ["shape"]),
        n("ConstantOfShape", ["shape"], ["ones"],
          value=numpy_helper.from_array(np.array([1.0], np.float32))),
        n("Cast", ["shape"], ["shape_f"], to=TensorProto.FLOAT),
        n("ReduceSum", ["shape_f"], ["count"], keepdims=0),
        n("Mul", ["ones", "count"], ["filled"]),
        n("Mul", ["filled", "big"], ["clipped"]),
        n("Relu", ["scaled"], ["first"]),                                  # graph output...
        n("Sigmoid", ["first"], ["second"]),                               # ...read inside too
        n("Unsqueeze", ["x", "axes"], ["x4"]),
        n("Unsqueeze", ["x4", "axes"], ["x5"]),
        n("Resize", ["x5", "", "scales"], ["up"], mode="nearest"),
    ]
    inits = [numpy_helper.from_array(np.array([0.1, 0.2, 0.3, 0.4], np.float32), "w"),
             numpy_helper.from_array(big, "big"),
             numpy_helper.from_array(np.array([0], np.int64), "axes"),
             numpy_helper.from_array(np.array([1, 1, 2, 1], np.float32), "scales")]
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
               for name in ("out", "clipped", "first", "second", "up")]
    graph = helper.make_graph(nodes, "edges",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
                              outputs, inits)
    src = tmp_path / "edges.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                                ir_version=9), str(src))
    stats = to_fp16_onnx(src, tmp_path / "edges.fp16.onnx")
    assert stats["clipped"] == 1
    model = onnx.load(str(tmp_path / "edges.fp16.onnx"))
    assert all(v.type.tensor_type.elem_type == TensorProto.FLOAT for v in model.graph.output)
    init_types = {t.name: t.data_type for t in model.graph.initializer}
    assert init_types["w"] == TensorProto.FLOAT and init_types["w__fp16"] == TensorProto.FLOAT16
    assert init_types["scales"] == TensorProto.FLOAT  # Resize scales must stay fp32
    x = np.array([[0.5, -1, 2, 3]] * 3, np.float32)
    with OrtBackend(src) as a, OrtBackend(tmp_path / "edges.fp16.onnx") as b:
        want, got = a.run({"x": x}), b.run({"x": x})
    for name in ("out", "first", "second", "up"):
        np.testing.assert_allclose(got[name], want[name], rtol=2e-3, atol=2e-3, err_msg=name)
    clipped = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}["big"]
    assert clipped.dtype == np.float16 and clipped[0] == 65504  # clipped to fp16's max


def test_fp16_refuses_control_flow_and_missing_files(tmp_path):
    then = helper.make_graph([helper.make_node("Identity", ["x"], ["y1"])], "then", [],
                             [helper.make_tensor_value_info("y1", TensorProto.FLOAT, [1])])
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=then)], "g",
        [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]),
              str(tmp_path / "if.onnx"))
    with pytest.raises(MicrogestureError, match="subgraph"):
        to_fp16_onnx(tmp_path / "if.onnx", tmp_path / "if.fp16.onnx")
    with pytest.raises(MicrogestureError, match="does not exist"):
        to_fp16_onnx(tmp_path / "none.onnx", tmp_path / "x.onnx")


def _linear_bundle(root):
    root.mkdir()
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]),
             helper.make_node("LayerNormalization", ["h", "g", "b"], ["y"], axis=-1)]
    inits = [numpy_helper.from_array(rng.standard_normal((4, 8)).astype(np.float32), "W"),
             numpy_helper.from_array(np.ones(8, np.float32), "g"),
             numpy_helper.from_array(np.zeros(8, np.float32), "b")]
    graph = helper.make_graph(nodes, "head",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
                              inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                                ir_version=9), str(root / "head.onnx"))
    stages = {"head": {"role": "per-window",
                       "inputs": {"x": {"shape": ["batch", 4], "dtype": "float32"}},
                       "outputs": {"y": {"shape": ["batch", 8], "dtype": "float32"}},
                       "files": {"fp32": "head.onnx"}}}
    manifest = {"model": {"name": "t", "arch": "t", "config": {}}, "labels": ["a"],
                "prompts": None, "preprocessing": {}, "window": {}, "stages": stages}
    write_manifest(root, json.loads(json.dumps(manifest)))
    return stages


def test_write_fp16_onnx_into_a_bundle(tmp_path):
    root = tmp_path / "bundle"
    stages = _linear_bundle(root)
    entries = write_fp16_onnx(root, stages)
    assert entries == {"head": {"fp16": "head.fp16.onnx"}}
    # the exporter merges the entries into the manifest; the runtime then opens fp16
    manifest = read_manifest(root)
    for stage, files in entries.items():
        manifest["stages"][stage]["files"].update(files)
    for key in ("schema_version", "format", "created", "files", "root"):
        manifest.pop(key)
    write_manifest(root, manifest)
    manifest = read_manifest(root)
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    fp32 = open_stage(manifest, "head").run({"x": x})["y"]
    fp16 = open_stage(manifest, "head", "fp16").run({"x": x})["y"]
    np.testing.assert_allclose(fp16, fp32, atol=2e-2)
    with pytest.raises(MicrogestureError, match="no fp32 ONNX file"):
        write_fp16_onnx(root, {"pose": {"files": {}}})


# --------------------------------------------------------------------------- INT8 graphs
def test_int8_engines_need_qdq_graphs(tmp_path):
    from onnxruntime.quantization import quantize_dynamic
    root = tmp_path / "b"
    _linear_bundle(root)
    quantize_dynamic(str(root / "head.onnx"), str(tmp_path / "dynamic.onnx"))
    with pytest.raises(MicrogestureError, match="MatMulInteger.*QDQ"):
        check_qdq_int8(tmp_path / "dynamic.onnx")
    with pytest.raises(MicrogestureError, match="not a QDQ INT8 graph"):
        check_qdq_int8(root / "head.onnx")
    n = helper.make_node
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    zero = numpy_helper.from_array(np.array(0, np.int8), "z")
    graph = helper.make_graph([n("QuantizeLinear", ["x", "s", "z"], ["q"]),
                               n("DequantizeLinear", ["q", "s", "z"], ["y"])], "qdq",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
                              [scale, zero])
    onnx.save(helper.make_model(graph), str(tmp_path / "qdq.onnx"))
    check_qdq_int8(tmp_path / "qdq.onnx")


# --------------------------------------------------------------------------- build_engines
def test_build_engines_without_tensorrt(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    root = tmp_path / "bundle"
    stages = _linear_bundle(root)
    with pytest.raises(MicrogestureError) as info:
        build_engines(root, stages)
    assert str(info.value) == TENSORRT_MISSING
    assert not (root / "head.fp16.onnx").exists()  # nothing written before the check
    # arguments are checked before TensorRT is looked for
    with pytest.raises(MicrogestureError, match="precision must be one of"):
        build_engines(root, stages, precision="bf16")
    with pytest.raises(MicrogestureError, match="1 <= min <= opt <= max"):
        build_engines(root, stages, max_batch=4, opt_batch=8)
    with pytest.raises(MicrogestureError, match="no int8 ONNX file"):
        build_engines(root, stages, precision="int8")
    with pytest.raises(MicrogestureError, match="workspace_gb"):
        build_engines(root, stages, workspace_gb=0)


class _FakeTensorRT(types.SimpleNamespace):
    """TensorRT 10's documented Python API, as build_engines uses it, recording calls."""

    def __init__(self, inputs):
        calls = []
        ns = types.SimpleNamespace

        class Logger:
            WARNING, VERBOSE = 2, 4

            def __init__(self, level):
                calls.append(("Logger", level))

        class Profile:
            def set_shape(self, name, lo, opt, hi):
                calls.append(("set_shape", name, lo, opt, hi))

        class Cache:
            def __init__(self, data):
                self.data = data

            def serialize(self):
                return memoryview(self.data + b"+")

        class Config:
            def set_memory_pool_limit(self, pool, size):
                calls.append(("set_memory_pool_limit", pool, size))

            def create_timing_cache(self, data):
                calls.append(("create_timing_cache", bytes(data)))
                self.cache = Cache(bytes(data))
                return self.cache

            def set_timing_cache(self, cache, ignore_mismatch):
                calls.append(("set_timing_cache", ignore_mismatch))
                return True

            def get_timing_cache(self):
                return self.cache

            def add_optimization_profile(self, profile):
                calls.append(("add_optimization_profile",))
                return 0

        class Network:
            num_inputs = len(inputs)

            def get_input(self, i):
                return ns(name=inputs[i])

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                calls.append(("create_network", flags))
                return Network()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                calls.append(("build_serialized_network",))
                return memoryview(b"SERIALIZED-ENGINE")

        class OnnxParser:
            num_errors = 0

            def __init__(self, network, logger):
                pass

            def parse_from_file(self, path):
                calls.append(("parse_from_file", path))
                return True

        super().__init__(
            __version__="10.99.0", calls=calls, Logger=Logger, Builder=Builder,
            OnnxParser=OnnxParser,
            NetworkDefinitionCreationFlag=ns(STRONGLY_TYPED=3),
            MemoryPoolType=ns(WORKSPACE="workspace"))


def test_build_engines_wiring_with_a_fake_tensorrt(tmp_path, monkeypatch):
    """Checks what build_engines asks of TensorRT and what it writes; the fake follows
    the documented API but is not TensorRT (the real build is the gpu test below)."""
    fake = _FakeTensorRT(["x"])
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    root = tmp_path / "bundle"
    stages = _linear_bundle(root)
    cache = tmp_path / "timing.cache"
    entries = build_engines(root, stages, workspace_gb=2, timing_cache=cache, max_batch=8,
                            opt_batch=2)
    assert entries == {"head": {"fp16": "head.fp16.onnx", "engine": "head.fp16.engine"}}
    calls = fake.calls
    assert ("create_network", 1 << 3) in calls  # strongly typed
    assert ("parse_from_file", str(root / "head.fp16.onnx")) in calls  # the fp16 graph
    assert ("set_memory_pool_limit", "workspace", 2 << 30) in calls
    assert ("set_shape", "x", (1, 4), (2, 4), (8, 4)) in calls
    assert ("create_timing_cache", b"") in calls and cache.read_bytes() == b"+"
    header, engine = read_engine_file(root / "head.fp16.engine")
    assert engine == b"SERIALIZED-ENGINE"
    assert (header["stage"], header["precision"], header["tensorrt"]) == ("head", "fp16",
                                                                           "10.99.0")
    assert header["profiles"] == [{"input": "x", "min": [1, 4], "opt": [2, 4], "max": [8, 4]}]
    assert header["source"]["file"] == "head.fp16.onnx" and header["gpu"]
    # the saved timing cache is read by the next build
    build_engines(root, stages, precision="fp32", timing_cache=cache)
    assert ("create_timing_cache", b"+") in calls and cache.read_bytes() == b"++"
    assert ("parse_from_file", str(root / "head.onnx")) in calls
    assert read_engine_file(root / "head.fp32.engine")[0]["precision"] == "fp32"
    # a graph whose inputs differ from the manifest is refused
    monkeypatch.setitem(sys.modules, "tensorrt", _FakeTensorRT(["other"]))
    with pytest.raises(MicrogestureError, match=r"inputs \['other'\].*declares \['x'\]"):
        build_engines(root, stages, timing_cache=cache)


# --------------------------------------------------------------------------- GPU only
@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None,
                    reason="needs TensorRT 10 (pip install tensorrt from NVIDIA's index) and an "
                           "NVIDIA GPU")
def test_fp16_engine_builds_and_matches_on_the_gpu(visual_onnx, tmp_path):
    """Needs tensorrt 10, cuda-python (or torch with CUDA) and an NVIDIA GPU: builds a
    strongly typed FP16 engine of the tiny visual stage and compares it with fp32 ONNX."""
    import shutil
    root = tmp_path / "bundle"
    root.mkdir()
    shutil.copy(visual_onnx, root / "visual.onnx")
    stages = {"visual": VISUAL}
    entries = build_engines(root, stages, max_batch=4, timing_cache=tmp_path / "cache")
    assert (tmp_path / "cache").stat().st_size > 0
    from microgesture.core.backends import TensorRTBackend
    engine = TensorRTBackend(root / entries["visual"]["engine"])
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    got = engine.run({"frames": x})["tokens"]
    want = OrtBackend(root / "visual.onnx").run({"frames": x})["tokens"]
    cosine = float((got * want).sum() / math.sqrt((got ** 2).sum() * (want ** 2).sum()))
    assert cosine >= FP16_TOLERANCE["cosine"]
    with pytest.raises(MicrogestureError, match="largest profile shape"):
        engine.run({"frames": np.zeros((5, 3, 32, 32), np.float32)})
