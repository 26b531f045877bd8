"""Provides what a running step can reach: `log_metric` and `current_step`.

The runner installs a `StepContext` around each call of a step function (in the worker process);
outside a run (a user calling the step as a plain function in a unit test) metrics go nowhere.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from dsl.errors import FlowError


@dataclass
class StepContext:
    """What the runner tells a step about its execution.

    Attributes:
        step: the step's name (with `[i]` for one instance of a fan-out).
        run_id: the run this execution belongs to.
        attempt: 1 for the first try, 2 for the first retry, and so on.
        metrics: what `log_metric` recorded during this execution.
    """

    step: str = ""
    run_id: int = 0
    attempt: int = 1
    metrics: dict[str, float] = field(default_factory=dict)


_current: StepContext | None = None


def current_step() -> StepContext | None:
    """The context of the step running in this process, or None outside a run."""
    return _current


@contextmanager
def step_context(ctx: StepContext) -> Iterator[StepContext]:
    """Make `ctx` the current step context for the duration of one step call."""
    global _current
    previous, _current = _current, ctx
    try:
        yield ctx
    finally:
        _current = previous


def log_metric(name: str, value: float) -> None:
    """Record a numeric metric (e.g. accuracy) for the current step; it lands in the run history.

    Calling it outside a run does nothing, so steps stay unit-testable as plain functions.
    """
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise FlowError(f"metric '{name}' must be a number, got {type(value).__name__}")
    if not math.isfinite(float(value)):
        raise FlowError(f"metric '{name}' must be finite, got {value!r}")
    if _current is not None:
        _current.metrics[str(name)] = float(value)
