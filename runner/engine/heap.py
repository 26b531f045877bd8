"""Provides `freeze_heap`: for a long-lived process's entry point, once it has loaded what it keeps.

It is the process's decision, not the engine's (an engine made inside a test, a library or a short
command has no business freezing its caller's heap): `flow run`, `flow tui` and the benchmarks call it
after start-up.
"""

from __future__ import annotations

import gc


def freeze_heap() -> None:
    """Leave everything alive now (imported modules, a loaded flow, the UI) out of every later garbage
    collection: it lives as long as the process. A full collection of that heap took 40-120 ms and
    landed in the middle of runs and reloads."""
    gc.freeze()
