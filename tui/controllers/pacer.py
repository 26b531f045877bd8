"""Provides `Pacer`: keeps a periodic background read (the TUI's looks at the store for other
processes' runs) to a small share of one core, however large the store grows.

Why: a look is one query, ~1 ms on a store of a few thousand runs, but a store that `flow serve` has
filled for months holds 100,000 runs and more, and the queries scan them (20-70 ms each, measured):
every second, that would be a steady 2-7% of a core for a screen nobody may be watching.
"""

from __future__ import annotations

import time
from collections.abc import Callable

SHARE = 0.05
"""The share of one core the paced reads may take: a read that took `t` is followed by the next no
sooner than `t / SHARE` later (every second while reads take up to 50 ms)."""


class Pacer:
    """One read at a time, each spaced by the last one's duration (see `SHARE`)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._busy = False
        self._started = 0.0
        self._next = 0.0

    def start(self) -> bool:
        """Whether a read may start now (then call `done` when it has ended, whatever its result)."""
        now = self._clock()
        if self._busy or now < self._next:
            return False
        self._busy = True
        self._started = now
        return True

    def done(self) -> None:
        now = self._clock()
        self._busy = False
        self._next = now + (now - self._started) / SHARE
