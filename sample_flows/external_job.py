"""An external job step: `train` starts a local "trainer" process (`_trainer.py`) that lives on its
own, the runner polls it (no worker is held between polls) and kills it on stop or timeout.

    flow run sample_flows/external_job.py -p epochs=5
    flow stop last            # from another shell: the trainer is killed, the run is cancelled

The handle (`{"pid": ..., "workdir": ...}`) is stored as soon as the trainer started: if the runner is
killed, `flow resume RUN` polls the same trainer again instead of starting a second one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from dsl import Flow, Job, job, step
from dsl.jobs import process_alive, spawn

TRAINER = Path(__file__).with_name("_trainer.py")


@step
def dataset(rows: int = 200):
    return [i % 10 for i in range(rows)]


@job(timeout=60, poll=0.2, max_poll=1.0, call_timeout=30)
class Train(Job):
    """Trains "elsewhere": a process started by `start`, asked about by `status`, ended by `kill`."""

    def start(self, dataset, epochs: int = 3, epoch_s: float = 0.2, fail_at: int = 0, ledger: str = ""):
        workdir = tempfile.mkdtemp(prefix="flow-trainer-")
        Path(workdir, "data.json").write_text(json.dumps(dataset))
        argv = [sys.executable, str(TRAINER), workdir, str(epochs), str(epoch_s), str(fail_at), ledger]
        pid = spawn(argv, log=str(Path(workdir, "trainer.log")))
        print(f"started the trainer: pid {pid}")
        return {"pid": pid, "workdir": workdir}

    def status(self, handle):
        alive = process_alive(handle["pid"])  # first: a trainer that ends now has written its status
        done = Path(handle["workdir"], "status")
        if done.exists():
            return done.read_text().strip()
        return "running" if alive else "failed"

    def kill(self, handle):
        try:
            os.killpg(handle["pid"], signal.SIGTERM)
        except ProcessLookupError:
            pass

    def result(self, handle):
        workdir = Path(handle["workdir"])
        print((workdir / "trainer.log").read_text().rstrip())
        model = json.loads((workdir / "model.json").read_text())
        shutil.rmtree(workdir, ignore_errors=True)
        return model


@step
def evaluate(train):
    return {"accuracy": train["accuracy"], "loss": train["loss"]}


flow = Flow(
    "external_job",
    description="Train in a process of its own, polled",
    outputs={"accuracy": (evaluate, "accuracy")},
)
