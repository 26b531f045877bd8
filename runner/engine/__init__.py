"""Provides the engine: `Engine` runs flows (plans, consults the cache, drives an executor, emits events).

By part: `model` (requests, handles, a step's state), `decide` (pure decisions: skip, ask a probe,
reuse, refuse, wait, join, execute), `cache_index` (the engine's memory of the cache), `leases`
(cross-process claims), `bundles` (code shipped to workers), `inputs` (outputs handed on), and the
scheduler: `state`, `finishing`, `executing`, `probing`, `deciding`, `scheduler` (the loop and the
public API). `freeze_heap` and `collect_less` are for a process's entry point.
"""

from __future__ import annotations

from runner.engine.heap import collect_less, freeze_heap
from runner.engine.model import Output, RunHandle, RunRequest, StepState, Subscriber
from runner.engine.scheduler import Engine

__all__ = [
    "Engine",
    "Output",
    "RunHandle",
    "RunRequest",
    "StepState",
    "Subscriber",
    "collect_less",
    "freeze_heap",
]
