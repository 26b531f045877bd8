"""Provides the `flow` command line (Typer): a thin layer over the engine, the store and the session.

Every command funnels user errors through `main()`: a `FlowError` is printed as one line on stderr
and exits with code 2; no traceback for a user's mistake. Heavy modules (the engine, Rich, Textual)
are imported inside the commands that need them, so `flow run` starts fast.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dsl.errors import FlowError
from runner import cli_maintenance
from runner.interrupts import StopOnSignal
from runner.text import visible

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from runner.engine import Engine, RunHandle
    from runner.records import StepRecord
    from runner.store import Store

app = typer.Typer(
    name="flow",
    help="Workflow-as-code for ML and data pipelines: run, watch and inspect flows.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

FileArg = Annotated[Path, typer.Argument(help="The flow file (.py, .yaml or .yml).", show_default=False)]
StoreOpt = Annotated[
    Path | None,
    typer.Option(
        "--store",
        help="The run store directory (default: $FLOW_STORE, else the nearest .flow/ from the working "
        "directory upwards, else ./.flow).",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
ExecutorOpt = Annotated[
    str | None,
    typer.Option(
        "--executor",
        help="local (worker processes), inline (in-process, for --pdb), dask, or dask://HOST:PORT "
        "(default: $FLOW_EXECUTOR or local).",
        show_default=False,
    ),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option("--workers", help="Steps run in parallel (default: CPU cores).", show_default=False),
]


class ExitWith(Exception):
    """Leave a command with an exit code (after its output is printed)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            shown = version("flowdsl")
        except PackageNotFoundError:
            shown = "unknown (not installed as a distribution)"
        typer.echo(f"flow {shown}")
        raise ExitWith(0)


@app.callback()
def _options(
    show_version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", callback=_show_version, is_eager=True),
    ] = False,
) -> None:
    """Workflow-as-code for ML and data pipelines: run, watch and inspect flows."""


def _host_runs() -> None:
    """A command that runs flows survives a closed output (it stops the run and records it, see
    `_leave`): writes to a closed pipe must fail with EPIPE, not kill the process at once."""
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)


def _store(path: Path | None, *, create: bool = True) -> Store:
    """Open the store; runs whose runner died (kill -9, crash) are marked interrupted first."""
    from runner.store import Store

    store = Store(path, create=create)
    try:
        store.mark_interrupted()
    except sqlite3.OperationalError:
        pass  # a read-only store can still be read; its dead runs are marked by the next writer
    return store


def _engine(store: Store, executor: str | None, workers: int | None, *, debug: bool = False) -> Engine:
    from runner.engine import Engine
    from runner.executors import make_executor
    from runner.releases import link_releases

    spec = executor or os.environ.get("FLOW_EXECUTOR") or ("inline" if debug else "local")
    if debug and spec != "inline":
        raise FlowError("--pdb needs --executor inline (the debugger runs in this process)")
    engine = Engine(store, make_executor(spec, workers, debug=debug))
    link_releases(engine, store)
    return engine


def _reporter(json_lines: bool, *, debug: bool = False) -> Any:
    """JSON lines, the live view on a terminal, else plain lines (also under `--pdb`: a live panel
    redrawn every 80 ms would scribble over the debugger's session)."""
    from runner.reporter import JsonReporter, PlainReporter

    if json_lines:
        return JsonReporter()
    if sys.stdout.isatty() and os.environ.get("TERM") != "dumb" and not debug:
        from runner.live import LiveReporter

        return LiveReporter()
    return PlainReporter()


def _kill_now(engine: Engine, reporter: Any) -> Callable[[], None]:
    """What a second Ctrl-C does before the process ends: give the terminal back, kill the workers."""

    def kill() -> None:
        abort = getattr(reporter, "abort", None)
        if abort is not None:
            abort()
        engine.executor.close()

    return kill


def _wait(engine: Engine, handle: RunHandle, reporter: Any, stop: StopOnSignal) -> str:
    """Wait for a run; stop it cleanly on the first Ctrl-C, or once nobody reads the output (`| head`)."""
    from runner.interrupts import POLL_S

    stopped = False
    while not handle.done:
        handle.wait(POLL_S)
        if not stopped and (stop.requested.is_set() or reporter.closed.is_set()):
            stopped = True
            if stop.requested.is_set():
                reporter.note("flow: stopping the run (Ctrl-C again to exit at once)")
            engine.cancel(handle.id)
    return handle.status


def _say(text: str) -> None:
    """A progress or warning line for the user, on stderr (stdout stays the run's output)."""
    print(f"flow: {text}", file=sys.stderr, flush=True)


def _close(engine: Engine, reporter: Any, store: Store) -> None:
    """Stop what is running (its last events still reach the reporter), then the output, then the store."""
    try:
        engine.close()
    finally:
        reporter.close()
        store.close()


def _leave(reporter: Any, status: str) -> None:
    """Exit with the run's code, or as killed by SIGPIPE when nobody read the output to the end."""
    from runner.interrupts import die_of_sigpipe

    if reporter.closed.is_set():
        die_of_sigpipe()
    raise ExitWith(0 if status == "succeeded" else 1)


def _run_id(store: Store, text: str) -> int:
    if text in ("last", "latest"):
        found = store.latest_run_id()
        if found is None:
            raise FlowError("there are no runs in this store yet")
        return found
    try:
        return int(text.lstrip("#"))
    except ValueError:
        raise FlowError(f"run id must be a number or 'last', got {text!r}") from None


def _get_run(store: Store, text: str) -> Any:
    run_id = _run_id(store, text)
    run = store.get_run(run_id)
    if run is None:
        raise FlowError(f"no run #{run_id} in the store at {store.root}")
    return run


@app.command()
def run(
    file: FileArg,
    param: Annotated[
        list[str] | None, typer.Option("-p", "--param", help="Set a parameter: -p name=value (repeatable).")
    ] = None,
    params_file: Annotated[
        Path | None, typer.Option("--params", help="Parameters from a TOML or JSON file.", show_default=False)
    ] = None,
    only: Annotated[list[str] | None, typer.Option("--only", help="Run only this step (repeatable).")] = None,
    from_step: Annotated[
        list[str] | None, typer.Option("--from", help="Run this step and everything downstream of it.")
    ] = None,
    to_step: Annotated[
        list[str] | None, typer.Option("--to", help="Run this step and everything upstream of it.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Execute the selected steps even when cached.")
    ] = False,
    executor: ExecutorOpt = None,
    workers: WorkersOpt = None,
    watch: Annotated[bool, typer.Option("--watch", help="Re-run what changed on every save.")] = False,
    json_lines: Annotated[bool, typer.Option("--json", help="Print one JSON object per event.")] = False,
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
    _host_runs()
    from runner.hooks import HookRunner
    from runner.loop import loop_session, loop_settings
    from runner.params import parse_assignments, read_params_file, resolve_flow_params
    from runner.releases import open_target
    from runner.schedule import schedule_of
    from runner.session import FlowSession

    overrides = parse_assignments(param or [])
    file_values = read_params_file(params_file) if params_file else {}
    # An invalid flow or parameter is reported before the store exists: a typo leaves no `.flow/`.
    loaded, overrides, store = open_target(str(file), overrides, lambda: _store(store_dir, create=False))
    resolve_flow_params(loaded, overrides, file_values)
    schedule_of(loaded)  # an invalid cron expression is an invalid flow, even when run by hand
    if watch and (loop or every is not None or max_iterations is not None or store is not None):
        raise FlowError("--watch follows edits of a file: it goes with neither --loop nor a release")
    looping = None if watch else loop_settings(loaded, loop, every, max_iterations)
    store = store or _store(store_dir)
    engine = _engine(store, executor, workers, debug=pdb)
    prestart = getattr(engine.executor, "prestart", None)
    if prestart is not None:
        prestart(1)  # the worker's interpreter starts while the run is planned
    session = FlowSession(loaded.path, engine, overrides, file_values)
    reporter = _reporter(json_lines, debug=pdb)
    hooks = HookRunner(engine, lambda _: session.loaded, report=lambda text: reporter.note(f"flow: {text}"))
    with StopOnSignal(_kill_now(engine, reporter)) as stop:
        try:
            session.load(loaded)
            engine.subscribe(reporter)
            options = {"only": only or (), "from_steps": from_step or (), "to_steps": to_step or ()}
            if looping is not None:
                status = loop_session(
                    session,
                    engine,
                    looping,
                    force=force,
                    options=options,
                    say=lambda text: reporter.note(f"flow: {text}"),
                    interrupted=lambda: stop.requested.is_set() or reporter.closed.is_set(),
                )
            else:
                handle = session.run(trigger="cli", force=force, **options)
                if watch:
                    status = _watch(session, engine, options, reporter, stop)
                else:
                    status = _wait(engine, handle, reporter, stop)
            hooks.drain()
        finally:
            _close(engine, reporter, store)
    _leave(reporter, status)


def _watch(session: Any, engine: Engine, options: dict[str, Any], reporter: Any, stop: StopOnSignal) -> str:
    """Watch from the moment the first run starts (a save during it supersedes it) until Ctrl-C
    (or until nobody reads the output).

    Returns the status of the last run.
    """
    from runner.interrupts import POLL_S

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


@app.command()
def runs(
    file: Annotated[str | None, typer.Argument(help="Only runs of this flow (file or flow name).")] = None,
    limit: Annotated[int, typer.Option("--limit", help="How many runs, newest first.")] = 20,
    json_out: JsonOpt = False,
    store_dir: StoreOpt = None,
) -> None:
    """The run history, newest first."""
    store = _store(store_dir, create=False)
    flow_filter = None
    if file is not None:
        path = Path(file)
        flow_filter = str(path.resolve()) if path.suffix in (".py", ".yaml", ".yml") else file
    records = store.list_runs(flow_filter, limit=limit)
    if json_out:
        typer.echo(json.dumps([r.as_dict() for r in records], indent=2, default=repr))
        return
    if not records:
        typer.echo("no runs yet")
        return
    typer.echo(f"{'run':>5}  {'flow':<18} {'status':<11} {'started':<19} {'took':>7}  {'trigger':<16} params")
    for r in records:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.started_at))
        took = f"{r.duration_s:.2f}s" if r.duration_s is not None else "-"
        params = _cell(" ".join(f"{k}={v}" for k, v in r.params.items()))
        typer.echo(
            f"{r.id:>5}  {_cell(r.flow)[:18]:<18} {r.status:<11} {started:<19} {took:>7}  "
            f"{_cell(r.trigger)[:16]:<16} {params}"
        )
    from runner.doctor import held_lines

    for line, stuck in held_lines(store.held()):
        if stuck:
            typer.echo(f"note: {line}")


def _cell(text: str) -> str:
    """A user-supplied value in a one-line place (a table cell): every control character, newline
    included, shown as a symbol."""
    return visible(text, newlines=False)


def _in_order(steps: Sequence[StepRecord]) -> list[StepRecord]:
    """Steps as stored (graph order of their first record), fan-out instances by index, not by the
    order they happened to finish in."""
    first: dict[str, int] = {}
    for position, s in enumerate(steps):
        first.setdefault(s.parent or s.name, position)

    def key(s: StepRecord) -> tuple[int, int, int]:
        index = s.name[len(s.parent) + 1 : -1] if s.parent and s.name.endswith("]") else ""
        return (first[s.parent or s.name], 1 if s.parent else 0, int(index) if index.isdigit() else -1)

    return sorted(steps, key=key)


@app.command()
def show(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="A run id, or 'last'.")],
    json_out: JsonOpt = False,
    store_dir: StoreOpt = None,
) -> None:
    """One run: its parameters, and each step's status, attempts, duration and why it ran."""
    from runner.declared import describe_declared
    from runner.reporter import SYMBOLS
    from runner.text import visible

    store = _store(store_dir, create=False)
    record = _get_run(store, run_id)
    release = store.run_release(record.id)
    record = dataclasses.replace(record, steps=tuple(_in_order(record.steps)))
    declared = store.declared_inputs(record.id)
    if json_out:
        data = record.as_dict()
        for step in data["steps"]:
            step["declared"] = declared.get(step["name"], [])
        typer.echo(json.dumps({**data, "release": release}, indent=2, default=repr))
        return
    took = f"{record.duration_s:.2f}s" if record.duration_s is not None else "-"
    trigger = _cell(record.trigger or "cli")
    typer.echo(f"run #{record.id} of {_cell(record.flow)}: {record.status} in {took} ({trigger})")
    typer.echo(f"  file: {_cell(record.file)}")
    if release is not None:
        typer.echo(f"  release: {_cell(release)}")
    if record.params:
        typer.echo("  params: " + _cell(", ".join(f"{k}={v!r}" for k, v in record.params.items())))
    width = max((len(_cell(s.name)) for s in record.steps), default=4)
    for s in record.steps:
        duration = f"{s.duration_s:.2f}s" if s.duration_s is not None and s.status == "succeeded" else ""
        attempts = f" ×{s.attempts}" if s.attempts > 1 else ""
        why = _cell(s.error if s.status == "failed" and s.error else s.reason)
        metrics = _cell(" ".join(f"{k}={v:g}" for k, v in s.metrics.items()))
        symbol = SYMBOLS.get(s.status, "?")
        typer.echo(
            f"  {symbol} {_cell(s.name):<{width}}  {s.status:<9} {duration:>7}{attempts}  {why}"
            + (f"  [{metrics}]" if metrics else "")
        )
        if s.name in declared:
            inputs = visible(describe_declared(declared[s.name]), newlines=False)
            typer.echo(f"    {'':<{width}}  declared inputs: {inputs}")
        if s.status == "failed" and s.traceback:
            for line in s.traceback.rstrip().splitlines():
                typer.echo(f"      {visible(line)}")
    if record.metrics:
        typer.echo("  metrics: " + _cell(", ".join(f"{k}={v:g}" for k, v in record.metrics.items())))
    for name, output in record.outputs.items():
        typer.echo(f"  output {name} = {visible(output.preview, newlines=False)}")


@app.command()
def logs(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="A run id, or 'last'.")],
    step_name: Annotated[str | None, typer.Argument(metavar="STEP", help="Only this step's lines.")] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines until the run ends.")
    ] = False,
    store_dir: StoreOpt = None,
) -> None:
    """The captured stdout, stderr and logging of a run (or one step)."""
    store = _store(store_dir, create=False)
    record = _get_run(store, run_id)
    source_run, source_step = record.id, step_name
    if step_name is not None:
        found = next((s for s in record.steps if s.name == step_name), None)
        if found is None:
            raise FlowError(f"run #{record.id} has no step '{_cell(step_name)}'")
        computed = store.computed_by(found.fingerprint, record.id) if found.status == "cached" else None
        if computed is not None:
            source_run, source_step = computed
            _note(
                f"{_cell(step_name)} was cached in run #{record.id}: "
                f"its output and these lines are from run #{source_run} ({_cell(source_step)})"
            )
    last = 0
    shown = 0
    while True:
        lines = store.get_logs(source_run, source_step, after=last, limit=10_000)
        for line in lines:
            stamp = time.strftime("%H:%M:%S", time.localtime(line.ts))
            prefix = "" if step_name else f"{_cell(line.step)} | "
            typer.echo(f"{stamp} {prefix}{visible(line.line)}")
            last = line.id
        shown += len(lines)
        if lines:
            continue
        current = store.get_run(source_run)
        if not follow or current is None or current.status != "running":
            break
        time.sleep(0.2)
    current = store.get_run(source_run) or record
    for s in _in_order(current.steps):
        if s.status == "failed" and s.traceback and source_step in (None, s.name):
            stamp = time.strftime("%H:%M:%S", time.localtime(s.finished_at or current.started_at))
            prefix = "" if step_name else f"{_cell(s.name)} | "
            for line in s.traceback.rstrip().splitlines():
                typer.echo(f"{stamp} {prefix}{visible(line)}")
                shown += 1
    if not shown:
        what = f"step '{_cell(step_name)}'" if step_name else "any step"
        _note(f"no output was captured for {what} in run #{source_run}")


def _note(text: str) -> None:
    """A remark about the output (not the output itself): on stderr, so a pipe gets only the lines."""
    print(f"flow: {text}", file=sys.stderr)


@app.command()
def resume(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="A run id, or 'last'.")],
    executor: ExecutorOpt = None,
    workers: WorkersOpt = None,
    json_lines: Annotated[bool, typer.Option("--json", help="Print one JSON object per event.")] = False,
    store_dir: StoreOpt = None,
) -> None:
    """Re-run what failed or never ran in RUN, with its parameters; what succeeded is reused."""
    _host_runs()
    from runner.hooks import HookRunner
    from runner.session import FlowSession

    store = _store(store_dir, create=False)
    record = _get_run(store, run_id)
    engine = _engine(store, executor, workers)
    session = FlowSession(record.file, engine, overrides=record.params)
    reporter = _reporter(json_lines)
    hooks = HookRunner(engine, lambda _: session.loaded, report=lambda text: reporter.note(f"flow: {text}"))
    with StopOnSignal(_kill_now(engine, reporter)) as stop:
        try:
            session.load()
            engine.subscribe(reporter)
            handle = session.run(trigger=f"resume of #{record.id}", resume_of=record.id)
            status = _wait(engine, handle, reporter, stop)
            hooks.drain()
        finally:
            _close(engine, reporter, store)
    _leave(reporter, status)


@app.command()
def delete(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="A run id, or 'last'.")],
    store_dir: StoreOpt = None,
) -> None:
    """Remove a run from the history: its steps, logs and metrics.

    The outputs it computed stay in the cache while a kept run uses them; `flow gc` frees the others
    (it keeps the results of each flow's last runs and of pinned runs).
    """
    store = _store(store_dir, create=False)
    record = _get_run(store, run_id)
    verdict = store.run_verdict(record.id)  # a run whose process is gone was marked interrupted on open
    if verdict is not None:
        raise FlowError(
            f"run #{record.id} is still running ({verdict.why}); stop it first"
            + ("" if verdict.proven else " (if that process is gone: flow doctor --clear-stuck)")
        )
    store.delete_run(record.id)
    typer.echo(f"deleted run #{record.id}")


@app.command()
def graph(
    file: FileArg,
    fmt: Annotated[str, typer.Option("--format", help="text, mermaid or dot.")] = "text",
) -> None:
    """Print the flow's DAG as text, Mermaid or Graphviz DOT."""
    from dsl.loader import load_flow
    from runner.render import FORMATS

    if fmt not in FORMATS:
        raise FlowError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    typer.echo(visible(FORMATS[fmt](load_flow(file))))


@app.command()
def check(
    file: FileArg,
    param: Annotated[list[str] | None, typer.Option("-p", "--param", help="Also check these values.")] = None,
) -> None:
    """Validate a flow without running it: syntax, imports, graph, parameters."""
    from dsl.loader import load_flow
    from runner.params import parse_assignments, resolve_flow_params
    from runner.schedule import schedule_of

    loaded = load_flow(file)
    schedule_of(loaded)
    values = resolve_flow_params(loaded, parse_assignments(param or []))
    steps, params = len(loaded.graph.nodes), len(values)
    typer.echo(
        f"ok: {_cell(loaded.name)} has {steps} step{'' if steps == 1 else 's'} and {params} "
        f"parameter{'' if params == 1 else 's'} "
        f"({_cell(', '.join(f'{k}={v!r}' for k, v in values.items())) or 'none'})"
    )


@app.command()
def tui(
    target: Annotated[Path, typer.Argument(help="A flow file, or a directory of flows.")] = Path("."),
    workers: WorkersOpt = None,
    store_dir: StoreOpt = None,
) -> None:
    """The terminal UI: the DAG, live logs, run history, hot reload."""
    _host_runs()
    from tui.app import run_tui

    if not target.exists():
        raise FlowError("no such file or directory", file=str(target))
    raise ExitWith(run_tui(target, store_dir, workers))


@app.command()
def doctor(
    json_out: JsonOpt = False,
    store_dir: StoreOpt = None,
    clear_stuck: Annotated[
        bool,
        typer.Option(
            "--clear-stuck",
            help="First give up runs and leases whose process is not proven alive (another host whose "
            "heartbeat is late, a row from an older flow): they read interrupted, their steps run again.",
        ),
    ] = False,
) -> None:
    """Verify the run store: integrity, artifacts against their hashes, leftovers of crashes.

    Exit 0 when healthy (notes such as interrupted runs or orphan files are expected after a
    crash), 1 when something the store promises does not hold.
    """
    from runner.doctor import diagnose, human_size
    from runner.store import Store

    store = Store(store_dir, create=False, verify_private=False)  # a store others can write to: reported
    try:
        if clear_stuck:
            runs_cleared, leases_cleared = store.clear_stuck()
            typer.echo(
                f"cleared {len(runs_cleared)} stuck run(s) {' '.join(f'#{r}' for r in runs_cleared)} "
                f"and {len(leases_cleared)} stuck lease(s)".replace("  ", " "),
                err=json_out,
            )
        report = diagnose(store)
    finally:
        store.close()
    if json_out:
        typer.echo(json.dumps({**report.as_dict(), "found": store.found}, indent=2))
    else:
        verdict = "healthy" if report.healthy else f"{len(report.problems)} problem(s)"
        typer.echo(f"store {_cell(report.store)}: {verdict}")
        typer.echo(f"  which: {store.found}")
        typer.echo(
            f"  integrity: {', '.join(report.integrity[:3])}; {report.checked_artifacts} artifacts and "
            f"{report.checked_steps} finished steps checked"
        )
        for problem in report.problems:
            typer.echo(f"  problem: {problem}")
        for note in report.notes:
            typer.echo(f"  note: {note}")
        if report.orphan_bytes or report.unreferenced_bytes:
            reclaimable = human_size(report.orphan_bytes + report.unreferenced_bytes)
            typer.echo(f"  reclaimable: {reclaimable} (flow gc)")
    raise ExitWith(0 if report.healthy else 1)


app.command()(cli_maintenance.gc)
app.command()(cli_maintenance.pin)


@app.command()
def serve(
    directory: Annotated[Path, typer.Argument(help="The directory of flow files to serve.")] = Path("."),
    release: Annotated[
        list[str] | None, typer.Option("--release", help="Also serve this release (NAME@latest, NAME@3).")
    ] = None,
    executor: ExecutorOpt = None,
    workers: WorkersOpt = None,
    store_dir: StoreOpt = None,
) -> None:
    """Run each scheduled flow in DIR when it is due, until SIGTERM or Ctrl-C (see README, Schedules)."""
    from runner.hooks import HookRunner
    from runner.serve import Server, serve_in_terminal

    if not directory.is_dir():
        raise FlowError("not a directory; give the directory of the flows to serve", file=str(directory))
    store = _store(store_dir)
    engine = _engine(store, executor, workers)
    server = Server(directory, store, engine, releases=tuple(release or ()), say=_say)
    hooks = HookRunner(engine, server.loaded_for, report=_say)
    try:
        code = serve_in_terminal(server)
        hooks.drain()
    finally:
        engine.close()
        store.close()
    raise ExitWith(code)


@app.command()
def schedules(
    directory: Annotated[Path, typer.Argument(help="The directory of flow files.")] = Path("."),
    json_out: JsonOpt = False,
    store_dir: StoreOpt = None,
) -> None:
    """Each flow in DIR with its schedule and when it is next due under `flow serve`."""
    from runner.serve import list_schedules
    from runner.text import visible

    if not directory.is_dir():
        raise FlowError("not a directory", file=str(directory))
    try:
        store: Store | None = _store(store_dir, create=False)
    except FlowError:
        store = None  # nothing has been served here yet: no due time was handled
    rows = list_schedules(directory, store)
    if json_out:
        typer.echo(json.dumps([r.as_dict() for r in rows], indent=2))
        return
    if not rows:
        typer.echo(f"no flow files in {directory}")
    for row in rows:
        data = row.as_dict()
        name = visible(f"{Path(row.file).name} ({row.flow})" if row.flow else Path(row.file).name)
        if row.error is not None:
            typer.echo(f"{name}: does not load: {visible(row.error)}")
        elif row.schedule is None:
            typer.echo(f"{name}: not scheduled")
        else:
            typer.echo(f"{name}: {row.schedule}, next {data['next_due_text']}, catch-up {row.catch_up}")


@app.command(name="release")
def release_command(
    file: FileArg,
    name: Annotated[
        str | None, typer.Option("--name", help="The release's name (default: the flow's name).")
    ] = None,
    store_dir: StoreOpt = None,
) -> None:
    """Freeze the flow's code (with its local modules) and parameter defaults as NAME@N."""
    from dsl.loader import load_flow
    from runner.releases import create_release
    from runner.schedule import schedule_of

    loaded = load_flow(file)
    schedule_of(loaded)
    store = _store(store_dir)
    try:
        made = create_release(store, loaded, name)
    finally:
        store.close()
    if made.created:
        typer.echo(
            f"released {made.label} ({len(loaded.sources)} file(s)); run it with: flow run {made.label}"
        )
    else:
        typer.echo(f"unchanged: {made.label} already holds exactly this code and these defaults")


@app.command()
def releases(
    name: Annotated[str | None, typer.Argument(help="Only the versions of this release.")] = None,
    json_out: JsonOpt = False,
    store_dir: StoreOpt = None,
) -> None:
    """The releases in the store, newest version first."""
    from runner.text import visible

    store = _store(store_dir, create=False)
    found = store.list_releases(name)
    if json_out:
        typer.echo(json.dumps(found, indent=2))
        return
    if not found:
        typer.echo("no releases yet (flow release FILE makes one)")
    for item in found:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(item["created_at"]))
        label = f"{item['name']}@{item['version']}"
        typer.echo(visible(f"{label:<24} {item['flow'][:20]:<20} {created}  {item['file']}", newlines=False))


def _exit_now(code: int) -> None:
    """Exit once a command has closed its engine and store, without joining stray threads.

    A flow file may start non-daemon threads at import; a normal interpreter exit would wait for them
    for ever after the run is over.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> None:
    """Entry point: run the app; map user errors to one line on stderr and exit code 2.

    A command that only prints (`flow runs | head`) dies of SIGPIPE as `cat` does when its reader
    goes away: quietly, status 141. Commands hosting a run opt out (`_host_runs`).
    """
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        app(standalone_mode=False)
    except ExitWith as done:
        _exit_now(done.code)
    except FlowError as exc:
        print(f"flow: error: {visible(str(exc))}", file=sys.stderr)
        _exit_now(exc.exit_code)
    except typer.Abort:  # Ctrl-C before a command installed its own handling (click turns it into Abort)
        print("flow: interrupted", file=sys.stderr)
        _exit_now(130)
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0))
        _exit_now(code if isinstance(code, int) else 1)
    except Exception as exc:
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            _exit_now(exc.exit_code)
        raise
    except KeyboardInterrupt:
        print("flow: interrupted", file=sys.stderr)
        _exit_now(130)
