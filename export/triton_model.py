"""One stage of a bundle as a Triton Python-backend model (the CPU flavour).

:func:`export.triton.write_repository` copies this file as ``<stage>/1/model.py``
beside ``<stage>/1/model.onnx``. Triton's Python backend runs it in its stub
process, which imports only this file: it needs numpy and onnxruntime in the
stub's Python, never microgesture.

Dynamic batching: Triton hands :meth:`TritonPythonModel.execute` every request
its scheduler gathered (up to ``max_batch_size`` rows in all); they are
concatenated along the batch axis, run as one ONNX Runtime call, and the outputs
are split back, one response per request in request order.
"""

import json
import os

import numpy as np


def _concat_requests(arrays_per_request):
    """[{name: array}] -> ({name: concatenated array}, [rows of each request])."""
    rows = [next(iter(a.values())).shape[0] for a in arrays_per_request]
    names = list(arrays_per_request[0])
    if len(arrays_per_request) == 1:
        return dict(arrays_per_request[0]), rows
    return {n: np.concatenate([a[n] for a in arrays_per_request]) for n in names}, rows


def _split_rows(outputs, rows):
    """{name: (sum(rows), ...)} -> [{name: (rows[i], ...)}]."""
    bounds = np.cumsum([0, *rows])
    return [{n: v[bounds[i]:bounds[i + 1]] for n, v in outputs.items()}
            for i in range(len(rows))]


class TritonPythonModel:
    """An ONNX Runtime session over ``model.onnx`` behind Triton's Python backend API."""

    def initialize(self, args):
        import onnxruntime as ort

        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        model_dir = args["model_repository"]
        path = os.path.join(model_dir, str(args["model_version"]), "model.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("onnx_threads", "1") or 1)
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        skip = [n for n in params.get("onnx_disabled_optimizers", "").split(",") if n]
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"],
                                            disabled_optimizers=skip)
        self.inputs = [t["name"] for t in config["input"]]
        self.outputs = [t["name"] for t in config["output"]]

    def execute(self, requests):
        import triton_python_backend_utils as pb_utils

        try:
            feeds = [{n: pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.inputs}
                     for r in requests]
            batched, rows = _concat_requests(feeds)
            values = self.session.run(self.outputs, batched)
            parts = _split_rows(dict(zip(self.outputs, values)), rows)
        except Exception as exc:  # every request of the batch gets the error, none is lost
            error = pb_utils.TritonError(f"{type(exc).__name__}: {exc}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        return [pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor(n, np.ascontiguousarray(part[n])) for n in self.outputs])
            for part in parts]

    def finalize(self):
        self.session = None
