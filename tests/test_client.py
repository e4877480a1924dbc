"""The client over real ZeroMQ sockets on loopback (tcp and ipc): topics, schema-valid
JSON, sequence numbers and gaps, filtering, heartbeats, a slow subscriber, listen()."""

import io
import json
import os
import re
import shutil
import tempfile
import threading
import time

import numpy as np
import pytest
import zmq

from microgesture.core.errors import MicrogestureError
from microgesture.stream import client, events
from microgesture.stream.client import Subscriber, format_event, listen
from microgesture.stream.events import EventPublisher, GestureSmoother, WindowInfo
from event_schema import validate_event

LABELS = ("rest", "touch jaw", "fold arms")


def win(i, stream="cam0"):
    t = time.monotonic_ns()
    return WindowInfo(stream, i, 4 * i, 4 * i + 31, t - 10**9, t, tuple(range(4 * i + 1, 4 * i + 32, 4)), (),
                      {"pose": 10.0, "window": 20.0}, "tiny-test")


def gestures(stream="cam0", n=12):
    """A start, updates and an end for one stream."""
    sm = GestureSmoother(LABELS, window=1, min_duration_s=0, update_every=1)
    out = []
    for i in range(n):
        out += sm.feed([0.05, 0.9, 0.05] if i < n - 1 else [0.34, 0.33, 0.33], win(i, stream))
    return out


def sync(pub, sub, stream="sync", type_="source"):
    """Publish until the subscription has reached the publisher (ZeroMQ's slow joiner), then drain."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if type_ == "source":
            pub.publish_source(stream, "connected", "sync")
        else:
            pub.publish_heartbeat(stream)
        if sub.recv(timeout=0.05) is not None:
            while sub.recv(timeout=0.1) is not None:
                pass
            return
    raise AssertionError("the subscription never reached the publisher")


@pytest.fixture
def pub():
    publisher = EventPublisher("tcp://127.0.0.1:*")
    yield publisher
    publisher.close()


@pytest.fixture
def short_dir():
    """A short folder for ipc sockets (their paths are limited to about 100 bytes)."""
    folder = tempfile.mkdtemp(prefix="mg", dir="/tmp")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_constants_agree_with_the_publisher():
    assert client.EVENT_TYPES == events.EVENT_TYPES and client.DEFAULT_ADDRESS == events.DEFAULT_ADDRESS
    assert f"{client.SCHEMA_PREFIX}{client.SCHEMA_MAJOR}" == events.SCHEMA


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
def test_topics_schema_and_sequence_numbers(transport, short_dir):
    address = "tcp://127.0.0.1:*" if transport == "tcp" else f"ipc://{short_dir}/events.sock"
    with EventPublisher(address) as publisher:
        raw = zmq.Context.instance().socket(zmq.SUB)   # what any other language would do
        raw.setsockopt(zmq.SUBSCRIBE, b"")
        raw.connect(publisher.endpoint)
        with Subscriber(publisher.endpoint, types=client.EVENT_TYPES, timeout=1) as sub:
            sync(publisher, sub)
            while raw.poll(100):
                raw.recv_multipart()
            sent = []
            for stream in ("cam0", "cam1"):
                sent.append(publisher.publish_source(stream, "connected", "opened"))
                sent += [publisher.publish(e) for e in gestures(stream)]
                sent.append(publisher.publish_window(win(99, stream), [0.2, 0.5, 0.3], LABELS))
                sent.append(publisher.publish_heartbeat(stream, {"fps": 30.0}))
            got = [sub.recv() for _ in sent]
            assert got == sent and sub.missed == 0 and sub.invalid == 0
            for frames in (raw.recv_multipart() for _ in sent):
                record = json.loads(frames[1])
                assert frames[0] == f"{record['type']}.{record['stream']}".encode()
                validate_event(record)
            raw.close(0)
    for stream in ("cam0", "cam1"):
        seqs = [e["seq"] for e in got if e["stream"] == stream]
        assert seqs == list(range(len(seqs)))
    phases = [e["phase"] for e in got if e["type"] == "gesture" and e["stream"] == "cam0"]
    assert phases[0] == "start" and phases[-1] == "end" and set(phases[1:-1]) == {"update"}


def test_stream_and_type_filters_are_exact(pub):
    with Subscriber(pub.endpoint, streams=["cam1"], types=("gesture", "source"), timeout=0.3) as sub:
        sync(pub, sub, stream="cam1")
        for stream in ("cam10", "cam1", "cam2"):
            pub.publish_heartbeat(stream)
            pub.publish_source(stream, "lost", "gone")
            for e in gestures(stream, n=4):
                pub.publish(e)
        got = list(sub)
    assert {e["stream"] for e in got} == {"cam1"}                  # not cam10: topics compared exactly
    assert [e["type"] for e in got] == ["source"] + ["gesture"] * 4   # no heartbeats
    assert sub.missed == 0 and not any("_gap" in e for e in got)   # skipped types are not gaps


def test_heartbeats_arrive(pub):
    pub.heartbeat_s = 0.05
    with Subscriber(pub.endpoint, types="heartbeat", timeout=2) as sub:
        pub.start_heartbeats("cam0", lambda: {"fps": 29.97, "frames_dropped": 4, "windows_run": 10,
                                              "windows_skipped": 0, "queue_depths": {"frames": 3}})
        beats = [sub.recv() for _ in range(3)]
    assert all(b is not None and b["type"] == "heartbeat" for b in beats)
    assert beats[-1]["stats"]["queue_depths"] == {"frames": 3} and beats[-1]["publisher"]["sent"] >= 1
    assert np.all(np.diff([b["type_seq"] for b in beats]) == 1)
    validate_event(beats[0])


def test_slow_subscriber_never_blocks_the_publisher_and_sees_the_gap(pub):
    """100k events to a subscriber that does not read: the publisher keeps its pace, the
    subscriber later finds out how many it lost."""
    sub = Subscriber(pub.endpoint, streams="cam0", types="source", hwm=100, timeout=0.5)
    sync(pub, sub, stream="cam0")
    before = pub.sent + pub.dropped
    timing = {}

    def flood():   # about 300 bytes each, as a gesture event without its window
        t0, worst = time.perf_counter(), 0.0
        for i in range(100_000):
            t = time.perf_counter()
            pub.publish_source("cam0", "connected", f"event {i:06d} " + "x" * 150)
            worst = max(worst, time.perf_counter() - t)
        timing.update(total=time.perf_counter() - t0, worst=worst)

    sender = threading.Thread(target=flood, daemon=True)
    sender.start()
    sender.join(60)
    assert not sender.is_alive(), "publishing blocked on a subscriber that does not read"
    assert timing["worst"] < 0.5 and pub.sent + pub.dropped - before == 100_000
    early = []
    while (e := sub.recv()) is not None:
        early.append(e)
    last = pub.publish_source("cam0", "ended")        # the next event shows what was lost
    got = sub.recv(timeout=2)
    sub.close()
    assert 0 < len(early) < 100_000
    assert got is not None and got["type_seq"] == last["type_seq"] and got["_gap"] > 0
    assert len(early) + sub.gaps["cam0"] + 1 == got["type_seq"] - early[0]["type_seq"] + 1
    assert format_event(got).endswith(f"[gap: {got['_gap']} missed]")


def test_gap_callback_restart_and_invalid_messages():
    ctx = zmq.Context.instance()
    raw = ctx.socket(zmq.PUB)
    port = raw.bind_to_random_port("tcp://127.0.0.1")
    seen = []
    sub = Subscriber(f"tcp://127.0.0.1:{port}", timeout=0.3, on_gap=lambda *a: seen.append(a[:3]))

    def send(seq, schema=events.SCHEMA, topic=b"source.cam0"):
        body = {"schema": schema, "type": "source", "stream": "cam0", "seq": seq, "type_seq": seq,
                "time_ns": 1, "time": "2025-01-01T00:00:00.000000Z", "status": "connected", "detail": "",
                "source": None}
        raw.send_multipart([topic, json.dumps(body).encode()])

    deadline = time.monotonic() + 10
    while sub.recv(timeout=0.05) is None and time.monotonic() < deadline:
        send(0)
    for seq in (1, 5, 2):
        send(seq)
    send(6, schema="microgesture.event/2")
    raw.send_multipart([b"source.cam0", b"not json"])
    raw.send_multipart([b"source.cam0", b"{}", b"third frame"])
    got = list(sub)
    sub.close()
    raw.close(0)
    assert [e["seq"] for e in got] == [1, 5, 2]
    assert got[1]["_gap"] == 3 and got[2]["_restart"] is True
    assert seen == [("cam0", "source", 3)] and sub.gaps == {"cam0": 3} and sub.invalid == 3


def test_callbacks_and_context_manager(pub):
    with Subscriber(pub.endpoint, types="source", timeout=0.3) as sub:
        sync(pub, sub)
        seen, also = [], []
        sub.on(seen.append)
        for i in range(5):
            pub.publish_source("cam0", "connected", f"n{i}")
        assert sub.run(also.append, count=3) == 3
        assert sub.run() == 2                    # then the timeout
        assert [e["detail"] for e in seen] == [f"n{i}" for i in range(5)]
        assert len(also) == 3
    with pytest.raises(ValueError, match="callback"):
        Subscriber(pub.endpoint).run()


@pytest.mark.parametrize("kwargs, message", [
    (dict(types=("gestures",)), "Did you mean 'gesture'"),
    (dict(streams=["cam 0"]), "stream id"),
    (dict(streams=[]), "no streams"),
    (dict(connect="localhost:5555"), "cannot connect"),
    (dict(timeout=-1), "timeout"),
])
def test_bad_subscriber_settings_are_user_errors(kwargs, message):
    with pytest.raises(MicrogestureError, match=message):
        Subscriber(**kwargs)


# --------------------------------------------------------------------------- listen

LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3}  cam0  #\d+  start   touch jaw \[1\]  score 0\.90  latency \d+\.\d ms$")


def publish_until(pub, stop, send):
    while not stop.is_set():
        send()
        time.sleep(0.01)


@pytest.mark.parametrize("as_json", [False, True])
def test_listen_prints_one_line_per_event(pub, as_json):
    start = gestures(n=2)[0]
    stop = threading.Event()
    sender = threading.Thread(target=publish_until, args=(pub, stop, lambda: (pub.publish(start),
                                                                            pub.publish_heartbeat("cam1"))))
    sender.start()
    out = io.StringIO()
    try:
        printed = listen(pub.endpoint, ["cam0"], as_json, ("gesture",), count=5, timeout=5, out=out)
    finally:
        stop.set()
        sender.join()
    lines = out.getvalue().splitlines()
    assert printed == len(lines) == 5
    for line in lines:
        if as_json:
            record = json.loads(line)
            validate_event(record)
            assert (record["type"], record["stream"], record["phase"]) == ("gesture", "cam0", "start")
            assert "_gap" not in record          # exactly what was on the wire
        else:
            assert LINE.match(line), line


def test_listen_returns_on_timeout():
    t0 = time.monotonic()
    assert listen("tcp://127.0.0.1:9", None, False, client.DEFAULT_TYPES, timeout=0.3, out=io.StringIO()) == 0
    assert time.monotonic() - t0 < 3


def test_readable_lines_for_every_type(pub):
    records = [pub.publish(e) for e in gestures(n=3)]
    records.append(pub.publish_heartbeat("cam0", {"fps": 29.97, "frames_dropped": 3, "windows_run": 240,
                                                  "windows_skipped": 2, "queue_depths": {"frames": 1}}))
    records.append(pub.publish_source("cam0", "lost", "read failed"))
    records.append(pub.publish_window(win(7), [0.2, 0.5, 0.3], LABELS))
    lines = [format_event(r) for r in records]
    clock = r"\d\d:\d\d:\d\d\.\d{3}"
    expected = [rf"{clock}  cam0  #0  start   touch jaw \[1\]  score 0\.90  latency \d+\.\d ms",
                rf"{clock}  cam0  #1  update  touch jaw \[1\]  score 0\.90  \d\.\d\d s  latency \d+\.\d ms",
                rf"{clock}  cam0  #2  end     touch jaw \[1\]  score 0\.33  \d\.\d\d s \(below_threshold\)  "
                rf"latency \d+\.\d ms",
                rf"{clock}  cam0  #3  heartbeat  30\.0 fps  dropped 3  windows 240 run / 2 skipped  queues frames=1",
                rf"{clock}  cam0  #4  source  lost: read failed",
                rf"{clock}  cam0  #5  window 7  touch jaw 0\.50, fold arms 0\.30, rest 0\.20  latency \d+\.\d ms"]
    for line, pattern in zip(lines, expected):
        assert re.fullmatch(pattern, line), line
    assert os.linesep not in "".join(lines)
