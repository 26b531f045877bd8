"""The reload baseline a session may defer past its first load (the TUI shows the graph first).

A deferred baseline must be what an immediate one would have been: the load and the parameter values
it was deferred with, not whatever the session holds when it is finally computed. A reload that comes
before it is computed cannot know what a step's in-body imports or declared inputs read at the load,
so it counts those steps as changed rather than miss an edit. Real store, the flow's steps run in this
process (`FakeExecutor`); the reloads are called directly (the watcher is tested in `test_watch`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.engine import Engine
from runner.engine import scheduler as scheduler_module
from runner.events import FlowReloaded
from runner.executors.fake import FakeExecutor
from runner.session import FlowSession
from runner.store import Store

FLOW = """
from dsl import param, step


@step
def first(lr: float = param(0.1)):
    return lr


@step
def second(first):
    return first * 2


@step
def third():
    import helper

    return helper.VALUE


@step(inputs=["data.csv"])
def fourth():
    return 4
"""


class Project:
    """A flow file, its helper module and declared input, and a session on them."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "project"
        self.dir.mkdir()
        self.path = self.dir / "baseline_flow.py"
        self.path.write_text(FLOW, encoding="utf-8")
        (self.dir / "helper.py").write_text("VALUE = 1\n", encoding="utf-8")
        (self.dir / "data.csv").write_text("a,b\n", encoding="utf-8")
        self.store = Store(root / "store")
        self.engine = Engine(self.store, FakeExecutor())
        self.reloads: list[FlowReloaded] = []
        self.engine.subscribe(lambda e: self.reloads.append(e) if isinstance(e, FlowReloaded) else None)
        self.session = FlowSession(self.path, self.engine, {"lr": "0.25"})

    def edit(self, name: str, old: str, new: str) -> None:
        path = self.dir / name
        text = path.read_text(encoding="utf-8")
        assert old in text
        path.write_text(text.replace(old, new), encoding="utf-8")

    def reload(self) -> tuple[str, ...]:
        assert self.session.reload(), self.session.error
        return self.reloads[-1].changed

    def close(self) -> None:
        self.engine.close()
        self.store.close()


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    made = Project(tmp_path)
    yield made
    made.close()


def test_a_deferred_baseline_is_of_the_load_and_parameters_it_was_deferred_with(project: Project) -> None:
    session = project.session
    session.load(defer_baseline=True)
    assert not session.baseline_ready
    session.set_overrides({"lr": "0.5"})  # the next load resolves lr=0.5; the deferred one had 0.25
    project.edit("baseline_flow.py", "first * 2", "first * 3")
    session.baseline()
    assert session.baseline_ready
    assert project.reload() == ("first", "second")  # the parameter, the code


def test_a_reload_before_the_baseline_counts_the_steps_that_read_files_as_changed(project: Project) -> None:
    session = project.session
    session.load(defer_baseline=True)
    project.edit("helper.py", "VALUE = 1", "VALUE = 2")  # saved before any baseline read it
    assert project.reload() == ("third", "fourth")  # may have moved: counted; `first`, `second` cannot
    project.edit("helper.py", "VALUE = 2", "VALUE = 3")
    assert project.reload() == ("third",)  # from then on, exactly what moved


def test_a_baseline_taken_after_the_load_sees_a_later_edit(project: Project) -> None:
    session = project.session
    session.load(defer_baseline=True)
    session.baseline()
    project.edit("helper.py", "VALUE = 1", "VALUE = 2")
    assert project.reload() == ("third",)
    project.edit("data.csv", "a,b", "a,b,c")
    assert project.reload() == ("fourth",)


def test_the_static_fingerprints_are_computed_once_per_load(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    computed: list[str] = []
    real = scheduler_module.static_prints

    def counting(loaded: Any) -> Any:
        computed.append(loaded.load_id)
        return real(loaded)

    monkeypatch.setattr(scheduler_module, "static_prints", counting)
    session = project.session
    loaded = session.load(defer_baseline=True)
    assert computed == []
    session.baseline()
    session.baseline()
    assert computed == [loaded.load_id]
    handle = session.run(trigger="test")
    handle.wait()
    assert handle.status == "succeeded" and computed == [loaded.load_id]
