"""Cold-run overhead per step: `python -m benchmarks.cold`.

Issue 21's budget (issue 2's was 1.0): with the default process executor and a fresh store, the engine's
wall time on a 1,000-step chain and on a 1,000-wide fan-out (1 -> 1000 -> 1, as 1000 separate steps) is
at most 0.15 ms per step above a plain-Python baseline calling the same functions in order, in the same
process. Timed is `engine.run(RunRequest(loaded, params))`, which includes computing the flow's static
fingerprints, planning, shipping code to workers, executing and persisting every output.

Two figures per shape:
  * warm workers: the engine first ran a tiny warm-up flow (one step per worker slot), so worker
    processes are already up — the steady state of `flow run --watch` and the TUI;
  * incl. start-up: a brand-new engine whose first task starts the worker processes.
The verdict uses the warm-worker figure of the worse of chain and fan-out; the start-up figure is
printed next to it. Each figure is the median of 5 rounds, each on a fresh store. The first round of
a shape is the one in this process that fingerprints the flow's functions for the first time (30-40
ms for 1,000 of them; ~1 ms once their code is known, as in a `--watch` session): with 3 rounds the
median was the slower of the other two, and one round slowed by the machine set the verdict. A
foreach variant (1 -> foreach over N -> 1) is printed as extra information.

For scale, it first times this machine's floor for a chain: a bare round trip between two Python
processes through a pair of pipes (a task-sized message there, a result-sized one back, nothing
done on either side), as a step of a chain made one before its next steps were chained to it
(`runner.engine.chaining`). On a virtual machine waking a process on an idle
CPU costs far more than on bare metal, and the figure says how much of the budget that takes; beside it,
the same round trip with both sides polling instead of sleeping, as the runner and a worker do for a
moment after each task while a core is free (`runner.executors.wire`).

Last line: `cold: <ms> ms/step (budget 0.15) PASS|FAIL`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

from benchmarks import common
from benchmarks.common import (
    SHAPES,
    baseline_seconds,
    conclude,
    load,
    machine,
    median,
    new_engine,
    options,
    tempdir,
    timed_run,
    warm_up,
    write_flow,
)

BUDGET_MS = 0.15


def measure(shape_name: str, n: int, repeat: int) -> dict[str, Any]:
    shape = SHAPES[shape_name]
    steps = shape.steps(n)
    warm, startup, cached, cpu_parent, cpu_workers = [], [], [], [], []
    with tempdir() as root:
        path = write_flow(root / "project", shape_name, shape.source(n))
        loaded = load(path)
        base = baseline_seconds(loaded, shape, n)
        for rep in range(repeat):
            bench = new_engine(root / f"store-warm-{rep}")
            try:
                warm_up(bench, root / f"warm-{rep}")
                seconds, status, executed = timed_run(bench, loaded)
                check(shape_name, "cold (warm workers)", status, executed, steps)
                warm.append(seconds)
                cpu_parent.append(common.last_cpu.parent)
                cpu_workers.append(common.last_cpu.workers)
                seconds, status, executed = timed_run(bench, loaded)
                check(shape_name, "cached (same engine)", status, executed, 0)
                cached.append(seconds)
            finally:
                bench.close()
            bench = new_engine(root / f"store-start-{rep}")
            try:
                seconds, status, executed = timed_run(bench, loaded)
                check(shape_name, "cold (incl. start-up)", status, executed, steps)
                startup.append(seconds)
            finally:
                bench.close()
    return {
        "steps": steps,
        "baseline": base,
        "warm": median(warm),
        "startup": median(startup),
        "cached": median(cached),
        "cpu_parent": median(cpu_parent),
        "cpu_workers": median(cpu_workers),
        "warm_all": warm,
        "startup_all": startup,
    }


ECHO = """
import os, sys
polling = sys.argv[1] == "poll"
os.set_blocking(0, not polling)
while True:
    try:
        data = os.read(0, 65536)
    except BlockingIOError:
        continue
    if not data:
        break
    os.write(1, data[:300])
"""


def _read(fd: int) -> bytes:
    while True:
        try:
            return os.read(fd, 65536)
        except BlockingIOError:
            continue


def round_trip_ms(trips: int = 2000, *, polling: bool = False) -> float:
    """Milliseconds per bare round trip to another process (see the module), median of 3 series:
    each side asleep until the other's message wakes it, or (`polling`) reading without sleeping,
    as the runner and a worker do for a moment after each task (`runner.executors.wire.SPIN_S`)."""
    mode = "poll" if polling else "sleep"
    child = subprocess.Popen(
        [sys.executable, "-c", ECHO, mode], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert child.stdin is not None and child.stdout is not None
    to_child, from_child = child.stdin.fileno(), child.stdout.fileno()
    os.set_blocking(from_child, not polling)
    message = b"t" * 600
    series = []
    try:
        for _ in range(3):
            started = time.perf_counter()
            for _ in range(trips):
                os.write(to_child, message)
                _read(from_child)
            series.append((time.perf_counter() - started) * 1000 / trips)
    finally:
        child.stdin.close()
        child.wait()
        child.stdout.close()
    return median(series)


def check(shape: str, what: str, status: str, executed: int, expected: int) -> None:
    if status != "succeeded" or executed != expected:
        raise SystemExit(f"{shape} {what}: run {status}, {executed} steps executed (expected {expected})")


def per_step_ms(seconds: float, base: float, steps: int) -> float:
    return (seconds - base) * 1000 / steps


def main() -> None:
    opts = options(size=1000, repeat=5)
    n = opts.size
    print(f"cold-run overhead per step, N={n}, median of {opts.repeat} ({machine()})")
    print(
        f"this machine's floor (info): a bare round trip to another process through pipes, "
        f"nothing done: {round_trip_ms():.3f} ms asleep, {round_trip_ms(polling=True):.3f} ms polling"
    )
    print(f"{'shape':<24}{'baseline':>12}{'warm workers':>26}{'incl. start-up':>26}{'cached (info)':>16}")
    worst = 0.0
    for name in ("chain", "fanout", "foreach"):
        result = measure(name, n, opts.repeat)
        steps = int(result["steps"])
        base = result["baseline"]
        warm_ms = per_step_ms(result["warm"], base, steps)
        start_ms = per_step_ms(result["startup"], base, steps)
        cached_ms = result["cached"] * 1000 / steps
        label = SHAPES[name].label.replace("N", str(n))
        print(
            f"{label:<24}{base * 1000:9.3f} ms"
            f"{result['warm']:9.3f} s = {warm_ms:6.3f} ms/step"
            f"{result['startup']:9.3f} s = {start_ms:6.3f} ms/step"
            f"{cached_ms:9.3f} ms/step"
        )
        runs = ", ".join(f"{s:.3f}" for s in result["warm_all"])
        starts = ", ".join(f"{s:.3f}" for s in result["startup_all"])
        print(f"{'':<24}  runs (s): warm [{runs}]  start-up [{starts}]")
        print(
            f"{'':<24}  CPU per step, warm workers: "
            f"this process {result['cpu_parent'] * 1000 / steps:.3f} ms, "
            f"workers {result['cpu_workers'] * 1000 / steps:.3f} ms"
        )
        if name != "foreach":
            worst = max(worst, warm_ms)
    conclude("cold", worst, "ms/step", BUDGET_MS, worst <= BUDGET_MS)


if __name__ == "__main__":
    main()
