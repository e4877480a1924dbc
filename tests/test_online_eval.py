"""Online detection end to end: gesture events carry where the gesture was, eval-online streams
synthetic long videos through the shipped demo bundle and tunes its smoothing into the bundle,
stream uses the tuned settings, and a stream with no event says why."""

import json
import shutil

import numpy as np
import pytest

from microgesture.cli import main
from microgesture.core.paths import DEMO_BUNDLE
from microgesture.stream.events import EventPublisher, GestureSmoother, WindowInfo
from event_schema import validate_event
from microgesture.stream.silence import SilenceWatch

LABELS = ("rest", "touch jaw", "fold arms")


def win(i, hop=4, span=32, step_ns=133_333_333):
    """Window i: frames [hop*i, hop*i + span - 1], captured at 30 fps."""
    first, last = hop * i, hop * i + span - 1
    return WindowInfo("cam0", i, first, last, first * 33_333_333, last * 33_333_333)


def scores(cls, p):
    s = np.full(len(LABELS), (1 - p) / (len(LABELS) - 1))
    s[cls] = p
    return s


# --------------------------------------------------------------------------- where the gesture was

def test_events_carry_the_interval_of_the_windows_that_voted():
    sm = GestureSmoother(LABELS, window=2, start_threshold=0.6, end_threshold=0.4, min_duration_s=0,
                         update_every=0, background="rest")
    rows = [scores(0, 0.8)] * 5 + [scores(1, 0.5)] + [scores(1, 0.9)] * 6 + [scores(0, 0.9)] * 3
    events = []
    for i, p in enumerate(rows):
        events += sm.feed(p, win(i))
    start, end = events
    assert (start.phase, end.phase) == ("start", "end")
    # the candidate appears at window 6 (mean of 0.5 and 0.9); both averaged windows voted (>= 0.4);
    # the last voter is window 11; the end comes at window 13 (window 12 scores 0.05 for the class)
    assert start.window.index == 6 and end.window.index == 13
    # each voter stands for the middle of its frames 4i..4i+31
    assert (start.interval.first_frame, start.interval.last_frame) == (36, 40)       # windows 5 and 6
    assert (end.interval.first_frame, end.interval.last_frame) == (36, 60)           # windows 5 to 11
    assert end.interval.windows == 7
    assert end.interval.first_capture_ns == pytest.approx((win(5).first_capture_ns + win(5).last_capture_ns) / 2, abs=1)
    # the interval runs well before the window that announced the gesture
    assert end.interval.first_frame < start.window.last_frame - 16


def test_gesture_records_with_an_interval_match_the_schema(tmp_path):
    sm = GestureSmoother(LABELS, window=1, start_threshold=0.6, end_threshold=0.4, min_duration_s=0)
    events = sm.feed(scores(1, 0.9), win(0)) + sm.flush()
    with EventPublisher("tcp://127.0.0.1:*") as pub:
        records = [pub.publish(e) for e in events]
    for r in records:
        validate_event(r)
        assert r["interval"]["windows"] == 1 and r["paced"] is True
    assert records[-1]["interval"]["first_frame"] == 16                  # the middle of frames 0..31
    bad = {**records[0], "interval": {**records[0]["interval"], "windows": 0}}
    with pytest.raises(ValueError, match="interval"):
        validate_event(bad)


def test_listen_says_what_a_latency_means_for_a_file_faster_than_real_time():
    from microgesture.stream.client import format_event

    event = {"type": "gesture", "phase": "start", "label": "touch jaw", "class_id": 1, "score": 0.9,
             "latency_ms": {"total": -1234.5}, "stream": "x", "seq": 1, "time": "2026-01-01T00:00:00Z"}
    assert "video clock" in format_event({**event, "paced": False})
    assert "video clock" not in format_event({**event, "paced": True})
    assert "video clock" not in format_event(event)                      # older publishers


# --------------------------------------------------------------------------- why no event

def watch(**kw):
    return SilenceWatch(LABELS, start_threshold=0.5, min_duration_s=0.3, span_s=2.0, fps=10.0, **kw)


def test_silence_reasons():
    w = watch()
    assert w.report()["reason"] == "no_frames"
    for i in range(12):
        w.frame(i * 100_000_000, person=True)
    r = w.report()
    assert r["reason"] == "too_few_windows" and "2.00 s" in r["message"] and "1.2 s" in r["message"]
    assert r["seconds"] == pytest.approx(1.1)                          # first to last frame seen
    w.window(scores(1, 0.42), last_frame=11)
    w.window(scores(2, 0.38), last_frame=12)
    r = w.report(now_ns=1_200_000_000)
    assert r["reason"] == "below_threshold" and r["best_label"] == "touch jaw"
    assert "0.42" in r["message"] and "0.5" in r["message"] and "--start-threshold" in r["message"]
    assert r["seconds"] == pytest.approx(1.2)
    w.window(scores(1, 0.7), last_frame=13)
    assert w.report(suppressed=2)["reason"] == "too_short"
    w.gesture(suppressed=2)                                            # an event: counting starts again
    assert w.report(suppressed=2)["reason"] == "no_frames"


def test_silence_no_person_from_frames_or_from_the_stats():
    w = watch()
    for i in range(20):
        w.frame(i, person=i < 1)
    assert w.report()["reason"] == "no_person"
    w = watch()
    for i in range(20):
        w.frame(i, person=True)
    w.window(scores(1, 0.3), 19)
    r = w.report({"windows_no_person": 5})                              # the pipeline skipped them
    assert r["reason"] == "no_person" and r["windows_no_person"] == 5


def test_silence_reports_live_every_period():
    w = watch()
    w.frame(0, True)
    assert not w.due(5 * 10**9, 10) and w.due(10 * 10**9, 10)
    assert not w.due(15 * 10**9, 10) and w.due(20 * 10**9, 10)
    assert not w.due(10**12, 0)


# --------------------------------------------------------------------------- streaming

@pytest.fixture(scope="module")
def long_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("long")
    assert main(["data", "synth", str(root / "set"), "--long-videos", "3", "--seconds", "14",
                 "--size", "96", "96", "--seed", "3", "--quiet"]) == 0
    return root / "set"


def test_synthetic_long_video_set(long_set):
    from microgesture.core.long_videos import open_long_videos

    found = open_long_videos(long_set)
    assert [(v.name, v.split, v.subject) for v in found.videos] == [
        ("long000", "train", "s100"), ("long001", "val", "s101"), ("long002", "test", "s102")]
    for v in found.videos:
        assert v.skeleton is not None and v.video.is_file() and len(v.truth) >= 2
        assert all(0 <= g.start <= g.end < 14 * 15 for g in v.truth)
        # rest between gestures
        assert all(a.end < b.start for a, b in zip(v.truth, v.truth[1:]))


def test_eval_online_with_tune_on_synthetic_long_videos(long_set, tmp_path, capsys):
    from microgesture.core.bundle import read_manifest
    from microgesture.core.tuned import read_tuned
    from microgesture.stream.online_eval import detections_from_events, read_log, replay
    from microgesture.stream.pipeline import SmoothingOptions, smoothing_for

    bundle = tmp_path / "bundle"
    shutil.copytree(DEMO_BUNDLE, bundle)
    out = tmp_path / "eval"
    assert main(["eval-online", str(bundle), "--data", str(long_set), "--out", str(out), "--tune",
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "F1" in printed and "tuned on 1 val videos" in printed
    report = json.loads((out / "metrics_online.json").read_text())
    assert report["split"] == "test" and report["videos"] == 1 and report["tuned_settings"]
    assert report["ground_truth"] >= 2 and 0 <= report["f1"] <= 1
    assert report["f1"] > 0.3, report        # the demo model finds its own synthetic gestures
    assert (out / "timelines" / "long002.png").stat().st_size > 1000
    tuning = report["tuning"]
    assert tuning["videos"] == ["long001"] and tuning["f1"] >= tuning["before"]["f1"]
    # stored in the bundle, verified with it, and what stream now uses by default
    read_manifest(bundle)
    settings = read_tuned(bundle)
    assert settings == tuning["settings"]
    assert report["smoothing"]["start_threshold"] == settings["start_threshold"]
    used = smoothing_for(str(bundle))
    assert (used.window, used.start_threshold, used.end_threshold, used.min_duration_s) == (
        settings["window"], settings["start_threshold"], settings["end_threshold"], settings["min_duration_s"])
    assert smoothing_for(str(bundle), start_threshold=0.9).start_threshold == 0.9   # an option wins
    assert smoothing_for(str(DEMO_BUNDLE)) == SmoothingOptions()
    # replaying the logged windows with the stream's settings gives the stream's own detections
    gestures, windows = read_log(out / "events" / "long002.jsonl")
    assert windows and gestures
    key = lambda d: (d.label, d.start, d.end, d.announced)  # noqa: E731 (scores are logged to 4 decimals)
    assert list(map(key, replay(windows, read_manifest(bundle)["labels"], settings))) == list(
        map(key, detections_from_events(gestures)))
    for e in gestures:
        assert e["paced"] is False and e["interval"]["last_frame"] >= e["interval"]["first_frame"]
    # the stream took the tuned hop too: windows of 40 frames every hop frames over 14 s at 15 fps
    hop = round(settings["hop_s"] * 15)
    assert len(windows) == (14 * 15 - 40) // hop + 1
    assert main(["eval-online", str(DEMO_BUNDLE), "--data", str(long_set), "--out", str(out), "--tune"]) == 2


def test_stream_says_why_it_published_no_event(long_set, tmp_path):
    from microgesture.stream.pipeline import SmoothingOptions, StreamOptions, run_stream

    video = long_set / "videos" / "long002.mp4"
    pose = f"recorded:{long_set / 'skeletons' / 'long002.jsonl'}"
    base = dict(bundle=str(DEMO_BUNDLE), sources=[str(video)], stream_ids=["v"], publish="tcp://127.0.0.1:*",
                pose=pose)
    high = run_stream(StreamOptions(**base, smoothing=SmoothingOptions(start_threshold=0.999, end_threshold=0.5)))
    why = high["streams"]["v"]["no_events"]
    assert why["reason"] == "below_threshold" and why["windows"] > 5
    assert f"{why['best_score']:.2f}" in why["message"] and "0.999" in why["message"]
    short = run_stream(StreamOptions(**base, max_frames=12))
    why = short["streams"]["v"]["no_events"]
    assert why["reason"] == "too_few_windows" and why["frames"] == 12
    found = run_stream(StreamOptions(**base))
    assert found["streams"]["v"]["events"] > 0 and "no_events" not in found["streams"]["v"]
    assert found["smoothing"]["start_threshold"] == 0.5 and found["smoothing"]["tuned_hop_s"] is None
