"""core.triton_backend against a fake tritonclient: the checksum check on connecting and
after a reconnection, the outage's status events, the wait limit, and the Python-backend
model's request batching. (test_triton_serve.py does the same against a real server.)"""

import threading
import time

import numpy as np
import pytest

from microgesture.core import triton_backend
from microgesture.core.errors import MicrogestureError
from microgesture.core.triton_backend import TritonConnection, TritonStage


class FakeServer:
    """What a Triton server answers; ``up`` False is a server that went away."""

    def __init__(self, sha="aaa"):
        self.up, self.sha, self.calls = True, sha, 0


class FakeModule:
    def __init__(self, server):
        module = self

        class InferInput:
            def __init__(self, name, shape, dtype):
                self.name, self.shape, self.dtype = name, shape, dtype

            def set_data_from_numpy(self, array):
                self.array = array

        class InferRequestedOutput:
            def __init__(self, name):
                self.name = name

        class Client:
            def __init__(self, address, **kwargs):
                self.address = address

            def _check(self):
                if not server.up:
                    raise ConnectionRefusedError("refused")

            def is_server_live(self):
                self._check()
                return True

            def is_server_ready(self):
                self._check()
                return True

            def is_model_ready(self, model):
                self._check()
                return model == "pose"

            def get_model_config(self, model):
                self._check()
                return {"name": model, "parameters": {
                    "microgesture_sha256": {"string_value": server.sha},
                    "microgesture_file": {"string_value": "pose.onnx"},
                    "microgesture_precision": {"string_value": "fp32"}}}

            def infer(self, model, inputs, outputs=None):
                self._check()
                server.calls += 1
                doubled = {o.name: inputs[0].array * 2 for o in outputs}
                return type("Result", (), {"as_numpy": lambda self, n: doubled[n]})()

            def close(self):
                pass

        module.InferInput, module.InferRequestedOutput = InferInput, InferRequestedOutput
        module.InferenceServerClient = Client


STAGE = {"inputs": {"heatmaps": {"shape": ["batch", 2], "dtype": "float32"}},
         "outputs": {"pose": {"shape": ["batch", 2], "dtype": "float32"}}}


@pytest.fixture
def fake(monkeypatch):
    server = FakeServer()
    monkeypatch.setattr(triton_backend, "_client_module", lambda protocol: FakeModule(server))
    return server


def connect(statuses, **kwargs):
    connection = TritonConnection("http://127.0.0.1:8000", retry_s=(0.02, 0.05),
                                  on_status=lambda s, d, a: statuses.append((s, d)), **kwargs)
    connection.expect("pose", "aaa", "pose.onnx", "fp32")
    connection.connect()
    return TritonStage(connection, "pose", STAGE, "fp32")


def test_a_call_waits_out_an_outage_and_says_so(fake):
    statuses = []
    stage = connect(statuses)
    x = np.ones((3, 2), np.float32)
    np.testing.assert_array_equal(stage.run({"heatmaps": x})["pose"], 2 * x)
    fake.up = False
    threading.Timer(0.3, lambda: setattr(fake, "up", True)).start()
    t0 = time.monotonic()
    np.testing.assert_array_equal(stage.run({"heatmaps": x})["pose"], 2 * x)  # waited, then ran
    assert time.monotonic() - t0 >= 0.25
    kinds = [s for s, _ in statuses]
    assert kinds[0] == "lost" and kinds[-1] == "reconnected" and set(kinds[1:-1]) == {"reconnecting"}
    assert stage.connection.outages == 1 and fake.calls == 2
    assert stage.providers == ("Triton http://127.0.0.1:8000 model pose (fp32)",)


def test_a_server_back_with_another_model_is_refused(fake):
    statuses = []
    stage = connect(statuses)
    fake.up, fake.sha = False, "bbb"
    threading.Timer(0.1, lambda: setattr(fake, "up", True)).start()
    with pytest.raises(MicrogestureError, match="serves another model"):
        stage.run({"heatmaps": np.ones((1, 2), np.float32)})
    assert statuses[-1][0] == "lost" and "serves another model" in statuses[-1][1]
    with pytest.raises(MicrogestureError, match="serves another model"):  # and stays refused
        stage.run({"heatmaps": np.ones((1, 2), np.float32)})


def test_refusals_when_connecting(fake):
    fake.sha = "bbb"
    with pytest.raises(MicrogestureError, match=r"pose.onnx \(fp32, sha256 bbb"):
        connect([])
    fake.up = False
    with pytest.raises(MicrogestureError, match="cannot reach a Triton server"):
        connect([])
    fake.up, fake.sha = True, "aaa"
    connection = TritonConnection("grpc://h", on_status=None)
    connection.expect("visual", "aaa", "visual.onnx", "fp32")  # a model the server lacks
    with pytest.raises(MicrogestureError, match="no ready model 'visual'"):
        connection.connect()


def test_waiting_has_a_limit_and_an_interrupt(fake):
    statuses = []
    stage = connect(statuses, wait_s=0.2)
    fake.up = False
    with pytest.raises(MicrogestureError, match="did not come back within"):
        stage.run({"heatmaps": np.ones((1, 2), np.float32)})
    fake.up = True
    other = connect([])
    fake.up = False
    threading.Timer(0.2, other.interrupt).start()
    with pytest.raises(MicrogestureError, match="stopped"):
        other.run({"heatmaps": np.ones((1, 2), np.float32)})


def test_the_python_backend_model_batches_requests():
    """What the CPU flavour's model.py does with the requests Triton gathered."""
    from microgesture.export.triton_model import _concat_requests, _split_rows

    a = {"x": np.arange(6, dtype=np.float32).reshape(3, 2), "y": np.zeros((3, 1), np.float32)}
    b = {"x": np.arange(2, dtype=np.float32).reshape(1, 2), "y": np.ones((1, 1), np.float32)}
    batched, rows = _concat_requests([a, b])
    assert rows == [3, 1] and batched["x"].shape == (4, 2) and batched["y"][3, 0] == 1
    parts = _split_rows({"z": batched["x"] * 10}, rows)
    np.testing.assert_array_equal(parts[0]["z"], a["x"] * 10)
    np.testing.assert_array_equal(parts[1]["z"], b["x"] * 10)
