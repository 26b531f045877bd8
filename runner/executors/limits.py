"""Provides the limits a worker puts on one step: `parse_size` for sizes like "2GiB", and the memory cap
(`resources={"memory": ...}` or `$FLOW_MEMORY_LIMIT`) applied around the step's call."""

from __future__ import annotations

import os
import re
from typing import Any

from runner.executors.base import Task

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1e3,
    "kb": 1e3,
    "m": 1e6,
    "mb": 1e6,
    "g": 1e9,
    "gb": 1e9,
    "t": 1e12,
    "tb": 1e12,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
}


def parse_size(value: Any) -> int:
    """Bytes from a number or a size like "512MB", "2GiB".

    Raises:
        ValueError: not a size.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    match = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", str(value))
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"not a size: {value!r} (use bytes or e.g. '512MB', '2GiB')")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def memory_limit(task: Task) -> int | None:
    """The step's memory limit in bytes: `resources={"memory": "2GB"}`, else `$FLOW_MEMORY_LIMIT`."""
    value = (task.resources or {}).get("memory") or os.environ.get("FLOW_MEMORY_LIMIT")
    return parse_size(value) if value else None


def limit_memory(limit: int) -> tuple[int, int] | None:
    """Cap this process's address space at its current size + `limit`; return the old limits."""
    try:
        import resource

        old = resource.getrlimit(resource.RLIMIT_AS)
        with open("/proc/self/statm") as handle:
            current = int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        cap = current + limit
        if old[1] != resource.RLIM_INFINITY:
            cap = min(cap, old[1])
        resource.setrlimit(resource.RLIMIT_AS, (cap, old[1]))
        return old
    except (OSError, ValueError, ImportError):
        return None


def restore_memory(old: tuple[int, int] | None) -> None:
    if old is not None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, old)
