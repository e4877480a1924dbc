"""Serve a bundle with the ``tritonserver`` of the ``nvidia-pytriton`` wheel (CPU).

The wheel (``pip install "microgesture[triton]"``) ships NVIDIA's ``tritonserver``
binary with the Python backend only, so the bundle is served from its CPU
repository (:func:`export.triton.write_repository` with ``flavour="cpu"``:
Python-backend models running the stage graphs with ONNX Runtime).

What it takes to run it, found on this machine:

- the backend directory holds ``libtriton_python.so`` and the Python backend stub
  for the running Python (``python_backend_stubs/<major.minor>/``); we assemble
  it in a directory of our own instead of writing into the installed wheel;
- the binary and the stub load their libraries from ``nvidia_pytriton.libs``
  (``LD_LIBRARY_PATH``);
- the stub embeds the system ``libpython3.X`` and finds its packages through the
  first ``python3`` on ``PATH``: with this interpreter's directory (a venv's
  ``bin``) first, the stage models import this environment's numpy and
  onnxruntime; without it they fail with ``No module named 'numpy'``.

:class:`TritonProcess` starts the server bound to loopback (``--http-address``,
``--grpc-address``, ``--metrics-address``), waits until every model is ready,
and stops it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from microgesture.core.errors import MicrogestureError

GPU_CONTAINER = "nvcr.io/nvidia/tritonserver:<yy.mm>-py3"
INSTALL = 'pip install "microgesture[triton]" (nvidia-pytriton ships tritonserver)'


@dataclass(frozen=True)
class TritonInstall:
    """Where the wheel's server, backend, stub and libraries are."""

    server: Path
    backend: Path
    stub: Path
    libs: Path


def find_install() -> TritonInstall:
    """The pip ``tritonserver`` and its Python backend stub for this Python."""
    try:
        import pytriton
    except ImportError as exc:
        raise MicrogestureError(f"tritonserver is not installed: {INSTALL}") from exc
    root = Path(pytriton.__file__).resolve().parent
    dist = root / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    install = TritonInstall(server=dist / "bin" / "tritonserver",
                            backend=dist / "backends" / "python",
                            stub=dist / "python_backend_stubs" / version /
                            "triton_python_backend_stub",
                            libs=root.parent / "nvidia_pytriton.libs")
    if not install.server.is_file():
        raise MicrogestureError(f"{install.server} is missing: reinstall nvidia-pytriton")
    if not install.stub.is_file():
        have = sorted(p.name for p in (dist / "python_backend_stubs").glob("*"))
        raise MicrogestureError(f"nvidia-pytriton has no Python backend stub for Python {version} "
                                f"(it has {', '.join(have) or 'none'}): run microgesture with one "
                                "of those Pythons")
    return install


def backend_directory(install: TritonInstall, out: Path) -> Path:
    """``out/python/`` with the Python backend and the stub for this Python."""
    python = out / "python"
    python.mkdir(parents=True, exist_ok=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy2(install.backend / name, python / name)
    shutil.copy2(install.stub, python / "triton_python_backend_stub")
    return out


def free_ports(n: int = 3) -> tuple[int, ...]:
    """``n`` TCP ports free on loopback now (for tests and benchmarks)."""
    import socket

    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = tuple(s.getsockname()[1] for s in sockets)
    for s in sockets:
        s.close()
    return ports


def server_environment(install: TritonInstall) -> dict[str, str]:
    """The server's environment: the wheel's libraries, and this Python first on PATH."""
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (str(install.libs), env.get("LD_LIBRARY_PATH", "")) if p)
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    return env


def check_address(address: str, allow_remote: bool) -> str:
    """``address`` (an IP the server binds to), refused when not loopback unless allowed."""
    import ipaddress

    try:
        loopback = ipaddress.ip_address(address).is_loopback
    except ValueError:
        raise MicrogestureError(f"--address {address!r} is not an IP address (e.g. 127.0.0.1, "
                                "or 0.0.0.0 with --allow-remote)") from None
    if not allow_remote and not loopback:
        raise MicrogestureError(f"--address {address} is not a loopback address: pass "
                                "--allow-remote to serve other machines")
    return address


class TritonProcess:
    """A running ``tritonserver`` on ``repository``; ``stop()`` ends it.

    ``ports``: (http, grpc, metrics). The log goes to ``log_path`` (default: a file
    in the work directory). Raises :class:`MicrogestureError` with the log's tail
    when the server exits or is not ready within ``timeout_s``.
    """

    def __init__(self, repository: str | Path, address: str = "127.0.0.1",
                 ports: tuple[int, int, int] = (8000, 8001, 8002), timeout_s: float = 120.0,
                 log_path: str | Path | None = None, work_dir: str | Path | None = None):
        self.repository = Path(repository)
        self.address, self.ports = address, tuple(int(p) for p in ports)
        install = find_install()
        self._tmp = None if work_dir else tempfile.TemporaryDirectory(prefix="microgesture-triton-")
        work = Path(work_dir or self._tmp.name)
        backends = backend_directory(install, work / "backends")
        self.log_path = Path(log_path) if log_path else work / "tritonserver.log"
        http, grpc, metrics = self.ports
        self.command = [str(install.server), f"--model-repository={self.repository}",
                        f"--backend-directory={backends}",
                        f"--http-address={address}", f"--http-port={http}",
                        f"--grpc-address={address}", f"--grpc-port={grpc}",
                        f"--metrics-address={address}", f"--metrics-port={metrics}",
                        "--exit-timeout-secs=5"]
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT,
                                        env=server_environment(install),
                                        start_new_session=True)
        try:
            self.wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise

    @property
    def http_url(self) -> str:
        return f"http://{self.address}:{self.ports[0]}"

    @property
    def grpc_url(self) -> str:
        return f"grpc://{self.address}:{self.ports[1]}"

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise MicrogestureError(f"tritonserver exited with code {self.process.returncode} "
                                        f"before it was ready; its log ({self.log_path}) "
                                        f"ends:\n{self.log_tail()}")
            if self.ready():
                return
            time.sleep(0.25)
        raise MicrogestureError(f"tritonserver was not ready after {timeout_s:.0f} s; its log "
                                f"({self.log_path}) ends:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM (SIGKILL after ``timeout_s``); returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()
        return self.process.returncode

    def cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> TritonProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        self.cleanup()


def gpu_instructions(bundle: str | Path, ports: tuple[int, int, int]) -> str:
    """How to serve the same bundle on a GPU in NVIDIA's container instead."""
    http, grpc, metrics = ports
    repo = Path(bundle).resolve() / "triton"
    return (f"GPU flavour (ONNX Runtime / TensorRT backends) in NVIDIA's container instead:\n"
            f"  on the GPU box: microgesture export RUN --out BUNDLE --formats "
            f"onnx,fp16,engine,triton   # writes BUNDLE/triton ({repo} for this bundle)\n"
            f"  docker run --gpus all --rm -p {http}:8000 -p {grpc}:8001 -p {metrics}:8002 "
            f"-v {repo}:/models {GPU_CONTAINER} tritonserver --model-repository=/models")


def serve_bundle(bundle: str | Path, repository: str | Path | None = None,
                 precision: str = "auto", address: str = "127.0.0.1",
                 ports: tuple[int, int, int] = (8000, 8001, 8002), max_batch: int = 8,
                 instances: int = 1, onnx_threads: int = 1, max_queue_delay_us: int = 2000,
                 allow_remote: bool = False, timeout_s: float = 120.0,
                 log_path: str | Path | None = None) -> TritonProcess:
    """Write ``bundle``'s CPU repository (into ``repository``, or a temporary
    directory) and start the pip ``tritonserver`` on it; returns once it is ready."""
    from microgesture.core.bundle import read_manifest
    from microgesture.export.triton import write_repository

    check_address(address, allow_remote)
    find_install()  # a clear message before any work
    manifest = read_manifest(bundle)
    if precision == "auto":
        have = {p for s in manifest["stages"].values() for p in s.get("files", {})}
        precision = "int8" if "int8" in have else "fp32"
    work = tempfile.TemporaryDirectory(prefix="microgesture-serve-")
    try:
        repo = Path(repository) if repository else Path(work.name) / "repository"
        write_repository(bundle, repo, max_batch=max_batch, precision=precision,
                         instance_count=instances, max_queue_delay_us=max_queue_delay_us,
                         flavour="cpu", onnx_threads=onnx_threads)
        server = TritonProcess(repo, address, ports, timeout_s=timeout_s, log_path=log_path,
                               work_dir=work.name)
    except BaseException:
        work.cleanup()
        raise
    server._tmp, server.precision = work, precision  # removed by cleanup()
    return server
