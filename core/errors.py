"""User-facing errors: every mistake a user can make ends in one of these.

The CLI catches :class:`MicrogestureError`, prints its message (never a
traceback) and exits with ``exit_code``. Messages say what was wrong and how to
fix it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MicrogestureError(Exception):
    """An error caused by the user's input, reported without a traceback."""

    exit_code = 2


class UnknownNameError(MicrogestureError, KeyError):
    """A name (layout, model, estimator, ...) that is not one of the known ones."""

    def __init__(self, kind: str, name: str, choices: Iterable[str]):
        self.kind, self.name, self.choices = kind, name, sorted(choices)
        super().__init__(f"unknown {kind} {name!r}.{did_you_mean(name, self.choices)} "
                         f"Known {kind}s: {', '.join(self.choices)}.")

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.args[0]


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` Did you mean 'x'?`` for the nearest choice, or an empty string."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""


def lookup(table: dict, name: str, kind: str):
    """``table[name]``, or an :class:`UnknownNameError` suggesting the nearest key."""
    try:
        return table[name]
    except KeyError:
        raise UnknownNameError(kind, name, table) from None
