"""Provides `StablePickler`: cloudpickle whose bytes for equal values are equal in every process.

cloudpickle pickles a class defined in the flow file or a local module by value, tagged with a
"class tracker id" that lets one process rebuild the same class object from several pickles. That
id is a random `uuid4` per process, so two workers returning an identical fitted model made of a
user's `Clipper` class produced different bytes, hence different output hashes: every re-execution
of the step invalidated everything downstream (issue 13, item 8).

Here the id of such a class is derived from the class itself: the SHA-256 of its pickled definition
(with a fixed placeholder id for itself), registered in cloudpickle's tracker before cloudpickle asks
for one. Equal ids then mean equal definitions, so a process that rebuilds a class from an id it
already knows (cloudpickle's behaviour) gets an equivalent class. The runner assigns these ids when
it ships code, and workers keep them for the classes they unpickle; a class first created inside a
worker gets its id there by the same rule.

A `functools.singledispatch` function of the user's cannot be pickled by value (its dispatch cache
holds weak references); it travels as its function and its registered implementations instead.
"""

from __future__ import annotations

import functools
import hashlib
import io
import types
from collections.abc import Callable
from typing import Any

import cloudpickle
import cloudpickle.cloudpickle as internals

_PLACEHOLDER = "0" * 32
_SINGLEDISPATCH_CODE = functools.singledispatch(lambda value: value).__code__  # type: ignore[attr-defined]  # a function


def rebuild_singledispatch(function: Callable[..., Any], implementations: list[tuple[Any, Any]]) -> Any:
    """Unpickle a user's `singledispatch` function: a fresh one with the same implementations."""
    dispatcher = functools.singledispatch(function)
    for cls, implementation in implementations:
        dispatcher.register(cls, implementation)
    return dispatcher


def is_singledispatch(obj: Any) -> bool:
    return type(obj) is types.FunctionType and obj.__code__ is _SINGLEDISPATCH_CODE


def stable_class_id(cls: type) -> str:
    """The tracker id of a class pickled by value: derived from its definition, assigned once."""
    tracker = internals._DYNAMIC_CLASS_TRACKER_BY_CLASS
    known: str | None = tracker.get(cls)
    if known is not None:
        return known
    tracker[cls] = _PLACEHOLDER  # its own id, inside its own definition, while that is hashed
    try:
        buffer = io.BytesIO()
        StablePickler(buffer, protocol=5).dump(cls)
        stable = hashlib.sha256(buffer.getvalue()).hexdigest()[:32]
    except BaseException:
        del tracker[cls]
        raise
    with internals._DYNAMIC_CLASS_TRACKER_LOCK:
        tracker[cls] = stable
        internals._DYNAMIC_CLASS_TRACKER_BY_ID.setdefault(stable, cls)
    return stable


class StablePickler(cloudpickle.Pickler):  # type: ignore[misc]  # cloudpickle ships no types
    """cloudpickle with content-derived class ids and shippable `singledispatch` functions."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, type):
            tracked = obj in internals._DYNAMIC_CLASS_TRACKER_BY_CLASS
            if not tracked and not internals._should_pickle_by_reference(obj):
                stable_class_id(obj)
        elif is_singledispatch(obj) and not internals._should_pickle_by_reference(obj):
            implementations = [(cls, impl) for cls, impl in obj.registry.items() if cls is not object]
            return rebuild_singledispatch, (obj.__wrapped__, implementations)
        return super().reducer_override(obj)


def dumps(value: Any) -> bytes:
    """`cloudpickle.dumps` with stable class ids."""
    buffer = io.BytesIO()
    StablePickler(buffer, protocol=5).dump(value)
    return buffer.getvalue()
