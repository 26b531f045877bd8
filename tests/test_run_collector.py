"""`flow run` collects garbage rarely once it has started: a run keeps many of the objects it makes, and
with the interpreter's default thresholds the collector walked them dozens of times per 1,000 steps
(`runner.engine.heap.GC_THRESHOLD`)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from benchmarks.common import fanout_source
from tests.helpers_core import WATCH_COLLECTIONS

REPO = Path(__file__).resolve().parents[1]

SCRIPT = WATCH_COLLECTIONS + textwrap.dedent(
    """
    import json, sys

    import runner.cli.exits as exits
    import runner.engine
    from runner.cli import main

    real = runner.engine.freeze_heap

    def freezing():
        real()
        watching[0] = True  # from the engine's start to the end of the run

    runner.engine.freeze_heap = freezing
    leave = exits._exit_now

    def leaving(code):
        watching[0] = False
        print()
        print(json.dumps({"code": code, "collections": seen, "threshold": gc.get_threshold()}), flush=True)
        leave(code)

    exits._exit_now = leaving
    sys.argv = ["flow", "run", sys.argv[1], "--store", sys.argv[2]]
    main()
    """
)


def test_a_run_of_1000_steps_is_collected_a_few_times_not_dozens(tmp_path: Path) -> None:
    path = tmp_path / "wide.py"
    path.write_text(fanout_source(1000), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(path), str(tmp_path / "store")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == 0, done.stderr
    assert result["threshold"] == [20_000, 50, 1000]
    # With the defaults (700, 10, 10) this run was collected ~40 times, a few of them the middle
    # generation; now only the young generation, a handful of times.
    assert len(result["collections"]) <= 8, result["collections"]
    assert set(result["collections"]) <= {0}, result["collections"]
