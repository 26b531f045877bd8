"""Provides the `flow` command line (Typer): a thin layer over the engine, the store and the session.

Every command funnels user errors through `main()`: a `FlowError` is printed as one line on stderr
and exits with code 2; no traceback for a user's mistake. Heavy modules (the engine, Rich, Textual)
are imported inside the commands that need them, so `flow run` starts fast.
"""

from __future__ import annotations

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

if TYPE_CHECKING:
    from runner.engine import Engine, RunHandle
    from runner.store import Store

app = typer.Typer(
    name="flow",
    help="Workflow-as-code for ML and data pipelines: run, watch and inspect flows.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

FileArg = Annotated[Path, typer.Argument(help="The flow file (.py).", show_default=False)]
StoreOpt = Annotated[
    Path | None,
    typer.Option(
        "--store", help="The run store directory (default: $FLOW_STORE or ./.flow).", show_default=False
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

    spec = executor or os.environ.get("FLOW_EXECUTOR") or ("inline" if debug else "local")
    if debug and spec != "inline":
        raise FlowError("--pdb needs --executor inline (the debugger runs in this process)")
    return Engine(store, make_executor(spec, workers, debug=debug))


def _reporter(json_lines: bool) -> Any:
    from runner.reporter import JsonReporter, LiveReporter, PlainReporter

    if json_lines:
        return JsonReporter()
    if sys.stdout.isatty() and os.environ.get("TERM") != "dumb":
        return LiveReporter()
    return PlainReporter()


def _wait(engine: Engine, handle: RunHandle) -> str:
    """Wait for a run; the first Ctrl-C stops it cleanly (running steps killed), a second exits at once."""
    stopping = False

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        if stopping:
            engine.executor.close()
            os._exit(130)
        stopping = True
        print("\nflow: stopping the run (Ctrl-C again to exit at once)", file=sys.stderr)
        engine.cancel(handle.id)

    previous = signal.signal(signal.SIGINT, stop)
    previous_term = signal.signal(signal.SIGTERM, stop)
    try:
        while not handle.done:
            handle.wait(0.2)
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, previous_term)
    return handle.status


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
    store_dir: StoreOpt = None,
) -> None:
    """Run a flow headless: re-executes only what changed, reuses everything else from the cache."""
    from dsl import load_flow
    from runner.params import parse_assignments, read_params_file, resolve_flow_params
    from runner.session import FlowSession

    overrides = parse_assignments(param or [])
    file_values = read_params_file(params_file) if params_file else {}
    # An invalid flow or parameter is reported before the store exists: a typo leaves no `.flow/`.
    loaded = load_flow(file)
    resolve_flow_params(loaded, overrides, file_values)
    store = _store(store_dir)
    engine = _engine(store, executor, workers, debug=pdb)
    prestart = getattr(engine.executor, "prestart", None)
    if prestart is not None:
        prestart(1)  # the worker's interpreter starts while the run is planned
    session = FlowSession(file, engine, overrides, file_values)
    try:
        session.load(loaded)
        reporter = _reporter(json_lines)
        engine.subscribe(reporter)
        options = {"only": only or (), "from_steps": from_step or (), "to_steps": to_step or ()}
        handle = session.run(trigger="cli", force=force, **options)
        status = _watch(session, engine, options) if watch else _wait(engine, handle)
    finally:
        engine.close()
        store.close()
    raise ExitWith(0 if status == "succeeded" else 1)


def _watch(session: Any, engine: Engine, options: dict[str, Any]) -> str:
    """Watch from the moment the first run starts (a save during it supersedes it) until Ctrl-C.

    Returns the status of the last run.
    """
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()
        engine.cancel()

    def ready() -> None:
        names = ", ".join(sorted(p.name for p in session.watched_files()))
        print(f"watching {names} (Ctrl-C to stop)", file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, on_signal)
    previous_term = signal.signal(signal.SIGTERM, on_signal)
    watcher = threading.Thread(
        target=session.watch,
        args=(stop,),
        kwargs={"on_ready": ready, "run_options": options},
        name="flow-watch",
        daemon=True,
    )
    watcher.start()
    try:
        while watcher.is_alive():
            watcher.join(0.2)
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, previous_term)
    last = session.current
    return last.wait() if last is not None else "cancelled"


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
        flow_filter = str(path.resolve()) if path.suffix == ".py" else file
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
        params = " ".join(f"{k}={v}" for k, v in r.params.items())
        typer.echo(
            f"{r.id:>5}  {r.flow[:18]:<18} {r.status:<11} {started:<19} {took:>7}  "
            f"{r.trigger[:16]:<16} {params}"
        )


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
    declared = store.declared_inputs(record.id)
    if json_out:
        data = record.as_dict()
        for step in data["steps"]:
            step["declared"] = declared.get(step["name"], [])
        typer.echo(json.dumps(data, indent=2, default=repr))
        return
    took = f"{record.duration_s:.2f}s" if record.duration_s is not None else "-"
    typer.echo(f"run #{record.id} of {record.flow}: {record.status} in {took} ({record.trigger or 'cli'})")
    typer.echo(f"  file: {record.file}")
    if record.params:
        typer.echo("  params: " + ", ".join(f"{k}={v!r}" for k, v in record.params.items()))
    width = max((len(s.name) for s in record.steps), default=4)
    for s in record.steps:
        duration = f"{s.duration_s:.2f}s" if s.duration_s is not None and s.status == "succeeded" else ""
        attempts = f" ×{s.attempts}" if s.attempts > 1 else ""
        why = s.error if s.status == "failed" and s.error else s.reason
        metrics = " ".join(f"{k}={v:g}" for k, v in s.metrics.items())
        typer.echo(
            f"  {SYMBOLS.get(s.status, '?')} {s.name:<{width}}  {s.status:<9} {duration:>7}{attempts}  {why}"
            + (f"  [{metrics}]" if metrics else "")
        )
        if s.name in declared:
            inputs = visible(describe_declared(declared[s.name]), newlines=False)
            typer.echo(f"    {'':<{width}}  declared inputs: {inputs}")
    if record.metrics:
        typer.echo("  metrics: " + ", ".join(f"{k}={v:g}" for k, v in record.metrics.items()))


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
    if step_name is not None and step_name not in {s.name for s in record.steps}:
        raise FlowError(f"run #{record.id} has no step '{step_name}'")
    last = 0
    while True:
        lines = store.get_logs(record.id, step_name, after=last, limit=10_000)
        for line in lines:
            stamp = time.strftime("%H:%M:%S", time.localtime(line.ts))
            prefix = "" if step_name else f"{line.step} | "
            typer.echo(f"{stamp} {prefix}{line.line}")
            last = line.id
        if lines:
            continue
        current = store.get_run(record.id)
        if not follow or current is None or current.status != "running":
            return
        time.sleep(0.2)


@app.command()
def resume(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="A run id, or 'last'.")],
    executor: ExecutorOpt = None,
    workers: WorkersOpt = None,
    json_lines: Annotated[bool, typer.Option("--json", help="Print one JSON object per event.")] = False,
    store_dir: StoreOpt = None,
) -> None:
    """Re-run what failed or never ran in RUN, with its parameters; what succeeded is reused."""
    from runner.session import FlowSession

    store = _store(store_dir, create=False)
    record = _get_run(store, run_id)
    engine = _engine(store, executor, workers)
    session = FlowSession(record.file, engine, overrides=record.params)
    try:
        session.load()
        engine.subscribe(_reporter(json_lines))
        handle = session.run(trigger=f"resume of #{record.id}", resume_of=record.id)
        status = _wait(engine, handle)
    finally:
        engine.close()
        store.close()
    raise ExitWith(0 if status == "succeeded" else 1)


@app.command()
def delete(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="A run id, or 'last'.")],
    store_dir: StoreOpt = None,
) -> None:
    """Remove a run from the history (its cached results stay reusable until `flow gc`)."""
    store = _store(store_dir, create=False)
    record = _get_run(store, run_id)
    if record.status == "running":
        raise FlowError(f"run #{record.id} is still running; stop it first")
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
    typer.echo(FORMATS[fmt](load_flow(file)))


@app.command()
def check(
    file: FileArg,
    param: Annotated[list[str] | None, typer.Option("-p", "--param", help="Also check these values.")] = None,
) -> None:
    """Validate a flow without running it: syntax, imports, graph, parameters."""
    from dsl.loader import load_flow
    from runner.params import parse_assignments, resolve_flow_params

    loaded = load_flow(file)
    values = resolve_flow_params(loaded, parse_assignments(param or []))
    typer.echo(
        f"ok: {loaded.name} has {len(loaded.graph.nodes)} steps and {len(values)} parameters "
        f"({', '.join(f'{k}={v!r}' for k, v in values.items()) or 'none'})"
    )


@app.command()
def tui(
    target: Annotated[Path, typer.Argument(help="A flow file, or a directory of flows.")] = Path("."),
    workers: WorkersOpt = None,
    store_dir: StoreOpt = None,
) -> None:
    """The terminal UI: the DAG, live logs, run history, hot reload."""
    from tui.app import run_tui

    if not target.exists():
        raise FlowError("no such file or directory", file=str(target))
    raise ExitWith(run_tui(target, store_dir, workers))


@app.command()
def doctor(json_out: JsonOpt = False, store_dir: StoreOpt = None) -> None:
    """Verify the run store: integrity, artifacts against their hashes, leftovers of crashes.

    Exit 0 when healthy (notes such as interrupted runs or orphan files are expected after a
    crash), 1 when something the store promises does not hold.
    """
    from runner.doctor import diagnose, human_size

    store = _store(store_dir, create=False)
    try:
        report = diagnose(store)
    finally:
        store.close()
    if json_out:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        verdict = "healthy" if report.healthy else f"{len(report.problems)} problem(s)"
        typer.echo(f"store {report.store}: {verdict}")
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


@app.command()
def gc(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only print what would be removed.")] = False,
    json_out: JsonOpt = False,
    store_dir: StoreOpt = None,
) -> None:
    """Remove artifacts that no run and no cache entry references (refuses while a run is in flight)."""
    from runner.doctor import collect_garbage, human_size

    store = _store(store_dir, create=False)
    try:
        done = collect_garbage(store, dry_run=dry_run)
    finally:
        store.close()
    if json_out:
        typer.echo(json.dumps(done.as_dict(), indent=2))
        return
    verb = "would remove" if dry_run else "removed"
    for digest in done.artifacts:
        typer.echo(f"  {verb} artifact {digest[:16]}")
    for path in done.files:
        typer.echo(f"  {verb} file {path}")
    typer.echo(
        f"{verb} {len(done.artifacts)} artifact(s) and {len(done.files)} file(s), {human_size(done.bytes)}"
    )


def _exit_now(code: int) -> None:
    """Exit once a command has closed its engine and store, without joining stray threads.

    A flow file may start non-daemon threads at import; a normal interpreter exit would wait for them
    for ever after the run is over.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> None:
    """Entry point: run the app; map user errors to one line on stderr and exit code 2."""
    try:
        app(standalone_mode=False)
    except ExitWith as done:
        _exit_now(done.code)
    except FlowError as exc:
        print(f"flow: error: {exc}", file=sys.stderr)
        _exit_now(exc.exit_code)
    except typer.Abort:
        print("flow: aborted", file=sys.stderr)
        _exit_now(1)
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
        _exit_now(1)
