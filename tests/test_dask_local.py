"""The local cluster `--executor dask` starts (`DaskExecutor(None)`): its workers on 127.0.0.1 over
TCP, the runner's client connected to the scheduler in its own process."""

from __future__ import annotations

import pickle
import socket
import warnings
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


def test_the_scheduler_takes_a_free_port_when_8787_is_busy() -> None:
    """With no dashboard the scheduler still serves HTTP routes; they go to a free port on 127.0.0.1,
    so a cluster already on 8787 (a notebook's, another `flow run --executor dask`) costs the user no
    "Port 8787 is already in use" warning."""
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        holder.bind(("127.0.0.1", 8787))
        holder.listen()
    except OSError:
        pass  # something holds it already: the case under test all the same
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            executor = DaskExecutor(None, workers=1)
        try:
            http = executor._cluster.scheduler.http_server
            assert (http.address, http.port != 8787) == ("127.0.0.1", True)
        finally:
            executor.close()
    finally:
        holder.close()
    assert [str(w.message) for w in caught if "already in use" in str(w.message)] == []
