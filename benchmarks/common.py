"""Shared helpers for the core benchmarks (`cold`, `cached`, `startup`, `reload`).

Everything here drives the real product: flows are generated as real `.py` files in a temporary
directory and loaded with `dsl.load_flow`; runs go through `runner.engine.Engine` with the default
process executor (`LocalExecutor`, warm worker processes) and a real SQLite store on disk.

Sizes can be shrunk for a smoke test, either with arguments or environment variables:

    --size N    / FLOW_BENCH_SIZE     steps in the generated flow
    --repeat N  / FLOW_BENCH_REPEAT   repetitions (the median is reported)
    --saves N   / FLOW_BENCH_SAVES    saves in the reload benchmark
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# ----- options ---------------------------------------------------------------------------------


@dataclass
class Options:
    size: int
    repeat: int
    saves: int
    helper_lines: int = 0


def options(*, size: int, repeat: int = 3, saves: int = 40, argv: list[str] | None = None) -> Options:
    """Sizes for this benchmark: command line > environment > the defaults given. `--helper-lines`
    (`benchmarks.reload` only) gives the flow a local module of about that many lines its steps call."""
    parser = argparse.ArgumentParser(add_help=True)
    parser.add_argument("--size", type=int, default=int(os.environ.get("FLOW_BENCH_SIZE", size)))
    parser.add_argument("--repeat", type=int, default=int(os.environ.get("FLOW_BENCH_REPEAT", repeat)))
    parser.add_argument("--saves", type=int, default=int(os.environ.get("FLOW_BENCH_SAVES", saves)))
    parser.add_argument("--helper-lines", type=int, default=int(os.environ.get("FLOW_BENCH_HELPER_LINES", 0)))
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return Options(
        size=max(1, args.size),
        repeat=max(1, args.repeat),
        saves=max(1, args.saves),
        helper_lines=max(0, args.helper_lines),
    )


def conclude(name: str, figure: float, unit: str, budget: float, ok: bool, digits: int = 3) -> None:
    """Print the line every benchmark ends with, `NAME: <figure> <unit> (budget <b>) PASS|FAIL`; a
    benchmark whose budget failed then exits with status 1, so that a script can gate on it
    (`python -m benchmarks.cold && ...`)."""
    print(f"{name}: {figure:.{digits}f} {unit} (budget {budget}) {'PASS' if ok else 'FAIL'}", flush=True)
    if not ok:
        sys.exit(1)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (p95 of 40 values is the 38th smallest)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


@contextmanager
def tempdir(prefix: str = "flow-bench-") -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# ----- generated flows -------------------------------------------------------------------------


def chain_source(n: int) -> str:
    """`s0 -> s1 -> ... -> s{n-1}`: each step adds one to its upstream's output."""
    lines = ['"""A generated chain of trivial steps."""', "", "from dsl import step", ""]
    lines += ["", "@step", "def s0():", "    return 0", ""]
    for i in range(1, n):
        lines += ["", "@step", f"def s{i}(s{i - 1}):", f"    return s{i - 1} + 1", ""]
    return "\n".join(lines)


def fanout_source(n: int) -> str:
    """`root -> m0..m{n-1} -> sink`: n separate steps (not foreach) between one source and one join."""
    lines = ['"""A generated fan-out of trivial steps."""', "", "from dsl import step", ""]
    lines += ["", "@step", "def root():", "    return 1", ""]
    for i in range(n):
        lines += ["", "@step", f"def m{i}(root):", f"    return root + {i}", ""]
    args = ", ".join(f"m{i}" for i in range(n))
    lines += ["", "@step", f"def sink({args}):", f"    return sum(({args},))", ""]
    return "\n".join(lines)


def foreach_source(n: int) -> str:
    """`items -> work (foreach, n instances) -> total`."""
    return f'''"""A generated foreach fan-out."""

from dsl import step


@step
def items():
    return list(range({n}))


@step(foreach="items")
def work(items):
    return items + 1


@step
def total(work):
    return sum(work)
'''


@dataclass
class Shape:
    """A generated workload: its source, how many steps it runs, and a plain-Python baseline."""

    name: str
    source: Callable[[int], str]
    steps: Callable[[int], int]
    baseline: Callable[[Any, int], Callable[[], Any]]
    label: str = ""


def _chain_baseline(loaded: Any, n: int) -> Callable[[], Any]:
    fns = [loaded.graph.nodes[f"s{i}"].step.fn for i in range(n)]
    first, rest = fns[0], fns[1:]

    def call() -> Any:
        value = first()
        for fn in rest:
            value = fn(value)
        return value

    return call


def _fanout_baseline(loaded: Any, n: int) -> Callable[[], Any]:
    nodes = loaded.graph.nodes
    root = nodes["root"].step.fn
    middle = [nodes[f"m{i}"].step.fn for i in range(n)]
    sink = nodes["sink"].step.fn

    def call() -> Any:
        value = root()
        return sink(*[fn(value) for fn in middle])

    return call


def _foreach_baseline(loaded: Any, n: int) -> Callable[[], Any]:
    nodes = loaded.graph.nodes
    items, work, total = nodes["items"].step.fn, nodes["work"].step.fn, nodes["total"].step.fn

    def call() -> Any:
        return total([work(x) for x in items()])

    return call


SHAPES = {
    "chain": Shape("chain", chain_source, lambda n: n, _chain_baseline, "chain of N"),
    "fanout": Shape("fanout", fanout_source, lambda n: n + 2, _fanout_baseline, "fan-out 1->N->1"),
    "foreach": Shape("foreach", foreach_source, lambda n: n + 2, _foreach_baseline, "foreach 1->N->1 (info)"),
}


def slow_library(root: Path, name: str, seconds: float) -> Path:
    """Write a library `name` that takes `seconds` of CPU to import, installed as far as flow can tell
    (a `*.dist-info/RECORD` lists it); returns the directory to put on the path."""
    libs = root / "libs"
    (libs / f"{name}-1.0.dist-info").mkdir(parents=True, exist_ok=True)
    (libs / f"{name}-1.0.dist-info" / "RECORD").write_text(f"{name}.py,,\n")
    spin = f"_END = time.process_time() + {seconds}\nwhile time.process_time() < _END:\n    pass\n"
    (libs / f"{name}.py").write_text(f"import time\n\n{spin}")
    return libs


def write_flow(directory: Path, name: str, source: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.py"
    path.write_text(source, encoding="utf-8")
    return path


def load(path: Path) -> Any:
    from dsl import load_flow

    return load_flow(path)


def baseline_seconds(loaded: Any, shape: Shape, n: int, repeat: int = 5) -> float:
    """Median wall time of calling the same functions in order, in this process."""
    call = shape.baseline(loaded, n)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return median(times)


# ----- engines and runs ------------------------------------------------------------------------


@dataclass
class Bench:
    """An engine with the default process executor over a real store, and how many steps it started.

    It counts the events it needs and drops them, as `flow run`'s display and the TUI do once they
    are shown: kept, every event of every run (two objects a step) stayed alive in the benchmark's
    process and grew the young generation the collector walks, 2-4.5 ms a pass in a later run's
    timing that the product does not pay."""

    engine: Any
    store: Any
    started: int = 0
    """`StepStarted` events so far."""

    def __post_init__(self) -> None:
        from runner.events import StepStarted

        self._started_type = StepStarted

    def note(self, event: Any) -> None:
        """The engine's subscriber."""
        if type(event) is self._started_type:
            self.started += 1

    def close(self) -> None:
        self.engine.close()
        self.store.close()


def new_engine(store_dir: Path, workers: int | None = None) -> Bench:
    from runner.engine import Engine, collect_less, freeze_heap
    from runner.executors.local import LocalExecutor
    from runner.store import Store

    store = Store(store_dir)
    freeze_heap()  # as `flow run` does at start-up (the engine no longer decides it)
    collect_less()
    engine = Engine(store, LocalExecutor(workers, poll=True))  # as `flow run`'s
    bench = Bench(engine, store)
    engine.subscribe(bench.note)
    return bench


WARM_UP_SOURCE = '''"""Warm-up: one independent step per worker slot, so every worker process is started."""

from dsl import step

{steps}
'''


def warm_up(bench: Bench, directory: Path) -> float:
    """Run a tiny flow with as many independent steps as worker slots; return its wall time."""
    slots = bench.engine.executor.slots
    steps = "\n".join(
        f"@step\ndef warm{i}():\n    import time\n    time.sleep(0.05)\n    return {i}\n"
        for i in range(slots * 2)
    )
    path = write_flow(directory, "warm_up", WARM_UP_SOURCE.format(steps=steps))
    loaded = load(path)
    seconds, status, _ = timed_run(bench, loaded)
    if status != "succeeded":
        raise RuntimeError(f"the warm-up flow ended {status}")
    return seconds


def _workers_cpu(bench: Bench) -> float:
    """CPU seconds used so far by the executor's live worker processes (Linux /proc; 0 elsewhere)."""
    total = 0.0
    for worker in list(getattr(bench.engine.executor, "_workers", [])):
        try:
            with open(f"/proc/{worker.proc.pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, AttributeError, IndexError):
            continue
    return total


@dataclass
class CPU:
    """CPU seconds of the last timed run: this process, and worker processes alive before and after it.

    Wall time on a busy machine mostly measures the other load; CPU time is far steadier.
    """

    parent: float = 0.0
    workers: float = 0.0


last_cpu = CPU()


def timed_run(bench: Bench, loaded: Any, **request: Any) -> tuple[float, str, int]:
    """Time `engine.run(RunRequest(loaded, params))`: (seconds, status, steps executed).

    The CPU time it used is left in `last_cpu`.
    """
    from runner.engine import RunRequest
    from runner.params import resolve_params

    params = resolve_params(loaded.graph.params)
    mark = bench.started
    workers0, cpu0 = _workers_cpu(bench), time.process_time()
    t0 = time.perf_counter()
    handle = bench.engine.run(RunRequest(loaded, params, **request))
    seconds = time.perf_counter() - t0
    last_cpu.parent = time.process_time() - cpu0
    last_cpu.workers = max(0.0, _workers_cpu(bench) - workers0)
    executed = bench.started - mark
    return seconds, handle.status, executed


def fmt_ms_per_step(seconds: float, steps: int) -> str:
    return f"{seconds * 1000 / steps:7.3f} ms/step"


def machine() -> str:
    import platform

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"python {platform.python_version()}, {os.cpu_count()} cores, load average {load}"
