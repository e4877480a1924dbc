"""Time-ordered rings of per-frame results: frames, poses and heatmaps, visual tokens.

A :class:`Ring` holds the newest ``capacity`` entries ``(capture_ns, frame_id, value)``,
ordered by frame id (and so by capture time: both only grow along a stream). Appending
beyond the capacity evicts the oldest entry. Windows read the entries of a time span
(:meth:`Ring.window`) or look up single frames (:meth:`Ring.get`), both by binary search.

One writer and any number of readers may use a ring from different threads: every
method takes the ring's lock, and readers get lists of entries (the values themselves
are shared, not copied: treat them as read-only).

:meth:`Ring.append` requires order (a newer frame id and no earlier capture time); a
result computed late for an older frame (e.g. a visual token encoded on demand because
the scheduler did not predict the frame) goes in with :meth:`Ring.insert`.
"""

from __future__ import annotations

import operator
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from typing import Any, NamedTuple

from microgesture.core.errors import MicrogestureError


class Entry(NamedTuple):
    """One entry of a ring."""

    capture_ns: int
    frame_id: int
    value: Any


class Ring:
    """The newest ``capacity`` entries of a stream, ordered by frame id and capture time."""

    def __init__(self, capacity: int):
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise MicrogestureError(f"ring capacity is a number of entries >= 1, got {capacity!r}.")
        self.capacity = capacity
        self._lock = threading.Lock()
        # Parallel lists with a moving head: index i < _head is evicted (compacted lazily),
        # so appending and evicting are O(1) amortised and lookups are bisections.
        self._ids: list[int] = []
        self._times: list[int] = []
        self._values: list[Any] = []
        self._head = 0
        self.evicted = 0   # entries pushed out by newer ones, since the ring was made

    # ------------------------------------------------------------------ writing

    def append(self, capture_ns: int, frame_id: int, value: Any) -> Entry | None:
        """Add the newest entry; returns the entry it evicted, if any. ``frame_id`` must be
        greater than the latest one and ``capture_ns`` not earlier (else use :meth:`insert`)."""
        capture_ns, frame_id = int(capture_ns), int(frame_id)
        with self._lock:
            if len(self._ids) > self._head:
                last_id, last_ns = self._ids[-1], self._times[-1]
                if frame_id <= last_id or capture_ns < last_ns:
                    raise MicrogestureError(
                        f"ring entries must be appended in order: frame {frame_id} at {capture_ns} ns "
                        f"after frame {last_id} at {last_ns} ns; use insert() for a late result.")
            self._ids.append(frame_id)
            self._times.append(capture_ns)
            self._values.append(value)
            return self._evict()

    def insert(self, capture_ns: int, frame_id: int, value: Any) -> bool:
        """Add an entry at its place in frame-id order (a late result for an older frame),
        replacing the value of an entry with the same frame id. Returns False, and stores
        nothing, when the ring is full and the entry would be older than all it holds."""
        capture_ns, frame_id = int(capture_ns), int(frame_id)
        with self._lock:
            i = bisect_left(self._ids, frame_id, self._head)
            if i < len(self._ids) and self._ids[i] == frame_id:
                self._times[i], self._values[i] = capture_ns, value
                return True
            if (i > self._head and self._times[i - 1] > capture_ns) or (
                    i < len(self._ids) and self._times[i] < capture_ns):
                raise MicrogestureError(
                    f"frame {frame_id} at {capture_ns} ns is out of time order with its neighbours "
                    "in the ring: frame ids and capture times must grow together.")
            if i == self._head and len(self._ids) - self._head >= self.capacity:
                return False
            self._ids.insert(i, frame_id)
            self._times.insert(i, capture_ns)
            self._values.insert(i, value)
            self._evict()
            return True

    def _evict(self) -> Entry | None:
        evicted = None
        while len(self._ids) - self._head > self.capacity:
            h = self._head
            evicted = Entry(self._times[h], self._ids[h], self._values[h])
            self._values[h] = None          # let the value go now
            self._head += 1
            self.evicted += 1
        if self._head > max(64, self.capacity):   # compact: drop the evicted prefix
            del self._ids[:self._head], self._times[:self._head], self._values[:self._head]
            self._head = 0
        return evicted

    def clear(self) -> None:
        with self._lock:
            self._ids, self._times, self._values, self._head = [], [], [], 0

    # ------------------------------------------------------------------ reading

    def _entry(self, i: int) -> Entry:
        return Entry(self._times[i], self._ids[i], self._values[i])

    def window(self, start_ns: int, end_ns: int) -> list[Entry]:
        """Entries with ``start_ns <= capture_ns <= end_ns`` (both ends included), oldest first."""
        with self._lock:
            lo = bisect_left(self._times, start_ns, self._head)
            hi = bisect_right(self._times, end_ns, lo)
            return [self._entry(i) for i in range(lo, hi)]

    def get(self, frame_id: int, default: Any = None) -> Entry | Any:
        """The entry of ``frame_id``, or ``default`` when the ring does not hold it."""
        with self._lock:
            i = bisect_left(self._ids, frame_id, self._head)
            if i < len(self._ids) and self._ids[i] == frame_id:
                return self._entry(i)
            return default

    def get_many(self, frame_ids) -> list[Entry | None]:
        """Entries for several frame ids at once (None for each one not held)."""
        with self._lock:
            out = []
            for frame_id in frame_ids:
                i = bisect_left(self._ids, frame_id, self._head)
                out.append(self._entry(i) if i < len(self._ids) and self._ids[i] == frame_id else None)
            return out

    def latest(self) -> Entry | None:
        """The newest entry, or None when the ring is empty."""
        with self._lock:
            return self._entry(len(self._ids) - 1) if len(self._ids) > self._head else None

    def oldest(self) -> Entry | None:
        """The oldest entry still held, or None when the ring is empty."""
        with self._lock:
            return self._entry(self._head) if len(self._ids) > self._head else None

    def entries(self) -> list[Entry]:
        """All entries, oldest first."""
        with self._lock:
            return [self._entry(i) for i in range(self._head, len(self._ids))]

    def __contains__(self, frame_id: object) -> bool:
        try:
            frame_id = operator.index(frame_id)   # ints and numpy integers
        except TypeError:
            return False
        return self.get(frame_id) is not None

    def __len__(self) -> int:
        with self._lock:
            return len(self._ids) - self._head

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries())

    def __repr__(self) -> str:
        with self._lock:
            n = len(self._ids) - self._head
            span = f", frames {self._ids[self._head]}..{self._ids[-1]}" if n else ""
        return f"Ring({n}/{self.capacity}{span})"
