"""Parameters travel once: resolved once per load by the session, hashed and pickled once per run.

`-p lr=0.1` reaches a step in five hand-offs (CLI -> session -> engine -> executor -> worker -> step); these
tests hold the session and the engine to their part, with a real store and `FakeExecutor` (the step runs
in this process, so what it received can be read back from its output).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dsl.errors import FlowError
from runner import session as session_module
from runner.engine import Engine
from runner.executors.fake import FakeExecutor
from runner.session import FlowSession
from runner.store import Store


class Config:
    """A parameter value that counts how often it is pickled."""

    reduced = 0

    def __init__(self, depth: int = 3) -> None:
        self.depth = depth

    def __reduce__(self) -> tuple[type[Config], tuple[int]]:
        Config.reduced += 1
        return (Config, (self.depth,))


FLOW = """
from dsl import param, step
from tests.test_session_params import Config

CONFIG = Config()


@step
def first(lr: float = param(0.1), cfg=CONFIG):
    return lr


@step
def second(first, cfg=CONFIG):
    return first * 2


@step
def third(first, lr: float = param(0.1), cfg=CONFIG):
    return (first, lr)
"""


@pytest.fixture
def session(tmp_path: Path) -> Iterator[FlowSession]:
    path = tmp_path / "project" / "params_flow.py"
    path.parent.mkdir()
    path.write_text(FLOW, encoding="utf-8")
    store = Store(tmp_path / "store")
    engine = Engine(store, FakeExecutor())
    made = FlowSession(path, engine, {"lr": "0.25"})
    made.load()
    yield made
    engine.close()
    store.close()


def test_parameters_are_resolved_once_per_load_not_once_per_run(
    session: FlowSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []
    resolve = session_module.resolve_flow_params

    def counting(*args: Any, **kwargs: Any) -> dict[str, Any]:
        calls.append(kwargs)
        return resolve(*args, **kwargs)

    monkeypatch.setattr(session_module, "resolve_flow_params", counting)
    for _ in range(3):
        assert session.run(force=True).wait(10) == "succeeded"
    assert calls == [], "the values resolved by `load` serve every run of that load"
    session.load()
    assert len(calls) == 1


def test_the_typed_value_reaches_the_step(session: FlowSession) -> None:
    handle = session.run()
    assert handle.wait(10) == "succeeded"
    record = session.engine.store.get_run(handle.id)
    assert record is not None and record.params["lr"] == 0.25
    previews = {s.name: s.preview for s in record.steps}
    assert previews["third"] == "(0.25, 0.25)"


def test_a_parameter_is_hashed_and_pickled_once_per_run_whatever_reads_it(session: FlowSession) -> None:
    assert session.run().wait(10) == "succeeded"
    before = Config.reduced
    assert session.run(force=True).wait(10) == "succeeded"
    assert Config.reduced - before == 2, "one pickle for its hash, one for every task that takes it"


def test_set_overrides_changes_the_next_runs(session: FlowSession) -> None:
    session.set_overrides({"lr": "0.5"})
    assert session.overrides == {"lr": "0.5"}
    assert session.params()["lr"] == 0.5
    handle = session.run()
    assert handle.wait(10) == "succeeded"
    record = session.engine.store.get_run(handle.id)
    assert record is not None and record.params["lr"] == 0.5


def test_an_override_that_does_not_fit_is_refused_when_a_run_starts(session: FlowSession) -> None:
    session.set_overrides({"lr": "fast"})
    with pytest.raises(FlowError, match="lr"):
        session.run()
    session.set_overrides({})
    assert session.params()["lr"] == 0.1
