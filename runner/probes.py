"""Provides probes: the user code the runner needs an answer from before it can decide a step.

A `when=` predicate and the iteration of a `foreach` argument are user code run on upstream values,
and so is unpickling those values (`__reduce__` can be `(sys.exit, (0,))`, `__iter__` can raise or
sleep for ever). None of it runs in the runner: each probe is an ordinary `Task` whose function is
one of the two wrappers below around the user's code, submitted through the executor interface like
a step (a `foreach` over a plain list, no user code, needs none: `Probing._plain_items`). So a
probe runs where a step would (a worker process, in-process with `--executor inline`,
on a Dask worker), fails with the step's own failure reasons (an exception, `sys.exit`, a crash),
is killed at its timeout, and is killed by a stop. What comes back is plain data: a bool, or the
pickled bytes of each item; `plain_loads` reads it without resolving any global, so a worker cannot
make the runner run code through it either.
"""

from __future__ import annotations

import functools
import io
import pickle
from collections.abc import Callable
from typing import Any

from runner.artifacts import UnstorableOutput, dumps

PROBE_TIMEOUT_S = 60.0
"""A probe's timeout when its step declares none (with `timeout=`, the probe gets the step's).
Long enough for a predicate that loads a big upstream output; a predicate is meant to be a quick
look at a value, and one that hangs must not hold the run for ever."""


class ForeachItemUnstorable(Exception):
    """A `foreach` item cannot be pickled, so it cannot be sent to its instance."""


def check_when(predicate: Callable[..., Any], /, **kwargs: Any) -> bool:
    """Call a `when=` predicate and take its truth value (a user `__bool__` runs here too)."""
    return bool(predicate(**kwargs))


def foreach_items(arg: str, /, **kwargs: Any) -> list[bytes]:
    """Iterate the `foreach` argument `arg` and pickle each item for its instance.

    Raises:
        ForeachItemUnstorable: an item cannot be pickled (naming its index).
    """
    items = []
    for index, value in enumerate(kwargs[arg]):
        try:
            items.append(dumps(value))
        except UnstorableOutput as exc:
            raise ForeachItemUnstorable(f"item {index} cannot be pickled: {exc}") from None
    return items


def when_probe(predicate: Callable[..., Any]) -> Callable[..., bool]:
    """The function of a `when=` probe task (pickled by value with the flow's code)."""
    return functools.partial(check_when, predicate)


def foreach_probe(arg: str) -> Callable[..., list[bytes]]:
    """The function of a `foreach` probe task."""
    return functools.partial(foreach_items, arg)


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"a probe's answer may not name {module}.{name}")


def plain_loads(data: bytes) -> Any:
    """Unpickle a probe's answer (a bool or a list of bytes) without importing or calling anything.

    Raises:
        pickle.UnpicklingError: the bytes name a global (they are not a probe's answer).
    """
    return _PlainUnpickler(io.BytesIO(data)).load()
