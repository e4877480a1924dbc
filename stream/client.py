"""The Python client for microgesture events: subscribe, iterate, detect lost messages.

Needs pyzmq and the standard library only (and ``microgesture.core`` for its error
type and the stream-id rule). Any other language reads the same wire format: a ZeroMQ SUB
socket connected to the publisher, subscribed to topic prefixes
``<type>.<stream>``, receiving two frames per message, the topic and one JSON
object (schema ``microgesture.event/1``, documented in
:mod:`microgesture.stream.events` and ``stream/event.schema.json``).

::

    from microgesture.stream.client import Subscriber

    with Subscriber("tcp://127.0.0.1:5555", streams=["cam0"]) as sub:
        for event in sub:
            if event["type"] == "gesture" and event["phase"] == "start":
                print(event["label"], event["score"], event["latency_ms"]["total"])

Lost messages: ZeroMQ drops messages for a subscriber that does not keep up
(and before its subscription reached the publisher). Every event carries
``type_seq``, numbered per stream and type; the subscriber checks it for each
(stream, type) it receives, adds the number missed to ``gaps[stream]`` and marks
the next event with ``"_gap": n`` (and calls ``on_gap(stream, type, n, event)``).
A number that goes back means the publisher restarted: the event is marked
``"_restart": True``. Keys that start with ``_`` are added by the client, never
sent.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime

import zmq

from microgesture.core.errors import MicrogestureError, UnknownNameError
from microgesture.core.stream_ids import check_stream_id

# The same values as in microgesture.stream.events (kept here so the client needs no numpy).
SCHEMA_PREFIX = "microgesture.event/"
SCHEMA_MAJOR = 1
EVENT_TYPES = ("gesture", "heartbeat", "source", "window")
DEFAULT_TYPES = ("gesture", "heartbeat", "source")
DEFAULT_ADDRESS = "tcp://127.0.0.1:5555"

_POLL_SLICE_S = 0.5   # a blocking wait polls in slices, so Ctrl-C is always seen promptly
_DEFAULT = object()

Event = dict
Callback = Callable[[Event], object]


def _as_tuple(value, what: str) -> tuple[str, ...]:
    items = (value,) if isinstance(value, str) else tuple(value)
    if not items:
        raise MicrogestureError(f"no {what} given: name at least one, or leave it out for all.")
    return items


class Subscriber:
    """A SUB socket that yields decoded events (dicts).

    ``connect``: the publisher's address, or several. ``streams``: stream ids to
    receive (None: all). ``types``: event types to receive (``window`` events are
    opt-in). ``timeout``: seconds to wait for an event before iteration, :meth:`run`
    and :meth:`recv` give up (None: forever). ``hwm``: messages queued before
    ZeroMQ drops. ``on_gap(stream, type, missed, event)``: called on each gap.
    ``curve_server_key`` (the publisher's ``SERVER.key``) and ``curve_key`` (your
    ``NAME.key_secret``, whose ``NAME.key`` the publisher admits): for a publisher
    that encrypts with CurveZMQ (:mod:`microgesture.stream.curve`).

    Counters: ``received`` (events delivered), ``gaps`` ({stream: events missed}),
    ``missed`` (their total), ``invalid`` (messages that were not events of a
    schema version this client reads; skipped).
    """

    def __init__(self, connect: str | Iterable[str] = DEFAULT_ADDRESS, streams: str | Iterable[str] | None = None,
                 types: str | Iterable[str] = DEFAULT_TYPES, timeout: float | None = None, *, hwm: int = 1000,
                 on_gap: Callable[[str, str, int, Event], object] | None = None,
                 context: zmq.Context | None = None, curve_server_key: str | None = None,
                 curve_key: str | None = None):
        addresses = _as_tuple(connect, "address to connect to")
        self.types = _as_tuple(types, "event types")
        for t in self.types:
            if t not in EVENT_TYPES:
                raise UnknownNameError("event type", t, EVENT_TYPES)
        self.streams = None if streams is None else _as_tuple(streams, "streams")
        for s in self.streams or ():
            check_stream_id(s)
        if timeout is not None and not timeout >= 0:
            raise MicrogestureError(f"timeout must be >= 0 seconds (or None to wait forever), got {timeout!r}.")
        self.timeout = timeout
        self.on_gap = on_gap
        self.received = self.invalid = 0
        self.gaps: dict[str, int] = {}
        self._last: dict[tuple[str, str], int] = {}
        self._callbacks: list[Callback] = []
        # ZeroMQ filters by prefix: "gesture.cam1" also matches "gesture.cam10", so
        # topics are compared exactly once received.
        self._topics = (None if self.streams is None
                        else {f"{t}.{s}".encode() for t in self.types for s in self.streams})
        self._socket = (context or zmq.Context.instance()).socket(zmq.SUB)
        self._socket.setsockopt(zmq.RCVHWM, hwm)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.IPV6, 1)   # tcp://[::1]:PORT as well as IPv4
        if curve_server_key or curve_key:   # an encrypting publisher (stream.curve)
            if not (curve_server_key and curve_key):
                self._socket.close(0)
                raise MicrogestureError("an encrypted publisher needs both its public key "
                                        "(curve_server_key, SERVER.key) and your key pair "
                                        "(curve_key, NAME.key_secret)")
            from microgesture.stream.curve import connect_as_client
            try:
                connect_as_client(self._socket, curve_server_key, curve_key)
            except MicrogestureError:
                self._socket.close(0)
                raise
        for prefix in (self._topics or {f"{t}.".encode() for t in self.types}):
            self._socket.setsockopt(zmq.SUBSCRIBE, prefix)
        for address in addresses:
            try:
                self._socket.connect(address)
            except zmq.ZMQError as err:
                self._socket.close(0)
                raise MicrogestureError(f"cannot connect to {address!r}: {err.strerror}. Give the publisher's "
                                        f"address, e.g. {DEFAULT_ADDRESS} or ipc:///tmp/microgesture.sock.") from None
        self.addresses = addresses

    @property
    def missed(self) -> int:
        """Events lost in all streams, as seen from sequence gaps."""
        return sum(self.gaps.values())

    # -- receiving

    def _decode(self, frames: list[bytes]) -> Event | None:
        if len(frames) != 2:
            return self._bad()
        if self._topics is not None and frames[0] not in self._topics:
            return None   # a longer stream id with the same prefix
        try:
            event = json.loads(frames[1])
        except ValueError:
            return self._bad()
        schema = event.get("schema", "") if isinstance(event, dict) else ""
        if not (isinstance(schema, str) and schema == f"{SCHEMA_PREFIX}{SCHEMA_MAJOR}"):
            return self._bad()
        stream, type_ = event.get("stream"), event.get("type")
        number = event.get("type_seq", event.get("seq"))
        if isinstance(stream, str) and isinstance(type_, str) and isinstance(number, int):
            key = (stream, type_)
            last = self._last.get(key)
            if last is not None and number > last + 1:
                missed = number - last - 1
                event["_gap"] = missed
                self.gaps[stream] = self.gaps.get(stream, 0) + missed
                if self.on_gap is not None:
                    self.on_gap(stream, type_, missed, event)
            elif last is not None and number <= last:
                event["_restart"] = True
            self._last[key] = number
        self.received += 1
        return event

    def _bad(self) -> None:
        self.invalid += 1
        return None

    def _next(self, timeout) -> tuple[bytes, Event] | None:
        """``(raw JSON, event)``, or None after ``timeout`` seconds without one."""
        timeout = self.timeout if timeout is _DEFAULT else timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = _POLL_SLICE_S if deadline is None else min(_POLL_SLICE_S, max(0.0, deadline - time.monotonic()))
            if self._socket.poll(round(wait * 1000)):
                frames = self._socket.recv_multipart(zmq.NOBLOCK)
                event = self._decode(frames)
                if event is not None:
                    return frames[1], event
            elif deadline is not None and time.monotonic() >= deadline:
                return None

    def recv(self, timeout: float | None = _DEFAULT) -> Event | None:  # type: ignore[assignment]
        """The next event, or None when ``timeout`` (default: the subscriber's) passes first."""
        item = self._next(timeout)
        return None if item is None else item[1]

    def __iter__(self) -> Iterator[Event]:
        """Events as they arrive; ends when ``timeout`` passes without one."""
        while (event := self.recv()) is not None:
            yield event

    # -- callbacks

    def on(self, callback: Callback) -> Callback:
        """Call ``callback(event)`` for every event :meth:`run` receives; usable as a decorator."""
        self._callbacks.append(callback)
        return callback

    def run(self, callback: Callback | None = None, count: int | None = None) -> int:
        """Receive events and call the callbacks (those from :meth:`on`, then ``callback``).

        Returns the number of events handled, after ``count`` of them or when
        ``timeout`` passes without one. A callback that raises stops the loop.
        """
        callbacks = self._callbacks + ([callback] if callback is not None else [])
        if not callbacks:
            raise ValueError("run() needs a callback: pass one, or register it with on()")
        handled = 0
        while count is None or handled < count:
            event = self.recv()
            if event is None:
                break
            for cb in callbacks:
                cb(event)
            handled += 1
        return handled

    # -- lifetime

    def close(self) -> None:
        self._socket.close(0)

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------- listen

def _clock(iso: str | None) -> str:
    """Local HH:MM:SS.mmm of an ISO UTC time."""
    try:
        return datetime.fromisoformat(str(iso).replace("Z", "+00:00")).astimezone().strftime("%H:%M:%S.%f")[:-3]
    except ValueError:
        return "??:??:??.???"


def _num(value, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def _latency(event: Event) -> str:
    """The latency, and for a file streamed faster than its frame rate what it means there."""
    text = f"  latency {_num((event.get('latency_ms') or {}).get('total'), '.1f')} ms"
    if event.get("paced") is False:
        text += " (video clock: file streamed faster than real time)"
    return text


def format_event(event: Event) -> str:
    """One readable line for an event: time, stream, seq, what happened, latency.

    ::

        10:15:02.512  cam0  #12  start   touching jaw [10]  score 0.81  latency 90.1 ms
        10:15:03.845  cam0  #19  end     touching jaw [10]  score 0.32  1.60 s (below_threshold)  latency 88.0 ms
        10:15:04.000  cam0  #20  heartbeat  29.9 fps  dropped 3  windows 240 run / 2 skipped  queues frames=1
        10:15:05.100  cam0  #21  source  lost: read failed

    A file streamed faster than its frame rate (``"paced": false``) has capture times
    on the video's own clock: its latency gets ``(video clock: ...)`` after it.
    """
    type_ = event.get("type")
    head = f"{_clock(event.get('time'))}  {event.get('stream', '?')}  #{event.get('seq', '?')}  "
    if type_ == "gesture":
        phase = event.get("phase", "?")
        text = (f"{phase:<6}  {event.get('label', '?')} [{event.get('class_id', '?')}]  "
                f"score {_num(event.get('score'), '.2f')}")
        if phase in ("update", "end"):
            text += f"  {_num((event.get('duration_ms') or 0) / 1e3, '.2f')} s"
        if event.get("reason"):
            text += f" ({event['reason']})"
        text += _latency(event)
    elif type_ == "heartbeat":
        stats = event.get("stats") or {}
        parts = ["heartbeat"]
        if "fps" in stats:
            parts.append(f"{_num(stats['fps'], '.1f')} fps")
        if "frames_dropped" in stats:
            parts.append(f"dropped {stats['frames_dropped']}")
        if "windows_run" in stats or "windows_skipped" in stats:
            parts.append(f"windows {stats.get('windows_run', '-')} run / {stats.get('windows_skipped', '-')} skipped")
        if stats.get("queue_depths"):
            parts.append("queues " + " ".join(f"{k}={v}" for k, v in stats["queue_depths"].items()))
        pub = event.get("publisher") or {}
        if pub.get("dropped"):
            parts.append(f"publisher dropped {pub['dropped']}")
        if event.get("stats_error"):
            parts.append(f"stats error: {event['stats_error']}")
        text = "  ".join(parts)
    elif type_ == "source":
        detail = event.get("detail")
        text = f"source  {event.get('status', '?')}" + (f": {detail}" if detail else "")
    elif type_ == "window":
        top = ", ".join(f"{label} {_num(score, '.2f')}" for label, score in (event.get("top_k") or [])[:3])
        text = f"window {(event.get('window') or {}).get('index', '?')}  {top}" + _latency(event)
    else:
        text = str(type_)
    if event.get("_gap"):
        text += f"  [gap: {event['_gap']} missed]"
    if event.get("_restart"):
        text += "  [publisher restarted]"
    return head + text


def listen(connect: str | Iterable[str] = DEFAULT_ADDRESS, streams: str | Iterable[str] | None = None,
           as_json: bool = False, types: str | Iterable[str] = DEFAULT_TYPES, count: int | None = None,
           timeout: float | None = None, out=None, curve_server_key: str | None = None,
           curve_key: str | None = None) -> int:
    """Print events as they arrive: what ``microgesture listen`` does.

    One line per event, readable (:func:`format_event`), or with ``as_json`` the
    event's JSON exactly as received (one object per line, for jq and friends).
    Returns the number of events printed, after ``count`` of them, after
    ``timeout`` seconds without an event, or on Ctrl-C. ``out``: default stdout.
    """
    out = sys.stdout if out is None else out
    printed = 0
    with Subscriber(connect, streams, types, timeout, curve_server_key=curve_server_key,
                    curve_key=curve_key) as sub:
        try:
            while count is None or printed < count:
                item = sub._next(timeout)
                if item is None:
                    break
                raw, event = item
                line = raw.decode("utf-8", "replace") if as_json else format_event(event)
                print(line, file=out, flush=True)
                printed += 1
        except KeyboardInterrupt:
            pass
        except BrokenPipeError:   # e.g. piped into `head`
            pass
    return printed
