"""Provides `flow run` (once, `--watch`, `--loop`) and `flow resume`: the commands that run a flow.

Each builds a session on an engine and hands the rest to `runner.cli.hosting.host`. An invalid flow
or parameter is reported before the store is opened, so a typo leaves no `.flow/` behind.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dsl.errors import FlowError
from runner.cli.common import get_run, open_store
from runner.cli.hosting import host, host_runs, leave, make_engine, make_reporter, wait
from runner.cli.interrupts import POLL_S, StopOnSignal
from runner.cli.options import (
    ExecutorOpt,
    FileArg,
    JsonLinesOpt,
    ParamOpt,
    ParamsFileOpt,
    RunArg,
    StepsOpt,
    StoreOpt,
    WorkersOpt,
)

if TYPE_CHECKING:
    from runner.engine import Engine
    from runner.output.plain import Reporter
    from runner.session import FlowSession


def run(
    file: FileArg,
    param: ParamOpt = None,
    params_file: ParamsFileOpt = None,
    only: Annotated[StepsOpt, typer.Option("--only", help="Run only this step (repeatable).")] = None,
    from_step: Annotated[
        StepsOpt, typer.Option("--from", help="Run this step and everything downstream of it.")
    ] = None,
    to_step: Annotated[
        StepsOpt, typer.Option("--to", help="Run this step and everything upstream of it.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Execute the selected steps even when cached.")
    ] = False,
    executor: ExecutorOpt = None,
    workers: WorkersOpt = None,
    watch: Annotated[bool, typer.Option("--watch", help="Re-run what changed on every save.")] = False,
    json_lines: JsonLinesOpt = False,
    pdb: Annotated[
        bool, typer.Option("--pdb", help="Debug a failing step (implies --executor inline).")
    ] = False,
    loop: Annotated[
        bool, typer.Option("--loop", help="Run again after each run ends, until Ctrl-C.")
    ] = False,
    every: Annotated[
        str | None, typer.Option("--every", help="With --loop: start an iteration every D (30s, 5m, 1h30m).")
    ] = None,
    max_iterations: Annotated[
        int | None, typer.Option("--max-iterations", help="With --loop: stop after N iterations.")
    ] = None,
    store_dir: StoreOpt = None,
) -> None:
    """Run a flow headless: re-executes only what changed, reuses everything else from the cache.

    FILE may also be a release, NAME@VERSION or NAME@latest (see `flow release`).
    """
    host_runs()
    from runner.operate.loop import loop_session, loop_settings
    from runner.operate.releases import open_target
    from runner.operate.schedule import schedule_of
    from runner.params import parse_assignments, read_params_file, resolve_flow_params
    from runner.session import FlowSession

    overrides = parse_assignments(param or [])
    file_values = read_params_file(params_file) if params_file else {}
    loaded, overrides, store = open_target(str(file), overrides, lambda: open_store(store_dir, create=False))
    resolve_flow_params(loaded, overrides, file_values)
    schedule_of(loaded)  # an invalid cron expression is an invalid flow, even when run by hand
    if watch and (loop or every is not None or max_iterations is not None or store is not None):
        raise FlowError("--watch follows edits of a file: it goes with neither --loop nor a release")
    looping = None if watch else loop_settings(loaded, loop, every, max_iterations)
    store = store or open_store(store_dir)
    engine = make_engine(store, executor, workers, debug=pdb)
    prestart = getattr(engine.executor, "prestart", None)
    if prestart is not None:
        prestart(1)  # the worker's interpreter starts while the run is planned
    session = FlowSession(loaded.path, engine, overrides, file_values)
    reporter = make_reporter(json_lines, debug=pdb)
    options: dict[str, Any] = {"only": only or (), "from_steps": from_step or (), "to_steps": to_step or ()}

    def drive(stop: StopOnSignal) -> str:
        session.load(loaded)
        engine.subscribe(reporter)
        if looping is not None:
            return loop_session(
                session,
                engine,
                looping,
                force=force,
                options=options,
                say=lambda text: reporter.note(f"flow: {text}"),
                interrupted=lambda: stop.requested.is_set() or reporter.closed.is_set(),
            )
        handle = session.run(trigger="cli", force=force, **options)
        if watch:
            return _watch(session, engine, options, reporter, stop)
        return wait(engine, handle, reporter, stop)

    leave(reporter, host(engine, store, reporter, lambda _: session.loaded, drive))


def _watch(
    session: FlowSession, engine: Engine, options: dict[str, Any], reporter: Reporter, stop: StopOnSignal
) -> str:
    """Watch from the moment the first run starts (a save during it supersedes it) until Ctrl-C
    (or until nobody reads the output).

    Returns the status of the last run.
    """
    stop_watching = threading.Event()

    def ready() -> None:
        names = ", ".join(sorted(p.name for p in session.watched_files()))
        reporter.note(f"watching {names} (Ctrl-C to stop)")

    watcher = threading.Thread(
        target=session.watch,
        args=(stop_watching,),
        kwargs={"on_ready": ready, "run_options": options},
        name="flow-watch",
        daemon=True,
    )
    watcher.start()
    while watcher.is_alive():
        watcher.join(POLL_S)
        if not stop_watching.is_set() and (stop.requested.is_set() or reporter.closed.is_set()):
            if stop.requested.is_set():
                reporter.note("flow: stopping (Ctrl-C again to exit at once)")
            stop_watching.set()
            engine.cancel()
    engine.cancel()  # a run the watcher started just before it saw the stop
    last = session.current
    while last is not None and not last.done:
        last.wait(POLL_S)
    return last.status if last is not None else "cancelled"


def resume(
    run_id: RunArg,
    executor: ExecutorOpt = None,
    workers: WorkersOpt = None,
    json_lines: JsonLinesOpt = False,
    store_dir: StoreOpt = None,
) -> None:
    """Re-run what failed or never ran in RUN, with its parameters; what succeeded is reused."""
    host_runs()
    from runner.session import FlowSession

    store = open_store(store_dir, create=False)
    record = get_run(store, run_id)
    engine = make_engine(store, executor, workers)
    session = FlowSession(record.file, engine, overrides=record.params)
    reporter = make_reporter(json_lines)

    def drive(stop: StopOnSignal) -> str:
        session.load()
        engine.subscribe(reporter)
        handle = session.run(trigger=f"resume of #{record.id}", resume_of=record.id)
        return wait(engine, handle, reporter, stop)

    leave(reporter, host(engine, store, reporter, lambda _: session.loaded, drive))
