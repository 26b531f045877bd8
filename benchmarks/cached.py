"""Fully cached re-run per step: `python -m benchmarks.cached`.

Issue 21's budget (issue 2's was 0.2 ms): re-running an unchanged 1,000-step chain and 1,000-wide
fan-out (1 -> 1000 -> 1, as 1000 separate steps) with everything cached costs at most 0.02 ms per step.
Timed is `engine.run(RunRequest(loaded, params))` on a real store that a first (cold) run filled.

Two figures per shape:
  * same engine: the engine that ran the cold run runs the same load again (in-memory cache
    index warm, static fingerprints already computed) — a re-run inside `flow run --watch` or the TUI;
  * new engine: a fresh `Engine` on the same store runs a fresh `load_flow` of the same file, so
    static fingerprints are computed again and cache hits come from SQLite — what a second `flow run`
    does (its `load_flow` time is printed separately, not counted). In this process the memos are
    warm, as in a reload: a load executes the last load's code for the parts it did not compile again,
    and a plain step's print is then taken by its code object (`runner.fingerprint.prints`). A second
    `flow run` starts with none of that, only the normalised sources kept beside the file
    (`runner.fingerprint.textcache`).
Both must execute nothing. The verdict is the worst figure over both kinds and both shapes. A
foreach variant is printed as extra information.

Last line: `cached: <ms> ms/step (budget 0.02) PASS|FAIL`.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks import common
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
    write_flow,
)

BUDGET_MS = 0.02


def check(shape: str, what: str, status: str, executed: int, expected: int) -> None:
    if status != "succeeded" or executed != expected:
        raise SystemExit(f"{shape} {what}: run {status}, {executed} steps executed (expected {expected})")


def measure(shape_name: str, n: int, repeat: int) -> dict[str, Any]:
    shape = SHAPES[shape_name]
    steps = shape.steps(n)
    cold, same, fresh, loads, cpu_same, cpu_fresh = [], [], [], [], [], []
    with tempdir() as root:
        path = write_flow(root / "project", shape_name, shape.source(n))
        loaded = load(path)
        for rep in range(repeat):
            store_dir = root / f"store-{rep}"
            bench = new_engine(store_dir)
            try:
                seconds, status, executed = timed_run(bench, loaded)
                check(shape_name, "cold", status, executed, steps)
                cold.append(seconds)
                seconds, status, executed = timed_run(bench, loaded)
                check(shape_name, "cached (same engine)", status, executed, 0)
                same.append(seconds)
                cpu_same.append(common.last_cpu.parent)
            finally:
                bench.close()
            bench = new_engine(store_dir)
            try:
                t0 = time.perf_counter()
                reloaded = load(path)
                loads.append(time.perf_counter() - t0)
                seconds, status, executed = timed_run(bench, reloaded)
                check(shape_name, "cached (new engine)", status, executed, 0)
                fresh.append(seconds)
                cpu_fresh.append(common.last_cpu.parent)
            finally:
                bench.close()
    return {
        "steps": steps,
        "cold": median(cold),
        "same": median(same),
        "fresh": median(fresh),
        "load": median(loads),
        "cpu_same": median(cpu_same),
        "cpu_fresh": median(cpu_fresh),
        "same_all": same,
        "fresh_all": fresh,
    }


def main() -> None:
    opts = options(size=1000, repeat=3)
    n = opts.size
    print(f"fully cached re-run per step, N={n}, median of {opts.repeat} ({machine()})")
    print(
        f"{'shape':<24}{'same engine':>26}{'new engine + fresh load':>28}{'load_flow':>12}{'cold (info)':>14}"
    )
    worst = 0.0
    for name in ("chain", "fanout", "foreach"):
        result = measure(name, n, opts.repeat)
        steps = int(result["steps"])
        same_ms = result["same"] * 1000 / steps
        fresh_ms = result["fresh"] * 1000 / steps
        label = SHAPES[name].label.replace("N", str(n))
        print(
            f"{label:<24}{result['same']:9.3f} s = {same_ms:6.3f} ms/step"
            f"{result['fresh']:11.3f} s = {fresh_ms:6.3f} ms/step"
            f"{result['load'] * 1000:9.1f} ms{result['cold']:11.3f} s"
        )
        same_runs = ", ".join(f"{s * 1000:.1f}" for s in result["same_all"])
        fresh_runs = ", ".join(f"{s * 1000:.1f}" for s in result["fresh_all"])
        print(f"{'':<24}  runs (ms): same engine [{same_runs}]  new engine [{fresh_runs}]")
        print(
            f"{'':<24}  CPU per step (this process): same engine {result['cpu_same'] * 1000 / steps:.3f} ms, "
            f"new engine {result['cpu_fresh'] * 1000 / steps:.3f} ms"
        )
        if name != "foreach":
            worst = max(worst, same_ms, fresh_ms)
    conclude("cached", worst, "ms/step", BUDGET_MS, worst <= BUDGET_MS)


if __name__ == "__main__":
    main()
