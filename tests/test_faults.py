"""Fault-injection campaign: `kill -9` the runner of a real `flow run` at random points, many times.

Each kill is either a timed SIGKILL from outside at a random moment of the run, or an injected one
(`FLOW_FAULT_KILL`, see `runner.testing`) at a precise point: a worker starting or
finishing a step, a worker writing or renaming a file artifact, the store writer between its writes
and its COMMIT. The RNG seed is printed; `FLOW_FAULT_SEED=<seed>` replays a campaign.

After every kill: `PRAGMA integrity_check` is ok and every step recorded as finished has an artifact
whose content hash matches (`runner.store.doctor.diagnose` finds no problem), the killed run reads
`interrupted` after the next open, no worker process of the run survives, and the next run executes
no step that was already recorded as finished (side-effect file) and computes the right values.

`test_hostile_predicates_and_values_campaign` mixes hostile `when=` predicates and values (sys.exit,
os._exit, segfaults, BaseException, KeyboardInterrupt, hangs, `__reduce__`/`__iter__` that exit or
raise) with Ctrl-C and SIGKILL while a predicate blocks: every run ends and is recorded.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psutil
import pytest

from dsl import load_flow
from runner.store import Store, diagnose

REPO = Path(__file__).resolve().parent.parent

KILLS_WANTED = int(os.environ.get("FLOW_FAULT_KILLS", "52"))
LANES = 3
CAMPAIGN_BUDGET_S = 150.0
INJECTED_POINTS = ("commit", "artifact-write", "artifact-rename", "step-start", "step-finish")

CAMPAIGN_FLOW = '''
    """A flow mixing tiny steps, a step with a file artifact (> 1 MiB) and slower steps."""
    import hashlib
    import os
    import random
    import time

    from dsl import step

    def mark(what, name, seed):
        log = os.environ.get("FAULT_LOG")
        if log:
            with open(log, "a") as handle:
                handle.write(f"{what} {name} {seed} {os.getpid()}\\n")

    @step
    def source(seed: int = 0):
        mark("start", "source", seed)
        value = list(range(seed, seed + 50))
        mark("end", "source", seed)
        return value

    @step
    def tiny_1(source):
        mark("start", "tiny_1", source[0])
        out = [x + 1 for x in source]
        mark("end", "tiny_1", source[0])
        return out

    @step
    def tiny_2(tiny_1):
        mark("start", "tiny_2", tiny_1[0] - 1)
        out = [x * 2 for x in tiny_1]
        mark("end", "tiny_2", tiny_1[0] - 1)
        return out

    @step
    def tiny_3(source):
        mark("start", "tiny_3", source[0])
        out = sum(source)
        mark("end", "tiny_3", source[0])
        return out

    @step
    def tiny_4(tiny_3, source):
        mark("start", "tiny_4", source[0])
        out = {"sum": tiny_3, "n": len(source)}
        mark("end", "tiny_4", source[0])
        return out

    @step
    def big(source):
        mark("start", "big", source[0])
        data = random.Random(source[0]).randbytes(3 << 20)
        mark("end", "big", source[0])
        return data

    @step
    def big_check(big, source):
        mark("start", "big_check", source[0])
        out = hashlib.sha256(big).hexdigest()
        mark("end", "big_check", source[0])
        return out

    @step
    def slow_a(tiny_2, source):
        mark("start", "slow_a", source[0])
        time.sleep(0.15)
        out = sum(tiny_2)
        mark("end", "slow_a", source[0])
        return out

    @step
    def slow_b(big_check, source):
        mark("start", "slow_b", source[0])
        time.sleep(0.25)
        out = big_check[:16]
        mark("end", "slow_b", source[0])
        return out

    @step
    def join(slow_a, slow_b, tiny_4, source):
        mark("start", "join", source[0])
        out = f"{slow_a}:{slow_b}:{tiny_4['sum']}:{tiny_4['n']}"
        mark("end", "join", source[0])
        return out
'''


# ----- helpers shared by the reliability tests ------------------------------------------------


def flow_env(store: Path, marker: str, **extra: str) -> dict[str, str]:
    """The environment of a `flow` subprocess: the store, a marker to find its processes by."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOW_", "FAULT_"))}
    env.update(FLOW_STORE=str(store), FLOW_TEST_MARKER=marker, PYTHONPATH=str(REPO), **extra)
    return env


def start_flow(args: Iterable[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "runner", *args],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def marked_processes(marker: str) -> list[psutil.Process]:
    """Live processes (not zombies) started with `FLOW_TEST_MARKER=marker` in their environment."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get("FLOW_TEST_MARKER") == marker:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
    return found


def assert_no_orphans(marker: str, within: float = 5.0) -> float:
    """Every process of the marked run is gone within `within` seconds; return how long it took."""
    start = time.monotonic()
    while True:
        left = marked_processes(marker)
        if not left:
            return time.monotonic() - start
        if time.monotonic() - start > within:
            described = []
            for proc in left:
                try:
                    described.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}")
                except psutil.Error:
                    described.append(str(proc.pid))
            raise AssertionError(f"orphan processes survived the run: {described}")
        time.sleep(0.05)


def assert_store_sound(store_dir: Path) -> Any:
    """integrity_check ok, every finished step's artifact matches its hash; return the diagnosis
    (None when the runner died before it created the store)."""
    if not store_dir.exists():
        return None
    store = Store(store_dir, create=False)
    try:
        report = diagnose(store)
    finally:
        store.close()
    assert report.integrity == ["ok"], report.integrity
    assert report.healthy, report.problems
    return report


def expected_outputs(flow_path: Path, seed: int) -> dict[str, Any]:
    """Every step's output computed in-process (steps stay callable as plain functions)."""
    loaded = load_flow(flow_path)
    values: dict[str, Any] = {}
    saved = os.environ.pop("FAULT_LOG", None)
    try:
        for name in loaded.graph.order:
            node = loaded.graph.nodes[name]
            kwargs = {arg: values[up] for arg, up in node.inputs.items()}
            kwargs.update({p: seed for p in node.params})
            values[name] = node.step(**kwargs)
    finally:
        if saved is not None:
            os.environ["FAULT_LOG"] = saved
    return values


def stored_output(store_dir: Path, run_id: int, step: str) -> Any:
    import pickle

    store = Store(store_dir, create=False)
    try:
        digest = next(s.output_hash for s in store.get_steps(run_id) if s.name == step)
        return pickle.loads(store.read_artifact(digest))
    finally:
        store.close()


# ----- the campaign -----------------------------------------------------------------------------


class Lane:
    """One store, one flow file, one side-effect log: a sequence of runs, most of them killed."""

    def __init__(self, index: int, root: Path, rng: random.Random) -> None:
        self.index = index
        self.rng = rng
        self.root = root
        root.mkdir(parents=True)
        self.store = root / "store"
        self.log = root / "effects.log"
        self.log.touch()
        self.flow = root / "campaign.py"
        self.flow.write_text(textwrap.dedent(CAMPAIGN_FLOW), encoding="utf-8")
        self.seed = 0
        self.kills = 0
        self.completed = 0
        self.points: collections.Counter[str] = collections.Counter()
        self.finished: set[tuple[str, int]] = set()
        self.reexecuted: list[tuple[str, int]] = []
        self.expected: dict[int, dict[str, Any]] = {}
        self.run_s: list[float] = []
        self.orphan_wait_s: list[float] = []
        self.history: list[str] = []

    def effects(self) -> list[tuple[str, str, int]]:
        rows = []
        for line in self.log.read_text().splitlines():
            what, name, seed, _pid = line.split()
            rows.append((what, name, int(seed)))
        return rows

    def starts(self) -> collections.Counter[tuple[str, int]]:
        return collections.Counter((name, seed) for what, name, seed in self.effects() if what == "start")

    def recorded_finished(self) -> set[tuple[str, int]]:
        if not self.store.exists():
            return set()
        store = Store(self.store, create=False)
        try:
            rows = store._conn.execute(
                "SELECT s.name, r.params FROM steps s JOIN runs r ON r.id = s.run_id "
                "WHERE s.status IN ('succeeded', 'cached')"
            ).fetchall()
        finally:
            store.close()
        import json

        return {(name, int(json.loads(params).get("seed", 0))) for name, params in rows}

    def last_run(self) -> tuple[int, str] | None:
        if not (self.store / "flow.db").exists():
            return None
        store = Store(self.store, create=False)
        try:
            row = store._conn.execute("SELECT id, status FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        finally:
            store.close()
        return (int(row[0]), str(row[1])) if row else None

    def one_run(self, expected_s: float) -> None:
        marker = f"flowfault-{uuid.uuid4().hex}"
        before_run = self.last_run()
        before_starts = self.starts()
        before_finished = set(self.finished)
        extra: dict[str, str] = {"FAULT_LOG": str(self.log)}
        injected = None
        mode = self.rng.random()
        delay = None
        if mode < 0.35:
            point = self.rng.choice(INJECTED_POINTS)
            count = 1 if point == "artifact-rename" else self.rng.randint(1, 4 if point != "commit" else 6)
            injected = f"{point}:{count}"
            extra["FLOW_FAULT_KILL"] = injected
        elif mode < 0.45:
            delay = ("spawn", self.rng.uniform(0.05, 1.2))
        else:
            delay = ("run_started", self.rng.uniform(0.0, expected_s))
        args = ["run", str(self.flow), "-p", f"seed={self.seed}", "--workers", "2", "--json"]
        started = time.monotonic()
        proc = start_flow(args, flow_env(self.store, marker, **extra), self.root)
        lines: list[str] = []
        errors: list[str] = []
        first_line = threading.Event()

        # Each pipe is read by a thread of its own to its end (`communicate()` beside the stdout reader
        # raced it: the reader met the file closed under it).
        def read_stdout() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                first_line.set()
            first_line.set()

        def read_stderr() -> None:
            assert proc.stderr is not None
            errors.append(proc.stderr.read())

        readers = [threading.Thread(target=read, daemon=True) for read in (read_stdout, read_stderr)]
        for reader in readers:
            reader.start()
        if delay is not None:
            if delay[0] == "run_started":
                first_line.wait(timeout=30)
            try:
                proc.wait(timeout=delay[1])
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"lane {self.index}: flow run hung (seed {self.seed}, {injected})") from None
        for reader in readers:
            reader.join(timeout=10)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        out, err = "".join(lines), "".join(errors)
        took = time.monotonic() - started
        killed = proc.returncode == -signal.SIGKILL
        self.orphan_wait_s.append(assert_no_orphans(marker))
        report = assert_store_sound(self.store)  # opens the store: marks the dead run interrupted

        after_run = self.last_run()
        new_run = after_run if after_run and (before_run is None or after_run[0] > before_run[0]) else None
        after_starts = self.starts()
        executed = after_starts - before_starts
        for key in executed:
            if key in before_finished:
                self.reexecuted.append(key)
        assert not self.reexecuted, f"lane {self.index}: finished steps executed again: {self.reexecuted}"
        self.finished = self.recorded_finished()

        if killed:
            self.kills += 1
            if new_run is not None and new_run[1] != "succeeded":  # succeeded: killed while exiting
                assert new_run[1] == "interrupted", (new_run, report.as_dict())
                assert report is not None
                assert new_run[0] in report.interrupted_runs
            self.points[self._where(injected, new_run, before_starts, before_finished)] += 1
            how = injected or f"timed {delay[1]:.2f}s after {delay[0]}" if delay else injected
            self.history.append(f"seed={self.seed} killed after {took:.2f}s ({how})")
        else:
            context = f"lane {self.index} seed {self.seed} {injected}: {out[-3000:]}\n{err[-6000:]}"
            assert proc.returncode == 0, context
            assert new_run is not None and new_run[1] == "succeeded", new_run
            self.completed += 1
            self.run_s.append(took)
            expected = self.expected.setdefault(self.seed, expected_outputs(self.flow, self.seed))
            assert stored_output(self.store, new_run[0], "join") == expected["join"]
            assert stored_output(self.store, new_run[0], "big") == expected["big"]
            names = set(expected)
            assert {(n, self.seed) for n in names} <= self.finished
            self.history.append(f"seed={self.seed} completed in {took:.2f}s ({injected or 'timed'})")
            self.seed += 1

    def _where(
        self,
        injected: str | None,
        new_run: tuple[int, str] | None,
        before_starts: collections.Counter[tuple[str, int]],
        before_finished: set[tuple[str, int]],
    ) -> str:
        """Classify where a kill landed, from what the store and the side-effect log show."""
        if injected:
            return f"injected {injected.split(':')[0]}"
        if new_run is None:
            return "timed: startup, before the run was recorded"
        if new_run[1] == "succeeded":
            return "timed: after the run was recorded finished (exiting)"
        rows = self.effects()
        starts = collections.Counter((n, s) for w, n, s in rows if w == "start") - before_starts
        ends = collections.Counter((n, s) for w, n, s in rows if w == "end")
        in_flight = [k for k in starts if ends[k] < self.starts()[k]]
        unrecorded = [k for k in starts if k not in self.finished and k not in in_flight]
        if in_flight:
            return "timed: during a step"
        if unrecorded:
            return "timed: after a step returned, before its result committed"
        if self.finished - before_finished:
            return "timed: between steps (results committed)"
        return "timed: run recorded, before any step"


def _run_lane(lane: Lane, deadline: float, quota: int, errors: list[BaseException]) -> None:
    try:
        while lane.kills < quota and time.monotonic() < deadline:
            lane.one_run(expected_s=1.7)
    except BaseException as exc:  # noqa: BLE001 - reported by the test thread
        errors.append(exc)


def test_kill_9_campaign(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seed = int(os.environ.get("FLOW_FAULT_SEED") or random.SystemRandom().randrange(1, 10**9))
    print(f"\nfault campaign seed: {seed} (replay with FLOW_FAULT_SEED={seed})")
    master = random.Random(seed)
    lanes = [Lane(i, tmp_path / f"lane{i}", random.Random(master.randrange(10**9))) for i in range(LANES)]
    quota = -(-KILLS_WANTED // LANES)
    deadline = time.monotonic() + CAMPAIGN_BUDGET_S
    errors: list[BaseException] = []
    threads = [threading.Thread(target=_run_lane, args=(lane, deadline, quota, errors)) for lane in lanes]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    if errors:
        for lane in lanes:
            print(f"lane {lane.index} history: {lane.history}")
        raise AssertionError(f"fault campaign seed {seed} failed") from errors[0]

    points: collections.Counter[str] = collections.Counter()
    for lane in lanes:
        points.update(lane.points)
    kills = sum(lane.kills for lane in lanes)
    completed = sum(lane.completed for lane in lanes)
    print(f"kills survived: {kills}; runs that completed between them: {completed}; {elapsed:.1f}s")
    for where, count in sorted(points.items()):
        print(f"  {count:3d}  {where}")
    waits = [w for lane in lanes for w in lane.orphan_wait_s]
    print(f"worker processes gone {max(waits):.2f}s after the runner at worst")

    # A final run per lane without faults: it completes, with the right values, and executes only
    # the steps the kills left unfinished; a second one executes nothing.
    for lane in lanes:
        lane.rng = random.Random(0)
        for attempt in range(2):
            before = lane.starts()
            finished = set(lane.finished)
            marker = f"flowfault-{uuid.uuid4().hex}"
            seed_now = lane.seed - attempt
            proc = start_flow(
                ["run", str(lane.flow), "-p", f"seed={seed_now}", "--json"],
                flow_env(lane.store, marker, FAULT_LOG=str(lane.log)),
                lane.root,
            )
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            executed = set(lane.starts() - before)
            assert not executed & finished, f"finished steps executed again: {executed & finished}"
            if attempt == 1:
                assert not executed, executed
            assert_no_orphans(marker)
            assert_store_sound(lane.store)
            run_id = lane.last_run()
            assert run_id is not None and run_id[1] == "succeeded"
            expected = expected_outputs(lane.flow, seed_now)
            assert stored_output(lane.store, run_id[0], "join") == expected["join"]
            lane.finished = lane.recorded_finished()
            if attempt == 0:
                lane.seed += 1

    assert kills >= KILLS_WANTED, f"only {kills} kills within the budget ({elapsed:.0f}s)"
    assert not any(lane.reexecuted for lane in lanes)
    assert any("injected commit" in p for p in points), points
    assert any(p.startswith("timed: during") for p in points) or any("step-start" in p for p in points)


# ----- hostile predicates and values ------------------------------------------------------------

HOSTILE_PRELUDE = '''
    """Good steps beside hostile predicates and values (generated by the hostile campaign)."""
    import ctypes
    import os
    import sys
    import time
    from pathlib import Path

    from dsl import step

    class ExitOnLoad:
        def __reduce__(self):
            return (sys.exit, (0,))

    def _explode():
        raise RuntimeError("cannot rebuild this value")

    class FailsOnLoad:
        def __reduce__(self):
            return (_explode, ())

    class BadIter:
        def __iter__(self):
            raise ValueError("no items for you")

    class Fatal(BaseException):
        pass

    def fatal(base):
        raise Fatal("deep trouble")

    def interrupt(base):
        raise KeyboardInterrupt

    def block(base):
        Path(os.environ["BLOCK_MARKER"]).write_text(str(os.getpid()))
        time.sleep(60)
        return True

    @step
    def base(seed: int = 0):
        return seed

    @step
    def good_1(base):
        return base + 1

    @step
    def good_2(good_1):
        return good_1 * 2

    @step
    def exit_value():
        return ExitOnLoad()

    @step
    def fails_value():
        return FailsOnLoad()

    @step
    def bad_iter():
        return BadIter()
'''

HOSTILE_KINDS: dict[str, tuple[str, str]] = {
    "when_sys_exit": ("@step(when=lambda base: sys.exit(3))\ndef {name}(base):\n    return 1", "sys.exit(3)"),
    "when_os_exit": (
        "@step(when=lambda base: os._exit(9))\ndef {name}(base):\n    return 1",
        "exited with code 9",
    ),
    "when_segfault": (
        "@step(when=lambda base: ctypes.string_at(0))\ndef {name}(base):\n    return 1",
        "SIGSEGV",
    ),
    "when_base_exception": ("@step(when=fatal)\ndef {name}(base):\n    return 1", "Fatal: deep trouble"),
    "when_keyboard_interrupt": ("@step(when=interrupt)\ndef {name}(base):\n    return 1", "SIGINT"),
    "when_reads_exit_value": (
        "@step(when=lambda exit_value: True)\ndef {name}():\n    return 1",
        "sys.exit(0)",
    ),
    "when_hangs": (
        "@step(timeout=1, when=lambda base: time.sleep(60) or True)\ndef {name}(base):\n    return 1",
        "timed out after 1s",
    ),
    "foreach_iter_raises": (
        '@step(foreach="bad_iter")\ndef {name}(bad_iter):\n    return 1',
        "no items for you",
    ),
    "foreach_unpickling_raises": (
        '@step(foreach="fails_value")\ndef {name}(fails_value):\n    return 1',
        "cannot rebuild this value",
    ),
    "foreach_exit_value": (
        '@step(foreach="exit_value")\ndef {name}(exit_value):\n    return 1',
        "sys.exit(0)",
    ),
    "input_exit_value": ("@step\ndef {name}(exit_value):\n    return 1", "sys.exit(0)"),
}
HOSTILE_RUNS = int(os.environ.get("FLOW_HOSTILE_RUNS", "10"))


def _hostile_flow(rng: random.Random, path: Path, endings: str) -> dict[str, str]:
    """Write a flow with three random hostile steps (and, for `endings` "sigint"/"sigkill", a
    predicate that blocks); return hostile step name -> the reason its failure must give."""
    kinds = rng.sample(sorted(HOSTILE_KINDS), 3)
    parts, expected = [textwrap.dedent(HOSTILE_PRELUDE)], {}
    for index, kind in enumerate(kinds):
        name = f"h{index}_{kind}"
        code, reason = HOSTILE_KINDS[kind]
        parts.append(code.format(name=name))
        expected[name] = reason
    if endings != "exit":
        parts.append("@step(when=block)\ndef blocked(base):\n    return 1")
    path.write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    return expected


def test_hostile_predicates_and_values_campaign(tmp_path: Path) -> None:
    """Random mixes of hostile predicates and values, each run by a real `flow run`: every run ends
    within its deadline and is recorded (never left `running`); each hostile step fails with its
    reason and the good steps succeed; a Ctrl-C or a SIGKILL while a predicate blocks ends the run
    at once; no process survives; the store stays sound."""
    seed = int(os.environ.get("FLOW_FAULT_SEED") or random.SystemRandom().randrange(1, 10**9))
    print(f"\nhostile campaign seed: {seed} (replay with FLOW_FAULT_SEED={seed})")
    rng = random.Random(seed)
    store = tmp_path / "store"
    seen: collections.Counter[str] = collections.Counter()
    slowest = 0.0
    for number in range(HOSTILE_RUNS):
        ending = rng.choice(["exit", "exit", "sigint", "sigkill"])
        path = tmp_path / f"hostile_{number}.py"
        expected = _hostile_flow(rng, path, ending)
        marker = tmp_path / f"blocked_{number}"
        tag = f"flowhostile-{uuid.uuid4().hex}"
        started = time.monotonic()
        proc = start_flow(
            ["run", str(path), "-p", f"seed={number}", "--json"],
            flow_env(store, tag, BLOCK_MARKER=str(marker)),
            tmp_path,
        )
        try:
            if ending != "exit":
                deadline = time.monotonic() + 30
                while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.02)
                assert marker.exists(), f"run {number}: the blocking predicate never started"
                proc.send_signal(signal.SIGINT if ending == "sigint" else signal.SIGKILL)
            out, err = proc.communicate(timeout=45)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise AssertionError(
                f"hostile run {number} ({ending}, {sorted(expected)}) hung; seed {seed}"
            ) from None
        took = time.monotonic() - started
        assert_no_orphans(tag)
        assert_store_sound(store)
        context = f"run {number} ({ending}, seed {seed}): {err[-3000:]}"
        records = Store(store, create=False)
        try:
            run = records.get_run(records.latest_run_id() or 0)
        finally:
            records.close()
        assert run is not None, context
        steps = {s.name: s for s in run.steps}
        if ending == "sigkill":
            assert proc.returncode == -signal.SIGKILL and run.status == "interrupted", context
        elif ending == "sigint":
            assert proc.returncode == 1 and run.status == "cancelled", context
            assert steps["blocked"].status == "cancelled", context
        else:
            assert proc.returncode == 1 and run.status == "failed", context
            for name, reason in expected.items():
                assert steps[name].status == "failed", (name, steps[name].status, context)
                assert reason in (steps[name].error or ""), (name, steps[name].error, context)
            assert {steps[n].status for n in ("base", "good_1", "good_2")} <= {"succeeded", "cached"}, context
        assert all(s.status not in ("running", "pending") for s in run.steps), context
        seen.update([n.split("_", 1)[1] for n in expected] if ending == "exit" else [f"stopped by {ending}"])
        slowest = max(slowest, took)
    print(f"hostile runs: {HOSTILE_RUNS}, slowest {slowest:.1f}s; outcomes: {dict(sorted(seen.items()))}")
