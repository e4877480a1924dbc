"""Ring: eviction, time windows, lookups by frame id, late inserts, one writer and readers."""

import threading

import numpy as np
import pytest

from microgesture.core.errors import MicrogestureError
from microgesture.stream.rings import Entry, Ring

MS = 1_000_000


def filled(n, capacity, start=0):
    ring = Ring(capacity)
    for k in range(start, start + n):
        ring.append(k * 33 * MS, k, f"v{k}")
    return ring


def test_append_evicts_the_oldest():
    ring = Ring(4)
    evicted = [ring.append(k * MS, k, k * 10) for k in range(6)]
    assert evicted[:4] == [None] * 4
    assert evicted[4] == Entry(0, 0, 0) and evicted[5] == Entry(MS, 1, 10)
    assert len(ring) == 4 and ring.evicted == 2
    assert [e.frame_id for e in ring.entries()] == [2, 3, 4, 5]
    assert ring.oldest().frame_id == 2 and ring.latest() == Entry(5 * MS, 5, 50)
    assert 1 not in ring and 2 in ring and np.int64(5) in ring and "5" not in ring


def test_long_run_keeps_the_newest_and_compacts():
    ring = filled(10_000, 100)
    assert len(ring) == 100
    assert [e.frame_id for e in ring] == list(range(9_900, 10_000))
    assert len(ring._ids) <= 2 * 100 + 64     # the evicted prefix does not pile up


def test_window_is_inclusive_and_ordered():
    ring = filled(20, 8)                      # holds frames 12..19
    t = lambda k: k * 33 * MS                 # noqa: E731
    assert [e.frame_id for e in ring.window(t(14), t(16))] == [14, 15, 16]
    assert [e.frame_id for e in ring.window(t(14) + 1, t(16) - 1)] == [15]
    assert [e.frame_id for e in ring.window(0, t(13))] == [12, 13]          # older ones are gone
    assert ring.window(t(30), t(40)) == [] and ring.window(t(16), t(14)) == []
    assert [e.value for e in ring.window(-1, 10**18)] == [f"v{k}" for k in range(12, 20)]


def test_get_by_frame_id_with_gaps():
    ring = Ring(10)
    for k in (3, 4, 7, 8, 12):                # sparse ids, as in a token ring
        ring.append(k * MS, k, k)
    assert ring.get(7) == Entry(7 * MS, 7, 7)
    assert ring.get(5) is None and ring.get(5, "missing") == "missing"
    assert ring.get(100) is None and ring.get(-1) is None
    assert ring.get_many([3, 5, 12]) == [Entry(3 * MS, 3, 3), None, Entry(12 * MS, 12, 12)]


def test_append_out_of_order_is_refused():
    ring = filled(3, 5)
    with pytest.raises(MicrogestureError, match="in order"):
        ring.append(10**12, 2, "dup")          # same id
    with pytest.raises(MicrogestureError, match="insert"):
        ring.append(0, 10, "earlier time")
    ring.append(2 * 33 * MS, 3, "same time is fine")


def test_insert_a_late_result():
    ring = Ring(4)
    for k in (2, 6, 10):
        ring.append(k * MS, k, f"v{k}")
    assert ring.insert(4 * MS, 4, "late")                    # encoded on demand
    assert [e.frame_id for e in ring] == [2, 4, 6, 10]
    assert ring.insert(6 * MS, 6, "replaced") and ring.get(6).value == "replaced"
    assert not ring.insert(1 * MS, 1, "too old")             # full and older than everything
    assert ring.insert(8 * MS, 8, "evicts the oldest")
    assert [e.frame_id for e in ring] == [4, 6, 8, 10]
    with pytest.raises(MicrogestureError, match="time order"):
        ring.insert(100 * MS, 7, "time does not fit its place")


def test_bad_capacity():
    for bad in (0, -1, 2.5, True, "8"):
        with pytest.raises(MicrogestureError, match="capacity"):
            Ring(bad)


def test_one_writer_and_readers_in_threads():
    ring, n, errors = Ring(64), 20_000, []
    done = threading.Event()

    def reader():
        while not done.is_set():
            latest = ring.latest()
            entries = ring.window(0, 10**18)
            ids = [e.frame_id for e in entries]
            if ids != sorted(ids) or len(ids) > 64 or any(e.value != e.frame_id * 2 for e in entries):
                errors.append(ids)
            if latest is not None and ring.get(latest.frame_id) not in (None, latest):
                errors.append(latest)

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for r in readers:
        r.start()
    for k in range(n):
        ring.append(k, k, k * 2)
    done.set()
    for r in readers:
        r.join()
    assert not errors
    assert ring.latest().frame_id == n - 1 and len(ring) == 64


def test_repr():
    assert repr(Ring(3)) == "Ring(0/3)"
    assert repr(filled(5, 3)) == "Ring(3/3, frames 2..4)"
