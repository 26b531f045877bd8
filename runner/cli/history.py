"""Provides the commands that read the run history: `flow runs`, `flow show`, `flow logs`, and
`flow delete`, which removes a run from it.

They only read the store (delete aside) and print: each renders records the store returns, every
user- or step-supplied string passed through `runner.text.visible`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dsl.errors import FlowError
from runner.cli.common import cell, get_run, note, open_store
from runner.cli.options import JsonOpt, RunArg, StoreOpt
from runner.status import SYMBOLS, StepStatus
from runner.text import visible

if TYPE_CHECKING:
    from runner.records import RunRecord, StepRecord
    from runner.store import Store

FOLLOW_POLL_S = 0.2
"""How often `flow logs --follow` looks for new lines while the run is going."""


def runs(
    file: Annotated[str | None, typer.Argument(help="Only runs of this flow (file or flow name).")] = None,
    limit: Annotated[int, typer.Option("--limit", help="How many runs, newest first.")] = 20,
    json_out: JsonOpt = False,
    store_dir: StoreOpt = None,
) -> None:
    """The run history, newest first."""
    store = open_store(store_dir, create=False)
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
        params = cell(" ".join(f"{k}={v}" for k, v in r.params.items()))
        typer.echo(
            f"{r.id:>5}  {cell(r.flow)[:18]:<18} {r.status:<11} {started:<19} {took:>7}  "
            f"{cell(r.trigger)[:16]:<16} {params}"
        )
    from runner.store import held_lines

    for line, stuck in held_lines(store.held()):
        if stuck:
            typer.echo(f"note: {line}")


def in_order(steps: Sequence[StepRecord]) -> list[StepRecord]:
    """Steps as stored (graph order of their first record), fan-out instances by index, not by the
    order they happened to finish in."""
    first: dict[str, int] = {}
    for position, s in enumerate(steps):
        first.setdefault(s.parent or s.name, position)

    def key(s: StepRecord) -> tuple[int, int, int]:
        index = s.name[len(s.parent) + 1 : -1] if s.parent and s.name.endswith("]") else ""
        return (first[s.parent or s.name], 1 if s.parent else 0, int(index) if index.isdigit() else -1)

    return sorted(steps, key=key)


def show(
    run_id: RunArg,
    step_name: Annotated[
        str | None, typer.Argument(metavar="[STEP]", help="With --output: the step whose output to show.")
    ] = None,
    output: Annotated[
        bool, typer.Option("--output", help="Print STEP's output (the object it returned).")
    ] = False,
    to_file: Annotated[
        Path | None,
        typer.Option("--to", help="With --output: write it to this file instead.", show_default=False),
    ] = None,
    json_out: JsonOpt = False,
    store_dir: StoreOpt = None,
) -> None:
    """One run: its parameters, and each step's status, attempts, duration and why it ran; or, with
    STEP --output, that step's output."""
    if step_name is not None or output or to_file is not None:
        if step_name is None or not output:
            raise FlowError("flow show RUN STEP --output [--to FILE]: give both a STEP and --output")
        from runner.cli.outputs import show_output

        show_output(open_store(store_dir, create=False), run_id, step_name, to_file)
        return
    store = open_store(store_dir, create=False)
    record = get_run(store, run_id)
    release = store.run_release(record.id)
    record = dataclasses.replace(record, steps=tuple(in_order(record.steps)))
    declared = store.declared_inputs(record.id)
    if json_out:
        data = record.as_dict()
        for step in data["steps"]:
            step["declared"] = declared.get(step["name"], [])
        typer.echo(json.dumps({**data, "release": release}, indent=2, default=repr))
        return
    for line in _run_lines(record, release, declared):
        typer.echo(line)


def _run_lines(record: RunRecord, release: str | None, declared: dict[str, list[str]]) -> list[str]:
    """`flow show RUN` as text: the run's header, one line per step, then the run's metrics and outputs."""
    from runner.fingerprint.declared import describe_declared

    took = f"{record.duration_s:.2f}s" if record.duration_s is not None else "-"
    trigger = cell(record.trigger or "cli")
    lines = [f"run #{record.id} of {cell(record.flow)}: {record.status} in {took} ({trigger})"]
    lines.append(f"  file: {cell(record.file)}")
    if release is not None:
        lines.append(f"  release: {cell(release)}")
    if record.params:
        lines.append("  params: " + cell(", ".join(f"{k}={v!r}" for k, v in record.params.items())))
    width = max((len(cell(s.name)) for s in record.steps), default=4)
    for s in record.steps:
        lines.append(_step_line(s, width))
        if s.name in declared:
            inputs = cell(describe_declared(declared[s.name]))
            lines.append(f"    {'':<{width}}  declared inputs: {inputs}")
        if s.status == StepStatus.FAILED and s.traceback:
            lines += [f"      {visible(t)}" for t in s.traceback.rstrip().splitlines()]
    if record.metrics:
        lines.append("  metrics: " + cell(", ".join(f"{k}={v:g}" for k, v in record.metrics.items())))
    lines += [f"  output {name} = {cell(output.preview)}" for name, output in record.outputs.items()]
    return lines


def _step_line(s: StepRecord, width: int) -> str:
    """`  ✓ train  succeeded   1.20s  parameter changed: lr  [loss=0.25]`"""
    succeeded = s.status == StepStatus.SUCCEEDED
    duration = f"{s.duration_s:.2f}s" if s.duration_s is not None and succeeded else ""
    attempts = f" ×{s.attempts}" if s.attempts > 1 else ""
    why = cell(s.error if s.status == StepStatus.FAILED and s.error else s.reason)
    metrics = cell(" ".join(f"{k}={v:g}" for k, v in s.metrics.items()))
    symbol = SYMBOLS.get(s.status, "?")
    return f"  {symbol} {cell(s.name):<{width}}  {s.status:<9} {duration:>7}{attempts}  {why}" + (
        f"  [{metrics}]" if metrics else ""
    )


def logs(
    run_id: RunArg,
    step_name: Annotated[str | None, typer.Argument(metavar="STEP", help="Only this step's lines.")] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines until the run ends.")
    ] = False,
    store_dir: StoreOpt = None,
) -> None:
    """The captured stdout, stderr and logging of a run (or one step)."""
    store = open_store(store_dir, create=False)
    record = get_run(store, run_id)
    source_run, source_step = _log_source(store, record, step_name)
    shown = _print_logs(store, source_run, source_step, labelled=not step_name, follow=follow)
    shown += _print_tracebacks(store.get_run(source_run) or record, source_step, labelled=not step_name)
    if not shown:
        what = f"step '{cell(step_name)}'" if step_name else "any step"
        note(f"no output was captured for {what} in run #{source_run}")


def _log_source(store: Store, record: RunRecord, step_name: str | None) -> tuple[int, str | None]:
    """The run and step whose lines to show: a cached step's are those of the run that computed it.

    Raises:
        FlowError: the run has no such step.
    """
    if step_name is None:
        return record.id, None
    found = next((s for s in record.steps if s.name == step_name), None)
    if found is None:
        raise FlowError(f"run #{record.id} has no step '{cell(step_name)}'")
    computed = store.computed_by(found.fingerprint, record.id) if found.status == StepStatus.CACHED else None
    if computed is None:
        return record.id, step_name
    source_run, source_step = computed
    note(
        f"{cell(step_name)} was cached in run #{record.id}: "
        f"its output and these lines are from run #{source_run} ({cell(source_step)})"
    )
    return source_run, source_step


def _print_logs(store: Store, run: int, step: str | None, *, labelled: bool, follow: bool) -> int:
    """Print the run's (or step's) captured lines, with `--follow` until the run ends; return how many."""
    last = 0
    shown = 0
    while True:
        lines = store.get_logs(run, step, after=last, limit=10_000)
        for line in lines:
            stamp = time.strftime("%H:%M:%S", time.localtime(line.ts))
            prefix = f"{cell(line.step)} | " if labelled else ""
            typer.echo(f"{stamp} {prefix}{visible(line.line)}")
            last = line.id
        shown += len(lines)
        if lines:
            continue
        current = store.get_run(run)
        if not follow or current is None or current.status != "running":
            return shown
        time.sleep(FOLLOW_POLL_S)


def _print_tracebacks(record: RunRecord, step: str | None, *, labelled: bool) -> int:
    """Print the tracebacks of the run's failed steps (or of `step`) as log lines; return how many."""
    shown = 0
    for s in in_order(record.steps):
        if s.status == StepStatus.FAILED and s.traceback and step in (None, s.name):
            stamp = time.strftime("%H:%M:%S", time.localtime(s.finished_at or record.started_at))
            prefix = f"{cell(s.name)} | " if labelled else ""
            for text in s.traceback.rstrip().splitlines():
                typer.echo(f"{stamp} {prefix}{visible(text)}")
                shown += 1
    return shown


def delete(run_id: RunArg, store_dir: StoreOpt = None) -> None:
    """Remove a run from the history: its steps, logs and metrics.

    The outputs it computed stay in the cache while a kept run uses them; `flow gc` frees the others
    (it keeps the results of each flow's last runs and of pinned runs).
    """
    store = open_store(store_dir, create=False)
    record = get_run(store, run_id)
    verdict = store.run_verdict(record.id)  # a run whose process is gone was marked interrupted on open
    if verdict is not None:
        raise FlowError(
            f"run #{record.id} is still running ({verdict.why}); stop it first"
            + ("" if verdict.proven else " (if that process is gone: flow doctor --clear-stuck)")
        )
    store.delete_run(record.id)
    typer.echo(f"deleted run #{record.id}")
