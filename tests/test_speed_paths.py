"""Issue 21's fast paths keep their promises: `flow run` starts its first worker before the CLI's
imports and adopts it only when nothing it inherited changed; a 10,000-step flow loads and
fingerprints in time linear in its size."""

from __future__ import annotations

import ast
import gc
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dsl import load_flow
from dsl.graph import build_graph
from dsl.step import Step
from runner.cli.entry import starts_local_workers
from runner.engine import Engine, RunRequest
from runner.events import Event, StepFinished, StepStarted
from runner.executors import spawn
from runner.executors.fake import FakeExecutor
from runner.executors.local import LocalExecutor
from runner.fingerprint import static_prints
from runner.fingerprint.source import normalised_text
from runner.store import Store

REPO = Path(__file__).resolve().parent.parent

ONE_STEP = """
import os

from dsl import step


@step(cache=False)
def where():
    return os.getpid()
"""


@pytest.fixture
def early() -> Iterator[None]:
    """Whatever a test leaves of the early worker is ended after it."""
    yield
    spawn.discard_early()


def run_where(path: Path, store_dir: Path) -> tuple[int, list[Event]]:
    """Run the one-step flow on a fresh `LocalExecutor`: (the pid its step ran in, the events)."""
    store = Store(store_dir)
    events: list[Event] = []
    engine = Engine(store, LocalExecutor(1), [events.append])
    try:
        handle = engine.run(RunRequest(load_flow(path), {}))
        assert handle.status == "succeeded"
        finished = [e for e in events if isinstance(e, StepFinished) and e.step == "where"]
        assert finished and finished[0].preview is not None
        return int(finished[0].preview), events
    finally:
        engine.close()
        store.close()


def test_the_first_local_executor_adopts_the_early_worker(
    early: None, write_flow: Callable[..., Path], store_dir: Path
) -> None:
    spawn.start_early()
    assert spawn._early is not None
    pid = spawn._early.proc.pid
    ran_in, _ = run_where(write_flow(ONE_STEP), store_dir)
    assert ran_in == pid
    assert spawn._early is None  # adopted once: a second executor starts its own


def test_an_early_worker_that_inherited_another_environment_is_not_used(
    early: None, write_flow: Callable[..., Path], store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spawn.start_early()
    assert spawn._early is not None
    stale = spawn._early.proc
    monkeypatch.setenv("FLOW_TEST_CHANGED_AFTER_EARLY_START", "1")
    ran_in, _ = run_where(write_flow(ONE_STEP), store_dir)
    assert ran_in != stale.pid
    assert stale.poll() is not None, "the unused early worker is ended and reaped"


def test_an_early_worker_nobody_adopts_is_ended(early: None) -> None:
    spawn.start_early()
    assert spawn._early is not None
    proc = spawn._early.proc
    spawn.discard_early()
    assert proc.poll() is not None
    assert spawn.adopt() is None


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["run", "flow.py"], {}, True),
        (["run", "flow.py", "--watch", "--workers", "3"], {}, True),
        (["run", "flow.py"], {"FLOW_EXECUTOR": "local"}, True),
        (["run", "flow.py", "--executor", "inline"], {}, False),
        (["run", "flow.py", "--executor=dask"], {}, False),
        (["run", "flow.py", "--pdb"], {}, False),
        (["run", "--help"], {}, False),
        (["run", "flow.py"], {"FLOW_EXECUTOR": "dask"}, False),
        (["runs"], {}, False),
        (["check", "flow.py"], {}, False),
        (["run"], {}, False),
        (["tui", "flow.py"], {}, True),
        (["tui", "flows_directory"], {}, False),
        (["tui"], {}, False),
        (["tui", "flow.py", "--help"], {}, False),
    ],
)
def test_only_a_flow_run_on_local_workers_starts_one_early(
    argv: list[str], env: dict[str, str], expected: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLOW_EXECUTOR", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert starts_local_workers(argv) is expected


def test_flow_run_starts_its_worker_before_importing_the_cli(
    write_flow: Callable[..., Path], store_dir: Path, tmp_path: Path
) -> None:
    """The real console entry point, in a process of its own: the worker starts while Typer, the
    engine and the store are not imported yet, and the run then uses it."""
    path = write_flow(ONE_STEP)
    code = textwrap.dedent(
        f"""
        import sys
        sys.argv = ["flow", "run", {str(path)!r}, "--store", {str(store_dir)!r}]
        from runner.executors import spawn

        start = spawn.start_early

        def recorded(*flow_file):
            heavy = sorted(m for m in ("typer", "runner.engine", "runner.store") if m in sys.modules)
            start(*flow_file)
            print(f"early pid {{spawn._early.proc.pid}} before {{heavy}}", file=sys.stderr, flush=True)

        spawn.start_early = recorded
        from runner.cli import main

        main()
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("FLOW_EXECUTOR", "FLOW_STORE")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("early pid ")]
    assert len(lines) == 1, proc.stderr
    _, _, pid, _, imported = lines[0].split(" ", 4)
    assert imported == "[]"
    store = Store(store_dir)
    try:
        record = store.get_run(1)
        assert record is not None and record.status == "succeeded"
        (step,) = [s for s in record.steps if s.name == "where"]
        assert step.preview == pid
    finally:
        store.close()


def _join_graph_seconds(width: int) -> float:
    """CPU seconds to build the graph of `root -> m0..m{width-1} -> sink` (the best of three; CPU time,
    as other processes on a busy machine take wall time)."""
    namespace: dict[str, object] = {}
    lines = ["from dsl import step", "@step", "def root():", "    return 1"]
    for i in range(width):
        lines += ["@step", f"def m{i}(root):", "    return root"]
    args = ", ".join(f"m{i}" for i in range(width))
    lines += ["@step", f"def sink({args}):", "    return 0"]
    exec(compile("\n".join(lines), "<join>", "exec"), namespace)  # noqa: S102 - a generated flow
    steps = [value for value in namespace.values() if isinstance(value, Step)]
    best = float("inf")
    gc.disable()  # the collector's passes grow with the heap: they are not the graph's cost
    try:
        for _ in range(3):
            started = time.process_time()
            graph = build_graph(steps, [])
            best = min(best, time.process_time() - started)
    finally:
        gc.enable()
    assert len(graph.nodes["sink"].upstream) == width
    return best


def test_a_wide_join_builds_in_time_linear_in_its_width() -> None:
    """A 10,000-wide join took 0.6 s of a 10,000-step flow's load: each edge searched the join's list
    of upstream steps. Sixteen times the width must cost about sixteen times as long, not 256: the
    bound (64) leaves room for a loaded machine (with widths 4x apart and a bound of 8x, a busy 2-core
    box failed it)."""
    small, large = _join_graph_seconds(1_000), _join_graph_seconds(16_000)
    assert large < 64 * small, (small, large)


def test_static_fingerprints_parse_each_step_once(
    write_flow: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step's text is parsed once to check it stands alone and normalised from that same tree
    (it was parsed twice: a third of a 10,000-step flow's fingerprinting)."""
    steps = "".join(f'\n\n@step\ndef s{i}():\n    """Doc {i}."""\n    return {i}  # c\n' for i in range(5))
    loaded = load_flow(write_flow("from dsl import step\n" + steps, name="parse_once.py"))
    parsed: list[str] = []
    real_parse = ast.parse

    def counting(source: str | bytes, *args: Any, **kwargs: Any) -> ast.AST:
        parsed.append(str(source))
        return real_parse(source, *args, **kwargs)

    monkeypatch.setattr(ast, "parse", counting)
    prints = static_prints(loaded)
    assert len(prints) == 5 and all(p.code and not p.untrusted for p in prints.values())
    for i in range(5):
        assert sum(1 for text in parsed if f"def s{i}()" in text) == 1, parsed
    monkeypatch.setattr(ast, "parse", real_parse)
    assert normalised_text(
        '@step\ndef s0():\n    """Doc 0."""\n    return 0  # c\n', drop_decorators=True
    ) == ("def s0():\n    return 0")


def test_a_chain_hands_out_the_next_step_before_recording_the_last(
    tmp_path: Path, write_flow: Callable[..., Path]
) -> None:
    """When a step's result arrives, its successor goes to a worker first; the finished step's events
    are recorded and shown after (in the same order as ever), while the worker already runs."""
    source = "from dsl import step\n\n\n@step\ndef s0():\n    return 0\n" + "".join(
        f"\n\n@step\ndef s{i}(s{i - 1}):\n    return s{i - 1} + 1\n" for i in range(1, 4)
    )
    executor = FakeExecutor()
    store = Store(tmp_path / "store")
    events: list[Event] = []
    submitted_when_finished: dict[str, list[str]] = {}

    def seen(event: Event) -> None:
        events.append(event)
        if isinstance(event, StepFinished):
            submitted_when_finished[event.step] = [t.step for t in executor.submitted]

    engine = Engine(store, executor, [seen])
    try:
        handle = engine.run(RunRequest(load_flow(write_flow(source)), {}))
        assert handle.status == "succeeded"
    finally:
        engine.close()
        store.close()
    assert submitted_when_finished == {
        "s0": ["s0", "s1"],
        "s1": ["s0", "s1", "s2"],
        "s2": ["s0", "s1", "s2", "s3"],
        "s3": ["s0", "s1", "s2", "s3"],
    }
    order = [
        (type(e).__name__, getattr(e, "step", ""))
        for e in events
        if isinstance(e, StepStarted | StepFinished)
    ]
    assert order == [(kind, f"s{i}") for i in range(4) for kind in ("StepStarted", "StepFinished")], (
        "events keep their order: each step's start and end before the next step's"
    )
    finished = store_status(tmp_path / "store", handle.id)
    assert finished == "succeeded"


def store_status(store_dir: Path, run_id: int) -> str:
    store = Store(store_dir)
    try:
        record = store.get_run(run_id)
        assert record is not None
        assert all(s.status == "succeeded" for s in record.steps)
        return str(record.status)
    finally:
        store.close()


def test_a_wide_fan_out_takes_results_before_deciding_all_its_steps(
    tmp_path: Path, write_flow: Callable[..., Path]
) -> None:
    """With every slot busy and a slot's worth of decided steps waiting, the scheduler takes the
    workers' results before it decides the rest: a worker never idles while a thousand steps are
    decided. Cached steps are still decided in a row (none waits in the queue)."""
    width = 40
    source = "from dsl import step\n\n\n@step\ndef root():\n    return 0\n" + "".join(
        f"\n\n@step\ndef w{i}(root):\n    return root + {i}\n" for i in range(width)
    )
    executor = FakeExecutor(slots=4)
    store = Store(tmp_path / "store")
    engine = Engine(store, executor)
    waiting: list[int] = []
    run = executor.run

    def answer(task: Any) -> Any:
        waiting.append(len(engine._queue))
        return run(task)

    executor._answer = answer
    try:
        path = write_flow(source)
        assert engine.run(RunRequest(load_flow(path), {})).status == "succeeded"
        assert len(executor.submitted) == width + 1
        assert max(waiting) <= executor.slots + 1, waiting
        waiting.clear()
        assert engine.run(RunRequest(load_flow(path), {})).status == "succeeded"
        assert waiting == [], "fully cached: nothing executed"
    finally:
        engine.close()
        store.close()
