"""Each stage's achieved GFLOP/s against this machine's matmul ceiling (``microgesture bench``).

- :func:`graph_flops`: the multiply-adds of an ONNX graph at batch 1, counted from its
  shapes (MatMul, Gemm, Conv and their integer/QDQ forms; 2 FLOPs per multiply-add),
  always on the stage's fp32 graph (int8 graphs do the same arithmetic).
- :func:`matmul_ceiling`: what ONNX Runtime reaches on one large matrix product with one
  intra-op thread, fp32 (``MatMul``) and int8 (``MatMulInteger``, u8 x s8), measured here.
- :func:`stage_rates`: each stage run alone at batch 1 on zeros (one thread, best of a
  few runs): milliseconds, GFLOP/s and the share of the ceiling of its precision.

These are isolated numbers on a machine that may be busy; a stage at a large share of
the ceiling only gets faster by doing less work.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

MATMUL_N = 1024


def _dims(shape) -> list[int]:
    return [d.dim_value if d.HasField("dim_value") else 1 for d in shape.dim]


def graph_flops(path: str | Path) -> float:
    """FLOPs (2 per multiply-add) of one batch-1 run of the ONNX graph at ``path``."""
    import onnx

    model = onnx.load(str(path))
    for value in list(model.graph.input) + list(model.graph.output):
        for d in value.type.tensor_type.shape.dim:
            if d.HasField("dim_param"):
                d.dim_value = 1  # the symbolic batch axis
    del model.graph.value_info[:]
    model = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: _dims(v.type.tensor_type.shape)
              for v in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)}
    shapes.update({t.name: list(t.dims) for t in model.graph.initializer})
    total = 0.0
    for node in model.graph.node:
        op = node.op_type
        if op in ("MatMul", "MatMulInteger", "Gemm"):
            a, b = shapes.get(node.input[0]), shapes.get(node.input[1])
            out = shapes.get(node.output[0])
            if not a or not b or not out:
                continue
            k = a[-1] if not (op == "Gemm" and any(x.name == "transA" and x.i for x in node.attribute)) else a[0]
            total += 2.0 * float(np.prod(out)) * k
        elif op in ("Conv", "ConvInteger", "QLinearConv"):
            w_name = node.input[3] if op == "QLinearConv" else node.input[1]
            w, out = shapes.get(w_name), shapes.get(node.output[0])
            if not w or not out:
                continue
            total += 2.0 * float(np.prod(out)) * float(np.prod(w[1:]))
    return total


def _time(session, feeds, repeats: int) -> float:
    session.run(None, feeds)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        session.run(None, feeds)
        best = min(best, time.perf_counter() - t)
    return best


def matmul_ceiling(repeats: int = 5) -> dict[str, float]:
    """GFLOP/s (GOP/s for int8) of ONNX Runtime on one N x N x N product, one thread."""
    import onnx
    from onnx import TensorProto, helper

    from microgesture.core.backends import cpu_session

    n, out = MATMUL_N, {}
    for kind, (ta, tb, op, to) in {"fp32": (TensorProto.FLOAT, TensorProto.FLOAT, "MatMul", TensorProto.FLOAT),
                                   "int8": (TensorProto.UINT8, TensorProto.INT8, "MatMulInteger",
                                            TensorProto.INT32)}.items():
        graph = helper.make_graph([helper.make_node(op, ["a", "b"], ["c"])], "ceiling",
                                  [helper.make_tensor_value_info("a", ta, [n, n]),
                                   helper.make_tensor_value_info("b", tb, [n, n])],
                                  [helper.make_tensor_value_info("c", to, [n, n])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        session = cpu_session(model.SerializeToString())
        rng = np.random.default_rng(0)
        dtype_a, dtype_b = (np.float32, np.float32) if kind == "fp32" else (np.uint8, np.int8)
        feeds = {"a": rng.integers(0, 100, (n, n)).astype(dtype_a),
                 "b": rng.integers(-50, 50, (n, n)).astype(dtype_b)}
        out[kind] = round(2.0 * n ** 3 / _time(session, feeds, repeats) / 1e9, 1)
    return out


def stage_rates(bundle: str | Path, stages: tuple[str, ...], precision: str,
                ceiling: dict[str, float] | None = None, repeats: int = 3) -> dict[str, Any]:
    """``{stage: {ms, gflop, gflop_per_s, share_of_ceiling}}`` for ``stages`` of ``bundle``
    at ``precision`` (batch 1, zeros, one thread)."""
    from microgesture.core.backends import open_stage
    from microgesture.core.bundle import read_manifest

    manifest = read_manifest(bundle)
    ceiling = ceiling if ceiling is not None else matmul_ceiling()
    root = Path(manifest["root"])
    out: dict[str, Any] = {}
    for name in stages:
        if name not in manifest["stages"]:
            continue
        stage = manifest["stages"][name]
        flops = graph_flops(root / stage["files"]["fp32"])
        backend = open_stage(manifest, name, precision=precision, threads=1)
        try:
            feeds = {k: np.zeros([1, *spec["shape"][1:]], np.float32) for k, spec in stage["inputs"].items()}
            backend.run(feeds)
            best = float("inf")
            for _ in range(repeats):
                t = time.perf_counter()
                backend.run(feeds)
                best = min(best, time.perf_counter() - t)
        finally:
            backend.close()
        rate = flops / best / 1e9
        ref = ceiling.get("int8" if precision == "int8" else "fp32")
        out[name] = {"ms": round(best * 1e3, 2), "gflop": round(flops / 1e9, 3),
                     "gflop_per_s": round(rate, 1),
                     "share_of_ceiling": round(rate / ref, 3) if ref else None}
    return out
