"""Progress of a long command on stderr, one way for every command (pose extraction, the
synthetic sets, the token cache, evaluation, training loops).

A :class:`Progress` shows ``<label>: <done>/<total> <unit>[, <rate>][, <note>]``: rewritten in
place a few times a second on a terminal, and one line every few seconds otherwise (a log
file gets a readable history, not carriage returns). :func:`progress_iter` counts the items
of an iterable through one. Nothing here needs anything beyond the standard library.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, TypeVar

T = TypeVar("T")

TTY_EVERY_S = 0.25   # redraws on a terminal
LOG_EVERY_S = 5.0    # lines in a log


class Progress:
    """A counter on ``stream`` (default stderr). ``update(done)`` shows it when the last
    showing is old enough; ``finish()`` shows the final count once and ends the line.
    ``rate``: a unit per second to show (``"fps"``, ``"clips/s"``), or None.
    ``enabled=False``: prints nothing (so callers need no ``if``)."""

    def __init__(self, label: str, total: int | None = None, unit: str = "", *,
                 enabled: bool = True, rate: str | None = None, stream: IO[str] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.label, self.total, self.unit, self.rate, self.enabled = label, total, unit, rate, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(enabled and getattr(self.stream, "isatty", lambda: False)())
        self.every_s = TTY_EVERY_S if self.tty else LOG_EVERY_S
        self._clock = clock
        self.t0 = self._last = clock()
        self.done, self._shown = 0, None
        self._open = False   # a line drawn in place that is not ended yet

    def text(self, done: int, note: str = "") -> str:
        total = f"/{self.total}" if self.total else ""
        parts = [f"{self.label}: {done}{total}" + (f" {self.unit}" if self.unit else "")]
        if self.rate:
            elapsed = self._clock() - self.t0
            parts.append(f"{done / elapsed if elapsed > 0 else 0.0:.1f} {self.rate}")
        if note:
            parts.append(note)
        return ", ".join(parts)

    def update(self, done: int, note: str = "", force: bool = False) -> None:
        self.done = done
        now = self._clock()
        if not self.enabled or (not force and now - self._last < self.every_s):
            return
        self._last, self._shown = now, (done, note)
        text = self.text(done, note)
        if self.tty:
            self.stream.write(f"\r{text} ")
            self._open = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def __call__(self, done: int, note: str = "") -> None:
        self.update(done, note)

    def finish(self, done: int | None = None, note: str = "") -> None:
        """Show the final count (unless it is what was shown last) and end the line."""
        if not self.enabled:
            return
        done = self.done if done is None else done
        if self._shown != (done, note):
            self.update(done, note, force=True)
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


def progress_iter(iterable: Iterable[T], label: str, total: int | None = None, unit: str = "",
                  *, enabled: bool = True, rate: str | None = None,
                  stream: IO[str] | None = None) -> Iterator[T]:
    """The items of ``iterable``, counted on a :class:`Progress` (``total``: ``len()`` of
    the iterable when it has one)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)   # type: ignore[arg-type]
    bar = Progress(label, total, unit, enabled=enabled, rate=rate, stream=stream)
    done = 0
    try:
        for item in iterable:
            yield item
            done += 1
            bar.update(done)
    finally:
        bar.finish(done)
