"""Between the capture thread and the consumer: the bounded frame buffer with its
policy, and the reconnect backoff."""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from dataclasses import dataclass

from microgesture.core.errors import MicrogestureError
from microgesture.stream.sources.records import BufferPolicy, Frame, SourceStatus


@dataclass(frozen=True)
class Backoff:
    """Reconnect delays: attempt ``k`` (from 1) waits ``min(max_s, base_s * factor**(k-1))``
    seconds, reduced by up to ``jitter`` (a fraction, 0 = none) at random, before trying.
    ``max_attempts``: give up (ENDED) after that many failed attempts; None = forever."""

    base_s: float = 0.5
    max_s: float = 30.0
    factor: float = 2.0
    jitter: float = 0.0
    max_attempts: int | None = None

    def __post_init__(self):
        if not self.base_s > 0 or not self.max_s >= self.base_s:
            raise MicrogestureError(f"backoff needs 0 < base_s <= max_s, got base_s={self.base_s}, "
                                    f"max_s={self.max_s}.")
        if not self.factor >= 1:
            raise MicrogestureError(f"backoff factor must be >= 1, got {self.factor}.")
        if not 0 <= self.jitter < 1:
            raise MicrogestureError(f"backoff jitter is a fraction in [0, 1), got {self.jitter}.")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise MicrogestureError(f"backoff max_attempts must be >= 1 or None (forever), "
                                    f"got {self.max_attempts}.")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        d = min(self.max_s, self.base_s * self.factor ** (attempt - 1))
        if self.jitter:
            d *= 1.0 - self.jitter * (rng or random).random()
        return d


# --------------------------------------------------------------------------- buffer

class _Buffer:
    """Frames (bounded, with a policy) and status records (never dropped), in order."""

    def __init__(self, capacity: int, policy: BufferPolicy):
        self.capacity, self.policy = capacity, policy
        self._items: deque[Frame | SourceStatus] = deque()
        self._frames = 0
        self._cond = threading.Condition()
        self._closed = False     # the producer has finished: nothing more will come
        self._stopping = False   # stop(): a waiting producer gives up

    def put_frame(self, frame: Frame) -> tuple[Frame | None, str]:
        """Buffer ``frame``; returns the frame that was dropped instead (or None) and why."""
        with self._cond:
            if self._frames >= self.capacity:
                if self.policy is BufferPolicy.DROP_LATEST:
                    return frame, "buffer_full"
                if self.policy is BufferPolicy.DROP_OLDEST:
                    for i, item in enumerate(self._items):
                        if isinstance(item, Frame):
                            del self._items[i]
                            self._frames -= 1
                            self._append(frame)
                            return item, "buffer_full"
                while self._frames >= self.capacity and not self._stopping:
                    self._cond.wait(0.1)
                if self._stopping:
                    return frame, "stopped"
            self._append(frame)
            return None, ""

    def _append(self, item) -> None:
        self._items.append(item)
        if isinstance(item, Frame):
            self._frames += 1
        self._cond.notify_all()

    def put_status(self, status: SourceStatus) -> None:
        with self._cond:
            self._append(status)

    def get(self, timeout: float | None, frames_only: bool):
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                while frames_only and self._items and isinstance(self._items[0], SourceStatus):
                    self._items.popleft()   # delivered to the callbacks and the history already
                if self._items:
                    item = self._items.popleft()
                    if isinstance(item, Frame):
                        self._frames -= 1
                        self._cond.notify_all()
                    return item
                if self._closed:
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def frames(self) -> int:
        return self._frames

    @property
    def drained(self) -> bool:
        with self._cond:
            return self._closed and not self._items


