"""Provides `flow run` (once, `--watch`, `--loop`) and `flow resume`: the commands that run a flow.

`run` declares the command line (Typer reads its options and help from the signature) and hands the
parsed values to `runner.cli.running.run_flow`, which a plain `flow run` reaches without Typer
(`runner.cli.run_args`). `resume` builds a session on an engine and hands the rest to
`runner.cli.hosting.host`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from runner.cli.common import get_run, open_store
from runner.cli.hosting import host, host_runs, leave, make_engine, make_reporter, wait
from runner.cli.interrupts import StopOnSignal
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
from runner.cli.running import run_flow


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
    run_flow(
        file=file,
        param=param,
        params_file=params_file,
        only=only,
        from_step=from_step,
        to_step=to_step,
        force=force,
        executor=executor,
        workers=workers,
        watch=watch,
        json_lines=json_lines,
        pdb=pdb,
        loop=loop,
        every=every,
        max_iterations=max_iterations,
        store_dir=store_dir,
    )


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
