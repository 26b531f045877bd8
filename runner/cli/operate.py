"""Provides the commands that operate flows over time: `flow serve` (the scheduler process),
`flow schedules` (when each flow is next due), `flow release` (freeze a flow as NAME@N) and
`flow releases` (list them). The work is done in `runner.operate`; these parse and print.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dsl.errors import FlowError
from runner.cli.common import ExitWith, note, open_store
from runner.cli.hosting import make_engine
from runner.cli.options import ExecutorOpt, FileArg, JsonOpt, StoreOpt, WorkersOpt
from runner.text import visible

if TYPE_CHECKING:
    from runner.store import Store


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
    from runner.operate.hooks import HookRunner
    from runner.operate.serve import Server, serve_in_terminal

    if not directory.is_dir():
        raise FlowError("not a directory; give the directory of the flows to serve", file=str(directory))
    store = open_store(store_dir)
    engine = make_engine(store, executor, workers)
    server = Server(directory, store, engine, releases=tuple(release or ()), say=note)
    hooks = HookRunner(engine, server.loaded_for, report=note)
    try:
        code = serve_in_terminal(server)
        hooks.drain()
    finally:
        engine.close()
        store.close()
    raise ExitWith(code)


def schedules(
    directory: Annotated[Path, typer.Argument(help="The directory of flow files.")] = Path("."),
    json_out: JsonOpt = False,
    store_dir: StoreOpt = None,
) -> None:
    """Each flow in DIR with its schedule and when it is next due under `flow serve`."""
    from runner.operate.serve import list_schedules

    if not directory.is_dir():
        raise FlowError("not a directory", file=str(directory))
    try:
        store: Store | None = open_store(store_dir, create=False)
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


def release(
    file: FileArg,
    name: Annotated[
        str | None, typer.Option("--name", help="The release's name (default: the flow's name).")
    ] = None,
    store_dir: StoreOpt = None,
) -> None:
    """Freeze the flow's code (with its local modules) and parameter defaults as NAME@N."""
    from dsl.loader import load_flow
    from runner.operate.releases import create_release
    from runner.operate.schedule import schedule_of

    loaded = load_flow(file)
    schedule_of(loaded)
    store = open_store(store_dir)
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


def releases(
    name: Annotated[str | None, typer.Argument(help="Only the versions of this release.")] = None,
    json_out: JsonOpt = False,
    store_dir: StoreOpt = None,
) -> None:
    """The releases in the store, newest version first."""
    store = open_store(store_dir, create=False)
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
