"""Windows on a sampling grid fixed in stream time (stream.grid): they sample what
evaluation samples from the same frames, and a dropped frame shifts nothing."""

import numpy as np
import pytest

from microgesture.core.errors import MicrogestureError
from microgesture.core.sampling import sample_clip
from microgesture.stream.grid import GridScheduler, SamplingGrid

FPS = 30.0
DT = 1e9 / FPS


def _run(grid, frames, jitter=0.0, seed=0):
    """Feed frames (ids) at their nominal times (+ jitter in frame intervals); all windows."""
    rng = np.random.default_rng(seed)
    sched, windows, encoded = GridScheduler(grid, FPS), [], []
    for i in frames:
        t = int(round((i + rng.uniform(-jitter, jitter)) * DT)) + 10**9
        if sched.add(i, t):
            encoded.append(i)
        while sched.due():
            windows.append(sched.select())
    return sched, windows, encoded


@pytest.mark.parametrize("span, hop", [(80, None), (80, 3), (32, None), (45, 7)])
def test_windows_on_the_grid_sample_what_evaluation_samples(span, hop):
    grid = SamplingGrid(span, 8, 32, hop)
    hop = grid.hop
    sched, windows, encoded = _run(grid, range(400), jitter=0.2)
    assert len(windows) == (400 - span) // hop + 1
    rgb_eval, pose_eval = sample_clip(span, 8, 32, train=False)
    for w in windows:
        first = w.index * hop  # the window's frames are ids first .. first + span - 1
        assert w.rgb_ids == tuple(first + int(i) for i in rgb_eval)
        assert w.pose_ids == tuple(first + int(i) for i in pose_eval)
        assert w.num_frames == span and w.substituted == 0
    # each RGB frame any window samples is announced (encode once) and nothing else
    # (up to the frames only windows after the stream's end would sample)
    done = (windows[-1].index + 1) * hop
    sampled_rgb = sorted({i for w in windows for i in w.rgb_ids if i < done})
    assert [i for i in encoded if i < done] == sampled_rgb
    # pose is wanted exactly on the frames windows sample (pose or RGB), whatever the hop
    wanted = {i for i in range(done) if grid.wants_pose(i)}
    assert wanted == {i for w in windows for i in w.pose_ids + w.rgb_ids if i < done}


def test_default_hop_is_one_rgb_stride_and_pose_runs_on_about_half_the_frames():
    grid = SamplingGrid(80, 8, 32)  # 2.67 s at 30 fps
    assert grid.hop == 10
    share = np.mean([grid.wants_pose(s) for s in range(200, 1200)])
    assert share == pytest.approx(0.5)  # 4 pose + 1 RGB slot in every 10 frames


def test_a_dropped_frame_shifts_nothing():
    grid = SamplingGrid(80, 8, 32)
    _, full, _ = _run(grid, range(300))
    dropped = 46  # a frame several windows sample as pose
    assert grid.is_pose(dropped)
    _, gap, _ = _run(grid, [i for i in range(300) if i != dropped])
    assert len(gap) == len(full)
    for a, b in zip(full, gap):
        if dropped not in a.pose_ids + a.rgb_ids:
            assert (a.rgb_ids, a.pose_ids) == (b.rgb_ids, b.pose_ids)  # untouched, unshifted
            continue
        assert b.substituted >= 1
        for x, y in zip(a.pose_ids + a.rgb_ids, b.pose_ids + b.rgb_ids):
            assert y == x if x != dropped else abs(y - dropped) == 1  # the nearest frame


def test_behind_a_live_stream_skips_to_the_newest_window():
    grid = SamplingGrid(32, 8, 32)
    sched = GridScheduler(grid, FPS)
    for i in range(32 + 3 * grid.hop):
        sched.add(i, int(i * DT))
    assert sched.pending() == 4
    assert sched.skip_to_latest() == 3
    w = sched.select()
    assert w.index == 3 and w.skipped == 3 and not sched.due()
    with pytest.raises(MicrogestureError, match="no window is due"):
        sched.select()


def test_bad_grids_are_refused():
    with pytest.raises(MicrogestureError, match="hop_frames"):
        SamplingGrid(80, 8, 32, 0)
    with pytest.raises(MicrogestureError, match="multiple"):
        SamplingGrid(80, 8, 30)
    with pytest.raises(MicrogestureError, match="fps"):
        GridScheduler(SamplingGrid(80), 0)


def test_a_span_without_any_frame_is_skipped_not_an_error():
    """A frame thread a whole span behind (or a stalled camera): the windows whose span
    holds no frame are counted as skipped and the stream goes on with the next ones."""
    grid = SamplingGrid(80, 8, 32)
    frames = [i for i in range(400) if not 90 <= i < 260]   # 170 frames missing: > 2 spans
    sched, windows, _ = _run(grid, frames)
    empty = [w for w in range(40) if not any(w * 10 <= i < w * 10 + 80 for i in frames)]
    assert empty and not {w.index for w in windows} & set(empty)
    assert sched.skipped == len(empty)
    assert windows[-1].index == (400 - 80) // 10  # windows after the gap run again
    assert windows[len(windows) - 1].skipped == 0
