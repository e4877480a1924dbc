"""The dispatcher (stream.dispatch): one thread owns smoothing and the sinks; a sink that
raises is reported once and turned off while the others go on; per-stream state stays
bounded however many windows and gestures a stream has."""

import logging
import threading

import numpy as np

from microgesture.stream.dispatch import RECENT_EVENTS, Dispatcher, SmoothingOptions
from microgesture.stream.records import WindowInfo

LABELS = ("rest", "jaw", "arms")
SMOOTH = SmoothingOptions(window=1, start_threshold=0.5, end_threshold=0.3, min_duration_s=0.0,
                          update_every=0)


class Recorder:
    name = "recorder"

    def __init__(self):
        self.gestures, self.windows, self.sources = [], 0, []

    def gesture(self, event):
        record = {"type": "gesture", "phase": event.phase, "label": event.label}
        self.gestures.append(record)
        return record

    def window(self, info, scores, labels):
        self.windows += 1

    def source(self, stream_id, status, detail, source, **fields):
        self.sources.append(status)


class Broken:
    name = "broken"

    def __init__(self):
        self.calls = 0

    def gesture(self, event):
        self.calls += 1
        raise OSError("the disk is full")

    def window(self, info, scores, labels):
        self.calls += 1
        raise RuntimeError("never reached after the first failure")


def _info(i: int) -> WindowInfo:
    t = 10**12 + i * 100_000_000
    return WindowInfo("cam0", i, i * 4, i * 4 + 31, t - 10**9, t, (i * 4,), (i * 4,))


def _feed(dispatcher, n: int) -> None:
    """n windows whose top class alternates: every window ends a gesture and starts one."""
    for i in range(n):
        p = np.full(3, 0.05)
        p[1 + i % 2] = 0.9
        dispatcher.post(("scores", "cam0", p / p.sum(), _info(i)))


def test_a_sink_that_raises_is_reported_once_and_turned_off(caplog):
    recorder, broken = Recorder(), Broken()
    dispatcher = Dispatcher([broken, recorder])
    dispatcher.add_stream("cam0", LABELS, SMOOTH, 2.0, 15.0, live=False, publish_windows=True)
    with caplog.at_level(logging.ERROR):
        _feed(dispatcher, 20)
        dispatcher.post(("source", "cam0", "ended", "end of file", None, {}))
        assert dispatcher.wait_idle(30)
    dispatcher.close()
    assert broken.calls == 1  # off after its first failure
    assert dispatcher.stats()["sink_errors"] == {"broken": "RuntimeError: never reached after the first failure"}
    assert sum("sink broken failed" in r.getMessage() for r in caplog.records) == 1
    # the other sink got everything: every window, every gesture phase, the source status
    assert recorder.windows == 20 and recorder.sources == ["ended"]
    assert len(recorder.gestures) == 2 * 20 - 1
    snap = dispatcher.snapshot("cam0")
    assert snap["gestures"] == len(recorder.gestures) and snap["windows_published"] == 20


def test_state_stays_bounded_over_many_windows_and_gestures():
    recorder = Recorder()
    dispatcher = Dispatcher([recorder])
    dispatcher.add_stream("cam0", LABELS, SMOOTH, 2.0, 15.0, live=False)
    n = 3 * RECENT_EVENTS
    _feed(dispatcher, n)
    assert dispatcher.wait_idle(60)
    snap = dispatcher.snapshot("cam0")
    assert snap["gestures"] == 2 * n - 1 > RECENT_EVENTS
    assert len(snap["events"]) == RECENT_EVENTS  # the newest only
    assert snap["events"][-1] == recorder.gestures[-1]
    state = dispatcher._streams["cam0"]
    assert len(state.smoother._history) <= SMOOTH.window and len(state.smoother._infos) <= SMOOTH.window
    dispatcher.close()


def test_snapshots_are_copies_read_from_any_thread():
    dispatcher = Dispatcher([Recorder()])
    dispatcher.add_stream("cam0", LABELS, SMOOTH, 2.0, 15.0, live=False)
    _feed(dispatcher, 3)
    assert dispatcher.wait_idle(30)
    snap = dispatcher.snapshot("cam0")
    snap["events"].clear()
    assert len(dispatcher.snapshot("cam0")["events"]) == 5
    done = threading.Event()
    dispatcher.post(("done", done))
    assert done.wait(10)
    dispatcher.close()
