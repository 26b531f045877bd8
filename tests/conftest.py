"""Shared fixtures: a real store in a temporary directory, the real `flow` CLI, a real engine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dsl import load_flow
from runner.engine import Engine, RunRequest
from runner.events import Event
from runner.executors.local import LocalExecutor
from runner.params import resolve_params
from runner.store import Store

REPO = Path(__file__).resolve().parent.parent
SAMPLE_FLOWS = REPO / "sample_flows"


@pytest.fixture(autouse=True)
def _no_user_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep the developer's FLOW_STORE / FLOW_EXECUTOR out of the tests."""
    monkeypatch.delenv("FLOW_STORE", raising=False)
    monkeypatch.delenv("FLOW_EXECUTOR", raising=False)


@pytest.fixture(autouse=True)
def _sigpipe_still_ignored() -> Iterator[None]:
    """Python ignores SIGPIPE (a write to a closed pipe fails with EPIPE). flow's entry point lets a
    command that only prints die of it instead; run in-process by a test and left so, it killed the
    xdist worker in a later test, whose runner wrote to a worker that had just crashed."""
    yield
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN, "the test left SIGPIPE's action changed"


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def write_flow(tmp_path: Path) -> Callable[..., Path]:
    """Write a flow file (dedented) into tmp_path/project and return its path."""

    def write(text: str, name: str = "flow_file.py") -> Path:
        project = tmp_path / "project"
        project.mkdir(exist_ok=True)
        path = project / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


class CLIResult:
    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.code = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr

    def json(self) -> Any:
        return json.loads(self.stdout)

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    def __repr__(self) -> str:
        return f"<exit {self.code}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}>"


@pytest.fixture
def flow_cli(store_dir: Path, tmp_path: Path) -> Callable[..., CLIResult]:
    """Run the real `flow` command in a subprocess with the test's store."""

    def run(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> CLIResult:
        full_env = {**os.environ, "FLOW_STORE": str(store_dir), **(env or {})}
        proc = subprocess.run(
            [sys.executable, "-m", "runner", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
        )
        return CLIResult(proc)

    return run


class EngineHarness:
    """A real engine (local worker processes, store on disk) that records every event."""

    def __init__(self, store_dir: Path, workers: int = 2) -> None:
        self.store = Store(store_dir)
        self.events: list[Event] = []
        self.engine = Engine(self.store, LocalExecutor(workers), [self.events.append])

    def run(self, path: Path, params: dict[str, Any] | None = None, **options: Any) -> Any:
        loaded = load_flow(path)
        values = resolve_params(loaded.graph.params, params or {})
        handle = self.engine.run(RunRequest(loaded, values, **options))
        return self.store.get_run(handle.id)

    def close(self) -> None:
        self.engine.close()
        self.store.close()


@pytest.fixture
def harness(store_dir: Path, request: pytest.FixtureRequest) -> Iterator[EngineHarness]:
    """`@pytest.mark.workers(n)` sizes the worker pool (default 2)."""
    marker = request.node.get_closest_marker("workers")
    h = EngineHarness(store_dir, workers=marker.args[0] if marker else 2)
    yield h
    h.close()


@pytest.fixture
def importers_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`import flowtest_importers` works here and in workers, as an installed library's import does:
    each worker process that imports it appends its pid to the file returned (read it with
    `tests.helpers_core.importers`)."""
    from tests.helpers_core import IMPORTERS_LOG, importers_library

    libs = importers_library(tmp_path / "libs", "flowtest_importers")
    log = tmp_path / "importers"
    monkeypatch.setenv(IMPORTERS_LOG, str(log))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(p for p in (str(libs), os.environ.get("PYTHONPATH")) if p)
    )
    monkeypatch.syspath_prepend(str(libs))
    return log


@pytest.fixture
def quiet_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine as `LocalExecutor` reads its load: quiet (the tests' own load must not decide
    whether it polls)."""
    from runner.executors import local

    path = tmp_path / "quiet-loadavg"
    path.write_text("0.1 0.1 0.1 1/100 1\n")
    monkeypatch.setattr(local, "LOADAVG", str(path))


@pytest.fixture
def sent_tasks(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every `wire.RunTask` the runner sends to a worker, as it encodes it."""
    from runner.executors import wire

    frames: list[Any] = []
    encode = wire.encode

    def spy(message: Any, *, code: bool = True) -> bytes:
        if isinstance(message, wire.RunTask):
            frames.append(message)
        return encode(message, code=code)

    monkeypatch.setattr(wire, "encode", spy)
    return frames
