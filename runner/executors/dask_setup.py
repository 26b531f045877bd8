"""Provides what `DaskExecutor` needs before the first task: the scheduler's address as `distributed`
spells it, a step's `resources=` as Dask worker resources, and a `sys.path` for spawning a local
cluster's worker processes that no user module can shadow."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def scheduler_address(address: str) -> str:
    """The `distributed` address for what a user typed: `dask://h:p` and `h:p` become `tcp://h:p`."""
    address = address.strip()
    if address.startswith("dask://"):
        return "tcp://" + address[len("dask://") :]
    if "://" not in address:
        return "tcp://" + address
    return address


def dask_resources(resources: dict[str, Any]) -> dict[str, float]:
    """A step's `resources=` as Dask worker resources: numbers stay, sizes like "4GB" become bytes.

    Raises:
        ValueError: a value is neither a number nor a size string.
    """
    from dask.utils import parse_bytes

    converted: dict[str, float] = {}
    for name, value in resources.items():
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(f"resource {name!r} must be a number or a size like '4GB', got {value!r}")
        if isinstance(value, str):
            try:
                converted[name] = float(parse_bytes(value))
            except ValueError:
                raise ValueError(f"resource {name!r}: cannot read {value!r} as a size like '4GB'") from None
        else:
            converted[name] = float(value)
    return converted


_OWN_PACKAGES = ("runner", "dsl", "tui")
_OWN_ROOT = Path(__file__).resolve().parents[2]


def _shadows(entry: str) -> bool:
    """Whether a `sys.path` entry holds a user's own `runner`, `dsl` or `tui` (module or package)."""
    try:
        base = Path(entry or os.getcwd()).resolve()
        if base == _OWN_ROOT or not base.is_dir():
            return False
        return any((base / name).is_dir() or (base / f"{name}.py").is_file() for name in _OWN_PACKAGES)
    except OSError:
        return False


@contextlib.contextmanager
def spawn_path() -> Iterator[None]:
    """`sys.path` without the directories that would shadow this package, while a local cluster starts.

    A Dask worker process is spawned with a copy of this process's `sys.path` (the flow's directory
    first, once the flow is loaded; the working directory under `python -m`) and imports `runner`
    from it before anything else (its main module, then `run_on_worker`): a user's `runner.py` there
    made every worker fail to start. The worker process needs none of those directories (a step's
    code travels by value; its `runner.executors.worker` processes get the flow's root with each task).
    Limitation: a worker process the cluster restarts later (after it died) is spawned with the
    `sys.path` of that moment.
    """
    saved = list(sys.path)
    kept = [entry for entry in saved if not _shadows(entry)]
    if len(kept) == len(saved):
        yield
        return
    sys.path[:] = kept
    try:
        yield
    finally:
        sys.path[:] = saved + [entry for entry in sys.path if entry not in saved]
