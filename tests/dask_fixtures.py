"""Provides the `dask_cluster` fixture: a real Dask scheduler and two real workers, as processes on 127.0.0.1.

Started once per test session with the `dask` command line, exactly as a user would start them, so
the tests cross real process and network boundaries. The first worker offers `GPU=1` and 8 GB of
`memory`, the second offers nothing, so a step with `resources=` must land on the first. Both run
under a nanny, which restarts a worker that a test kills.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

STARTUP_TIMEOUT_S = 60.0
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class DaskCluster:
    """A running test cluster.

    Attributes:
        address: the scheduler's `tcp://` address.
    """

    address: str

    def wait_for_workers(self, count: int = 2) -> None:
        """Block until `count` workers are connected (a killed worker's nanny restarts it)."""
        from distributed import Client

        with Client(self.address, timeout=10, set_as_default=False) as client:
            client.wait_for_workers(count, timeout=STARTUP_TIMEOUT_S)

    def workers(self) -> dict[str, dict[str, float]]:
        """Each connected worker's address and resources."""
        from distributed import Client

        with Client(self.address, timeout=10, set_as_default=False) as client:
            info = client.scheduler_info(n_workers=-1)["workers"]
        return {address: dict(w.get("resources") or {}) for address, w in info.items()}

    def gpu_worker(self) -> str:
        """The address of the worker started with `--resources GPU=1,memory=8e9` (it changes on restart)."""
        return next(address for address, resources in self.workers().items() if resources.get("GPU"))


def _die_with_parent() -> None:
    """In the child, before `exec`: SIGTERM when the test process dies (Linux), so a pytest killed
    mid-run (a timeout, Ctrl-C twice) leaves no scheduler behind; a worker that loses its scheduler
    ends after its `--death-timeout`."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _start(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "dask", *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process and everything it started (nanny, worker, the steps' processes)."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="session", name="dask_cluster")
def dask_cluster_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    pytest.importorskip("distributed")
    root = tmp_path_factory.mktemp("dask-cluster")
    scheduler_file = root / "scheduler.json"
    procs = [
        _start(
            [
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(scheduler_file),
            ],
            root / "scheduler.log",
        )
    ]
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not scheduler_file.exists() or not scheduler_file.read_text().strip():
            if procs[0].poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the Dask scheduler did not start:\n{(root / 'scheduler.log').read_text()}")
            time.sleep(0.05)  # another process writes the file: nothing to wait on but the file itself
        address = json.loads(scheduler_file.read_text())["address"]
        common = ["--nworkers", "1", "--nthreads", "1", "--no-dashboard", "--death-timeout", "60"]
        for name, extra in (("gpu", ["--resources", "GPU=1,memory=8e9"]), ("cpu", [])):
            argv = ["worker", address, *common, "--name", name, "--local-directory", str(root / name), *extra]
            procs.append(_start(argv, root / f"worker-{name}.log"))
        cluster = DaskCluster(address=address)
        cluster.wait_for_workers(2)
        yield cluster
    finally:
        for proc in reversed(procs):
            _stop(proc)
