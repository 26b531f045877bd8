"""Provides the blocking reads a flow's controller runs off the UI thread: the first load of a flow,
its run history, a past run, a step's stored log lines, two runs to compare, and the plan of the
next run (with the code diff behind a step's re-run).

Each is a plain function of the store (or engine) and its arguments: no controller state is read or
written here, so running one on a worker thread races with nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from dsl.errors import FlowError
from runner.engine import Engine
from runner.records import RunRecord
from runner.review.compare import Comparison, compare_runs
from runner.review.plan import Plan, make_plan
from runner.review.sources import CodeChange, code_changes
from runner.session import FlowSession
from runner.store import Store
from tui.data.state import LogBuffer, RunState

HISTORY_LIMIT = 200
"""Past runs the history table holds (newest first)."""

LOG_PAGE = 50_000
"""Stored log lines read per query (a step's million lines are read in pages)."""


def open_session(path: Path, engine: Engine) -> FlowSession:
    """A session on `path` after its first load (blocking: call it from a worker or before the app
    starts); a failed load leaves `session.error` set and no graph. Its reload baseline is left to
    the first plan (`read_plan`): the graph is shown first."""
    session = FlowSession(path, engine)
    try:
        session.load(defer_baseline=True)
    except FlowError as exc:
        session.error = exc
    return session


class HistoryRead(NamedTuple):
    """A flow's runs, newest first, and their `runs_signature` as read just before them."""

    records: list[RunRecord]
    signature: tuple[int, int, int]


def read_history(store: Store, path: Path, flow: str | None) -> HistoryRead:
    """The runs of flow `flow` (before a good load, when its name is unknown: those of the file).
    The signature is read first: a run recorded between the two reads changes it again, so the next
    look (`read_runs_signature`) still finds the history out of date."""
    key = flow or str(path.resolve())
    signature = store.runs_signature(key)
    records = store.list_runs(key, limit=HISTORY_LIMIT)
    if flow is None:
        records = [r for r in records if Path(r.file).resolve() == path.resolve()] or records
    return HistoryRead(records, signature)


def read_runs_signature(store: Store, path: Path, flow: str | None) -> tuple[int, int, int] | None:
    """`runs_signature` of the flow's runs (None: the store cannot be read now, as the app closes)."""
    try:
        return store.runs_signature(flow or str(path.resolve()))
    except FlowError:
        return None


def read_latest_statuses(store: Store) -> dict[str, str] | None:
    """`Store.latest_statuses` (None: the store cannot be read now, as the app closes)."""
    try:
        return store.latest_statuses()
    except FlowError:
        return None


def read_run(store: Store, run_id: int) -> RunState | None:
    """A past run's state, or None when it is not in the store."""
    store.flush()  # what the engine recorded moments ago is in the store
    record = store.get_run(run_id)
    return RunState.from_record(record) if record is not None else None


def read_logs(store: Store, run_id: int, step: str, failed: RunState | None = None) -> LogBuffer:
    """A step's stored lines in run `run_id`, its fan-out instances' lines prefixed `[i]`; when
    `failed` (the run's state) says the step failed, its traceback follows them."""
    store.flush()  # lines the engine recorded moments ago are in the store
    buffer = LogBuffer()
    after = 0
    prefix = f"{step}["
    while True:
        lines = store.get_logs(run_id, None, after=after, limit=LOG_PAGE)
        if not lines:
            break
        for line in lines:
            if line.step == step:
                buffer.append(line.stream, line.line)
            elif line.step.startswith(prefix):
                index = line.step[len(prefix) : -1]
                buffer.append(line.stream, f"[{index}] {line.line}")
        after = lines[-1].id
    if failed is not None:
        failed.add_failure(step, buffer)
    return buffer


def read_pair(store: Store, first: int, second: int) -> tuple[RunRecord, RunRecord] | None:
    """Two runs to compare, or None when either is gone from the store."""
    a, b = store.get_run(first), store.get_run(second)
    return (a, b) if a is not None and b is not None else None


def read_comparison(store: Store, first: int, second: int) -> Comparison | None:
    """Two runs compared as `flow diff` compares them, or None when either is gone from the store."""
    pair = read_pair(store, first, second)
    return compare_runs(store, *pair) if pair is not None else None


class PlanRead(NamedTuple):
    """A plan of the next run and the flow file's text it was made from (None: not known)."""

    plan: Plan
    text: str | None


def read_plan(store: Store, session: FlowSession) -> PlanRead | None:
    """What the next run of the session's flow would do with each step (`flow plan`), or None while
    the flow has no good load or its parameters do not resolve."""
    store.flush()  # the results the engine recorded moments ago are in the store
    loaded = session.loaded
    if loaded is None:
        return None
    session.baseline()
    try:
        plan = make_plan(store, loaded, session.params(), static=session.engine.static_prints(loaded))
    except FlowError:
        return None
    return PlanRead(plan, loaded.sources.get(str(loaded.path)))


def read_code_diff(store: Store, plan: Plan, step: str) -> list[CodeChange]:
    """The diffs behind a planned step's re-run: its code and helpers then and now."""
    planned = next((s for s in plan.steps if s.step == step), None)
    if planned is None or planned.current is None:
        return []
    texts: dict[str, str] = {}
    for static in plan.static.values():
        texts.update(static.texts)
    return code_changes(
        planned.previous, planned.current, texts, store.source_texts, old_name="last result", new_name="now"
    )
