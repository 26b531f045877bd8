"""Hot reload with the real watcher: real file writes (as editors make them), real worker processes,
a real store. Each step appends a line to a side-effect log when it truly executes, so every test
proves exactly which steps ran. Waits are on engine events (never fixed sleeps) and bounded.

Many tests end with a *barrier*: a save of `barrier.py`, a local module the flow imports but no step
uses. Events of one directory are delivered in order, so once its reload is seen every earlier save
has been handled: "nothing else happened" becomes a deterministic assertion.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dsl import flowcode
from runner.events import FlowReloaded, LoadFailed, RunFinished, RunStarted, StepFinished
from runner.fingerprint import source as source_index
from runner.session import FlowSession
from tests.helpers_core import calls_to, flowcode_compiles, importers, wait_for
from tests.helpers_watch import (
    SAVES,
    TIMEOUT,
    EventLog,
    Executions,
    pid_gone,
    save_by_rename,
    save_in_place,
    wait_for_file,
    watching,
)

FLOW = """
from dsl import step

import barrier  # a local module no step uses (the tests' barrier)

LOG = {log!r}


def note(what):
    with open(LOG, "a", encoding="utf-8") as handle:
        handle.write(what + "\\n")


@step
def a():
    note("a v1")
    return 1


@step
def b(a):
    note("b v1")
    return a + 1


@step
def c():
    note("c v1")
    return 10
"""


@dataclass
class Project:
    """A flow file being watched, with the engine's events and the side-effect log."""

    path: Path
    session: FlowSession
    events: EventLog
    executions: Executions
    store: Any
    text: str
    barriers: int = 0
    extra: dict[str, Path] = field(default_factory=dict)

    @property
    def dir(self) -> Path:
        return self.path.parent

    def save(self, text: str, how: str = "in_place") -> int:
        """Save the flow file the way an editor would; return the event mark taken just before."""
        mark = self.events.mark()
        SAVES[how](self.path, text)
        self.text = text
        return mark

    def edit(self, old: str, new: str, how: str = "in_place") -> int:
        assert old in self.text, f"{old!r} is not in the flow file"
        return self.save(self.text.replace(old, new), how)

    def barrier(self) -> int:
        """Save barrier.py and wait until that save's reload is seen; return the mark after it.

        On a busy machine the reload of an earlier save can come after this one and read it: the
        watcher then skips barrier.py's change as loaded already (no needless reload), so a reload
        since the mark that loaded this barrier's text counts as its own."""
        self.barriers += 1
        mark = self.events.mark()
        text = f"N = {self.barriers}\n"
        path = self.dir / "barrier.py"
        save_in_place(path, text)

        def loaded_it(event: FlowReloaded) -> bool:
            loaded = self.session.loaded
            return "barrier.py" in event.changed_file or (
                loaded is not None and loaded.sources.get(str(path.resolve())) == text
            )

        self.events.wait_for(FlowReloaded, mark, loaded_it, "the reload of barrier.py (the barrier)")
        return self.events.mark()

    def watch_run(self, mark: int) -> tuple[RunStarted, RunFinished]:
        return self.events.wait_run(mark, "watch:")

    def statuses(self, run_id: int) -> dict[str, str]:
        record = self.store.get_run(run_id)
        assert record is not None
        return {s.name: s.status for s in record.steps}


@pytest.fixture
def project(
    tmp_path: Path, write_flow: Callable[..., Path], harness: Any
) -> Iterator[Callable[..., Project]]:
    """Start a watched flow: write it, load it, run it once (waited), then arm the watcher."""
    with ExitStack() as stack:

        def start(
            text: str = FLOW,
            *,
            files: dict[str, str] | None = None,
            initial_run: bool = True,
            overrides: dict[str, Any] | None = None,
            **fmt: Any,
        ) -> Project:
            log = tmp_path / "executions.log"
            write_flow("N = 0\n", name="barrier.py")
            extra = {name: write_flow(body, name=name) for name, body in (files or {}).items()}
            source = textwrap.dedent(text).format(log=str(log), **fmt)
            path = write_flow(source)
            events = EventLog()
            harness.engine.subscribe(events)
            session = FlowSession(path, harness.engine, overrides)
            session.load()
            proj = Project(
                path, session, events, Executions(log), harness.store, path.read_text(), extra=extra
            )
            if initial_run:
                mark = events.mark()
                session.run(trigger="first")
                _, finished = events.wait_run(mark, "first")
                assert finished.status == "succeeded", proj.statuses(finished.run_id)
            stack.enter_context(watching(session))
            return proj

        yield start


def test_in_place_save_reruns_the_changed_step_and_its_descendants_only(
    project: Callable[..., Project],
) -> None:
    proj = project()
    assert sorted(proj.executions.lines()) == ["a v1", "b v1", "c v1"]  # a and c run in parallel
    done = proj.executions.mark()

    # a's code and output change: a and its descendant b execute, c comes from the cache.
    mark = proj.edit('note("a v1")\n    return 1', 'note("a v2")\n    return 2')
    reloaded = proj.events.wait_reload(mark)
    assert isinstance(reloaded, FlowReloaded), reloaded
    assert (reloaded.changed_file, reloaded.changed, reloaded.added, reloaded.removed) == (
        "flow_file.py",
        ("a",),
        (),
        (),
    )
    assert (reloaded.rerun, reloaded.cached) == (("a", "b"), 1)  # the plan the reload line prints
    started, finished = proj.watch_run(mark)
    assert started.trigger == "watch: flow_file.py changed"
    assert finished.status == "succeeded"
    assert proj.statuses(started.run_id) == {"a": "succeeded", "b": "succeeded", "c": "cached"}
    assert proj.executions.since(done) == ["a v2", "b v1"]

    # The run is in the history like any other, with what triggered it.
    record = proj.store.get_run(started.run_id)
    assert record.trigger == "watch: flow_file.py changed" and record.status == "succeeded"
    assert "code" in {s.name: s.reason for s in record.steps}["a"]

    # Exactly one reload and one run for that save.
    proj.barrier()
    assert len([e for e in proj.events.since(mark, FlowReloaded) if "barrier" not in e.changed_file]) == 1
    assert len(proj.events.since(mark, RunStarted)) == 1


def test_early_cutoff_a_changed_step_with_the_same_output_does_not_rerun_descendants(
    project: Callable[..., Project],
) -> None:
    proj = project()
    done = proj.executions.mark()
    mark = proj.edit('note("a v1")', 'note("a v2")')
    started, finished = proj.watch_run(mark)
    assert finished.status == "succeeded"
    assert proj.statuses(started.run_id) == {"a": "succeeded", "b": "cached", "c": "cached"}
    assert proj.executions.since(done) == ["a v2"]


@pytest.mark.parametrize("how", ["rename", "jetbrains"])
def test_atomic_save_by_rename_is_one_reload(project: Callable[..., Project], how: str) -> None:
    proj = project()
    done = proj.executions.mark()
    for version in (2, 3):  # twice: the watch survives the first replacement of the file's inode
        mark = proj.edit(f'note("c v{version - 1}")', f'note("c v{version}")', how=how)
        reloaded = proj.events.wait_reload(mark)
        assert isinstance(reloaded, FlowReloaded), reloaded
        assert reloaded.changed == ("c",) and reloaded.changed_file == "flow_file.py"
        started, finished = proj.watch_run(mark)
        assert finished.status == "succeeded"
        assert proj.statuses(started.run_id) == {"a": "cached", "b": "cached", "c": "succeeded"}
        proj.barrier()
        assert not [e for e in proj.events.since(mark, LoadFailed)], "a save by rename is not a deletion"
        assert len([e for e in proj.events.since(mark, FlowReloaded) if "barrier" not in e.changed_file]) == 1
        assert len(proj.events.since(mark, RunStarted)) == 1
    assert proj.executions.since(done) == ["c v2", "c v3"]
    leftovers = sorted(p.name for p in proj.dir.iterdir() if "tmp" in p.name or "jb_" in p.name)
    assert leftovers == []


def _write_in_chunks(path: Path, text: str, cuts: list[str], pause_s: float) -> None:
    """One save written as several writes (an editor flushing its buffer in pieces): truncate, then
    each chunk flushed to disk, `pause_s` apart (a slow disk); every piece ends after one of `cuts`."""
    points = [text.index(cut) + len(cut) for cut in cuts]
    with open(path, "w", encoding="utf-8") as handle:
        for begin, end in zip([0, *points], [*points, len(text)], strict=True):
            handle.write(text[begin:end])
            handle.flush()
            os.fsync(handle.fileno())
            if end < len(text) and pause_s:
                time.sleep(pause_s)  # the writer's pace, not a wait for the result


@pytest.mark.parametrize("pause_s", [0.0, 0.03], ids=["tight", "slow_writer"])
def test_one_save_written_in_a_burst_of_writes_is_one_reload(
    project: Callable[..., Project], pause_s: float
) -> None:
    proj = project()
    done = proj.executions.mark()
    final = proj.text.replace('note("c v1")', 'note("c v2")')
    cuts = ["from d", "def no", 'note("a', "@step\ndef b(", 'note("c v']
    for cut in cuts:  # every partial file is broken: only the final content can load
        prefix = final[: final.index(cut) + len(cut)]
        with pytest.raises(SyntaxError):
            compile(prefix, "partial", "exec")

    mark = proj.events.mark()
    _write_in_chunks(proj.path, final, cuts, pause_s)
    started, finished = proj.watch_run(mark)
    assert finished.status == "succeeded"
    proj.barrier()
    reloads = proj.events.since(mark, (FlowReloaded, LoadFailed))
    assert [type(e).__name__ for e in reloads] == ["FlowReloaded", "FlowReloaded"], [
        getattr(e, "error", e) for e in reloads
    ]  # the save (no error for a half-written file), then the barrier
    assert reloads[0].changed == ("c",) and "barrier" in reloads[1].changed_file
    assert len(proj.events.since(mark, RunStarted)) == 1
    assert proj.executions.since(done) == ["c v2"]


def test_rapid_saves_the_last_one_wins(project: Callable[..., Project]) -> None:
    proj = project()
    done = proj.executions.mark()
    mark = proj.events.mark()
    for version in range(2, 7):  # five saves in quick succession, each a different valid version
        save_in_place(proj.path, proj.text.replace('note("c v1")', f'note("c v{version}")'))
    proj.text = proj.text.replace('note("c v1")', 'note("c v6")')
    proj.events.wait_for(
        RunFinished,
        mark,
        lambda e: e.status == "succeeded" and proj.executions.since(done)[-1:] == ["c v6"],
        "a run to finish with the last version",
    )
    proj.barrier()
    # The run that executed v6 is the last run, not the first to match above: by the time the test
    # looks, a run that executed v5 may have finished just before it (both are in the events).
    runs = proj.events.since(mark, RunFinished)
    final = runs[-1]
    # A save superseded the run before it, unless that run had already finished (a slow machine).
    assert final.status == "succeeded" and all(r.status in ("cancelled", "succeeded") for r in runs), runs
    assert proj.statuses(final.run_id) == {"a": "cached", "b": "cached", "c": "succeeded"}
    assert not proj.events.since(mark, LoadFailed), "a truncated file mid-save is not reported"
    executed = proj.executions.since(done)
    assert executed[-1] == "c v6" and set(executed) <= {f"c v{v}" for v in range(2, 7)}, executed
    assert executed.count("c v6") == 1, executed  # so the last run, which executed c, executed v6
    assert (
        1 <= len([e for e in proj.events.since(mark, FlowReloaded) if "barrier" not in e.changed_file]) <= 5
    )


def test_deleted_then_recreated_file(project: Callable[..., Project]) -> None:
    proj = project()
    done = proj.executions.mark()
    text = proj.text

    mark = proj.events.mark()
    proj.path.unlink()
    failed = proj.events.wait_reload(mark, "the deletion to be reported")
    assert isinstance(failed, LoadFailed) and "deleted" in failed.error and "flow_file.py" in failed.error
    assert proj.session.loaded is not None and set(proj.session.loaded.graph.nodes) == {"a", "b", "c"}

    # Re-created unchanged: it loads again, nothing changed, nothing runs.
    mark = proj.save(text)
    reloaded = proj.events.wait_reload(mark, "the reload of the re-created file")
    assert isinstance(reloaded, FlowReloaded) and reloaded.changed == ()
    proj.barrier()
    assert proj.events.since(mark, RunStarted) == []

    # Deleted and re-created with c changed: only c runs.
    mark = proj.events.mark()
    proj.path.unlink()
    proj.events.wait_reload(mark, "the second deletion")
    mark = proj.edit('note("c v1")', 'note("c v2")')
    started, finished = proj.watch_run(mark)
    assert finished.status == "succeeded"
    assert proj.statuses(started.run_id) == {"a": "cached", "b": "cached", "c": "succeeded"}
    assert proj.executions.since(done) == ["c v2"]


def test_saving_an_unrelated_file_in_the_directory_is_ignored(project: Callable[..., Project]) -> None:
    proj = project()
    mark = proj.events.mark()
    (proj.dir / "notes.txt").write_text("todo\n")
    (proj.dir / "other_flow.py").write_text("x = 1\n")  # Python, but not imported by the flow
    (proj.dir / "other_flow.py").write_text("x = 2\n")
    (proj.dir / "data.csv").write_text("a,b\n1,2\n")
    os.replace(proj.dir / "data.csv", proj.dir / "data2.csv")
    proj.barrier()
    reloads = proj.events.since(mark, (FlowReloaded, LoadFailed))
    assert [getattr(e, "changed_file", e) for e in reloads] == ["barrier.py"]
    assert proj.events.since(mark, RunStarted) == []


def test_a_save_that_changes_nothing_the_flow_uses_executes_nothing(project: Callable[..., Project]) -> None:
    proj = project()
    done = proj.executions.mark()
    # A comment in a step, a comment at module level, reformatting, a docstring.
    text = proj.text.replace('note("c v1")', 'note( "c v1" )  # tweak later').replace(
        "def c():\n", 'def c():\n    """The constant."""\n'
    )
    mark = proj.save("# a header comment\n" + text)
    reloaded = proj.events.wait_reload(mark)
    assert isinstance(reloaded, FlowReloaded) and reloaded.changed == ()
    proj.barrier()
    for started in proj.events.since(mark, RunStarted):  # no run, or a run that executes nothing
        finished = proj.events.wait_for(RunFinished, mark, lambda e, i=started.run_id: e.run_id == i)
        assert set(proj.statuses(finished.run_id).values()) == {"cached"}
    assert proj.executions.since(done) == []


HELPER = """
def scale(x):
    return x * 2


def unused():
    return "not used by any step"
"""

FLOW_WITH_HELPER = FLOW.replace("import barrier", "import barrier\nimport helpers").replace(
    "return a + 1", "return helpers.scale(a)"
)


def test_editing_a_local_helper_module_reruns_the_steps_that_use_it(project: Callable[..., Project]) -> None:
    proj = project(FLOW_WITH_HELPER, files={"helpers.py": HELPER})
    helper = proj.extra["helpers.py"]
    assert helper.resolve() in proj.session.watched_files()
    done = proj.executions.mark()

    # Saved by rename: a save in place can be seen half done on a busy machine (the module empty, `b`
    # changed), and what each reload reports is what this test checks (in-place saves: `SAVES`).
    mark = proj.events.mark()
    save_by_rename(helper, HELPER.replace("x * 2", "x * 3"))
    reloaded = proj.events.wait_reload(mark)
    assert isinstance(reloaded, FlowReloaded), reloaded
    assert reloaded.changed_file == "helpers.py" and reloaded.changed == ("b",)
    started, finished = proj.watch_run(mark)
    assert started.trigger == "watch: helpers.py changed"
    assert finished.status == "succeeded"
    assert proj.statuses(started.run_id) == {"a": "cached", "b": "succeeded", "c": "cached"}
    assert proj.executions.since(done) == ["b v1"]
    assert "helper" in {s.name: s.reason for s in proj.store.get_run(started.run_id).steps}["b"]

    # A helper no step uses: reloaded, nothing changed, nothing runs.
    mark = proj.events.mark()
    save_by_rename(helper, HELPER.replace("x * 2", "x * 3").replace("not used", "still not used"))
    reloaded = proj.events.wait_reload(mark)
    assert isinstance(reloaded, FlowReloaded) and reloaded.changed == ()
    proj.barrier()
    assert proj.events.since(mark, RunStarted) == []
    assert proj.executions.since(done) == ["b v1"]


BROKEN_SAVES = {
    # name: (how to break the flow text, what the message says, (file, line) it must name)
    "syntax_error": (lambda t: t.replace("def c():", "def c(:"), "syntax error", ("flow_file.py", "def c(:")),
    "import_error": (
        lambda t: t.replace("import barrier", "import barrier\nimport no_such_module_for_flow_tests"),
        "ModuleNotFoundError",
        ("flow_file.py", "import no_such_module_for_flow_tests"),
    ),
    "exception_while_loading": (
        lambda t: t + "\nSETTINGS = {}\nLR = SETTINGS['lr']\n",
        "KeyError",
        ("flow_file.py", "LR = SETTINGS"),
    ),
    "cycle": (lambda t: t + "\nb >> a\n", "cycle", ("flow_file.py", "b >> a")),
    "parameter_naming_no_step": (
        lambda t: t + "\n\n@step\ndef d(no_such_step):\n    return 1\n",
        "no_such_step",
        ("flow_file.py", "def d(no_such_step)"),
    ),
}


@pytest.mark.parametrize("broken", list(BROKEN_SAVES))
def test_a_broken_save_keeps_the_last_good_graph_and_the_next_good_save_carries_on(
    project: Callable[..., Project], broken: str
) -> None:
    proj = project()
    done = proj.executions.mark()
    good = proj.session.loaded
    break_it, message, (file, line_text) = BROKEN_SAVES[broken]
    text = proj.text

    broken_text = break_it(text.replace('note("c v1")', 'note("c v2")'))
    mark = proj.save(broken_text)
    failed = proj.events.wait_reload(mark, f"the {broken} to be reported")
    assert isinstance(failed, LoadFailed), failed
    lines = broken_text.splitlines()
    line = 1 + lines.index(next(ln for ln in lines if line_text in ln))
    accepted = {line, line - 1} if lines[line - 2].startswith("@") else {line}  # a def or its decorator
    assert message in failed.error
    found = re.search(rf"{file}:(\d+):", failed.error)
    assert found and int(found[1]) in accepted, f"expected {file}:{line} in {failed.error!r}"
    assert "\n" not in failed.error.strip(), "one clear line"
    assert proj.session.loaded is good and proj.session.error is not None
    assert set(proj.session.watched_files()) >= {proj.path.resolve()}

    # Nothing runs while broken; the barrier (a watched module) fails to load too and runs nothing.
    mark2 = proj.events.mark()
    save_in_place(proj.dir / "barrier.py", "N = 99\n")
    proj.events.wait_reload(mark2, "the reload of barrier.py while broken")
    assert proj.events.since(mark, RunStarted) == []

    # The next good save carries on from the last good graph: only c (changed) runs.
    mark = proj.save(text.replace('note("c v1")', 'note("c v2")'))
    reloaded = proj.events.wait_reload(mark, "the good save's reload")
    assert isinstance(reloaded, FlowReloaded), reloaded
    assert reloaded.changed == ("c",)
    started, finished = proj.watch_run(mark)
    assert finished.status == "succeeded"
    assert proj.statuses(started.run_id) == {"a": "cached", "b": "cached", "c": "succeeded"}
    assert proj.executions.since(done) == ["c v2"]
    assert proj.session.error is None


def test_a_bad_parameter_value_is_a_load_failure(project: Callable[..., Project]) -> None:
    text = FLOW.replace("def c():", "def c(rows: int = 3):").replace("return 10", "return rows")
    proj = project(text, overrides={"rows": "5"})
    mark = proj.edit("def c(rows: int = 3):", "def c(rows: dict = {}):")
    failed = proj.events.wait_reload(mark)
    assert isinstance(failed, LoadFailed), failed
    assert "parameter 'rows'" in failed.error and "not a valid dict" in failed.error
    line = 1 + proj.text.splitlines().index("def c(rows: dict = {}):")
    assert re.search(rf"flow_file\.py:({line}|{line - 1}): step 'c'", failed.error), failed.error
    assert proj.session.loaded is not None and proj.session.error is not None
    mark2 = proj.events.mark()
    save_in_place(proj.dir / "barrier.py", "N = 99\n")
    proj.events.wait_reload(mark2, "the reload of barrier.py while broken")
    assert proj.events.since(mark, RunStarted) == []

    mark = proj.edit("def c(rows: dict = {}):", "def c(rows: int = 4):")
    started, finished = proj.watch_run(mark)
    assert finished.status == "succeeded"
    assert started.params == {"rows": 5}


FLOW_ADDED = FLOW.replace("import barrier", "import barrier\nimport extra").replace(
    """@step
def c():
    note("c v1")
    return 10
""",
    """@step
def d(b):
    note("d v1")
    return extra.shift(b)
""",
)


def test_steps_added_and_removed_in_a_save_update_the_graph(project: Callable[..., Project]) -> None:
    proj = project()
    done = proj.executions.mark()
    extra = proj.dir / "extra.py"
    extra.write_text("def shift(x):\n    return x + 100\n")  # not imported yet: ignored

    mark = proj.save(FLOW_ADDED.format(log=str(proj.executions.path)))
    reloaded = proj.events.wait_reload(mark)
    assert isinstance(reloaded, FlowReloaded), reloaded
    assert (reloaded.changed, reloaded.added, reloaded.removed) == ((), ("d",), ("c",))
    started, finished = proj.watch_run(mark)
    assert finished.status == "succeeded"
    assert set(proj.session.loaded.graph.nodes) == {"a", "b", "d"}
    assert started.steps == ("a", "b", "d")
    assert proj.statuses(started.run_id) == {"a": "cached", "b": "cached", "d": "succeeded"}
    assert proj.executions.since(done) == ["d v1"]

    # The module the new code imports is now watched: editing it re-runs d.
    assert extra.resolve() in proj.session.watched_files()
    mark = proj.events.mark()
    save_in_place(extra, "def shift(x):\n    return x + 200\n")
    started, finished = proj.watch_run(mark)
    assert started.trigger == "watch: extra.py changed"
    assert proj.statuses(started.run_id) == {"a": "cached", "b": "cached", "d": "succeeded"}
    assert proj.executions.since(done) == ["d v1", "d v1"]


INFLIGHT = '''
import os
import time
import uuid

from dsl import step

import barrier  # a local module no step uses (the tests' barrier)

LOG = {log!r}
GATE = {gate!r}
STARTED = {started!r}


def note(what):
    with open(LOG, "a", encoding="utf-8") as handle:
        handle.write(what + "\\n")


def hold(name):
    """Say the step is executing (with its pid), then wait until the test opens the gate."""
    with open(os.path.join(STARTED, name + ".tmp"), "w") as handle:
        handle.write(str(os.getpid()))
    os.replace(os.path.join(STARTED, name + ".tmp"), os.path.join(STARTED, name))
    deadline = time.monotonic() + 60
    while not os.path.exists(GATE):
        if time.monotonic() > deadline:
            raise TimeoutError("the test never opened the gate")
        time.sleep(0.01)


@step
def a():
    note("a v1")
    return 1


@step
def b(a):
    note("b v1 start")
    hold("b")
    note("b v1 end")
    return a + 1


@step
def c():
    note("c v1 start")
    hold("c")
    note("c v1 end")
    return 10
'''


def test_a_save_during_a_run_supersedes_only_the_changed_steps(
    project: Callable[..., Project], tmp_path: Path
) -> None:
    gate, started_dir = tmp_path / "gate", tmp_path / "started"
    started_dir.mkdir()
    proj = project(INFLIGHT, initial_run=False, gate=str(gate), started=str(started_dir))
    mark0 = proj.events.mark()
    first = proj.session.run(trigger="first")
    b_pid = int(wait_for_file(started_dir / "b", "b to start executing"))
    c_pid = int(wait_for_file(started_dir / "c", "c to start executing"))

    # A save that changes nothing the flow uses: no new run, nothing killed.
    mark = proj.edit("def hold(name):\n", "def hold(name):  # the gate\n")
    proj.barrier()
    assert proj.events.since(mark, RunStarted) == [] and not first.done
    assert not pid_gone(b_pid) and not pid_gone(c_pid)

    # Edit only c while b and c are executing: c v2 does not wait at the gate.
    mark = proj.edit('note("c v1 start")\n    hold("c")\n    note("c v1 end")', 'note("c v2")')
    reloaded = proj.events.wait_reload(mark)
    assert isinstance(reloaded, FlowReloaded) and reloaded.changed == ("c",), reloaded
    new = proj.events.wait_for(RunStarted, mark, lambda e: e.trigger.startswith("watch:"), "the new run")
    old_end = proj.events.wait_for(RunFinished, mark0, lambda e: e.run_id == first.id, "the old run to end")
    assert old_end.status == "cancelled"
    # The new run's c (new code) runs to the end while b (still valid) is held at the gate.
    proj.events.wait_for(
        StepFinished, mark, lambda e: e.run_id == new.run_id and e.step == "c", "the new run's c"
    )
    assert proj.events.since(mark, StepFinished)
    new_c = [e for e in proj.events.since(mark, StepFinished) if e.run_id == new.run_id and e.step == "c"]
    assert new_c[0].status == "succeeded", new_c
    deadline = time.monotonic() + TIMEOUT
    while not pid_gone(c_pid):  # bounded: the old c's worker is killed
        assert time.monotonic() < deadline, f"the old c's process {c_pid} was not killed"
        time.sleep(0.01)
    assert not pid_gone(b_pid), "b is still valid: its process must keep running"
    assert "b v1 end" not in proj.executions.lines()

    gate.write_text("open")
    end = proj.events.wait_for(RunFinished, mark, lambda e: e.run_id == new.run_id, "the new run to end")
    assert end.status == "succeeded", proj.statuses(new.run_id)
    assert proj.statuses(new.run_id) == {"a": "cached", "b": "succeeded", "c": "succeeded"}
    old = proj.statuses(first.id)
    assert old == {"a": "succeeded", "b": "cancelled", "c": "cancelled"}, old
    assert "superseded" in {s.name: s.reason for s in proj.store.get_run(first.id).steps}["c"]
    assert proj.store.get_run(first.id).status == "cancelled"

    log = proj.executions.lines()
    assert log.count("b v1 start") == 1 and log.count("b v1 end") == 1, log  # never started twice
    assert log.count("c v1 start") == 1 and "c v1 end" not in log, log  # killed, not finished
    assert log.count("c v2") == 1 and log.count("a v1") == 1, log
    assert proj.session.current is not None and proj.session.current.id == new.run_id


# ----- the CLI ---------------------------------------------------------------------------------------


class Lines:
    """A pipe read line by line in a thread; wait (bounded) for a line matching a pattern."""

    def __init__(self, stream: Any) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: Any) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def drain(self) -> None:
        """Take what is left once the process has exited (bounded)."""
        while True:
            try:
                line = self._queue.get(timeout=TIMEOUT)
            except queue.Empty:
                return
            if line is None:
                return
            self.seen.append(line)

    def wait(self, pattern: str, what: str, timeout: float = TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self._queue.get(timeout=max(0.0, remaining))
            except queue.Empty:
                line = ""
                if remaining <= 0:
                    pytest.fail(f"timed out waiting for {what}; output so far:\n" + "\n".join(self.seen))
                continue
            if line is None:
                pytest.fail(f"the output ended before {what}; output:\n" + "\n".join(self.seen))
            self.seen.append(line)
            if re.search(pattern, line):
                return line


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


@dataclass
class Cli:
    proc: subprocess.Popen[str]
    out: Lines
    err: Lines

    @property
    def output(self) -> str:
        return "\n".join(["-- stdout:", *self.out.seen, "-- stderr:", *self.err.seen])


@contextmanager
def cli_watch(path: Path, tmp_path: Path, store_dir: Path, *args: str) -> Iterator[Cli]:
    """`flow run PATH --watch [args]` as a subprocess; on exit: Ctrl-C, a clean exit (code 0), no orphan
    worker."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", "run", str(path), "--watch", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "FLOW_STORE": str(store_dir), "COLUMNS": "120"},
    )
    cli = Cli(proc, Lines(proc.stdout), Lines(proc.stderr))
    workers: set[int] = set()
    try:
        yield cli
        workers = _children(proc.pid)
        assert workers, "the local executor's warm workers"
        proc.send_signal(signal.SIGINT)
        code = proc.wait(TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    cli.out.drain()
    cli.err.drain()
    assert code == 0, cli.output
    assert not any("Traceback" in line for line in cli.err.seen), cli.output
    deadline = time.monotonic() + TIMEOUT
    while alive := [p for p in workers if not pid_gone(p)]:
        assert time.monotonic() < deadline, f"orphan worker processes after exit: {alive}"
        time.sleep(0.01)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc to find the worker processes")
def test_cli_run_watch_reloads_reruns_and_exits_on_ctrl_c(
    write_flow: Callable[..., Path], tmp_path: Path, store_dir: Path
) -> None:
    log = tmp_path / "executions.log"
    write_flow("N = 0\n", name="barrier.py")
    text = textwrap.dedent(FLOW).format(log=str(log))
    path = write_flow(text)
    with cli_watch(path, tmp_path, store_dir) as cli:
        cli.out.wait(r"^run #1 succeeded", "the first run's summary")
        cli.err.wait(r"^watching .*flow_file\.py", "the 'watching' line")
        # Saved at once: even if the watcher is not armed yet, the save is not lost.
        save_in_place(path, text.replace('note("c v1")', 'note("c v2")'))
        reload_line = cli.out.wait(r"saved", "the reload line")
        assert reload_line == "↻ flow_file.py saved; changed: c; may re-run: c; 2 cached", reload_line
        cli.out.wait(r"^run #2 .*\[watch: flow_file\.py changed\]", "the new run's header")
        summary = cli.out.wait(r"^run #2 (succeeded|failed|cancelled)", "the new run's summary")
        assert summary.startswith("run #2 succeeded") and "1 succeeded" in summary and "2 cached" in summary
        assert summary.endswith("(ran: c)"), summary  # the reload line said what may re-run; this, what did
        executed = log.read_text().splitlines()
        assert sorted(executed[:3]) == ["a v1", "b v1", "c v1"] and executed[3:] == ["c v2"], executed

        # A broken save: one line naming file and line; the next good save carries on.
        broken = text.replace('note("c v1")', 'note("c v3"')
        save_in_place(path, broken)
        error = cli.out.wait(r"^✗", "the load error line")
        line = 1 + broken.splitlines().index('    note("c v3"')
        assert re.search(rf"flow_file\.py:{line}: syntax error", error) and "last good graph" in error, error
        save_in_place(path, text.replace('note("c v1")', 'note("c v3")'))
        reload_line = cli.out.wait(r"saved", "the reload line")
        assert reload_line == "↻ flow_file.py saved; changed: c; may re-run: c; 2 cached", reload_line
        summary = cli.out.wait(r"^run #3 (succeeded|failed|cancelled)", "run #3's summary")
        assert summary.startswith("run #3 succeeded"), cli.output
    assert not [ln for ln in cli.out.seen if ln.startswith("run #4")], cli.output


CLI_GATED = FLOW.replace(
    'note("c v1")\n',
    'note("c v1")\n    while not os.path.exists({gate!r}):\n        time.sleep(0.01)\n',
).replace("from dsl import step", "import os\nimport time\n\nfrom dsl import step")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc to find the worker processes")
def test_cli_a_save_during_the_first_run_supersedes_it(
    write_flow: Callable[..., Path], tmp_path: Path, store_dir: Path
) -> None:
    log, gate = tmp_path / "executions.log", tmp_path / "gate"
    write_flow("N = 0\n", name="barrier.py")
    text = textwrap.dedent(CLI_GATED).format(log=str(log), gate=str(gate))
    path = write_flow(text)
    try:
        with cli_watch(path, tmp_path, store_dir) as cli:
            cli.out.wait(r"c started", "c to start in the first run")
            ungated = textwrap.dedent(FLOW).format(log=str(log)).replace('note("c v1")', 'note("c v2")')
            save_in_place(path, ungated)
            # c v1 waits at the gate for ever (c v2 does not): only a superseding run can get past it.
            cli.out.wait(r"saved", "the reload line while the first run is in flight", timeout=5)
            cli.out.wait(r"^run #1 cancelled", "the first run to be superseded")
            summary = cli.out.wait(r"^run #2 (succeeded|failed|cancelled)", "the new run's summary")
            assert summary.startswith("run #2 succeeded"), cli.output
    finally:
        gate.write_text("open")


SPARE_FLOW = """
import os
import time
import uuid

from dsl import step

LOG = {log!r}


@step
def c():
    with open(LOG, "a", encoding="utf-8") as handle:
        handle.write(f"{{VERSION}} {{os.getpid()}}\\n")
    while not os.path.exists({gate!r} + str(VERSION)):
        time.sleep(0.01)
    return VERSION


VERSION = 1
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc to find the worker processes")
def test_cli_watch_keeps_a_spare_worker_for_the_run_after_a_save_kills_one(
    write_flow: Callable[..., Path], tmp_path: Path, store_dir: Path
) -> None:
    """While `c` runs, a second worker waits idle beside it; the save that changes `c` kills `c`'s worker,
    and the re-run's `c` runs in the spare at once (an ML flow's new worker imports its libraries first,
    seconds). Then a new spare starts (with `--workers 2`, only once the killed worker is gone), and the
    next save's `c` runs in it. Before, the only worker was killed and the re-run waited for a new one."""
    log, gate = tmp_path / "pids.log", tmp_path / "gate"
    text = textwrap.dedent(SPARE_FLOW).format(log=str(log), gate=str(gate))
    path = write_flow(text)

    def ran(count: int) -> list[str]:
        lines = log.read_text().splitlines() if log.exists() else []
        return lines if len(lines) == count else []

    try:
        with cli_watch(path, tmp_path, store_dir, "--workers", "2") as cli:

            def busy_and_spare() -> set[int] | None:
                found = _children(cli.proc.pid)
                return found if len(found) == 2 else None

            for version in (1, 2):
                busy = int(wait_for(lambda version=version: ran(version))[-1].split()[1])
                (spare,) = wait_for(busy_and_spare) - {busy}
                save_in_place(path, text.replace("VERSION = 1", f"VERSION = {version + 1}"))
                lines = wait_for(lambda version=version: ran(version + 1))
                assert lines[-1] == f"{version + 1} {spare}", lines
            (tmp_path / "gate3").write_text("open")
            summary = cli.out.wait(r"^run #3 (succeeded|failed|cancelled)", "the last run's summary")
            assert summary.startswith("run #3 succeeded"), cli.output
    finally:
        for version in (1, 2, 3):
            (tmp_path / f"gate{version}").write_text("open")


@pytest.mark.workers(2)
def test_the_spare_worker_comes_back_after_a_save_kills_the_running_step(
    project: Callable[..., Project], harness: Any, tmp_path: Path, importers_log: Path
) -> None:
    """With both workers' places taken (the step the save supersedes, and its new version in the spare),
    the spare is started again as soon as the superseded step's worker is killed, so the next save's
    step finds it (before: the pool stayed one short until the next step was submitted). Each save
    waits until the spare has imported the flow's library: it is ready, or a moment from it."""
    harness.engine.executor.keep_spare()
    gate = tmp_path / "gate"
    proj = project(
        SPARE_FLOW.replace("import os\n", "import os\n\nimport flowtest_importers\n"),
        initial_run=False,
        gate=str(gate),
    )

    def ran(count: int) -> list[str]:
        lines = proj.executions.lines()
        return lines if len(lines) == count else []

    try:
        proj.session.run(trigger="first")
        for version in (1, 2):
            busy = int(wait_for(lambda version=version: ran(version))[-1].split()[1])
            # The workers so far in the order they imported the library: the last one is the spare.
            spare = wait_for(lambda version=version: importers(importers_log)[version : version + 1])[0]
            assert spare != busy
            proj.edit(f"VERSION = {version}", f"VERSION = {version + 1}")
            lines = wait_for(lambda version=version: ran(version + 1))
            assert lines[-1] == f"{version + 1} {spare}", lines
    finally:
        for version in (1, 2, 3):
            (tmp_path / f"gate{version}").write_text("open")


@pytest.mark.workers(3)
def test_a_save_during_a_run_keeps_a_step_whose_upstream_reruns_with_the_same_output(
    project: Callable[..., Project], tmp_path: Path
) -> None:
    # Three workers: b and c hold two while parked/running, a's re-run needs the third (with no free
    # slot the engine preempts a parked execution, and b would rightly run twice).
    gate, started_dir = tmp_path / "gate", tmp_path / "started"
    started_dir.mkdir()
    proj = project(INFLIGHT, initial_run=False, gate=str(gate), started=str(started_dir))
    first = proj.session.run(trigger="first")
    wait_for_file(started_dir / "b", "b to start executing")
    wait_for_file(started_dir / "c", "c to start executing")
    try:
        # a's code changes but not its output: b's fingerprint is unchanged once a has re-run.
        mark = proj.edit('note("a v1")', 'note("a v2")')
        new = proj.events.wait_for(RunStarted, mark, lambda e: e.trigger.startswith("watch:"), "the new run")
        proj.events.wait_for(
            StepFinished, mark, lambda e: e.run_id == new.run_id and e.step == "a", "the new run's a"
        )
    finally:
        gate.write_text("open")
    end = proj.events.wait_for(RunFinished, mark, lambda e: e.run_id == new.run_id, "the new run to end")
    assert first.wait(TIMEOUT) == "cancelled" and end.status == "succeeded"
    log = proj.executions.lines()
    assert log.count("b v1 start") == 1, log  # b was valid all along: never started twice


def test_the_first_save_compiles_and_scans_only_the_part_it_changed(
    project: Callable[..., Project], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flow file was compiled whole at its load; while the watcher waits it is cut into the parts
    a reload compiles (`dsl.flowcode.warm`) and their functions scanned, so the first save compiles
    and scans one part, as every later save does (it used to compile the whole file in parts).

    `note` calls a function of a module imported at the file's top, which compiles differently in a
    part than in the whole file (see `dsl.flowcode`): its code in the parts is not the load's."""
    proj = project(
        FLOW.replace("import barrier", "import time\n\nimport barrier").replace(
            'handle.write(what + "\\n")', 'handle.write(what + "\\n" * bool(time.time()))'
        )
    )
    assert "time.time()" in proj.text
    wait_for_parts(proj.path)  # the watcher's first wait cuts the file
    compiled = flowcode_compiles(monkeypatch)
    scanned = calls_to(monkeypatch, source_index, "_walk_span", lambda code: code.co_name)
    done = proj.executions.mark()
    mark = proj.edit('note("b v1")', 'note("b v2")')
    reloaded = proj.events.wait_reload(mark)
    assert isinstance(reloaded, FlowReloaded) and reloaded.changed == ("b",), reloaded
    assert len(compiled) == 1 and 'note("b v2")' in compiled[0]
    assert scanned == ["b"]
    _, finished = proj.watch_run(mark)
    assert finished.status == "succeeded"
    assert proj.executions.since(done) == ["b v2"]


def test_after_a_broken_save_the_good_save_compiles_only_the_part_it_changed(
    project: Callable[..., Project], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A load that fails compiles the whole file to report the error, which empties its parts; the
    watcher cuts the last good text again while it waits, so the fixing save compiles one part."""
    proj = project()
    wait_for_parts(proj.path)
    text = proj.text
    mark = proj.save(text.replace('note("c v1")', 'note("c v1"'))
    assert isinstance(proj.events.wait_reload(mark, "the broken save's report"), LoadFailed)
    wait_for_parts(proj.path)
    compiled = flowcode_compiles(monkeypatch)
    mark = proj.save(text.replace('note("c v1")', 'note("c v2")'))
    reloaded = proj.events.wait_reload(mark, "the good save's reload")
    assert isinstance(reloaded, FlowReloaded) and reloaded.changed == ("c",), reloaded
    assert len(compiled) == 1 and 'note("c v2")' in compiled[0]


def wait_for_parts(path: Path) -> None:
    """Until the flow file has parts a reload can reuse (`dsl.flowcode`)."""
    wait_for(lambda: flowcode.parts_of(str(path.resolve())), timeout=TIMEOUT)
