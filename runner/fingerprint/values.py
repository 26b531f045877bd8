"""Provides value hashing: `sha` over text parts, and `value_hash` for a constant or a parameter value.

A value that cannot be hashed with confidence raises `Untrusted`: the step then always runs.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Any

CONSTANT_TYPES = (int, float, complex, str, bytes, bool, type(None), range, slice)


def sha(*parts: str) -> str:
    """SHA-256 of the parts, each followed by a NUL byte."""
    return text_sha("\0".join(parts) + "\0" if parts else "")


def text_sha(text: str) -> str:
    """SHA-256 of a text, lone surrogates kept (one encode and one update: a step's fingerprint has a
    dozen parts, and an update per part was a sixth of a cached step's cost)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class Untrusted(Exception):
    """A value the fingerprint cannot hash with confidence."""


def value_hash(value: Any, _depth: int = 0) -> str:
    """A stable hash of a constant or parameter value.

    Dicts are hashed in their order (Python dicts are ordered: `list(d)` and `",".join(d)` change when
    keys are reordered); sets, whose order means nothing, are hashed sorted.

    Raises:
        Untrusted: the value cannot be hashed reliably (not picklable).
    """
    if _depth > 50:
        raise Untrusted("value nested too deeply")
    if isinstance(value, CONSTANT_TYPES):
        return sha(type(value).__name__, repr(value))
    if isinstance(value, list | tuple):
        return sha(type(value).__name__, *(value_hash(v, _depth + 1) for v in value))
    if isinstance(value, dict):
        return sha(
            container_name(value, "dict"),
            *(value_hash(k, _depth + 1) + value_hash(v, _depth + 1) for k, v in value.items()),
        )
    if isinstance(value, set | frozenset):
        return sha(type(value).__name__, *sorted(value_hash(v, _depth + 1) for v in value))
    if isinstance(value, Path):
        return sha("path", str(value))
    try:
        return sha(type(value).__qualname__, hashlib.sha256(pickle.dumps(value, protocol=5)).hexdigest())
    except Exception as exc:
        raise Untrusted(f"{type(value).__name__} value cannot be hashed ({exc})") from None


def container_name(value: Any, base: str) -> str:
    """`dict` for a plain dict, else the subclass's qualified name (a `defaultdict` and a `dict` with
    equal items behave differently, so they are different values)."""
    kind = type(value)
    return (
        base
        if kind.__name__ == base and kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
