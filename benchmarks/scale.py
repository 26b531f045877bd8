"""A 10,000-step flow, end to end: `python -m benchmarks.scale`.

Issue 21's budgets, for each of three generated shapes of N = 10,000 (a chain `s0 -> ... -> s9999`, a
fan-out `root -> m0..m9999 -> sink` of separate steps, and `items -> work (foreach over 10,000) ->
total`):

- **load + plan ≤ 1 s**: `load_flow` of the file, the static fingerprints of every step
  (`Engine.static_prints`: source, bytecode, imports) and the run's selection and order — everything
  before the first step can be decided;
- **cold ≤ 0.2 ms/step**: `engine.run` on a fresh store with warm workers (as `benchmarks.cold`),
  every step executed in a worker process and every output persisted;
- **cached ≤ 0.02 ms/step**: the worse of the same engine re-running the same load and a new engine
  running a fresh load of the file on the same store (as `benchmarks.cached`; the fresh load itself
  is not counted), nothing executed;
- **runner peak RSS ≤ 300 MB**: the peak resident memory of the process that loads, plans and runs
  the flow (the worker processes are not counted).

Each measurement runs in a process of its own (`--one SHAPE`): its load is the first load of the file
in that process, as `flow run`'s is, and its peak RSS is that shape's alone. A figure is the median of
`--repeat N` such processes (default 3; RSS: the largest): one 10,000-step run is a single sample of a
noisy machine. Sizes: `--size N` / `FLOW_BENCH_SIZE` (default 10,000).

Last line: `scale: <cold ms/step> ms/step (budget 0.2) PASS|FAIL`, PASS when every budget holds for
every shape.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    SHAPES,
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

PLAN_BUDGET_S = 1.0
COLD_BUDGET_MS = 0.2
CACHED_BUDGET_MS = 0.02
RSS_BUDGET_MB = 300.0
FIGURES = ("plan_s", "cold_ms", "same_ms", "fresh_ms")
"""The figures each process measures, of which a shape's are the medians."""


def load_and_plan(path: Path, bench: Any) -> tuple[Any, float]:
    """`load_flow`, the static fingerprints and the selection: (the load, seconds)."""
    from runner.selection import select_steps

    t0 = time.perf_counter()
    loaded = load(path)
    bench.engine.static_prints(loaded)
    select_steps(loaded.graph, (), (), ())
    return loaded, time.perf_counter() - t0


def check(what: str, status: str, executed: int, expected: int) -> None:
    if status != "succeeded" or executed != expected:
        raise SystemExit(f"{what}: run {status}, {executed} steps executed (expected {expected})")


def one(shape_name: str, n: int) -> dict[str, float]:
    """Measure one shape once in this process (run as `--one SHAPE`)."""
    shape = SHAPES[shape_name]
    steps = shape.steps(n)
    with tempdir() as root:
        path = write_flow(root / "project", shape_name, shape.source(n))
        bench = new_engine(root / "store")
        try:
            warm_up(bench, root / "warm")
            loaded, plan = load_and_plan(path, bench)
            cold, status, executed = timed_run(bench, loaded)
            check(f"{shape_name} cold", status, executed, steps)
            same, status, executed = timed_run(bench, loaded)
            check(f"{shape_name} cached (same engine)", status, executed, 0)
        finally:
            bench.close()
        bench = new_engine(root / "store")
        try:
            reloaded = load(path)
            fresh, status, executed = timed_run(bench, reloaded)
            check(f"{shape_name} cached (new engine)", status, executed, 0)
        finally:
            bench.close()
    return {
        "steps": steps,
        "plan_s": plan,
        "cold_ms": cold * 1000 / steps,
        "same_ms": same * 1000 / steps,
        "fresh_ms": fresh * 1000 / steps,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def measured(shape_name: str, n: int, repeat: int) -> dict[str, Any]:
    """The shape measured in `repeat` fresh processes: each figure's median (RSS: the largest), and
    every process's figures under `runs`."""
    runs = []
    for _ in range(repeat):
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.scale", "--one", shape_name, "--size", str(n)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise SystemExit(f"scale {shape_name} failed:\n{proc.stdout}\n{proc.stderr}")
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    result: dict[str, Any] = {key: median([run[key] for run in runs]) for key in FIGURES}
    result["rss_mb"] = max(run["rss_mb"] for run in runs)
    result["runs"] = runs
    return result


def main() -> None:
    if "--one" in sys.argv:
        at = sys.argv.index("--one")
        shape_name = sys.argv[at + 1]
        opts = options(size=10_000, argv=sys.argv[1:at] + sys.argv[at + 2 :])
        print(json.dumps(one(shape_name, opts.size)))
        return
    opts = options(size=10_000, repeat=3)
    print(f"a {opts.size:,}-step flow, median of {opts.repeat} processes ({machine()})")
    print(
        f"{'shape':<26}{'load + plan':>12}{'cold':>16}"
        f"{'cached (same)':>18}{'cached (new)':>18}{'peak RSS':>11}"
    )
    worst = {"plan_s": 0.0, "cold_ms": 0.0, "cached_ms": 0.0, "rss_mb": 0.0}
    for name in ("chain", "fanout", "foreach"):
        result = measured(name, opts.size, opts.repeat)
        label = SHAPES[name].label.replace(" (info)", "").replace("N", f"{opts.size:,}")
        print(
            f"{label:<26}{result['plan_s']:10.3f} s{result['cold_ms']:9.3f} ms/step"
            f"{result['same_ms']:11.4f} ms/step{result['fresh_ms']:11.4f} ms/step{result['rss_mb']:8.0f} MB"
        )
        for key, unit, digits in (("cold_ms", "ms/step", 3), ("fresh_ms", "ms/step", 4)):
            values = ", ".join(f"{run[key]:.{digits}f}" for run in result["runs"])
            print(f"{'':<26}{key.removesuffix('_ms')} per process: {values} {unit}")
        worst["plan_s"] = max(worst["plan_s"], result["plan_s"])
        worst["cold_ms"] = max(worst["cold_ms"], result["cold_ms"])
        worst["cached_ms"] = max(worst["cached_ms"], result["same_ms"], result["fresh_ms"])
        worst["rss_mb"] = max(worst["rss_mb"], result["rss_mb"])
    print(
        f"worst: load + plan {worst['plan_s']:.3f} s (budget {PLAN_BUDGET_S}), "
        f"cold {worst['cold_ms']:.3f} ms/step (budget {COLD_BUDGET_MS}), "
        f"cached {worst['cached_ms']:.4f} ms/step (budget {CACHED_BUDGET_MS}), "
        f"peak RSS {worst['rss_mb']:.0f} MB (budget {RSS_BUDGET_MB:.0f})"
    )
    ok = (
        worst["plan_s"] <= PLAN_BUDGET_S
        and worst["cold_ms"] <= COLD_BUDGET_MS
        and worst["cached_ms"] <= CACHED_BUDGET_MS
        and worst["rss_mb"] <= RSS_BUDGET_MB
    )
    conclude("scale", worst["cold_ms"], "ms/step", COLD_BUDGET_MS, ok)


if __name__ == "__main__":
    main()
