"""Provides `gc_paused`: no cyclic garbage collection while a flow loads or is fingerprinted.

Loading a 10,000-step flow and hashing its steps makes about a million objects that all stay alive
(steps, functions, graph nodes, fingerprints) or die by reference counting (parsed trees, strings).
The cyclic collector, triggered by the count of new objects, kept scanning them, its full
collections over an ever larger heap, for nothing: 0.15-0.3 s of a 1-2 s load and plan. Paused,
they are scanned once, by the first collection after. Nothing is lost: garbage made meanwhile is
collected then.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_depth = 0
_was_enabled = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the collector for the block (nested and concurrent blocks: until the last one ends);
    it is enabled again afterwards only if it was enabled before the first."""
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()
