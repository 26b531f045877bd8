"""The "trainer" of the external job sample (`external_job.py`): a local process that lives on its own.

    python _trainer.py WORKDIR EPOCHS EPOCH_SECONDS FAIL_AT [LEDGER]

It reads WORKDIR/data.json, "trains" for EPOCHS epochs of EPOCH_SECONDS each (printing one line per
epoch to its log), then writes WORKDIR/model.json and WORKDIR/status (`succeeded`), or `failed` at epoch
FAIL_AT (0: never). Each start appends its pid to LEDGER, if given: the tests count starts with it.
Not a flow (its name starts with `_`): the job's `start` spawns it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def _write(path: Path, text: str) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text(text)
    os.replace(partial, path)  # the job's status() never reads half a file


def main(argv: list[str]) -> int:
    workdir, epochs, epoch_s, fail_at = Path(argv[1]), int(argv[2]), float(argv[3]), int(argv[4])
    if len(argv) > 5 and argv[5]:
        with open(argv[5], "a") as ledger:
            ledger.write(f"{os.getpid()}\n")
    data = json.loads((workdir / "data.json").read_text())
    loss = 1.0
    for epoch in range(1, epochs + 1):
        time.sleep(epoch_s)
        loss /= 2
        print(f"epoch {epoch}/{epochs}: loss {loss:.4f}", flush=True)
        if epoch == fail_at:
            _write(workdir / "status", "failed")
            return 1
    _write(
        workdir / "model.json", json.dumps({"rows": len(data), "loss": loss, "accuracy": round(1 - loss, 4)})
    )
    _write(workdir / "status", "succeeded")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
