"""A bundle's stages served by a Triton Inference Server, behind the backend interface.

A camera worker keeps sources, pose, rings, the window scheduler and events, and
sends its stage inputs to a shared Triton server (``microgesture serve``, or
NVIDIA's container on a GPU box) instead of running them in process:

    stages = open_triton_stages("http://gpu-box:8000", manifest, "int8")
    tokens = stages["visual"].run({"frames": frames})["tokens"]

:class:`TritonStage` has the :class:`core.backends.Backend` interface (``inputs``,
``outputs``, ``providers``, ``run``, ``close``); every stage of one server shares
one :class:`TritonConnection`.

Which model the server holds: every stage model of a repository written by
``export.triton`` carries the sha256 of the bundle file it serves in its config
``parameters`` (``microgesture_sha256``). The connection reads them when it
connects and again after every reconnection, and refuses a server whose files
differ from this worker's bundle at this precision.

When the server goes away: a call that fails while the server is not live marks
the connection lost, reports ``lost`` through ``on_status``, and every caller waits
while it retries with backoff (``reconnecting``, with the attempt number); once the
server is back and serves the same files it reports ``reconnected`` and the calls
are sent again, so a file stream loses no window. ``wait_s`` bounds the wait (None:
as long as it takes); :meth:`TritonConnection.interrupt` ends it at shutdown.

URLs: ``http://host:port`` (HTTP/REST, default port 8000), ``grpc://host:port``
(gRPC, 8001); ``host:port`` alone is HTTP. tritonclient is imported inside, so the
runtime needs it only with ``--triton`` (``pip install "microgesture[triton]"``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from microgesture.core.backends import _BackendBase, TensorSpec, tensor_spec, validate_feeds
from microgesture.core.errors import MicrogestureError

SHA_PARAMETER = "microgesture_sha256"
_TRITON_DTYPES = {"float32": "FP32", "float16": "FP16", "float64": "FP64", "int64": "INT64",
                  "int32": "INT32", "int16": "INT16", "int8": "INT8", "uint8": "UINT8",
                  "bool": "BOOL"}
Status = Callable[[str, str, int | None], None]
"""``on_status(status, detail, attempt)``: ``lost``, ``reconnecting``, ``reconnected``."""


def parse_url(url: str) -> tuple[str, str]:
    """``(protocol, host:port)`` of a Triton URL; refuses anything else."""
    text = str(url).strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "grpc") or not parts.hostname or parts.path not in ("", "/"):
        raise MicrogestureError(f"--triton {url!r} is not a Triton address: give http://HOST:PORT "
                                "(HTTP, port 8000) or grpc://HOST:PORT (gRPC, port 8001)")
    port = parts.port or (8001 if parts.scheme == "grpc" else 8000)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return parts.scheme, f"{host}:{port}"


def _client_module(protocol: str):
    try:
        if protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
    except ImportError as exc:
        raise MicrogestureError(f"--triton needs tritonclient: pip install "
                                f"\"tritonclient[{protocol}]\" (or \"microgesture[triton]\")") from exc
    return module


def _string_parameters(config: Mapping[str, Any]) -> dict[str, str]:
    params = config.get("parameters") or {}
    return {k: (v.get("string_value", v.get("stringValue", "")) if isinstance(v, Mapping) else str(v))
            for k, v in params.items()}


class TritonConnection:
    """One Triton server, shared by the stages that use it (thread-safe: one client
    per thread, one reconnection at a time)."""

    def __init__(self, url: str, *, timeout_s: float = 60.0, wait_s: float | None = None,
                 retry_s: tuple[float, float] = (0.25, 2.0), on_status: Status | None = None):
        self.protocol, self.address = parse_url(url)
        self.url = f"{self.protocol}://{self.address}"
        self.module = _client_module(self.protocol)
        self.timeout_s, self.wait_s, self.retry_s = timeout_s, wait_s, retry_s
        self.on_status = on_status
        self.expected: dict[str, dict[str, str]] = {}  # model -> sha256, file, precision
        self.outages = 0
        self._local = threading.local()
        self._lock = threading.Lock()
        self._back = threading.Condition(self._lock)
        self._lost = False
        self._failure: MicrogestureError | None = None  # set when the server did not come back
        self._stop = threading.Event()

    # ------------------------------------------------------------ plumbing
    def client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            if self.protocol == "grpc":
                client = self.module.InferenceServerClient(self.address)
            else:
                client = self.module.InferenceServerClient(
                    self.address, connection_timeout=min(self.timeout_s, 10.0),
                    network_timeout=self.timeout_s)
            self._local.client = client
        return client

    def _drop_client(self) -> None:
        client = getattr(self._local, "client", None)
        self._local.client = None
        if client is not None:
            try:
                client.close()
            except Exception:  # a broken connection may fail to close; it is dropped anyway
                pass

    def live(self) -> bool:
        try:
            return bool(self.client().is_server_live())
        except Exception:
            self._drop_client()
            return False

    def model_config(self, model: str) -> dict[str, Any]:
        if self.protocol == "grpc":
            return self.client().get_model_config(model, as_json=True)["config"]
        return self.client().get_model_config(model)

    def statistics(self, model: str = "") -> list[dict[str, Any]]:
        """Triton's inference statistics (``model_stats``: per model, ``batch_stats``
        counts the batches it ran by size)."""
        if self.protocol == "grpc":
            stats = self.client().get_inference_statistics(model, as_json=True)
        else:
            stats = self.client().get_inference_statistics(model)
        return stats.get("model_stats", [])

    # ------------------------------------------------------------ what it serves
    def expect(self, model: str, sha256: str, file: str, precision: str) -> None:
        self.expected[model] = {"sha256": sha256, "file": file, "precision": precision}

    def check(self) -> None:
        """Refuse a server that is not ready, lacks a model, or serves other files."""
        client = self.client()
        if not client.is_server_ready():
            raise MicrogestureError(f"Triton at {self.url} is up but not ready (a model failed "
                                    "to load? see the server's log)")
        for model, want in self.expected.items():
            if not client.is_model_ready(model):
                raise MicrogestureError(
                    f"Triton at {self.url} has no ready model {model!r}: serve this bundle "
                    f"(microgesture serve BUNDLE --precision {want['precision']})")
            served = _string_parameters(self.model_config(model))
            sha = served.get(SHA_PARAMETER)
            if sha is None:
                raise MicrogestureError(
                    f"Triton at {self.url}: model {model!r} does not say which file it serves "
                    f"(no {SHA_PARAMETER} parameter in its config); serve a repository written by "
                    "microgesture serve or microgesture export --formats triton")
            if sha != want["sha256"]:
                raise MicrogestureError(
                    f"Triton at {self.url} serves another model: its {model!r} is "
                    f"{served.get('microgesture_file', '?')} ({served.get('microgesture_precision', '?')}, "
                    f"sha256 {sha[:12]}...) but this bundle's is {want['file']} "
                    f"({want['precision']}, sha256 {want['sha256'][:12]}...); serve this bundle "
                    f"(microgesture serve BUNDLE --precision {want['precision']}) or stream with "
                    "the bundle and --precision the server holds")

    def connect(self) -> None:
        """First contact: a clear error when the server is unreachable or wrong."""
        if not self.live():
            raise MicrogestureError(f"cannot reach a Triton server at {self.url}: start one with "
                                    "microgesture serve BUNDLE, or check the address and port")
        self.check()

    # ------------------------------------------------------------ calls
    def infer(self, model: str, feeds: Mapping[str, np.ndarray],
              outputs: list[str]) -> dict[str, np.ndarray]:
        """Run ``model`` on ``feeds``; waits out an outage of the server (see module doc)."""
        while True:
            self._wait_until_back()
            try:
                return self._infer_once(model, feeds, outputs)
            except MicrogestureError:
                raise
            except Exception as exc:
                if self._stop.is_set():
                    raise MicrogestureError(f"Triton at {self.url}: stopped ({exc})") from exc
                self._drop_client()
                if self.live():  # the server answers: the request itself failed
                    raise MicrogestureError(f"Triton at {self.url}, model {model!r}: {exc}") from exc
                self._mark_lost(exc)

    def _infer_once(self, model, feeds, outputs):
        m = self.module
        inputs = []
        for name, array in feeds.items():
            t = m.InferInput(name, list(array.shape), _TRITON_DTYPES[array.dtype.name])
            t.set_data_from_numpy(array)
            inputs.append(t)
        wanted = [m.InferRequestedOutput(n) for n in outputs]
        if self.protocol == "grpc":
            result = self.client().infer(model, inputs, outputs=wanted,
                                         client_timeout=self.timeout_s)
        else:
            result = self.client().infer(model, inputs, outputs=wanted)
        return {n: result.as_numpy(n) for n in outputs}

    def _mark_lost(self, exc: Exception) -> None:
        with self._lock:
            if self._lost:
                return
            self._lost = True
            self.outages += 1
        self._status("lost", f"Triton at {self.url} went away ({type(exc).__name__}); "
                             "windows wait for it", None)
        threading.Thread(target=self._reconnect, name="triton-reconnect", daemon=True).start()

    def _reconnect(self) -> None:
        delay, attempt, started = self.retry_s[0], 0, time.monotonic()
        error: Exception | None = None
        while not self._stop.is_set():
            attempt += 1
            self._status("reconnecting", f"Triton at {self.url}", attempt)
            if self.live():
                try:
                    self.check()
                    error = None
                except MicrogestureError as exc:  # another model now: stop and say so
                    error = exc
                except Exception:  # still starting: not ready yet
                    error = None
                else:
                    self._status("reconnected", f"Triton at {self.url}, serving this bundle",
                                 attempt)
                    break
                if error is not None:
                    self._status("lost", str(error), attempt)
                    break
            if self.wait_s is not None and time.monotonic() - started > self.wait_s:
                error = MicrogestureError(f"Triton at {self.url} did not come back within "
                                          f"{self.wait_s:.0f} s")
                self._status("lost", str(error), attempt)
                break
            self._stop.wait(delay)
            delay = min(delay * 2, self.retry_s[1])
        with self._lock:
            self._lost = False
            self._failure = error if error is not None or not self._stop.is_set() else \
                MicrogestureError(f"Triton at {self.url}: stopped while it was away")
            self._back.notify_all()

    def _wait_until_back(self) -> None:
        with self._lock:
            while self._lost:
                self._back.wait(0.5)
            failure = self._failure
        if failure is not None:
            raise failure

    def _status(self, status: str, detail: str, attempt: int | None) -> None:
        if self.on_status is not None:
            try:
                self.on_status(status, detail, attempt)
            except Exception:  # a status sink must not break inference
                pass

    def interrupt(self) -> None:
        """Stop waiting for a server that is away (at shutdown)."""
        self._stop.set()
        with self._lock:
            self._back.notify_all()

    def close(self) -> None:
        self.interrupt()
        self._drop_client()


class TritonStage(_BackendBase):
    """One stage of a bundle, run by the model of the same name on a Triton server."""

    def __init__(self, connection: TritonConnection, name: str, stage: Mapping[str, Any],
                 precision: str, cast: bool = False):
        self.connection, self.name, self.precision, self.cast = connection, name, precision, cast
        self._inputs = tuple(tensor_spec(n, s["shape"], s.get("dtype", "float32"))
                             for n, s in stage["inputs"].items())
        self._outputs = tuple(tensor_spec(n, s["shape"], s.get("dtype", "float32"))
                              for n, s in stage["outputs"].items())
        self._names = [s.name for s in self._outputs]

    @property
    def providers(self) -> tuple[str, ...]:
        return (f"Triton {self.connection.url} model {self.name} ({self.precision})",)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = validate_feeds(self._inputs, feeds, cast=self.cast, where=self.name)
        return self.connection.infer(self.name, feeds, self._names)

    def interrupt(self) -> None:
        self.connection.interrupt()

    def close(self) -> None:
        self.connection.close()


def open_triton_stages(url: str, manifest: Mapping[str, Any], precision: str,
                       names: tuple[str, ...] = ("visual", "pose", "head"), *,
                       on_status: Status | None = None, wait_s: float | None = None,
                       timeout_s: float = 60.0) -> dict[str, TritonStage]:
    """The bundle's stages (those of ``names`` it has) on the Triton server at ``url``,
    after checking that the server serves exactly this bundle's files at ``precision``."""
    from microgesture.core.bundle import stage_file

    connection = TritonConnection(url, on_status=on_status, wait_s=wait_s, timeout_s=timeout_s)
    stages = {n: manifest["stages"][n] for n in names if n in manifest["stages"]}
    for name in stages:
        file = stage_file(manifest, name, precision).name
        connection.expect(name, manifest["files"][file]["sha256"], file, precision)
    connection.connect()
    return {n: TritonStage(connection, n, s, precision) for n, s in stages.items()}
