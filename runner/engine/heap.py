"""Provides `freeze_heap` and `collect_less`: for a long-lived process's entry point, once it has loaded
what it keeps.

They are the process's decisions, not the engine's (an engine made inside a test, a library or a short
command has no business changing its caller's collector): `flow run`, `flow tui` and the benchmarks
call them after start-up.
"""

from __future__ import annotations

import gc

GC_THRESHOLD = (20_000, 50, 1000)
"""The collector's thresholds in a runner's process (the default is (700, 10, 10)).

A run allocates a few dozen objects per step, and keeps many of them (each step's state, its event,
its row until written): with the defaults, a fully cached re-run of 1,000 steps was collected ~15
times, and one of 10,000 steps ~200 times, twice in full, which walked every object the run had
made (0.1-0.2 s of a 0.6 s run). Collecting the young generation after 20,000 allocations, the middle
one after 50 of those passes and the whole heap rarely, took 9-14% off a cached re-run of 1,000 steps
and ~24% off one of 10,000 (in-process A/B, `benchmarks.cached`'s shapes); a pass over 20,000 young
objects is a few milliseconds. Garbage in reference cycles lives longer: at most that many objects."""


def freeze_heap() -> None:
    """Leave everything alive now (imported modules, a loaded flow, the UI) out of every later garbage
    collection: it lives as long as the process. A full collection of that heap took 40-120 ms and
    landed in the middle of runs and reloads."""
    gc.freeze()


def collect_less() -> None:
    """Set the collector's thresholds to `GC_THRESHOLD` (see there)."""
    gc.set_threshold(*GC_THRESHOLD)
