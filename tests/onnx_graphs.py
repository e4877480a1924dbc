"""Tiny ONNX stage graphs for the backend, bundle and Triton tests."""

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def stage_model(path, inputs, outputs, seed=0, scale=1.0, external=False):
    """A graph taking ``inputs`` (name -> shape without the batch axis) and returning
    ``outputs``: every input flattened, concatenated, one matrix product, split and
    reshaped. Returns the weight so tests can compute the answer. ``external``: the
    weights in ``<graph>.data``, as torch's dynamo exporter writes them."""
    rng = np.random.default_rng(seed)
    nodes, flat = [], []
    for name in inputs:
        nodes.append(helper.make_node("Flatten", [name], [f"{name}_flat"], axis=1))
        flat.append(f"{name}_flat")
    nodes.append(helper.make_node("Concat", flat, ["joined"], axis=1))
    din = sum(math.prod(s) for s in inputs.values())
    sizes = [math.prod(s) for s in outputs.values()]
    weight = (rng.standard_normal((din, sum(sizes))) * scale / math.sqrt(din)).astype(np.float32)
    inits = [numpy_helper.from_array(weight, "W"),
             numpy_helper.from_array(np.array(sizes, np.int64), "sizes")]
    nodes.append(helper.make_node("MatMul", ["joined", "W"], ["mixed"]))
    nodes.append(helper.make_node("Split", ["mixed", "sizes"], [f"{n}_flat" for n in outputs],
                                  axis=1))
    for name, shape in outputs.items():
        inits.append(numpy_helper.from_array(np.array([-1, *shape], np.int64), f"{name}_shape"))
        nodes.append(helper.make_node("Reshape", [f"{name}_flat", f"{name}_shape"], [name]))
    graph = helper.make_graph(
        nodes, "stage",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", *s])
         for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", *s])
         for n, s in outputs.items()], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    onnx.checker.check_model(model)
    if external:
        onnx.save(model, str(path), save_as_external_data=True, location=f"{path.name}.data",
                  size_threshold=64)  # small shape tensors stay inline
    else:
        onnx.save(model, str(path))
    return weight
