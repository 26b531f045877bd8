"""Save -> first changed step starts: `python -m benchmarks.reload`.

Issue 21's budget: p50 <= 20 ms, p95 <= 30 ms (issue 3's was 100 / 200 ms). A 200-step flow (4 parallel
chains of 50 trivial steps) is loaded by a real `FlowSession`, run once cold, then watched with
`FlowSession.watch()` (the real watchfiles watcher) in a thread, on the default process executor and a
real store. Then, at least 30 times, one different step's code is edited and the file saved — mostly
atomically (temp file + `os.replace`, as vim, VS Code and JetBrains "safe write" do), every third save
in place (truncate + write) — and the benchmark waits for the resulting run to finish before the next
save.

Each edit changes a constant in the step's body (`edit = N`) without changing its return value, so
the step's fingerprint changes but its output does not: early cut-off means exactly that one step
executes and every other step, its descendants included, comes from the cache.

Latency of a save is measured from the moment the write finished (`os.replace` returned, or the
in-place write was closed) to the moment the changed step starts executing, two ways:
  * body start (the verdict): the step's first statement prints `time.time()`; the benchmark reads it
    from the captured log line (`StepLog`) — the step's code really started, in its worker process;
  * `StepStarted.ts`: when the engine submitted the step to a worker (printed alongside).
The floor is a second, plain `watchfiles.watch(dir, step=WATCH_STEP_MS, debounce=WATCH_DEBOUNCE_MS)`
on the same directory in the same run: replace -> that watcher yields.

`--helper-lines N` (info, not the verdict's shape) adds a local module of about N lines whose
functions every step calls, as a project's own code is: a save of the flow file imports it again.

The first save is also shown on its own (info): the flow was compiled whole when it loaded, and the
watcher cuts it into the parts a reload compiles while it waits (`dsl.flowcode.warm`).

"Unchanged steps re-executed" counts every `StepStarted` of a step other than the edited one, over
all saves. PASS needs p50 <= 20 ms, p95 <= 30 ms and zero such re-executions (and every save must
have started its changed step).

Last line: `reload: <p50> ms (budget 20) PASS|FAIL`.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import conclude, machine, median, options, percentile, tempdir

P50_BUDGET_MS = 20
P95_BUDGET_MS = 30
SAVE_TIMEOUT_S = 20.0


def step_names(size: int) -> list[list[str]]:
    chains = 4 if size >= 8 else 1
    length = max(1, size // chains)
    return [[f"c{c}_{i:03d}" for i in range(length)] for c in range(chains)]


def flow_source(chains: list[list[str]], edits: dict[str, int], *, helpers: int = 0) -> str:
    """The flow; with `helpers` (the number of functions of `helper_source`), every step returns its
    value through one of them."""
    lines = [
        '"""Generated for the reload benchmark: parallel chains of trivial steps."""',
        "",
        "import time",
        "",
        "from dsl import step",
        "",
    ]
    if helpers:
        lines[2:2] = ["import helpers", ""]
    for chain in chains:
        for i, name in enumerate(chain):
            arg = chain[i - 1] if i else ""
            value = f"{arg} + 1" if arg else "0"
            if helpers:
                value = f"helpers.same_{i % helpers}({value})"
            lines += [
                "",
                "@step",
                f"def {name}({arg}):",
                '    print(f"started {time.time()!r}")',
                f"    edit = {edits.get(name, 0)}",
                f"    return {value}",
                "",
            ]
    return "\n".join(lines)


def helper_source(lines: int) -> tuple[str, int]:
    """A local module of about `lines` lines (functions that return their argument) and how many
    functions it has."""
    count = max(1, lines // 8)
    body = [
        '"""Generated for the reload benchmark: a helper module the steps call."""',
        "",
        "import math",
        "",
    ]
    for k in range(count):
        body += [
            "",
            f"def same_{k}(x):",
            f'    """Return x, after some work ({k})."""',
            f"    roots = [math.sqrt(abs(x * j + {k})) for j in range(2)]",
            "    if roots and roots[0] < 0:",
            "        return -x",
            "    return x",
        ]
    return "\n".join(body) + "\n", count


def save_atomic(path: Path, text: str) -> float:
    """Write a temp file next to `path`, then rename it over `path` (editor "safe write")."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)
    return time.time()


def save_in_place(path: Path, text: str) -> float:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return time.time()


@dataclass
class Recorder:
    """Collects engine events (from the scheduler and the watcher threads) and watcher yields."""

    events: list[tuple[float, Any]] = field(default_factory=list)
    yields: list[tuple[float, set[str]]] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def __call__(self, event: Any) -> None:
        with self.cond:
            self.events.append((time.time(), event))
            self.cond.notify_all()

    def mark(self) -> int:
        with self.cond:
            return len(self.events)

    def wait_for(self, predicate: Any, timeout: float) -> bool:
        with self.cond:
            return bool(self.cond.wait_for(predicate, timeout))


@dataclass
class Watched:
    """A flow file's `FlowSession` on an engine with 2 local workers, its events recorded, its watcher
    thread ready to start (`watch`). Made by `watched`."""

    session: Any
    engine: Any
    rec: Recorder
    stop: threading.Event = field(default_factory=threading.Event)
    ready: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def watch(self) -> None:
        """Start following the file; return once the watcher is armed."""
        self.thread = threading.Thread(
            target=self.session.watch, args=(self.stop,), kwargs={"on_ready": self.ready.set}, daemon=True
        )
        self.thread.start()
        if not self.ready.wait(10):
            raise SystemExit("the watcher did not start")

    def body_started(self, mark: int) -> float | None:
        """The time a step's first statement printed as `started <time>`, in events after `mark`."""
        from runner.events import StepLog

        for _, event in self.rec.events[mark:]:
            if isinstance(event, StepLog) and event.line.startswith("started "):
                return float(event.line.split()[1])
        return None


@contextmanager
def watched(path: Path, store_dir: Path, *, spare: bool) -> Iterator[Watched]:
    """A loaded `Watched` session of `path` on a store in `store_dir` (`spare`: the executor keeps a
    spare worker, as the TUI and `flow run --watch` do); stopped and closed on exit."""
    from runner.engine import Engine
    from runner.executors.local import LocalExecutor
    from runner.session import FlowSession
    from runner.store import Store

    store = Store(store_dir)
    executor = LocalExecutor(2)
    if spare:
        executor.keep_spare()
    engine = Engine(store, executor)
    rec = Recorder()
    engine.subscribe(rec)
    session = Watched(FlowSession(path, engine), engine, rec)
    try:
        session.session.load()
        yield session
    finally:
        session.stop.set()
        engine.cancel()
        if session.thread is not None:
            session.thread.join(10)
        engine.close()
        store.close()


def floor_watcher(directory: Path, stop: threading.Event, ready: threading.Event, rec: Recorder) -> None:
    from watchfiles import watch

    from runner.session import WATCH_DEBOUNCE_MS, WATCH_STEP_MS

    for changes in watch(
        directory,
        stop_event=stop,
        step=WATCH_STEP_MS,
        debounce=WATCH_DEBOUNCE_MS,
        recursive=False,
        raise_interrupt=False,
        yield_on_timeout=True,
        rust_timeout=50,
    ):
        now = time.time()
        ready.set()
        if changes:
            with rec.cond:
                rec.yields.append((now, {Path(p).name for _, p in changes}))


@dataclass
class Save:
    step: str
    mode: str
    written: float
    body: float | None = None
    submitted: float | None = None
    reloaded: float | None = None
    run_started: float | None = None
    floor: float | None = None
    executed: list[str] = field(default_factory=list)
    changed: tuple[str, ...] = ()
    load_failed: int = 0
    runs: int = 0


def main() -> None:
    from runner.engine import Engine, collect_less, freeze_heap
    from runner.events import FlowReloaded, LoadFailed, RunFinished, RunStarted, StepLog, StepStarted
    from runner.executors.local import LocalExecutor
    from runner.session import WATCH_DEBOUNCE_MS, WATCH_STEP_MS, FlowSession
    from runner.store import Store

    opts = options(size=200, saves=40)
    chains = step_names(opts.size)
    names = [n for chain in chains for n in chain]
    saves = min(opts.saves, len(names))
    targets = random.Random(7).sample(names, saves)
    helper_text, helpers = helper_source(opts.helper_lines) if opts.helper_lines else ("", 0)
    shape = f", every step calling a {len(helper_text.splitlines())}-line local module" if helpers else ""
    print(
        f"reload latency: {len(names)}-step flow ({len(chains)} chains{shape}), {saves} saves, "
        f"watch step={WATCH_STEP_MS} ms debounce={WATCH_DEBOUNCE_MS} ms ({machine()})"
    )

    edits: dict[str, int] = {}
    results: list[Save] = []
    with tempdir() as root:
        project = root / "project"
        project.mkdir()
        if helpers:
            (project / "helpers.py").write_text(helper_text, encoding="utf-8")
        path = project / "reload_flow.py"
        path.write_text(flow_source(chains, edits, helpers=helpers), encoding="utf-8")
        store = Store(root / "store")
        freeze_heap()  # as `flow run --watch` does at start-up
        collect_less()
        engine = Engine(store, LocalExecutor(poll=True))  # `flow run --watch`'s executor
        rec = Recorder()
        engine.subscribe(rec)
        session = FlowSession(path, engine)
        stop = threading.Event()
        watcher_ready, floor_ready = threading.Event(), threading.Event()
        threads: list[threading.Thread] = []
        try:
            session.load()
            t0 = time.perf_counter()
            handle = session.run(trigger="benchmark: cold")
            status = handle.wait(120)
            print(f"cold run of {len(names)} steps: {status} in {time.perf_counter() - t0:.2f} s")
            threads = [
                threading.Thread(
                    target=session.watch,
                    args=(stop,),
                    kwargs={"on_ready": watcher_ready.set},
                    name="session-watch",
                    daemon=True,
                ),
                threading.Thread(
                    target=floor_watcher,
                    args=(project, stop, floor_ready, rec),
                    name="floor-watch",
                    daemon=True,
                ),
            ]
            for thread in threads:
                thread.start()
            if not (watcher_ready.wait(10) and floor_ready.wait(10)):
                raise SystemExit("the watchers did not start")
            time.sleep(0.2)

            for index, target in enumerate(targets):
                edits[target] = edits.get(target, 0) + 1
                text = flow_source(chains, edits, helpers=helpers)
                mark = rec.mark()
                with rec.cond:
                    yields_mark = len(rec.yields)
                mode = "in-place" if index % 3 == 2 else "atomic"
                written = save_in_place(path, text) if mode == "in-place" else save_atomic(path, text)
                save = Save(target, mode, written)

                def finished(mark: int = mark, save: Save = save) -> bool:
                    run_id = None
                    for _, event in rec.events[mark:]:
                        if isinstance(event, StepStarted) and event.step == save.step:
                            run_id = event.run_id
                        if run_id is not None and isinstance(event, RunFinished) and event.run_id == run_id:
                            return True
                    return False

                if not rec.wait_for(finished, SAVE_TIMEOUT_S):
                    print(
                        f"save {index + 1} ({target}, {mode}): the changed step did not start and finish "
                        f"within {SAVE_TIMEOUT_S:.0f} s"
                    )
                time.sleep(0.05)  # let trailing events of this save (if any) arrive before the next
                with rec.cond:
                    window = list(rec.events[mark:])
                    yields = list(rec.yields[yields_mark:])
                for _received, event in window:
                    if isinstance(event, StepStarted):
                        save.executed.append(event.step)
                        if event.step == target and save.submitted is None:
                            save.submitted = event.ts
                    elif isinstance(event, StepLog) and event.step == target and save.body is None:
                        if event.line.startswith("started "):
                            save.body = float(event.line.split()[1])
                    elif isinstance(event, FlowReloaded) and save.reloaded is None:
                        save.reloaded, save.changed = event.ts, tuple(event.changed)
                    elif isinstance(event, LoadFailed):
                        save.load_failed += 1
                    elif isinstance(event, RunStarted):
                        save.runs += 1
                        if save.run_started is None:
                            save.run_started = event.ts
                for moment, files in yields:
                    if path.name in files and moment >= written:
                        save.floor = moment
                        break
                results.append(save)
        finally:
            stop.set()
            for thread in threads:
                thread.join(10)
            engine.close()
            store.close()

    report(results)


def ms(later: float | None, earlier: float) -> float | None:
    return None if later is None else (later - earlier) * 1000


def report(results: list[Save]) -> None:
    def column(values: list[float | None]) -> list[float]:
        return [v for v in values if v is not None]

    body = column([ms(s.body, s.written) for s in results])
    submitted = column([ms(s.submitted, s.written) for s in results])
    floor = column([ms(s.floor, s.written) for s in results])
    reloaded = column([ms(s.reloaded, s.written) for s in results])
    run_started = column([ms(s.run_started, s.written) for s in results])

    print()
    print(
        f"{'#':>3} {'step':<8} {'mode':<9}{'floor':>8}{'reloaded':>10}{'run':>8}{'submit':>8}{'body':>8}"
        "  executed / notes"
    )
    for i, s in enumerate(results, 1):
        cells = [
            ms(s.floor, s.written),
            ms(s.reloaded, s.written),
            ms(s.run_started, s.written),
            ms(s.submitted, s.written),
            ms(s.body, s.written),
        ]
        shown = "".join(f"{c:8.1f}" if c is not None else f"{'-':>8}" for c in cells)
        notes = ",".join(s.executed) or "nothing"
        if s.changed != (s.step,):
            notes += f"  diff={list(s.changed)}"
        if s.load_failed:
            notes += f"  load_failed x{s.load_failed}"
        if s.runs != 1:
            notes += f"  runs={s.runs}"
        print(f"{i:>3} {s.step:<8} {s.mode:<9}{shown}  {notes}")

    print("(ms after the write: floor = plain watchfiles yield; reloaded = FlowReloaded; run = RunStarted;")
    print(" submit = StepStarted.ts of the changed step; body = the changed step's first statement)")
    print()
    for label, values in (
        ("watchfiles alone (floor)", floor),
        ("replace -> FlowReloaded", reloaded),
        ("replace -> RunStarted", run_started),
        ("replace -> StepStarted.ts", submitted),
        ("replace -> step body starts", body),
    ):
        if values:
            print(
                f"{label:<30} p50 {median(values):7.1f} ms   p95 {percentile(values, 95):7.1f} ms   "
                f"min {min(values):6.1f}   max {max(values):7.1f}   (n={len(values)})"
            )
    first = ms(results[0].body, results[0].written) if results else None
    others = column([ms(s.body, s.written) for s in results[1:]])
    if first is not None and others:
        print(
            f"first save after the watcher armed: body start {first:.1f} ms "
            f"(info; the others' p50 {median(others):.1f} ms)"
        )
    unchanged = sum(1 for s in results for name in s.executed if name != s.step)
    missing = sum(1 for s in results if s.body is None)
    failed_loads = sum(s.load_failed for s in results)
    print(f"unchanged steps re-executed across all saves: {unchanged}")
    print(f"saves whose changed step never started: {missing}; load failures seen: {failed_loads}")
    p50 = median(body) if body else float("inf")
    p95 = percentile(body, 95) if body else float("inf")
    print(
        f"verdict figure: body start p50 {p50:.1f} ms (budget {P50_BUDGET_MS}), "
        f"p95 {p95:.1f} ms (budget {P95_BUDGET_MS})"
    )
    ok = p50 <= P50_BUDGET_MS and p95 <= P95_BUDGET_MS and unchanged == 0 and missing == 0
    conclude("reload", p50, "ms", P50_BUDGET_MS, ok, digits=1)


if __name__ == "__main__":
    main()
