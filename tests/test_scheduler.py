"""WindowScheduler: what a window samples, when windows run, RGB reuse, skipping."""

import numpy as np
import pytest

from microgesture.core.errors import MicrogestureError
from microgesture.core.sampling import sample_indices
from microgesture.stream.rings import Ring
from microgesture.stream.scheduler import Window, WindowScheduler

FPS = 30.0
DT = 1e9 / FPS


def t(k, jitter=0.0):
    return round(k * DT + jitter * DT)


def run(scheduler, ids, times=None, skip=False):
    """Feed frames; return the windows selected and the frames add() flagged."""
    windows, flagged = [], []
    for i, fid in enumerate(ids):
        if scheduler.add(fid, t(fid) if times is None else times[i]):
            flagged.append(fid)
        window = scheduler.next_window(skip=skip)
        if window is not None:
            windows.append(window)
    return windows, flagged


def test_window_samples_exactly_as_evaluation():
    s = WindowScheduler.for_frames(32, FPS)            # 8 RGB + 32 pose of 32 frames, hop 4
    assert (s.rgb_frames, s.pose_frames, s.hop_frames) == (8, 32, 4)
    ids = list(range(1000, 1100))                      # ids need not start at 0
    windows, _ = run(s, ids)
    first = windows[0]
    assert isinstance(first, Window) and first.last_frame_id == 1031 and first.num_frames == 32
    span = ids[:32]
    assert list(first.rgb_ids) == [span[i] for i in sample_indices(32, 8, train=False)]
    assert list(first.pose_ids) == [span[i] for i in sample_indices(32, 32, train=False)]
    assert first.end_ns == first.last_capture_ns == t(1031)
    assert first.start_ns <= t(1000) and first.start_ns > t(999)


def test_window_with_missing_frames_samples_the_frames_present():
    s = WindowScheduler.for_frames(32, FPS)
    ids = [k for k in range(200) if k not in (40, 41, 47, 60)]     # dropped upstream
    windows, _ = run(s, ids)
    for w in windows:
        present = [k for k in ids if w.start_ns <= t(k) <= w.end_ns]
        assert present[-1] == w.last_frame_id and w.num_frames == len(present)
        assert list(w.rgb_ids) == [present[i] for i in sample_indices(len(present), 8, train=False)]
        assert list(w.pose_ids) == [present[i] for i in sample_indices(len(present), 32, train=False)]
    assert any(w.num_frames < 32 for w in windows)


def test_select_over_ring_entries_matches_own_history():
    s1, s2 = WindowScheduler.for_frames(32, FPS), WindowScheduler.for_frames(32, FPS)
    ring = Ring(64)
    for k in range(80):
        ring.append(t(k), k, None)
        s1.add(k, t(k))
        s2.add(k, t(k))
        if s1.due():
            w1 = s1.select()
            w2 = s2.select(ring.window(s2._hist[0].capture_ns, t(k)))   # a superset: filtered
            assert w1 == w2
            assert [e.frame_id for e in ring.window(w1.start_ns, w1.end_ns)] == \
                [k - 31 + i for i in range(32)]


def test_due_every_hop_once_the_span_is_full():
    s = WindowScheduler.for_frames(32, FPS, hop_frames=4)
    due_at = []
    for k in range(100):
        s.add(k, t(k))
        if s.due():
            due_at.append(k)
            s.select()
    assert due_at[0] == 31                             # 32 frames: a full span
    assert np.all(np.diff(due_at) == 4)
    assert not s.due()
    with pytest.raises(MicrogestureError, match="no window is due"):
        s.select()


def test_span_is_robust_to_timestamp_jitter():
    rng = np.random.default_rng(0)
    jitter = rng.uniform(-0.2, 0.2, 2000)              # +-20 % of a frame interval
    s = WindowScheduler(round(32 * DT), 8, 32, 4)      # no fps hint: measured
    windows, _ = run(s, range(2000), [t(k, j) for k, j in enumerate(jitter)])
    assert {w.num_frames for w in windows} == {32}


def test_bursty_timestamps_do_not_break_the_frame_rate_estimate():
    # frames decoded in bursts (a short and a long interval in turn, as a paced file
    # behind a busy pose model gives): the median of an even count falls between the
    # two and once left no interval "usable" (ZeroDivisionError)
    times = [0, round(0.2 * DT)]
    for k in range(2, 200):
        times.append(times[-1] + round((0.2 if k % 2 else 1.8) * DT))
    s = WindowScheduler(round(32 * DT), 8, 32, 4)
    windows, _ = run(s, range(200), times)
    assert windows and s.expected_frames is not None


def test_rgb_frames_are_reused_across_windows():
    """At hop 4 with 8 of 32, about 1 frame in 4 is ever encoded, each once."""
    n = 4000
    s = WindowScheduler.for_frames(32, FPS)
    cache, encodes, on_demand, windows = set(), [], 0, 0
    for k in range(n):
        if s.add(k, t(k)):
            encodes.append(k)                          # encoded on arrival
            cache.add(k)
        w = s.next_window()
        if w is None:
            continue
        windows += 1
        for fid in w.rgb_ids:
            if fid not in cache:                       # a miss: encode on demand
                on_demand += 1
                encodes.append(fid)
                cache.add(fid)
            assert fid in cache
    assert len(encodes) == len(set(encodes))           # never a frame encoded twice
    assert abs(len(encodes) - n / 4) <= 2              # one frame in four
    assert on_demand == 0                              # the prediction was exact
    st = s.stats()
    assert windows == st.windows == (n - 32) // 4 + 1
    assert st.misses == 0 and st.wasted == 0
    assert st.predicted - 8 <= st.hits <= st.predicted  # the newest wait for later windows
    # a window reuses 7 of the previous window's 8 RGB frames
    s2 = WindowScheduler.for_frames(32, FPS)
    ws, _ = run(s2, range(100))
    for a, b in zip(ws, ws[1:]):
        assert len(set(a.rgb_ids) & set(b.rgb_ids)) == 7


def test_rgb_candidates_lists_the_frames_future_windows_sample():
    s = WindowScheduler.for_frames(32, FPS)
    windows, flagged = run(s, range(60))
    candidates = s.rgb_candidates()
    assert candidates and set(candidates) <= set(flagged)
    future, _ = run(s, range(60, 200))                 # the windows that follow
    sampled = set().union(*(w.rgb_ids for w in future))
    assert set(candidates) <= sampled
    assert {c for c in sampled if c < 60} == set(candidates)


def test_prediction_from_the_first_frame_needs_the_frame_rate():
    # 8 of 8 frames: every frame is sampled, the first one too
    hinted = WindowScheduler.for_frames(8, FPS, rgb_frames=8, pose_frames=8)
    assert [hinted.add(k, t(k)) for k in range(3)] == [True, True, True]
    blind = WindowScheduler(round(8 * DT), rgb_frames=8, pose_frames=8, hop_frames=1)
    assert [blind.add(k, t(k)) for k in range(3)] == [False, True, True]   # no interval yet
    assert blind.rgb_candidates() == [0, 1, 2]         # ... listed once it is known
    for k in range(3, 8):
        blind.add(k, t(k))
    blind.select()
    assert blind.stats().misses == 1                   # frame 0: encoded on demand


def test_skip_to_latest_jumps_to_the_newest_due_window():
    s = WindowScheduler.for_frames(32, FPS)
    for k in range(32):
        s.add(k, t(k))
    assert s.pending() == 1
    s.select()                                         # window ending at 31
    for k in range(32, 32 + 4 * 5 + 2):                # inference was busy for 22 frames
        s.add(k, t(k))
    assert s.pending() == 5                            # ends 35, 39, 43, 47, 51
    assert s.skip_to_latest() == 4
    w = s.select()
    assert w.last_frame_id == 51 and w.skipped == 4 and w.index == 1
    assert s.stats().skipped == 4 and not s.due()
    for k in range(54, 56):
        s.add(k, t(k))
    w = s.next_window()                                # back on the lattice: ends at 55
    assert w.last_frame_id == 55 and w.skipped == 0
    assert s.skip_to_latest() == 0


def test_without_skipping_every_window_runs_in_turn():
    s = WindowScheduler.for_frames(32, FPS)
    for k in range(52):
        s.add(k, t(k))
    ends = []
    while s.due():
        ends.append(s.select().last_frame_id)
    assert ends == [31, 35, 39, 43, 47, 51]


def test_a_gap_of_a_full_span_starts_over():
    s = WindowScheduler.for_frames(32, FPS)
    run(s, range(50))
    restart = 100                                      # 50 frames (1.7 s) missing: a reconnect
    for k in range(restart, restart + 31):
        s.add(k, t(k))
        assert not s.due()
    s.add(restart + 31, t(restart + 31))
    w = s.select()
    assert w.last_frame_id == restart + 31 and min(w.pose_ids) == restart
    assert s.stats().resets == 1
    s.reset()
    assert not s.due() and s.stats().resets == 2


def test_history_stays_bounded_when_nobody_selects():
    s = WindowScheduler.for_frames(32, FPS, max_history=200)
    for k in range(5000):
        s.add(k, t(k))
    assert len(s._hist) <= 200 + 40
    assert s.next_window().last_frame_id == 4999 - (4999 - 31) % 4


def test_bad_arguments_and_order():
    with pytest.raises(MicrogestureError, match="span_ns"):
        WindowScheduler(0)
    with pytest.raises(MicrogestureError, match="hop_frames"):
        WindowScheduler(10**9, hop_frames=0)
    with pytest.raises(MicrogestureError, match="fps"):
        WindowScheduler.for_frames(32, 0)
    s = WindowScheduler.for_frames(32, FPS)
    s.add(5, t(5))
    with pytest.raises(MicrogestureError, match="in order"):
        s.add(5, t(6))
    with pytest.raises(MicrogestureError, match="in order"):
        s.add(6, t(4))
