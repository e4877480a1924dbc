"""The ZeroMQ event publisher with its JSONL log and heartbeats (:class:`EventPublisher`;
the wire format is described in :mod:`microgesture.stream.events`)."""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import zmq

from microgesture.core.errors import MicrogestureError
from microgesture.core.redact import redact_text
from microgesture.stream.records import (PHASES, SCHEMA, SOURCE_STATUSES, GestureEvent, WindowInfo,
                                        _gesture_body, _jsonable, _latency_json, _top_k, _top_k_json,
                                        _window_json, check_stream_id, wall_time)

_log = logging.getLogger(__name__)
DEFAULT_ADDRESS = "tcp://127.0.0.1:5555"

_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)

def _is_loopback_host(host: str) -> bool:
    if host in ("localhost", "lo"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind_address(address: str, allow_remote: bool = False) -> str:
    """``address`` unchanged if it is a valid bind address that we may use.

    tcp on a loopback address (127.0.0.0/8, ::1, localhost, lo), ipc and inproc
    are local; anything else (``tcp://*:5555``, ``tcp://0.0.0.0:5555``, a LAN
    address, other transports) needs ``allow_remote=True``.
    """
    example = "e.g. tcp://127.0.0.1:5555 or ipc:///tmp/microgesture.sock"
    if not isinstance(address, str) or "://" not in address:
        raise MicrogestureError(f"invalid ZeroMQ address {address!r}: expected TRANSPORT://ENDPOINT, {example}.")
    transport, rest = address.split("://", 1)
    if transport in ("ipc", "inproc"):
        if not rest:
            raise MicrogestureError(f"invalid ZeroMQ address {address!r}: the {transport} name is empty, {example}.")
        return address
    if transport == "tcp":
        host, sep, port = rest.rpartition(":")
        if not sep or not host or not (port.isdigit() or port == "*"):
            raise MicrogestureError(f"invalid ZeroMQ address {address!r}: expected tcp://HOST:PORT "
                                    f"(PORT a number, or * for any free port), {example}.")
        local = _is_loopback_host(host.strip("[]"))
    else:
        local = False
    if not local and not allow_remote:
        raise MicrogestureError(
            f"refusing to publish on {address}: it is reachable from other machines. Publish on "
            f"loopback ({DEFAULT_ADDRESS}) or ipc, or allow it explicitly (allow_remote=True; on the "
            f"command line --allow-remote, with --curve-secret-key and --curve-clients to encrypt "
            f"the events and admit only known subscribers).")
    return address


def _check_ipc_free(path: str, address: str) -> None:
    """ZeroMQ silently takes over an ipc path that another process is bound to: refuse instead."""
    if path.startswith("@") or not os.path.lexists(path):   # abstract namespace, or nothing there
        return
    if not stat.S_ISSOCK(os.lstat(path).st_mode):
        raise MicrogestureError(f"cannot publish on {address}: {path} exists and is not a socket; "
                                f"choose another path or remove the file.")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(0.5)
        probe.connect(path)
    except OSError:
        return   # a stale socket file left by a process that died: ZeroMQ replaces it
    finally:
        probe.close()
    raise MicrogestureError(f"cannot publish on {address}: the address is already in use (another "
                            f"process is bound to it). Choose another path, or stop the other process.")


class EventPublisher:
    """Publish events on a ZeroMQ PUB socket without ever blocking the caller.

    ``address``: where to bind (``tcp://127.0.0.1:*`` picks a free port; see
    :attr:`endpoint`). ``hwm``: messages queued per subscriber before ZeroMQ drops
    for it. ``log_path``: append every event to this JSONL file. ``allow_remote``:
    permit a bind reachable from other machines. ``heartbeat_s``: heartbeat period
    of :meth:`start_heartbeats`. ``linger_s``: how long :meth:`close` may wait for
    queued messages. ``context``: a ``zmq.Context`` (default: the shared instance).

    Counters: ``sent`` (handed to ZeroMQ), ``dropped`` (refused by the socket),
    ``logged`` (lines written to the log). Per-subscriber drops at the high-water
    mark happen inside ZeroMQ and show up as gaps in ``seq`` on that subscriber.
    """

    def __init__(self, address: str = DEFAULT_ADDRESS, hwm: int = 1000, log_path: str | os.PathLike | None = None,
                 *, allow_remote: bool = False, heartbeat_s: float = 1.0, linger_s: float = 1.0,
                 log_fsync: bool = False, context: zmq.Context | None = None,
                 curve_secret_key: str | os.PathLike | None = None,
                 curve_clients: str | os.PathLike | None = None):
        check_bind_address(address, allow_remote)
        if address.startswith("ipc://"):
            _check_ipc_free(address[len("ipc://"):], address)
        if not isinstance(hwm, int) or hwm < 1:
            raise MicrogestureError(f"the send high-water mark must be a whole number of messages >= 1, got {hwm!r}.")
        if not heartbeat_s > 0:
            raise MicrogestureError(f"heartbeat_s must be > 0 seconds, got {heartbeat_s!r}.")
        self.address, self.hwm, self.heartbeat_s = address, hwm, float(heartbeat_s)
        self.linger_s, self.log_fsync = float(linger_s), bool(log_fsync)
        self.sent = self.dropped = self.logged = 0
        self.log_error: str | None = None   # why the JSONL log was turned off
        self._lock = threading.Lock()
        self._seq: dict[str, int] = {}
        self._type_seq: dict[tuple[str, str], int] = {}
        self._known_streams: set[str] = set()
        self._born = time.monotonic_ns()
        self._wall_offset = time.time_ns() - time.monotonic_ns()   # wall = monotonic + offset
        self._closed = False
        self._hb_sources: dict[str, Callable[[], Mapping] | None] = {}
        self._hb_stop = threading.Event()
        self._hb_thread: threading.Thread | None = None

        self._log = None
        if log_path is not None:
            self.log_path = Path(log_path)
            try:
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                self._log = open(self.log_path, "ab", buffering=0)
            except OSError as err:
                raise MicrogestureError(f"cannot open the event log {self.log_path}: {err.strerror}. "
                                        f"Choose a writable path.") from None
        else:
            self.log_path = None

        # CURVE: a context of its own (one ZAP authenticator per context)
        self._own_context = zmq.Context() if curve_secret_key else None
        context = self._own_context or context or zmq.Context.instance()
        self._socket = context.socket(zmq.PUB)
        self._socket.setsockopt(zmq.SNDHWM, hwm)
        self._socket.setsockopt(zmq.LINGER, 0)
        if "://[" in address:   # an IPv6 literal, e.g. tcp://[::1]:5555
            self._socket.setsockopt(zmq.IPV6, 1)
        self._auth = None
        try:
            if curve_secret_key:
                from microgesture.stream.curve import serve
                self._auth = serve(self._socket, context, curve_secret_key, curve_clients)
            self._socket.bind(address)
        except (zmq.ZMQError, MicrogestureError) as err:
            self._close_socket(0)
            if self._log is not None:
                self._log.close()
            if isinstance(err, MicrogestureError):
                raise
            raise MicrogestureError(self._bind_message(address, err)) from None
        self.encrypted = bool(curve_secret_key)
        if not self.encrypted and not address.startswith(("ipc://", "inproc://")) \
                and not _is_loopback_host(address.split("://", 1)[1].rpartition(":")[0].strip("[]")):
            _log.warning("publishing on %s without encryption: anyone who can reach it reads every "
                         "event; add --curve-secret-key and --curve-clients (see microgesture keys)",
                         address)
        self.endpoint: str = self._socket.getsockopt(zmq.LAST_ENDPOINT).decode()

    @staticmethod
    def _bind_message(address: str, err: zmq.ZMQError) -> str:
        if err.errno == zmq.EADDRINUSE:
            return (f"cannot publish on {address}: the address is already in use (another microgesture "
                    f"stream or another program is bound to it). Choose another port, e.g. "
                    f"tcp://127.0.0.1:5556, or stop the other process.")
        if err.errno == errno.EADDRNOTAVAIL:
            return (f"cannot publish on {address}: no network interface of this machine has that "
                    f"address. Use {DEFAULT_ADDRESS} or one of this machine's addresses.")
        if err.errno == zmq.EPROTONOSUPPORT:
            return f"cannot publish on {address}: unknown transport. Use tcp://, ipc:// or inproc://."
        return f"cannot publish on {address}: {err.strerror}. Use e.g. {DEFAULT_ADDRESS}."

    # -- sending

    def _send(self, type_: str, stream_id: str, body: Callable[[int, int], dict]) -> dict:
        if stream_id not in self._known_streams:
            self._known_streams.add(check_stream_id(stream_id))
        with self._lock:
            if self._closed:
                raise RuntimeError("the event publisher is closed")
            seq = self._seq.get(stream_id, 0)
            self._seq[stream_id] = seq + 1
            type_seq = self._type_seq.get((stream_id, type_), 0)
            self._type_seq[(stream_id, type_)] = type_seq + 1
            now = time.monotonic_ns()
            offset = time.time_ns() - now
            if abs(offset - self._wall_offset) > 1_000_000:   # follow clock steps, not call jitter,
                self._wall_offset = offset                    # so one instant always prints the same
            offset = self._wall_offset
            record = {"schema": SCHEMA, "type": type_, "stream": stream_id, "seq": seq,
                      "type_seq": type_seq, "time_ns": now, "time": wall_time(now, offset)}
            record.update(body(now, offset))
            payload = json.dumps(record, separators=(",", ":"), ensure_ascii=False,
                                 allow_nan=False).encode("utf-8")
            if self._log is not None:
                try:
                    self._write_log(payload + b"\n")
                except OSError as err:   # a full disk must not stop the events: the log goes off
                    self._log_failed(err)
            try:   # a multipart message is atomic: if the topic is queued, so is the payload
                self._socket.send(f"{type_}.{stream_id}".encode(), _SNDMORE_NOBLOCK)
                self._socket.send(payload, _NOBLOCK)
                self.sent += 1
            except zmq.ZMQError:   # EAGAIN at the high-water mark, or a socket in trouble: never block
                self.dropped += 1
            return record

    def _write_log(self, line: bytes) -> None:
        view = memoryview(line)
        while view:
            written = self._log.write(view)
            view = view[written:]
        if self.log_fsync:
            os.fsync(self._log.fileno())
        self.logged += 1

    def _log_failed(self, err: OSError) -> None:
        """Report the log's failure once and stop writing it (the socket goes on)."""
        _log.error("the event log %s failed (%s); it is turned off, events are still published",
                   self.log_path, err)
        self.log_error = f"{type(err).__name__}: {err}"
        try:
            self._log.close()
        except OSError:
            pass
        self._log = None

    def publish(self, event: GestureEvent) -> dict:
        """Publish one gesture event from a :class:`GestureSmoother`; return the record sent."""
        if event.phase not in PHASES:
            raise ValueError(f"unknown gesture phase {event.phase!r}: expected one of {PHASES}")
        return self._send("gesture", event.stream_id, lambda now, off: _gesture_body(event, now, off))

    def publish_source(self, stream_id: str, status: str, detail: str = "", source: str | None = None, *,
                       attempt: int | None = None, size: tuple[int, int] | None = None,
                       previous_size: tuple[int, int] | None = None) -> dict:
        """Publish a change of the source's state (:data:`SOURCE_STATUSES`).

        From a ``stream.sources.SourceStatus`` ``st``: ``publish_source(st.stream_id,
        st.event, st.detail, attempt=st.attempt, size=st.size, previous_size=st.previous_size)``.
        """
        if status not in SOURCE_STATUSES:
            raise ValueError(f"unknown source status {status!r}: expected one of {SOURCE_STATUSES}")
        body = {"status": status, "detail": redact_text(detail),
                "source": None if source is None else redact_text(source),
                "attempt": None if attempt is None else int(attempt),
                "size": None if size is None else [int(v) for v in size],
                "previous_size": None if previous_size is None else [int(v) for v in previous_size]}
        return self._send("source", stream_id, lambda now, off: body)

    def publish_heartbeat(self, stream_id: str, stats: Mapping | None = None, stats_error: str | None = None) -> dict:
        """Publish a heartbeat with the stream's ``stats`` (fps, dropped frames, queue depths, ...)."""
        def body(now, off):
            out = {"interval_s": self.heartbeat_s, "uptime_s": round((now - self._born) / 1e9, 3),
                   "stats": _jsonable(dict(stats or {})),
                   "publisher": {"sent": self.sent, "dropped": self.dropped, "logged": self.logged,
                                 **({"log_error": self.log_error} if self.log_error else {})}}
            if stats_error is not None:
                out["stats_error"] = stats_error
            return out
        return self._send("heartbeat", stream_id, body)

    def publish_window(self, window: WindowInfo, scores, labels: Sequence[str], top_k: int = 5) -> dict:
        """Publish one window's raw probabilities (debugging; subscribers opt in to ``window``)."""
        p = np.asarray(scores, dtype=np.float64)
        if p.shape != (len(labels),):
            raise ValueError(f"scores must have shape ({len(labels)},) (one per label), got {p.shape}")
        return self._send("window", window.stream_id, lambda now, off: {
            "window": _window_json(window, off), "scores": [round(float(s), 4) for s in p],
            "top_k": _top_k_json(_top_k(p, list(labels), top_k)),
            "latency_ms": _latency_json(window, now), "model": window.model_id, "paced": bool(window.paced)})

    # -- heartbeats

    def start_heartbeats(self, stream_id: str, stats: Callable[[], Mapping] | None = None) -> None:
        """Publish a heartbeat for ``stream_id`` every ``heartbeat_s`` from a timer thread.

        ``stats`` is called from that thread each time and returns the stream's
        stats dict; if it raises, the heartbeat still goes out, with ``stats_error``.
        """
        check_stream_id(stream_id)
        with self._lock:
            if self._closed:
                raise RuntimeError("the event publisher is closed")
            self._hb_sources[stream_id] = stats
            if self._hb_thread is None:
                self._hb_thread = threading.Thread(target=self._heartbeat_loop, name="microgesture-heartbeat",
                                                   daemon=True)
                self._hb_thread.start()

    def stop_heartbeats(self, stream_id: str | None = None) -> None:
        """Stop the heartbeats of one stream (all streams: None)."""
        with self._lock:
            if stream_id is None:
                self._hb_sources.clear()
            else:
                self._hb_sources.pop(stream_id, None)

    def _heartbeat_loop(self) -> None:
        next_beat = time.monotonic()
        while True:
            next_beat += self.heartbeat_s
            if self._hb_stop.wait(max(0.0, next_beat - time.monotonic())):
                return
            next_beat = max(next_beat, time.monotonic() - self.heartbeat_s)   # no burst after a stall
            with self._lock:
                sources = list(self._hb_sources.items())
            for stream_id, stats_fn in sources:
                stats, error = None, None
                try:
                    stats = stats_fn() if stats_fn is not None else None
                except Exception as err:   # a broken stats callback must not stop the heartbeats
                    error = f"{type(err).__name__}: {err}"
                try:
                    self.publish_heartbeat(stream_id, stats, stats_error=error)
                except RuntimeError:       # closed meanwhile
                    return

    # -- lifetime

    @property
    def stats(self) -> dict:
        """Counters: sent, dropped, logged, and events published per stream."""
        with self._lock:
            return {"sent": self.sent, "dropped": self.dropped, "logged": self.logged,
                    "log_error": self.log_error, "streams": dict(self._seq)}

    def close(self) -> None:
        """Stop heartbeats, give queued messages up to ``linger_s`` to leave, close the log."""
        self._hb_stop.set()
        if self._hb_thread is not None and self._hb_thread is not threading.current_thread():
            self._hb_thread.join(timeout=2.0)   # bounded even if a stats callback hangs
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._close_socket(max(0, round(self.linger_s * 1000)))
            if self._log is not None:
                self._log.close()

    def _close_socket(self, linger_ms: int) -> None:
        self._socket.close(linger=linger_ms)
        if self._auth is not None:
            self._auth.stop()
        if self._own_context is not None:
            self._own_context.term()

    def __enter__(self) -> EventPublisher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
