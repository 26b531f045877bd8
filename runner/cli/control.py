"""Provides `flow stop RUN`: stop a run in progress from another shell, whichever process runs it.

The request is a row in the store (`runner.store.control`); the process that owns the run (`flow run`,
a loop, `flow serve`, the TUI) picks it up within `runner.engine.stops.POLL_S` and stops the run as its
own Ctrl-C or stop key would: running steps killed, external jobs killed, finished results kept, the
run recorded `cancelled`. This command waits until the run is recorded so, then exits 0. A loop whose
iteration is stopped ends; `flow serve` carries on with the next due time.

Exit codes: 0 stopped; 2 no such run, a run that is not running, or one whose process is gone (it is
marked interrupted then, as any command opening the store would); 1 the owner did not stop it within
`--timeout`.
"""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING, Annotated

import typer

from dsl.errors import FlowError
from runner.cli.common import ExitWith, get_run, note, open_store
from runner.cli.options import RunArg, StoreOpt

if TYPE_CHECKING:
    from runner.store import Store

WAIT_POLL_S = 0.05
"""How often `flow stop` reads the run's status while it waits for the owner to stop it."""


def stop(
    run: RunArg,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for the run to stop (0: do not wait).")
    ] = 30.0,
    store_dir: StoreOpt = None,
) -> None:
    """Stop a run in progress (a `flow run`, a loop's, a served one, the TUI's) from another shell."""
    store = open_store(store_dir, create=False)
    try:
        record = get_run(store, run)
        if record.status != "running":
            raise FlowError(f"run #{record.id} is not running (it {_ended(record.status)})")
        verdict = store.run_verdict(record.id)
        if verdict is not None and not verdict.alive:
            store.mark_interrupted()
            raise FlowError(f"run #{record.id}'s runner is gone ({verdict.why}); marked interrupted")
        store.request_stop(record.id, f"flow stop (pid {os.getpid()} on {socket.gethostname()})")
        if timeout <= 0:
            note(f"asked the runner of run #{record.id} to stop it")
            return
        deadline = time.monotonic() + timeout
        while True:
            status = _status(store, record.id)
            if status != "running":
                typer.echo(f"run #{record.id} ({record.flow}) stopped: {status}")
                return
            if time.monotonic() >= deadline:
                note(f"run #{record.id} is still running after {timeout:g}s; its runner did not stop it")
                raise ExitWith(1)
            time.sleep(WAIT_POLL_S)
    finally:
        store.close()


def _status(store: Store, run_id: int) -> str:
    found = store.get_run(run_id)
    return found.status if found is not None else "deleted"


def _ended(status: str) -> str:
    return "was interrupted" if status == "interrupted" else f"ended {status}"
