"""Dask executor overhead and scale-out: `python -m benchmarks.dask`.

Issue 6's proof. In one process, on a 2-worker `LocalCluster` started by `DaskExecutor(None,
workers=2)` and, for comparison, the default process executor with 2 workers:

1. **Per-step overhead**: wall time of a cold run (fresh fingerprints) of a 1,000-step foreach fan-out
   (`items -> work[0..999] -> total`, trivial steps) divided by the 1,002 steps executed. Both
   executors first ran a small warm-up flow, so worker processes (and the cluster) are up: the figure
   is the steady-state cost of shipping a step to a worker and its result back, not start-up.
2. **Speed-up**: 8 independent CPU-bound steps of ~0.5 s each, on the local executor with 1 worker
   against Dask with 2 workers (ideal: 2x on 2 free cores). The local executor with 2 workers is
   printed beside it, so the price Dask adds on top of plain parallelism is visible.

The verdict is the Dask per-step overhead. Budget: 3 ms/step (issue 21; issue 6's was 20). The engine
keeps only `slots` tasks on the cluster at once, so the figure is a round trip's latency divided by the
two slots: runner -> scheduler -> a lane on a worker (`runner.executors.dask_worker.run_lane`) -> the
step's process -> back through the scheduler's results queue, each hop a few hundred microseconds on
loopback. A future per step (issue 6's design, 8-18 ms/step here) also paid the scheduler's task
bookkeeping and the batching intervals of its streams (10 ms from a client) on every step.

Sizes: `--size N` / `FLOW_BENCH_SIZE` (fan-out width, default 1000), `--repeat` (medians).

Last line: `dask: <ms> ms/step (budget 3.0) PASS|FAIL`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    Bench,
    conclude,
    load,
    machine,
    median,
    options,
    tempdir,
    timed_run,
    warm_up,
    write_flow,
)

BUDGET_MS = 3.0
CPU_STEPS = 8
CPU_STEP_S = 0.5
WORKERS = 2


def calibrate(seconds: float) -> int:
    """Loop iterations of `burn` that take about `seconds` of CPU here."""
    n = 200_000
    while True:
        t0 = time.perf_counter()
        _burn(n)
        took = time.perf_counter() - t0
        if took > 0.1:
            return int(n * seconds / took)
        n *= 2


def _burn(n: int) -> int:
    total = 0
    for i in range(n):
        total = (total + i * i) % 1_000_003
    return total


def fan_source(n: int, salt: int) -> str:
    """`items -> work (foreach, n instances) -> total`; `salt` makes every repetition a cold run."""
    return f'''"""A generated foreach fan-out."""

from dsl import step


@step
def items():
    return list(range({n})) + [] * {salt}


@step(foreach="items")
def work(items):
    return items + {salt}


@step
def total(work):
    return sum(work)
'''


def cpu_source(steps: int, iterations: int, salt: int = 0) -> str:
    """`steps` independent steps, each burning `iterations` loop turns (no data between them)."""
    lines = ['"""Independent CPU-bound steps."""', "", "from dsl import step", ""]
    for i in range(steps):
        lines += [
            "",
            "@step",
            f"def burn{i}():",
            "    total = 0",
            f"    for j in range({iterations}):",
            "        total = (total + j * j) % 1_000_003",
            f"    return total + {i} + {salt}",
            "",
        ]
    return "\n".join(lines)


def bench_on(executor: Any, store_dir: Path) -> Bench:
    from runner.engine import Engine, collect_less, freeze_heap
    from runner.store import Store

    store = Store(store_dir)
    freeze_heap()  # as `flow run` does at start-up
    collect_less()
    engine = Engine(store, executor)
    bench = Bench(engine, store)
    engine.subscribe(bench.note)
    return bench


def timed(bench: Bench, path: Path, expected_steps: int) -> float:
    seconds, status, executed = timed_run(bench, load(path))
    if status != "succeeded" or executed != expected_steps:
        raise SystemExit(f"{path.stem}: run {status}, {executed} steps executed (expected {expected_steps})")
    return seconds


def main() -> None:
    from runner.executors.dask import DaskExecutor
    from runner.executors.local import LocalExecutor

    opts = options(size=1000, repeat=1)
    n = opts.size
    fan_steps = n + 2
    iterations = calibrate(CPU_STEP_S)
    print(
        f"machine: {machine()}; fan-out 1 -> {n} -> 1 ({fan_steps} steps); "
        f"{CPU_STEPS} CPU-bound steps of ~{CPU_STEP_S}s; repeat {opts.repeat}"
    )
    results: dict[str, list[float]] = {}
    with tempdir("flow-bench-dask-") as root:
        t0 = time.perf_counter()
        dask_executor = DaskExecutor(None, workers=WORKERS)
        cluster_s = time.perf_counter() - t0
        try:
            local, local_1 = LocalExecutor(WORKERS, poll=True), LocalExecutor(1, poll=True)  # `flow run`'s
            configs: list[tuple[str, Any]] = [("local", local), ("dask", dask_executor)]
            configs.append(("local-1", local_1))
            for name, executor in configs:
                bench = bench_on(executor, root / f"store-{name}")
                try:
                    warm_up(bench, root / f"warm-{name}")
                    for rep in range(opts.repeat):
                        if name != "local-1":
                            fan = write_flow(root / f"fan-{name}-{rep}", "fan", fan_source(n, rep + 1))
                            results.setdefault(f"{name}/fan", []).append(timed(bench, fan, fan_steps))
                        source = cpu_source(CPU_STEPS, iterations, rep)
                        cpu = write_flow(root / f"cpu-{name}-{rep}", "cpu", source)
                        results.setdefault(f"{name}/cpu", []).append(timed(bench, cpu, CPU_STEPS))
                finally:
                    bench.close()
        finally:
            dask_executor.close()  # already closed by its engine unless something failed first

    local_fan, dask_fan = median(results["local/fan"]), median(results["dask/fan"])
    local_ms, dask_ms = local_fan * 1000 / fan_steps, dask_fan * 1000 / fan_steps
    serial, local2, dask2 = (median(results[f"{k}/cpu"]) for k in ("local-1", "local", "dask"))
    print(f"LocalCluster start-up ({WORKERS} workers):      {cluster_s:7.2f} s")
    print(f"fan-out, local executor ({WORKERS} workers):    {local_fan:7.2f} s  {local_ms:7.2f} ms/step")
    print(f"fan-out, dask ({WORKERS} workers):              {dask_fan:7.2f} s  {dask_ms:7.2f} ms/step")
    print(f"  dask overhead above local:             {dask_ms - local_ms:7.2f} ms/step")
    print(f"{CPU_STEPS} CPU steps, local executor (1 worker):  {serial:7.2f} s")
    print(
        f"{CPU_STEPS} CPU steps, local executor ({WORKERS} workers): {local2:7.2f} s  "
        f"speed-up {serial / local2:.2f}x"
    )
    print(
        f"{CPU_STEPS} CPU steps, dask ({WORKERS} workers):           {dask2:7.2f} s  "
        f"speed-up {serial / dask2:.2f}x"
    )
    conclude("dask", dask_ms, "ms/step", BUDGET_MS, dask_ms <= BUDGET_MS, digits=2)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
