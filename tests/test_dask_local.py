"""The local cluster `--executor dask` starts (`DaskExecutor(None)`): its workers on 127.0.0.1 over
TCP, the runner's client connected to the scheduler in its own process."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("distributed")

from runner.executors.dask import DaskExecutor  # noqa: E402
from tests.test_dask import session, step_of  # noqa: E402

pytestmark = pytest.mark.dask


def test_the_local_cluster_talks_to_its_scheduler_in_process(
    tmp_path: Path, write_flow: Callable[..., Path]
) -> None:
    path = write_flow(
        """
        from dsl import step

        @step
        def items():
            return [1, 2, 3]

        @step(foreach="items")
        def square(items):
            print("squaring", items)
            return items * items

        @step
        def total(square):
            return sum(square)
        """
    )
    executor = DaskExecutor(None, workers=1)
    assert executor.address.startswith("tcp://127.0.0.1:")
    assert executor._client.scheduler is not None
    assert str(executor._client.scheduler.address).startswith("inproc://")
    with session(tmp_path / "store", executor) as dask:
        record = dask.run(path)
        total = pickle.loads(dask.store.read_artifact(step_of(record, "total").output_hash))
        lines = [line.line for line in dask.store.get_logs(record.id, "square[1]")]
    assert record.status == "succeeded" and total == 14
    assert lines == ["squaring 2"]
    assert step_of(record, "total").where.startswith("tcp://127.0.0.1:")
