"""Provides the commands that explain before and compare after: `flow plan` (what a run would do,
and why, nothing executed), `flow diff` (two runs of a flow side by side) and `flow debug` (a step of
a past run re-executed under pdb). Their logic lives in `runner.review`; these render it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from runner.cli.common import ExitWith, cell, get_run, open_store
from runner.cli.options import FileArg, JsonOpt, ParamOpt, ParamsFileOpt, RunArg, StepsOpt, StoreOpt

if TYPE_CHECKING:
    from runner.review.plan import Plan, PlannedStep
    from runner.review.sources import CodeChange
    from runner.store import Store


ACTION_SYMBOLS = {"run": "▶", "cached": "≡", "skipped": "⊘", "waiting": "◐", "unknown": "?"}
"""One symbol per planned action (`cached`, `skipped` as `flow show` marks those statuses)."""


def existing_store(path: Path | None) -> Store | None:
    """The store a run would use, opened as it is (nothing marked, nothing created); None if there is
    none yet (then nothing is cached)."""
    from runner.store import Store
    from runner.store.discovery import find_store

    root, _ = find_store(path)
    if not root.exists():
        return None
    return Store(root, create=False)


def plan(
    file: FileArg,
    param: ParamOpt = None,
    params_file: ParamsFileOpt = None,
    only: Annotated[StepsOpt, typer.Option("--only", help="Plan only this step (repeatable).")] = None,
    from_step: Annotated[
        StepsOpt, typer.Option("--from", help="This step and everything downstream of it.")
    ] = None,
    to_step: Annotated[
        StepsOpt, typer.Option("--to", help="This step and everything upstream of it.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="As flow run --force would.")] = False,
    diff: Annotated[
        bool, typer.Option("--diff", help="Show the code diff under each step whose code or helpers changed.")
    ] = False,
    json_out: JsonOpt = False,
    exit_code: Annotated[
        bool,
        typer.Option("--exit-code", help="Exit 1 when any step would run (results not current), else 0."),
    ] = False,
    store_dir: StoreOpt = None,
) -> None:
    """What `flow run` with the same arguments would do with each step, and why; nothing runs and
    nothing is recorded."""
    from runner.operate.releases import open_target
    from runner.params import parse_assignments, read_params_file, resolve_flow_params
    from runner.review.plan import make_plan

    overrides = parse_assignments(param or [])
    file_values = read_params_file(params_file) if params_file else {}
    loaded, overrides, store = open_target(str(file), overrides, lambda: open_store(store_dir, create=False))
    params = resolve_flow_params(loaded, overrides, file_values)
    store = store or existing_store(store_dir)
    made = make_plan(
        store,
        loaded,
        params,
        only=tuple(only or ()),
        from_steps=tuple(from_step or ()),
        to_steps=tuple(to_step or ()),
        force=force,
    )
    changes = plan_changes(store, made) if diff else {}
    if json_out:
        steps = []
        for s in made.steps:
            data = s.as_dict()
            if diff:
                data["diff"] = [c.as_dict() for c in changes.get(s.step, [])]
            steps.append(data)
        summary = {"flow": made.flow, "file": made.file, "params": made.params, "steps": steps}
        typer.echo(json.dumps(summary, indent=2, default=repr))
    else:
        for line in plan_lines(made, changes):
            typer.echo(line)
    if exit_code and made.would_run:
        raise ExitWith(1)


def plan_changes(store: Store | None, made: Plan) -> dict[str, list[CodeChange]]:
    """Per step whose code or helpers changed since its previous result, the diffs."""
    from runner.review.sources import code_changes

    texts: dict[str, str] = {}
    for static in made.static.values():
        texts.update(static.texts)
    found: dict[str, list[CodeChange]] = {}
    for s in made.steps:
        if s.previous is None or s.current is None or s.action == "cached":
            continue
        changes = code_changes(
            s.previous,
            s.current,
            texts,
            store.source_texts if store is not None else lambda _: {},
            old_name="last result",
            new_name="now",
        )
        if changes:
            found[s.step] = changes
    return found


def plan_lines(made: Plan, changes: dict[str, list[CodeChange]]) -> list[str]:
    """`flow plan` as text: one line per step, the diffs under it, then a count."""
    from runner.review.render import change_lines

    width = max((len(cell(s.step)) for s in made.steps), default=4)
    lines = [f"plan for {cell(made.flow)} ({cell(made.file)}): a dry run, nothing is executed or recorded"]
    for s in made.steps:
        lines.append(_plan_line(s, width))
        lines += [line for c in changes.get(s.step, []) for line in change_lines(c, indent="      ")]
    counts: dict[str, int] = {}
    for s in made.steps:
        counts[s.action] = counts.get(s.action, 0) + 1
    order = ("run", "cached", "skipped", "waiting", "unknown")
    lines.append(", ".join(f"{counts[a]} {_counted(a)}" for a in order if a in counts))
    return lines


def _counted(action: str) -> str:
    return {"run": "would run", "unknown": "unknown until run"}.get(action, action)


def _plan_line(s: PlannedStep, width: int) -> str:
    symbol = ACTION_SYMBOLS.get(s.action, "?")
    where = "" if s.selected else "  (upstream of the selection)"
    condition = f"; {s.condition}" if s.condition else ""
    return f"  {symbol} {cell(s.step):<{width}}  {s.action:<8} {cell(s.reason + condition)}{where}"


def diff(
    run_a: Annotated[str, typer.Argument(metavar="RUN_A", help="A run id, or 'last'.")],
    run_b: Annotated[str, typer.Argument(metavar="RUN_B", help="A run id, or 'last'.")],
    json_out: JsonOpt = False,
    store_dir: StoreOpt = None,
) -> None:
    """Compare two runs of a flow: parameters, metrics (with deltas), the steps that changed with
    their code diffs, and whether their outputs are equal."""
    from runner.review.compare import compare_runs
    from runner.review.render import comparison_lines

    store = open_store(store_dir, create=False)
    compared = compare_runs(store, get_run(store, run_a), get_run(store, run_b))
    if json_out:
        typer.echo(json.dumps(compared.as_dict(), indent=2, default=repr))
        return
    for line in comparison_lines(compared):
        typer.echo(line)


def debug(
    run_id: RunArg,
    step_name: Annotated[str, typer.Argument(metavar="STEP", help="The step to re-execute.")],
    break_first: Annotated[
        bool,
        typer.Option("--break", help="Stop at the step's first line (default: post-mortem if it fails)."),
    ] = False,
    store_dir: StoreOpt = None,
) -> None:
    """Re-execute STEP of RUN in the foreground, under pdb, with the inputs it received in RUN and the
    code RUN ran: post-mortem at the failing line, or --break at its first line. Nothing is recorded."""
    from runner.cli.common import note
    from runner.review.debug import debug_step, prepare_debug

    store = open_store(store_dir, create=False)
    prepared = prepare_debug(store, get_run(store, run_id), step_name)
    try:
        code = debug_step(prepared, break_first=break_first, say=note)
    finally:
        prepared.close()
    raise ExitWith(code)
