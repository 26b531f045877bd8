"""Provides how the engine hands outputs on: as `InputRef`s for a task (bytes or a path, never unpickled
here), and as plain data for a run's flow outputs (read without running any of the user's code)."""

from __future__ import annotations

from typing import Any

from runner.artifacts import ArtifactError, trusted_stamp
from runner.engine.model import NONE_OUTPUT_HASH, Output
from runner.executors.base import InputRef
from runner.probes import plain_loads
from runner.store.api import EngineStore


def input_ref(store: EngineStore, output: Output | None) -> InputRef:
    """One argument of a task from an upstream step's output (verified against its hash), with the
    stamp of its file when this process knows its content (the worker then only `stat`s it).

    An output found in the cache moments after a run of this engine made it (a run that a save
    started while the last one was in flight) may have its artifact row still in the writer's open
    batch: not in the store yet for this read. Before an artifact is called missing, what this
    process queued is committed, and it is looked up once more.

    Raises:
        ArtifactError: the output's artifact is missing or corrupt.
    """
    if output is None:
        return InputRef(hash=NONE_OUTPUT_HASH, none=True)
    if output.parts is not None:
        return InputRef(hash=output.hash, parts=tuple(input_ref(store, p) for p in output.parts))
    if output.data is not None or output.path is not None:
        data, path = output.data, output.path
    else:
        try:
            data, path = store.artifact_location(output.hash)
        except ArtifactError:
            store.flush()
            data, path = store.artifact_location(output.hash)
    stamp = None if path is None else trusted_stamp(path, output.hash)
    return InputRef(hash=output.hash, data=data, path=path, stamp=stamp)


def plain_value(store: EngineStore, output: Output) -> Any:
    """An output as plain data (dicts, lists, text, numbers), for flow outputs at a run's end.

    Read with the probes' unpickler, which imports and calls nothing: the runner never runs a
    user's `__reduce__`. An object raises `pickle.UnpicklingError`; its preview is shown instead.
    """
    if output.parts is not None:
        return [plain_value(store, part) for part in output.parts]
    if output.data is None and output.path is None:
        store.flush()
        return plain_loads(store.read_artifact(output.hash))
    if output.data is not None:
        return plain_loads(output.data)
    assert output.path is not None
    with open(output.path, "rb") as handle:
        return plain_loads(handle.read())
