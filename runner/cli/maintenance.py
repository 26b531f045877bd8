"""Provides the store-maintenance commands: `flow doctor` (verify the store), `flow gc` (free old
results) and `flow pin` (keep a run's results through gc).

The policy itself (what gc keeps, what doctor checks) lives in `runner.store.gc` and
`runner.store.doctor`; these commands parse their options and print the outcome.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Annotated

import typer

from dsl.errors import FlowError
from runner.cli.common import ExitWith, cell, get_run, open_store
from runner.cli.options import JsonOpt, RunArg, StoreOpt

if TYPE_CHECKING:
    from runner.store import Diagnosis

DEFAULT_KEEP_LAST = 10
"""Runs per flow whose results `flow gc` keeps by default. A run that reused a result keeps it too, so
the last runs of a flow keep every step's current output, and what goes is what older code or
parameters produced."""

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """Seconds from "90", "45s", "30m", "12h", "7d" or "2w".

    Raises:
        FlowError: not a duration.
    """
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhdw]?)\s*", text)
    if not match:
        raise FlowError(f"--older-than must be a duration like 12h, 7d or 2w, got {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def parse_max_size(text: str) -> int:
    """Bytes from "500MB", "2GiB", "1e9".

    Raises:
        FlowError: not a size.
    """
    from runner.executors.limits import parse_size

    try:
        return parse_size(text)
    except ValueError:
        raise FlowError(f"--max-size must be a size like 500MB or 2GiB, got {text!r}") from None


def gc(
    keep_last: Annotated[
        int,
        typer.Option("--keep-last", help="Keep the results of each flow's last N runs.", min=0),
    ] = DEFAULT_KEEP_LAST,
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            help="Only free results of runs that ended longer ago than this (e.g. 12h, 7d, 2w).",
            show_default=False,
        ),
    ] = None,
    max_size: Annotated[
        str | None,
        typer.Option(
            "--max-size",
            help="Then free the oldest runs' results until the kept artifacts fit (e.g. 5GB); "
            "a flow's last run, pinned runs and runs in progress always stay.",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only print what would be freed.")] = False,
    json_out: JsonOpt = False,
    store_dir: StoreOpt = None,
) -> None:
    """Free the results no kept run uses: the cache entries and artifacts of older runs.

    Kept: the results of each flow's last --keep-last runs, of pinned runs (flow pin) and of runs in
    progress. A freed step is simply computed again by the next run that needs it; the runs stay in
    the history. Also removes artifact files no row knows (left by a killed run). Refuses while a run
    is in flight.
    """
    from runner.store import Policy, collect_garbage, human_size

    policy = Policy(
        keep_last=keep_last,
        older_than_s=parse_duration(older_than) if older_than is not None else None,
        max_size=parse_max_size(max_size) if max_size is not None else None,
    )
    store = open_store(store_dir, create=False)
    try:
        done = collect_garbage(store, policy, dry_run=dry_run)
    finally:
        store.close()
    if json_out:
        typer.echo(json.dumps(done.as_dict(), indent=2))
        return
    verb = "would free" if dry_run else "freed"
    if done.runs:
        shown = " ".join(f"#{r}" for r in done.runs[:20]) + (" …" if len(done.runs) > 20 else "")
        typer.echo(f"  {verb} the results of {len(done.runs)} run(s): {shown}")
    for path in done.files:
        typer.echo(f"  {'would remove' if dry_run else 'removed'} file {path}")
    typer.echo(
        f"{verb} {human_size(done.bytes)}: {len(done.artifacts)} artifact(s), {done.cache_entries} cache "
        f"entr{'y' if done.cache_entries == 1 else 'ies'}, {len(done.files)} file(s); kept the results of "
        f"{done.kept_runs} run(s), {human_size(done.kept_bytes)}"
    )
    if done.over_max_size:
        typer.echo(
            "note: still over --max-size: what is left belongs to pinned runs, runs in progress or each "
            "flow's last run",
            err=True,
        )


def pin(
    run_id: RunArg,
    remove: Annotated[bool, typer.Option("--remove", help="Unpin: gc may free its results again.")] = False,
    store_dir: StoreOpt = None,
) -> None:
    """Keep a run's results through `flow gc`, however old (--remove to unpin)."""
    store = open_store(store_dir, create=False)
    try:
        record = get_run(store, run_id)
        store.pin_run(record.id, not remove)
    finally:
        store.close()
    typer.echo(f"{'unpinned' if remove else 'pinned'} run #{record.id}")


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
    from runner.store import Store, diagnose

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
        for line in _report_lines(report, store.found):
            typer.echo(line)
    raise ExitWith(0 if report.healthy else 1)


def _report_lines(report: Diagnosis, found: str) -> list[str]:
    """`flow doctor` as text: the verdict, what was checked, each problem and note, what gc would free."""
    from runner.store import human_size

    verdict = "healthy" if report.healthy else f"{len(report.problems)} problem(s)"
    lines = [
        f"store {cell(report.store)}: {verdict}",
        f"  which: {found}",
        f"  integrity: {', '.join(report.integrity[:3])}; {report.checked_artifacts} artifacts and "
        f"{report.checked_steps} finished steps checked",
    ]
    lines += [f"  problem: {problem}" for problem in report.problems]
    lines += [f"  note: {note}" for note in report.notes]
    if report.orphan_bytes or report.unreferenced_bytes:
        lines.append(
            f"  reclaimable: {human_size(report.orphan_bytes + report.unreferenced_bytes)} (flow gc)"
        )
    return lines
