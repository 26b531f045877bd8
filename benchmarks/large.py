"""A large output in the edit loop -> the step reading it starts: `python -m benchmarks.large`.

Info (issue 21 names no budget for it): the edit loop of a data flow. `make` returns `--size` MB
(default 200: a mid-sized DataFrame's pickle), a file artifact; `use(make)` prints
`started <time>` first. A real `FlowSession.watch()` follows the file (a spare worker kept, as the TUI
and `flow run --watch` do); after the cold run, each save edits `use`, so `make` comes from the cache
and `use` runs with its 200 MB input. Measured from the save (`os.replace` returned) to `use`'s first
statement, in its worker. What that cannot avoid is unpickling the input, timed here alone on the same
file; a hash of the file (SHA-256, what each read of it cost before `runner.artifacts`' stamps: the
runner checked the cache hit, then the worker its input) is timed too, for comparison.

Also counted (with `FLOW_TEST_TRACE`, `runner.testing.trace`): the files hashed whole during the saves,
by the runner and its workers; and, for information, a new `flow run` process after one more edit of
`use`: its time and the files it hashed (0: the store keeps the stamp the writing worker saw).

Budget (this benchmark's own): p50 <= 1 ms per MB of the input (200 ms at the default size). Unpickling
200 MB takes ~100-140 ms here and a save's reload ~15 ms; each hash of the input on the way, as before
the stamps (the runner's check of the cache hit, the worker's of its input), adds ~115 ms: 330-370 ms.

Last line: `large: <p50> ms (budget <size in MB>) PASS|FAIL`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import conclude, machine, median, options, tempdir
from benchmarks.reload import save_atomic, watched

BUDGET_MS_PER_MB = 1.0
PAUSE_S = 0.3
"""Between a run's end and the next save: a user's pause (and time for a spare to be ready)."""
RUN_TIMEOUT_S = 60.0

FLOW = '''"""A step with a large output, and a step reading it."""

import time

from dsl import step


@step
def make():
    return b"\\x00" * {size}


@step
def use(make):
    print(f"started {{time.time()}}", flush=True)
    edit = {edit}
    return len(make) + edit
'''


def measure(project: Path, saves: int, size: int) -> tuple[list[float], float, Path]:
    """(seconds from each save to `use`'s first statement, the cold run's seconds, the artifact)."""
    from runner.events import RunFinished

    path = project / "large_output.py"
    path.write_text(FLOW.format(size=size, edit=0), encoding="utf-8")
    store_dir = project / "store"
    latencies: list[float] = []
    with watched(path, store_dir, spare=True) as session:
        rec = session.rec

        def finished(mark: int) -> RunFinished | None:
            return next((e for _, e in rec.events[mark:] if isinstance(e, RunFinished)), None)

        mark = rec.mark()
        began = time.perf_counter()
        session.session.run(trigger="benchmark")
        if not rec.wait_for(lambda: finished(mark) is not None, RUN_TIMEOUT_S):
            raise SystemExit("the cold run did not finish")
        cold = time.perf_counter() - began
        session.watch()
        for edit in range(1, saves + 1):
            time.sleep(PAUSE_S)
            mark = rec.mark()
            saved = save_atomic(path, FLOW.format(size=size, edit=edit))
            if not rec.wait_for(lambda mark=mark: finished(mark) is not None, RUN_TIMEOUT_S):
                raise SystemExit(f"save {edit}: the re-run did not finish")
            done, started = finished(mark), session.body_started(mark)
            assert done is not None
            if done.status != "succeeded" or started is None:
                raise SystemExit(f"save {edit}: the re-run {done.status} without running `use`")
            latencies.append(started - saved)
    files = [p for p in (store_dir / "artifacts").rglob("*") if p.is_file()]
    artifact = max(files, key=lambda p: p.stat().st_size)
    return latencies, cold, artifact


REFERENCE = """
import hashlib, pickle, statistics, sys, time
samples = []
for _ in range(3):
    began = time.perf_counter()
    with open(sys.argv[2], "rb") as handle:
        if sys.argv[1] == "hash":
            hashlib.file_digest(handle, "sha256")
        else:
            pickle.load(handle)
    samples.append(time.perf_counter() - began)
print(statistics.median(samples))
"""


def timed(what: str, artifact: Path) -> float:
    """Median seconds of 3 of hashing the file (`hash`) or unpickling it (`load`), in a process of its
    own as a worker reads it (in this one, with the engine's heap, unpickling took 20-30% longer)."""
    done = subprocess.run(
        [sys.executable, "-c", REFERENCE, what, str(artifact)], capture_output=True, text=True, check=True
    )
    return float(done.stdout)


def fresh_run(project: Path, size: int, edit: int, trace: Path) -> tuple[float, int]:
    """A new `flow run` process after one more edit of `use` (`make` cached): (seconds, files hashed)."""
    path = project / "large_output.py"
    path.write_text(FLOW.format(size=size, edit=edit), encoding="utf-8")
    env = {**os.environ, "FLOW_TEST_TRACE": str(trace)}
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "runner", "run", str(path), "--store", str(project / "store")],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"flow run exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    lines = trace.read_text(encoding="utf-8").splitlines() if trace.exists() else []
    return seconds, sum(1 for line in lines if line.split()[1] == "hash-file")


def main() -> None:
    opts = options(size=200, saves=8)
    size = opts.size * 1_000_000
    print(
        f"a {opts.size} MB output in the edit loop: save -> the step reading it starts, {opts.saves} saves "
        f"({machine()})"
    )
    with tempdir() as root:
        trace = root / "trace"
        os.environ["FLOW_TEST_TRACE"] = str(trace)
        project = root / "project"
        project.mkdir()
        latencies, cold, artifact = measure(project, opts.saves, size)
        del os.environ["FLOW_TEST_TRACE"]
        lines = trace.read_text(encoding="utf-8").splitlines() if trace.exists() else []
        hashed = sum(1 for line in lines if line.split()[1] == "hash-file")
        load_s, hash_s = timed("load", artifact), timed("hash", artifact)
        fresh_s, fresh_hashed = fresh_run(project, size, opts.saves + 1, root / "trace-fresh")
    p50 = median(latencies) * 1000
    budget = BUDGET_MS_PER_MB * opts.size
    each = " ".join(f"{s * 1000:.0f}" for s in latencies)
    print(f"  cold run (make, then use)             {cold:7.3f} s")
    print(f"  save -> use starts                    p50 {p50:7.1f} ms  (all {each})")
    print(f"  unpickling the input alone (info)     {load_s * 1000:7.1f} ms")
    print(f"  hashing it once (info)                {hash_s * 1000:7.1f} ms")
    print(f"  files hashed whole, cold run and saves: {hashed} (the writer hashes as it writes)")
    print(f"  a new `flow run` after an edit (info)  {fresh_s:7.3f} s, files hashed whole: {fresh_hashed}")
    conclude("large", p50, "ms", budget, p50 <= budget, digits=1)


if __name__ == "__main__":
    main()
