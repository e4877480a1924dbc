"""Gesture smoothing on scripted scores with a fake clock, event records against the
JSON Schema, and the publisher's rules: loopback only, clear bind errors, a log that
survives kill -9, heartbeats, sends that never block."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pytest
import zmq

from microgesture.core.errors import MicrogestureError
from microgesture.stream.events import (SCHEMA, SOURCE_STATUSES, EventPublisher, GestureSmoother, WindowInfo,
                                        check_bind_address, load_schema, wall_time)
from event_schema import validate_event

LABELS = ("rest", "touch jaw", "fold arms")
STEP_NS = 100_000_000   # fake clock: one window every 0.1 s


def win(i, stream="cam0", step_ns=STEP_NS, t0=10**12):
    """Window i of a fake stream: 32 frames, hop 4, times from a fake monotonic clock."""
    t = t0 + i * step_ns
    return WindowInfo(stream, i, 4 * i, 4 * i + 31, t - 31 * 33_333_333, t,
                      tuple(range(4 * i + 1, 4 * i + 32, 4)), tuple(range(4 * i, 4 * i + 32)),
                      {"pose": 11.5, "heatmaps": 0.7, "tokens": 30.0, "window": 45.25}, "tiny-test")


def onehot(cls, p):
    """Scores with probability p on class cls, the rest shared by the others."""
    s = np.full(len(LABELS), (1 - p) / (len(LABELS) - 1))
    s[cls] = p
    return s


def run(smoother, rows, start=0):
    """Feed rows; return [(window index, phase, label, reason)] and the events."""
    events = []
    for i, row in enumerate(rows, start):
        events += smoother.feed(row, win(i))
    return [(e.window.index, e.phase, e.label, e.reason) for e in events], events


# --------------------------------------------------------------------------- smoothing

def test_start_update_end():
    sm = GestureSmoother(LABELS, window=1, start_threshold=0.6, end_threshold=0.4, min_duration_s=0, update_every=2)
    rows = [onehot(0, 0.34)] * 2 + [onehot(1, 0.9)] * 5 + [onehot(1, 0.2)] * 2
    got, events = run(sm, rows)
    assert got == [(2, "start", "touch jaw", None), (4, "update", "touch jaw", None),
                   (6, "update", "touch jaw", None), (7, "end", "touch jaw", "below_threshold")]
    assert {e.gesture_id for e in events} == {0}
    start, end = events[0], events[-1]
    assert start.start_ns == win(2).last_capture_ns and start.end_ns is None
    assert end.end_ns == win(7).last_capture_ns and end.duration_s == pytest.approx(0.5)
    assert start.score == pytest.approx(0.9) and end.score == pytest.approx(0.2)
    assert start.top_k[0] == ("touch jaw", pytest.approx(0.9)) and len(start.top_k) == 3
    assert sm.active is None and sm.started == 1


def test_moving_average_over_the_last_n_windows():
    sm = GestureSmoother(LABELS, window=3, min_duration_s=0)
    got, _ = run(sm, [onehot(0, 0.5)] * 3 + [onehot(1, 0.95)] + [onehot(0, 0.5)] * 3)
    assert got == []                                    # one spike averages to (0.95 + 0.25 + 0.25) / 3
    assert sm.smoothed == pytest.approx(onehot(0, 0.5))  # and is forgotten after 3 windows
    got, _ = run(sm, [onehot(2, 0.95)] * 3, start=7)
    assert got == [(8, "start", "fold arms", None)]      # (0.95 + 0.95 + 0.25) / 3 = 0.72 on the second


def test_hysteresis_does_not_flap():
    sm = GestureSmoother(LABELS, window=1, start_threshold=0.6, end_threshold=0.4, min_duration_s=0, update_every=0)
    hover_below = [onehot(1, p) for p in (0.55, 0.59, 0.58, 0.5)]         # never above start
    hover_active = [onehot(1, p) for p in (0.45, 0.61, 0.41, 0.59, 0.42)]  # never below end
    rows = hover_below + [onehot(1, 0.65)] + hover_active + [onehot(1, 0.39)] + hover_below
    got, _ = run(sm, rows)
    assert got == [(4, "start", "touch jaw", None), (10, "end", "touch jaw", "below_threshold")]


def test_thresholds_are_strict_at_the_exact_boundary():
    """A smoothed score exactly AT start_threshold does not start a gesture (it must be
    above); exactly AT end_threshold does not end one (it must fall below)."""
    sm = GestureSmoother(LABELS, window=1, start_threshold=0.6, end_threshold=0.4, min_duration_s=0,
                         update_every=0)
    got, _ = run(sm, [onehot(1, 0.6)] * 3)
    assert got == [] and sm.active is None
    got, _ = run(sm, [onehot(1, np.nextafter(0.6, 1.0))], start=3)   # the next float above starts
    assert got == [(3, "start", "touch jaw", None)]
    got, _ = run(sm, [onehot(1, 0.4)] * 3, start=4)                  # at the end threshold: still active
    assert got == [] and sm.active is not None
    got, _ = run(sm, [onehot(1, np.nextafter(0.4, 0.0))], start=7)   # the next float below ends it
    assert got == [(7, "end", "touch jaw", "below_threshold")]
    # the same holds for the moving average, not only for one window's scores
    sm = GestureSmoother(LABELS, window=2, start_threshold=0.6, end_threshold=0.4, min_duration_s=0,
                         update_every=0)
    got, _ = run(sm, [onehot(1, 0.5), onehot(1, 0.7)])               # mean exactly 0.6
    assert sm.smoothed[1] == 0.6 and got == []


def test_min_duration_suppresses_short_gestures_and_keeps_the_true_start():
    sm = GestureSmoother(LABELS, window=1, min_duration_s=0.3, update_every=0)
    short = [onehot(1, 0.9)] * 3                  # 0.0, 0.1, 0.2 s: lasts 0.2 s < 0.3 s
    got, _ = run(sm, [onehot(0, 0.34)] + short + [onehot(0, 0.34)])
    assert got == [] and sm.suppressed == 1
    got, events = run(sm, [onehot(2, 0.9)] * 6 + [onehot(0, 0.34)], start=5)
    assert got == [(8, "start", "fold arms", None), (11, "end", "fold arms", "below_threshold")]
    assert events[0].start_ns == win(5).last_capture_ns       # published late, dated right
    assert events[0].duration_s == pytest.approx(0.3)
    assert events[0].gesture_id == 0                          # suppressed candidates take no id


def test_takeover_ends_the_old_gesture_first():
    sm = GestureSmoother(LABELS, window=1, min_duration_s=0, update_every=0)
    got, events = run(sm, [onehot(1, 0.9)] * 2 + [onehot(2, 0.8)] * 2)
    assert got == [(0, "start", "touch jaw", None), (2, "end", "touch jaw", "takeover"),
                   (2, "start", "fold arms", None)]
    assert events[1].score == pytest.approx(0.1) and events[2].gesture_id == events[0].gesture_id + 1
    # a class that is the top one but below start_threshold does not take over
    sm = GestureSmoother(LABELS, window=1, min_duration_s=0, update_every=0)
    got, _ = run(sm, [onehot(1, 0.9), np.array([0.05, 0.45, 0.5])])
    assert got == [(0, "start", "touch jaw", None)]


def test_background_class_never_starts_but_takes_over():
    sm = GestureSmoother(LABELS, window=1, min_duration_s=0, update_every=0, background="rest")
    got, _ = run(sm, [onehot(0, 0.9), onehot(1, 0.9), onehot(0, 0.9), onehot(0, 0.9)])
    assert got == [(1, "start", "touch jaw", None), (2, "end", "touch jaw", "takeover")]
    assert GestureSmoother(LABELS, background=0).background == 0


def test_flush_ends_the_active_gesture_and_forgets_the_average():
    sm = GestureSmoother(LABELS, window=4, min_duration_s=0, update_every=0)
    got, _ = run(sm, [onehot(1, 0.9)] * 4)
    assert got == [(0, "start", "touch jaw", None)]
    (end,) = sm.flush()
    assert (end.phase, end.reason, end.window.index, end.end_ns) == ("end", "flush", 3, win(3).last_capture_ns)
    assert sm.smoothed is None and sm.flush() == []
    got, _ = run(sm, [onehot(0, 0.34)], start=4)   # the old 0.9s are gone: nothing restarts
    assert got == []
    # a pending candidate is suppressed by a flush, not published
    sm = GestureSmoother(LABELS, window=1, min_duration_s=1.0)
    run(sm, [onehot(1, 0.9)] * 3)
    assert sm.flush() == [] and sm.suppressed == 1


def test_update_every_zero_and_top_k():
    sm = GestureSmoother(LABELS, window=1, min_duration_s=0, update_every=0, top_k=2)
    got, events = run(sm, [onehot(1, 0.9)] * 10)
    assert got == [(0, "start", "touch jaw", None)]
    assert len(events[0].top_k) == 2


@pytest.mark.parametrize("kwargs, message", [
    (dict(start_threshold=0.5, end_threshold=0.5), "hysteresis"),
    (dict(start_threshold=0.4, end_threshold=0.6), "end_threshold < start_threshold"),
    (dict(window=0), "smoothing window"),
    (dict(min_duration_s=-1), "min_duration_s"),
    (dict(update_every=-1), "update_every"),
    (dict(background="folding arms"), "Did you mean 'fold arms'"),
    (dict(background=7), "out of range"),
])
def test_bad_settings_are_user_errors(kwargs, message):
    with pytest.raises(MicrogestureError, match=message):
        GestureSmoother(LABELS, **kwargs)


def test_bad_input_is_refused():
    sm = GestureSmoother(LABELS)
    with pytest.raises(ValueError, match="shape"):
        sm.feed([0.5, 0.5], win(0))
    with pytest.raises(ValueError, match="softmax"):
        sm.feed([3.0, -1.0, 0.2], win(0))
    sm.feed(onehot(0, 0.5), win(5))
    with pytest.raises(ValueError, match="capture order"):
        sm.feed(onehot(0, 0.5), win(4))
    with pytest.raises(ValueError, match="one smoother per stream"):
        sm.feed(onehot(0, 0.5), win(6, stream="cam1"))


# --------------------------------------------------------------------------- records

@pytest.fixture
def pub():
    publisher = EventPublisher("tcp://127.0.0.1:*")
    yield publisher
    publisher.close()


def all_records(pub):
    """One record of every type and phase, as published."""
    sm = GestureSmoother(LABELS, window=1, min_duration_s=0, update_every=1)
    now = time.monotonic_ns()
    rows = [onehot(1, 0.9)] * 2 + [onehot(1, 0.1)]
    records = []
    for i, row in enumerate(rows):
        w = win(i, t0=now - 50_000_000 - 2 * STEP_NS)   # the last window was captured 50 ms ago
        records += [pub.publish(e) for e in sm.feed(row, w)]
        records.append(pub.publish_window(w, row, LABELS, top_k=2))
    records.append(pub.publish_heartbeat("cam0", {"fps": 29.5, "frames_captured": 300, "frames_dropped": 2,
                                                  "windows_run": 70, "windows_skipped": 1,
                                                  "queue_depths": {"frames": 1, "tokens": 0}}))
    for status in SOURCE_STATUSES:
        records.append(pub.publish_source("cam0", status, "detail", "rtsp://cam.local/live"))
    records.append(pub.publish_source("cam0", "reconnected", "after 2 attempts", attempt=2, size=(640, 480),
                                      previous_size=(1280, 720)))
    return records


def test_every_record_matches_the_schema(pub):
    records = all_records(pub)
    assert [r["phase"] for r in records if r["type"] == "gesture"] == ["start", "update", "end"]
    assert {r["type"] for r in records} == {"gesture", "window", "heartbeat", "source"}
    for r in records:
        validate_event(r)
        json.loads(json.dumps(r, allow_nan=False))
    assert [r["seq"] for r in records] == list(range(len(records)))      # per stream, across types
    assert [r["type_seq"] for r in records if r["type"] == "window"] == [0, 1, 2]


def test_sequence_numbers_per_stream_and_per_stream_and_type(pub):
    """``seq`` counts every event of a stream; ``type_seq`` counts each (stream, type)
    on its own, from 0, whatever the other streams and types publish in between."""
    sm = {s: GestureSmoother(LABELS, window=1, min_duration_s=0, update_every=1) for s in ("cam0", "cam1")}
    records = []
    for i in range(3):
        for stream in ("cam0", "cam1", "cam0"):
            records.append(pub.publish_source(stream, "connected", f"round {i}"))
            records.append(pub.publish_heartbeat(stream, {"windows_run": i}))
        for stream in ("cam1", "cam0"):
            w = win(i, stream=stream)
            records += [pub.publish(e) for e in sm[stream].feed(onehot(1, 0.9), w)]
            records.append(pub.publish_window(w, onehot(1, 0.9), LABELS))
    records.append(pub.publish_source("cam10", "connected"))
    for stream in ("cam0", "cam1", "cam10"):
        mine = [r for r in records if r["stream"] == stream]
        assert [r["seq"] for r in mine] == list(range(len(mine))), stream
        for type_ in ("gesture", "heartbeat", "source", "window"):
            numbers = [r["type_seq"] for r in mine if r["type"] == type_]
            assert numbers == list(range(len(numbers))), (stream, type_)
    counts = {(s, t): sum(1 for r in records if (r["stream"], r["type"]) == (s, t))
              for s in ("cam0", "cam1") for t in ("gesture", "heartbeat", "source", "window")}
    assert counts == {("cam0", "gesture"): 3, ("cam0", "heartbeat"): 6, ("cam0", "source"): 6,
                      ("cam0", "window"): 3, ("cam1", "gesture"): 3, ("cam1", "heartbeat"): 3,
                      ("cam1", "source"): 3, ("cam1", "window"): 3}
    assert pub.stats["streams"] == {"cam0": 18, "cam1": 12, "cam10": 1}


def test_gesture_record_fields(pub):
    start = all_records(pub)[0]
    assert start["schema"] == SCHEMA and start["stream"] == "cam0" and start["model"] == "tiny-test"
    assert (start["label"], start["class_id"], start["score"]) == ("touch jaw", 1, 0.9)
    assert start["top_k"][0] == ["touch jaw", 0.9]
    w = start["window"]
    assert (w["first_frame"], w["last_frame"], len(w["frame_ids"]), len(w["pose_frame_ids"])) == (0, 31, 8, 32)
    assert w["last_capture_ns"] == start["start_ns"] and start["end_ns"] is None
    lat = start["latency_ms"]
    assert lat["pose"] == 11.5 and lat["window"] == 45.25
    # total = publish - capture of the window's last frame, both monotonic: 50 ms ago + 2 steps
    assert 250 <= lat["total"] < 250 + 5000
    assert lat["total"] == pytest.approx((start["time_ns"] - w["last_capture_ns"]) / 1e6, abs=1e-3)


def test_source_record_carries_attempt_and_sizes(pub):
    r = all_records(pub)[-1]
    assert (r["status"], r["attempt"], r["size"], r["previous_size"]) == ("reconnected", 2, [640, 480], [1280, 720])
    with pytest.raises(ValueError, match="size"):
        validate_event({**r, "size": [640]})


def test_window_info_from_a_scheduler_window():
    class SchedulerWindow:   # the attributes of stream.scheduler.Window that from_window reads
        rgb_ids, pose_ids = (3, 7, 11), (1, 2, 3, 5, 7, 9, 11, 12)
        start_ns, end_ns, last_frame_id, last_capture_ns, index = 1_000, 9_000, 12, 9_000, 4

    info = WindowInfo.from_window(SchedulerWindow(), "cam0", {"pose": 1.5}, "m")
    assert info == WindowInfo("cam0", 4, 1, 12, 1_000, 9_000, (3, 7, 11), (1, 2, 3, 5, 7, 9, 11, 12),
                              {"pose": 1.5}, "m")


def test_wall_times_are_iso_utc():
    assert wall_time(1_700_000_000_123_456_789, 0) == "2023-11-14T22:13:20.123456Z"
    assert wall_time(5, 1_700_000_000_000_000_000) == "2023-11-14T22:13:20.000000Z"


def test_source_urls_lose_credentials_and_stats_lose_nan(pub):
    r = pub.publish_source("cam0", "lost", "cannot read rtsp://admin:secret@10.0.0.2/live",
                           "rtsp://admin:secret@10.0.0.2/live")
    assert "secret" not in json.dumps(r) and r["source"] == "rtsp://***@10.0.0.2/live"
    r = pub.publish_heartbeat("cam0", {"fps": float("nan"), "windows_run": np.int64(3)})
    assert r["stats"] == {"fps": None, "windows_run": 3}
    validate_event(r)
    with pytest.raises(ValueError, match="source status"):
        pub.publish_source("cam0", "gone")
    with pytest.raises(MicrogestureError, match="stream id"):
        pub.publish_source("cam 0", "lost")


def test_validator_reports_the_broken_field(pub):
    good = all_records(pub)[0]
    for broken, where in [({**good, "schema": "microgesture.event/2"}, "schema"),
                          ({**good, "seq": -1}, "seq"),
                          ({**good, "phase": "middle"}, "phase"),
                          ({**good, "top_k": [["a", 0.5, 1]]}, "top_k"),
                          ({k: v for k, v in good.items() if k != "label"}, "label"),
                          ({**good, "latency_ms": {"pose": 1.0}}, "total"),
                          ({**good, "time": "yesterday"}, "time")]:
        with pytest.raises(ValueError, match=where):
            validate_event(broken)


def test_schema_file_is_draft_2020_12_and_covers_every_type():
    schema = load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["properties"]["schema"]["const"] == SCHEMA
    assert schema["properties"]["type"]["enum"] == ["gesture", "heartbeat", "source", "window"]


@pytest.fixture
def short_dir():
    """A short folder for ipc sockets (their paths are limited to about 100 bytes)."""
    folder = tempfile.mkdtemp(prefix="mg", dir="/tmp")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------- binding

@pytest.mark.parametrize("address", ["tcp://0.0.0.0:5555", "tcp://*:5555", "tcp://192.168.1.20:5555",
                                     "tcp://[::]:5555", "tcp://eth0:5555", "ws://127.0.0.1:5555"])
def test_non_loopback_bind_is_refused(address):
    with pytest.raises(MicrogestureError, match="refusing to publish.*allow-remote"):
        EventPublisher(address)
    assert check_bind_address(address, allow_remote=True) == address


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:5555", "tcp://127.1.2.3:5555", "tcp://localhost:5555",
                                     "tcp://[::1]:5555", "tcp://lo:*", "ipc:///tmp/x.sock", "inproc://events"])
def test_loopback_and_local_transports_are_allowed(address):
    assert check_bind_address(address) == address


@pytest.mark.parametrize("address", ["127.0.0.1:5555", "tcp://127.0.0.1", "tcp://127.0.0.1:port", "ipc://"])
def test_malformed_addresses_say_what_is_expected(address):
    with pytest.raises(MicrogestureError, match="invalid ZeroMQ address"):
        EventPublisher(address)


def test_remote_bind_allowed_explicitly():
    with EventPublisher("tcp://0.0.0.0:*", allow_remote=True) as remote:
        assert remote.endpoint.startswith("tcp://0.0.0.0:")


def test_address_in_use_is_a_clear_error(pub):
    with pytest.raises(MicrogestureError, match="already in use.*another port"):
        EventPublisher(pub.endpoint)
    with socket.socket() as other:            # a port held by some other program
        other.bind(("127.0.0.1", 0))
        other.listen()
        with pytest.raises(MicrogestureError, match="already in use"):
            EventPublisher(f"tcp://127.0.0.1:{other.getsockname()[1]}")


def test_ipc_address_in_use_stale_socket_and_plain_file(short_dir):
    folder = short_dir
    path = os.path.join(folder, "ev.sock")
    with EventPublisher(f"ipc://{path}"):
        with pytest.raises(MicrogestureError, match="already in use"):
            EventPublisher(f"ipc://{path}")   # ZeroMQ alone would silently take it over
    stale = os.path.join(folder, "stale.sock")
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(stale)
    dead.close()                              # the file stays, nobody listens: reusable
    EventPublisher(f"ipc://{stale}").close()
    plain = os.path.join(folder, "notes.txt")
    open(plain, "w").close()
    with pytest.raises(MicrogestureError, match="not a socket"):
        EventPublisher(f"ipc://{plain}")


def test_unwritable_log_is_a_user_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(MicrogestureError, match="event log"):
        EventPublisher("tcp://127.0.0.1:*", log_path=tmp_path / "file" / "events.jsonl")


def test_close_is_idempotent_and_final(pub):
    pub.close()
    pub.close()
    with pytest.raises(RuntimeError, match="closed"):
        pub.publish_source("cam0", "ended")


# --------------------------------------------------------------------------- sending, log, heartbeats

def test_sends_never_block_without_reader():
    """A subscriber that never reads: 20k events go out at full speed, the excess is dropped by ZeroMQ."""
    with EventPublisher("tcp://127.0.0.1:*", hwm=100) as publisher:
        sub = zmq.Context.instance().socket(zmq.SUB)
        sub.setsockopt(zmq.RCVHWM, 100)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(publisher.endpoint)
        time.sleep(0.2)
        worst, t0 = 0.0, time.perf_counter()
        for i in range(20_000):
            t = time.perf_counter()
            publisher.publish_source("cam0", "connected", "x" * 200)
            worst = max(worst, time.perf_counter() - t)
        assert time.perf_counter() - t0 < 10 and worst < 0.5
        assert publisher.sent + publisher.dropped == 20_000
        received = 0
        while sub.poll(200):
            sub.recv_multipart()
            received += 1
        sub.close(0)
        assert 0 < received < 20_000


def test_log_has_every_event_in_order(tmp_path):
    log = tmp_path / "logs" / "events.jsonl"
    with EventPublisher("tcp://127.0.0.1:*", log_path=log) as publisher:
        sent = all_records(publisher)
    lines = log.read_text().splitlines()
    assert [json.loads(line) for line in lines] == sent
    with EventPublisher("tcp://127.0.0.1:*", log_path=log) as publisher:   # appends
        publisher.publish_source("cam0", "ended")
    assert len(log.read_text().splitlines()) == len(sent) + 1


CHILD = """
import sys
from microgesture.stream.events import EventPublisher
pub = EventPublisher("tcp://127.0.0.1:*", log_path=sys.argv[1])
i = 0
while True:
    pub.publish_source("cam0", "connected", "event %d" % i)
    print(i, flush=True)
    i += 1
"""


def test_log_survives_kill_9(tmp_path):
    log = tmp_path / "events.jsonl"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(log)], stdout=subprocess.PIPE, text=True)
    try:
        last = -1
        for line in child.stdout:
            last = int(line)
            if last >= 300:
                break
        child.send_signal(signal.SIGKILL)     # no atexit, no close, no flush
        child.wait(10)
    finally:
        child.kill()
    assert child.returncode == -signal.SIGKILL and last >= 300
    records = [json.loads(line) for line in log.read_text().splitlines()]   # no torn line either
    assert len(records) > last                # everything published before the kill is there
    assert [r["seq"] for r in records] == list(range(len(records)))
    for r in records[:3]:
        validate_event(r)


def test_heartbeat_thread(tmp_path):
    log = tmp_path / "hb.jsonl"
    calls = []

    def stats():
        calls.append(1)
        return {"fps": 30.0, "frames_dropped": 0, "windows_run": len(calls), "windows_skipped": 0,
                "queue_depths": {"frames": 2}}

    def broken():
        raise RuntimeError("camera object gone")

    with EventPublisher("tcp://127.0.0.1:*", log_path=log, heartbeat_s=0.05) as publisher:
        publisher.start_heartbeats("cam0", stats)
        publisher.start_heartbeats("cam1", broken)
        time.sleep(0.5)
        publisher.stop_heartbeats("cam1")
        time.sleep(0.2)
    beats = [json.loads(line) for line in log.read_text().splitlines()]
    cam0 = [b for b in beats if b["stream"] == "cam0"]
    cam1 = [b for b in beats if b["stream"] == "cam1"]
    assert len(cam0) >= 5 and 3 <= len(cam1) < len(cam0)
    assert all(b["type"] == "heartbeat" and b["interval_s"] == 0.05 for b in beats)
    assert cam0[-1]["stats"]["windows_run"] == len(calls)
    assert cam1[0]["stats"] == {} and "camera object gone" in cam1[0]["stats_error"]
    for b in (cam0[0], cam1[0]):
        validate_event(b)
    gaps = np.diff([b["time_ns"] for b in cam0]) / 1e9
    assert np.median(gaps) == pytest.approx(0.05, abs=0.03)


def test_publisher_is_thread_safe(pub):
    def burst(stream):
        for _ in range(500):
            pub.publish_source(stream, "connected")

    threads = [threading.Thread(target=burst, args=(s,)) for s in ("a", "b", "a")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert pub.stats["streams"] == {"a": 1000, "b": 500}


def test_a_failing_event_log_is_reported_once_and_the_socket_goes_on(tmp_path, caplog):
    """A log that cannot be written (a full disk) is turned off with one error; the
    events still go out on the socket and the publisher's stats say why."""
    log = tmp_path / "events.jsonl"
    with EventPublisher("tcp://127.0.0.1:*", log_path=log) as pub:
        pub.publish_heartbeat("cam0")

        class Full:
            def write(self, data):
                raise OSError(28, "No space left on device")

            def close(self):
                pass

        pub._log = Full()
        with caplog.at_level("ERROR"):
            for _ in range(3):
                record = pub.publish_heartbeat("cam0")
        stats = pub.stats
    validate_event(record)
    assert "No space left" in record["publisher"]["log_error"]
    assert stats["sent"] == 4 and stats["logged"] == 1
    assert "No space left" in stats["log_error"]
    assert sum("event log" in r.message for r in caplog.records) == 1
    assert len(log.read_text().splitlines()) == 1
