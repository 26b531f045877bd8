"""Executors: where a step's function actually runs (worker processes, in-process, Dask).

Importing the package imports nothing else: `flow run` starts its first worker
(`runner.executors.spawn`) before any of its own imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runner.executors.base import Executor


def make_executor(spec: str, workers: int | None = None, *, debug: bool = False) -> Executor:
    """The executor named by `--executor`: `local`, `inline`, `dask` or `dask://HOST:PORT` (`tcp://` too).

    Raises:
        FlowError: an unknown name, `dask` without the `dask` extra installed, or a scheduler that
            cannot be reached.
    """
    from dsl.errors import FlowError

    if workers is not None and workers < 1:
        raise FlowError(f"--workers must be at least 1, got {workers}")
    if spec == "local":
        from runner.executors.local import LocalExecutor

        return LocalExecutor(workers, poll=True)  # `flow run`'s: its scheduler thread alone wants the GIL
    if spec == "inline":
        from runner.executors.inline import InlineExecutor

        return InlineExecutor(debug=debug)
    if spec == "dask" or spec.startswith(("dask://", "tcp://")):
        try:
            from runner.executors.dask import DaskExecutor
        except ImportError as exc:
            raise FlowError(f"--executor {spec} needs Dask: pip install 'flowdsl[dask]' ({exc})") from None
        return DaskExecutor(None if spec == "dask" else spec, workers=workers)
    raise FlowError(f"unknown executor {spec!r}; use local, inline, dask or dask://HOST:PORT")
