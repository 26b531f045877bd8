"""The flow controller without an app: a real engine with worker processes, a real store on disk,
the controller driven as the screen drives it, and a host that stands in for the pane.

The host runs background work at once on the calling thread but holds each continuation until
`settle()`, as the UI thread would get it later, so a test sees what is painted between the two.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from runner.engine import Engine
from runner.engine import scheduler as scheduler_module
from runner.events import Event, RunFinished, RunStarted, StepLog
from runner.executors.local import LocalExecutor
from runner.review import plan as plan_module
from runner.store import Store
from tests.tui.conftest import SIMPLE, write_flow
from tui.controllers.flow import LOADING, FlowController
from tui.controllers.host import Change, Severity
from tui.controllers.router import EventRouter, flow_key
from tui.data.state import StepLogs

T = TypeVar("T")


class Host:
    """Stands in for the pane: records changes and notices, queues continuations."""

    def __init__(self) -> None:
        self.pending: deque[Callable[[], None]] = deque()
        self.unpainted: deque[Callable[[], None]] = deque()
        """Continuations waiting for the screen to be painted (`settle` paints it)."""
        self.changes: list[Change] = []
        self.notices: list[tuple[str, Severity]] = []

    def background(
        self,
        work: Callable[[], T],
        then: Callable[[T], None] | None = None,
        *,
        group: str,
        description: str,
        exclusive: bool = False,
        failed: Callable[[], None] | None = None,
    ) -> None:
        try:
            result = work()
        except Exception:
            if failed is None:
                raise
            self.pending.append(failed)
            return
        if then is not None:
            self.pending.append(lambda: then(result))

    def loop(self, work: Callable[[], None], *, name: str) -> None:
        threading.Thread(target=work, name=name, daemon=True).start()

    def soon(self, callback: Callable[[], None]) -> None:
        self.pending.append(callback)

    def after_paint(self, callback: Callable[[], None]) -> None:
        self.unpainted.append(callback)

    def changed(self, change: Change) -> None:
        self.changes.append(change)

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: Severity = "information",
        timeout: float | None = None,
    ) -> None:
        self.notices.append((message, severity))

    def settle(self, paint: bool = True) -> None:
        """Run every continuation, those queued by continuations too; `paint`: then paint the
        screen, and run those that waited for it (and theirs)."""
        while self.pending or (paint and self.unpainted):
            if not self.pending:
                self.pending, self.unpainted = self.unpainted, self.pending
            self.pending.popleft()()


class Events:
    """The engine's events as a subscriber gets them; `wait_run` blocks until a run has ended."""

    def __init__(self) -> None:
        self.items: list[Event] = []
        self.lock = threading.Lock()
        self.finished = threading.Condition(self.lock)

    def __call__(self, event: Event) -> None:
        with self.lock:
            self.items.append(event)
            if isinstance(event, RunFinished):
                self.finished.notify_all()

    def wait_run(self, count: int = 1) -> list[Event]:
        """Every event so far, once `count` runs have ended (taken: the next call starts afresh)."""
        with self.lock:
            ended = self.finished.wait_for(
                lambda: sum(isinstance(e, RunFinished) for e in self.items) >= count, timeout=60
            )
            assert ended, f"no end of run among {[e.kind for e in self.items]}"
            items, self.items = self.items, []
        return items


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = Engine(Store(tmp_path / "store"), LocalExecutor(2))
    yield engine
    engine.close()


@pytest.fixture
def events(engine: Engine) -> Iterator[Events]:
    collected = Events()
    unsubscribe = engine.subscribe(collected)
    yield collected
    unsubscribe()


def controller_for(path: Path, engine: Engine) -> tuple[FlowController, Host]:
    host = Host()
    controller = FlowController(path, engine, engine.store, host, watch=False)
    controller.start()
    host.settle()
    return controller, host


def run(controller: FlowController, host: Host, events: Events, command: Callable[[], Any]) -> list[Change]:
    """Do `command`, feed the run's events to the controller as the screen would, settle; return
    the changes it asked for."""
    command()
    host.settle()
    controller.apply(events.wait_run())
    host.settle()
    changes, host.changes = host.changes, []
    return changes


def test_a_run_is_viewed_from_its_start_and_its_history_read_at_its_end(tmp_path, engine, events):
    controller, host = controller_for(write_flow(tmp_path / "simple.py", SIMPLE), engine)
    assert controller.loaded is not None and controller.history_loaded and controller.history == []
    assert host.changes[0] == Change(graph=True, view=True)  # the first paint: the graph, no run
    assert controller.headline == "idle"
    host.changes.clear()

    changes = run(controller, host, events, controller.commands.run_flow)

    state = controller.viewed_state
    assert state is not None and controller.viewed == state.run_id
    assert {name: info.status for name, info in state.steps.items()} == dict.fromkeys(
        ("load", "train", "report"), "succeeded"
    )
    assert state.log("load").lines == ["loading 5 rows"]
    assert any(c.view and c.headline for c in changes), changes  # started and ended: repaint, tell the list
    # The history, then the plan (which may change what the title says of a save since the run).
    assert changes[-2:] == [Change(history=True, headline=True), Change(details=True, title=True)]
    assert [(r.id, r.trigger, r.status) for r in controller.history] == [(state.run_id, "tui", "succeeded")]
    assert controller.headline == "succeeded" and not controller.active


def test_the_first_plan_is_made_once_the_graph_is_on_screen(tmp_path, engine):
    """Planning (fingerprints, cache look-ups) does not compete with a large flow's first paint."""
    host = Host()
    controller = FlowController(
        write_flow(tmp_path / "simple.py", SIMPLE), engine, engine.store, host, watch=False
    )
    controller.start()
    host.settle(paint=False)
    assert controller.loaded is not None and Change(graph=True, view=True) in host.changes
    assert controller.plan is None and not controller.plan_current
    host.settle()
    assert controller.plan is not None and controller.plan_current
    assert {s.step for s in controller.plan.steps} == {"load", "train", "report"}


def test_fingerprinting_and_watching_wait_for_the_first_paint_and_fingerprint_once(
    tmp_path, engine, monkeypatch
):
    """The session's reload baseline, the plan and the watcher each need every step's static
    fingerprint (0.55 s for 10,000 steps): none of it is computed before the graph is on screen,
    and it is computed once for the three."""
    computed: list[str] = []
    real = scheduler_module.static_prints

    def counting(loaded):  # type: ignore[no-untyped-def]
        computed.append(loaded.load_id)
        return real(loaded)

    monkeypatch.setattr(scheduler_module, "static_prints", counting)
    monkeypatch.setattr(plan_module, "static_prints", counting)
    host = Host()
    controller = FlowController(
        write_flow(tmp_path / "simple.py", SIMPLE), engine, engine.store, host, watch=True
    )
    controller.start()
    host.settle(paint=False)
    session = controller.session
    assert (
        session is not None
        and controller.loaded is not None
        and Change(graph=True, view=True) in host.changes
    )
    assert computed == [] and not session.baseline_ready and not controller.watcher.running
    try:
        host.settle()
        assert session.baseline_ready and controller.plan is not None and controller.watcher.running
        deadline = time.monotonic() + 30
        while not controller.watcher.armed:  # the watch loop has read the fingerprints it watches by
            assert time.monotonic() < deadline, "the watcher never armed"
            time.sleep(0.01)
        assert computed == [controller.loaded.load_id]
    finally:
        controller.watcher.stop()


def test_parameters_change_through_the_session_and_reach_the_next_run(tmp_path, engine, events):
    controller, host = controller_for(write_flow(tmp_path / "simple.py", SIMPLE), engine)
    form = controller.commands.param_form()
    assert form is not None and set(form.specs) == {"rows", "lr"} and form.flow == "simple"

    changes = run(controller, host, events, lambda: controller.commands.set_params({"rows": "3"}, run=True))

    assert Change(details=True) in changes  # the details panel shows the new values
    assert controller.history[0].params == {"rows": 3, "lr": 0.5}
    assert controller.viewed_state is not None and controller.viewed_state.log("load").lines == [
        "loading 3 rows"
    ]
    assert controller.commands.param_form() == type(form)(form.specs, {"rows": "3"}, "simple")


def test_a_cached_step_shows_the_lines_of_the_run_that_computed_it_read_from_the_store(
    tmp_path, engine, events
):
    path = write_flow(tmp_path / "simple.py", SIMPLE)
    first, host = controller_for(path, engine)
    run(first, host, events, first.commands.run_flow)
    run(first, host, events, first.commands.run_flow)
    assert first.viewed_state is not None and first.viewed_state.steps["load"].status == "cached"

    again, host = controller_for(path, engine)  # a new TUI on the same store: nothing in memory
    assert again.viewed == 2 and again.viewed_state is not None and not again.viewed_state.live
    assert again.select("load", user=True)
    assert again.log_source()[1] == LOADING
    host.settle()
    shown = [c.log for c in host.changes if c.log is not None]
    assert len(shown) == 1
    buffer, placeholder = shown[0]
    assert buffer.lines == ["loading 5 rows"] and placeholder == "no output in run #1"
    assert again.viewed_state.log_sources == {"load": 1}


def test_a_look_for_other_runs_that_fails_leaves_the_next_look_free(tmp_path, engine, monkeypatch):
    """The pane's look at the store (every second) raises something unexpected: the look is over all
    the same (`failed`), so the next one reads the run another process recorded meanwhile."""
    from tui.controllers import reads

    path = write_flow(tmp_path / "simple.py", SIMPLE)
    controller, host = controller_for(path, engine)
    real = reads.read_runs_signature

    def fails(*args: Any) -> tuple[int, int, int] | None:
        raise RuntimeError("the store went away")

    monkeypatch.setattr(reads, "read_runs_signature", fails)
    controller.look_for_other_runs()
    host.settle()
    monkeypatch.setattr(reads, "read_runs_signature", real)
    other = engine.store.create_run(path.stem, str(path), {}, "cli", "local")
    deadline = time.monotonic() + 10
    while other not in [r.id for r in controller.history] and time.monotonic() < deadline:
        controller.look_for_other_runs()  # the pacer rests for 20 times the last look's duration
        host.settle()
    assert [r.id for r in controller.history] == [other]


def test_delete_is_checked_first_then_done_and_refused_while_nothing_is_there(tmp_path, engine, events):
    controller, host = controller_for(write_flow(tmp_path / "simple.py", SIMPLE), engine)
    assert controller.commands.deletable() is None
    assert host.notices[-1] == ("no run to delete", "warning")
    run(controller, host, events, controller.commands.run_flow)
    run_id = controller.commands.deletable()
    assert run_id == controller.viewed

    controller.commands.delete_run(run_id)
    host.settle()

    assert engine.store.get_run(run_id) is None
    assert controller.history == [] and controller.viewed is None and controller.follow_live
    assert host.notices[-1] == (f"deleted run #{run_id}", "information")


def test_the_router_sends_each_run_to_its_flow_and_drops_runs_it_never_saw_start(tmp_path):
    router = EventRouter()
    a, b = str(tmp_path / "a.py"), str(tmp_path / "b.py")
    started_a = RunStarted(1, "a", a, {}, ("x",), "tui", 1.0)
    started_b = RunStarted(2, "b", b, {}, ("y",), "tui", 1.0)
    logs = StepLogs(1, "x", [StepLog(1, "x", "stdout", "hi", 2.0)])
    stranger = RunFinished(7, "succeeded", 1.0, {}, 3.0)
    ended_b = RunFinished(2, "succeeded", 1.0, {}, 3.0)

    batches = router.route([started_a, started_b, logs, stranger, ended_b])

    assert batches == {flow_key(a): [started_a, logs], flow_key(b): [started_b, ended_b]}
