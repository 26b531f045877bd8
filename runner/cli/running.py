"""Provides `run_flow`: what `flow run` does (once, `--watch`, `--loop`) with its command line parsed,
by Typer (`runner.cli.run.run`, which declares the options and their help) or, for a plain `flow run`,
by `runner.cli.run_args` without importing Typer at all.

It builds a session on an engine and hands the rest to `runner.cli.hosting.host`. An invalid flow or
parameter is reported before the store is opened, so a typo leaves no `.flow/` behind.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsl.errors import FlowError
from runner.cli.common import open_store
from runner.cli.hosting import host, host_runs, leave, make_engine, make_reporter, wait
from runner.cli.interrupts import POLL_S, StopOnSignal

if TYPE_CHECKING:
    from runner.engine import Engine
    from runner.output.plain import Reporter
    from runner.session import FlowSession


def run_flow(
    *,
    file: Path,
    param: list[str] | None,
    params_file: Path | None,
    only: list[str] | None,
    from_step: list[str] | None,
    to_step: list[str] | None,
    force: bool,
    executor: str | None,
    workers: int | None,
    watch: bool,
    json_lines: bool,
    pdb: bool,
    loop: bool,
    every: str | None,
    max_iterations: int | None,
    store_dir: Path | None,
) -> None:
    """Run a flow headless (see `runner.cli.run.run` for what each option means); leaves by raising
    `runner.cli.common.ExitWith` with the run's exit code."""
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
    keep_spare = getattr(engine.executor, "keep_spare", None)
    if watch and keep_spare is not None:
        keep_spare()  # a save that kills a running step's worker leaves one ready for the re-run
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
