"""Provides the store-maintenance commands `flow gc` and `flow pin` (registered by `runner.cli`).

Kept apart from `runner.cli` so the command line's main module stays a thin list of commands; the
policy itself (what gc keeps) lives in `runner.doctor.collect_garbage`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated

import typer

from dsl.errors import FlowError

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
    from runner.worker import parse_size

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
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
    store_dir: Annotated[
        Path | None,
        typer.Option(
            "--store", help="The run store directory (default: $FLOW_STORE or ./.flow).", show_default=False
        ),
    ] = None,
) -> None:
    """Free the results no kept run uses: the cache entries and artifacts of older runs.

    Kept: the results of each flow's last --keep-last runs, of pinned runs (flow pin) and of runs in
    progress. A freed step is simply computed again by the next run that needs it; the runs stay in
    the history. Also removes artifact files no row knows (left by a killed run). Refuses while a run
    is in flight.
    """
    from runner.cli import _store
    from runner.doctor import Policy, collect_garbage, human_size

    policy = Policy(
        keep_last=keep_last,
        older_than_s=parse_duration(older_than) if older_than is not None else None,
        max_size=parse_max_size(max_size) if max_size is not None else None,
    )
    store = _store(store_dir, create=False)
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
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="A run id, or 'last'.")],
    remove: Annotated[bool, typer.Option("--remove", help="Unpin: gc may free its results again.")] = False,
    store_dir: Annotated[
        Path | None,
        typer.Option(
            "--store", help="The run store directory (default: $FLOW_STORE or ./.flow).", show_default=False
        ),
    ] = None,
) -> None:
    """Keep a run's results through `flow gc`, however old (--remove to unpin)."""
    from runner.cli import _get_run, _store

    store = _store(store_dir, create=False)
    try:
        record = _get_run(store, run_id)
        store.pin_run(record.id, not remove)
    finally:
        store.close()
    typer.echo(f"{'unpinned' if remove else 'pinned'} run #{record.id}")
