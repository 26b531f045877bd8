"""Several `flow run` processes on one store at once: all finish correctly, the store stays sound,
and (with the engine's use of leases) a fingerprint is never computed by two processes at once.

The lease API (`Store.acquire_lease / lease_holder / release_lease`) is tested on its
own across real processes, and end to end: a run waits for a fingerprint another live process
holds the lease for.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

from runner.store import Store
from tests.test_faults import REPO, assert_no_orphans, assert_store_sound, flow_env, start_flow

FLOW = """
import os
import time
from dsl import step

def mark(what, name, seed):
    with open(os.environ["EFFECTS"], "a") as handle:
        handle.write(f"{what} {name} {seed} {os.getpid()} {time.time():.6f}\\n")

@step
def load(seed: int = 0):
    mark("start", "load", seed)
    time.sleep(0.6)
    mark("end", "load", seed)
    return list(range(seed, seed + 1000))

@step
def left(load):
    mark("start", "left", load[0])
    time.sleep(0.3)
    mark("end", "left", load[0])
    return sum(load)

@step
def right(load):
    mark("start", "right", load[0])
    out = bytes(load[0] % 256 for _ in range(2 << 20))   # a file artifact
    mark("end", "right", load[0])
    return out

@step
def report(left, right, load):
    mark("start", "report", load[0])
    mark("end", "report", load[0])
    return f"{left}:{len(right)}"
"""


def expected_report(seed: int) -> str:
    return f"{sum(range(seed, seed + 1000))}:{2 << 20}"


def _intervals(effects: Path) -> dict[tuple[str, int], list[tuple[float, float, int]]]:
    """(step, seed) -> [(start, end, pid)] of every execution."""
    opened: dict[tuple[str, int, int], float] = {}
    spans: dict[tuple[str, int], list[tuple[float, float, int]]] = collections.defaultdict(list)
    for line in effects.read_text().splitlines():
        what, name, seed, pid, ts = line.split()
        key = (name, int(seed), int(pid))
        if what == "start":
            opened[key] = float(ts)
        else:
            spans[(name, int(seed))].append((opened.pop(key), float(ts), int(pid)))
    return spans


def _run_together(tmp_path: Path, store: Path, effects: Path, seeds: list[int]) -> list[tuple[int, str, str]]:
    flow = tmp_path / "together.py"
    flow.write_text(textwrap.dedent(FLOW), encoding="utf-8")
    marker = f"flowconc-{uuid.uuid4().hex}"
    procs = [
        start_flow(
            ["run", str(flow), "-p", f"seed={seed}", "--json", "--workers", "2"],
            flow_env(store, marker, EFFECTS=str(effects)),
            tmp_path,
        )
        for seed in seeds
    ]
    # a reader beside them, as a TUI or `flow runs` would be
    readers = 0
    while any(p.poll() is None for p in procs):
        if (store / "flow.db").exists():
            peek = subprocess.run(
                [sys.executable, "-m", "runner", "runs", "--json"],
                env=flow_env(store, marker),
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert peek.returncode == 0, peek.stderr
            json.loads(peek.stdout)
            readers += 1
        time.sleep(0.1)
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        results.append((proc.returncode, out, err))
    assert_no_orphans(marker)
    return results


def _report_of(out: str) -> str:
    for line in out.splitlines():
        event = json.loads(line)
        if event.get("event") == "step_finished" and event["step"] == "report":
            return str(event["preview"]).strip("'")
    raise AssertionError(f"no report step in {out[-500:]}")


def test_two_runs_of_the_same_flow_at_once_both_succeed(tmp_path: Path) -> None:
    store, effects = tmp_path / "store", tmp_path / "effects.txt"
    rounds = [[0, 0], [1, 1], [2, 2]]
    for seeds in rounds:
        results = _run_together(tmp_path, store, effects, seeds)
        for (code, out, err), seed in zip(results, seeds, strict=True):
            assert code == 0, err
            assert _report_of(out) == expected_report(seed)
        assert_store_sound(store)
    check = Store(store, create=False)
    try:
        runs = check.list_runs()
    finally:
        check.close()
    assert len(runs) == 6 and all(r.status == "succeeded" for r in runs)


def test_concurrent_runs_with_different_params_share_a_store(tmp_path: Path) -> None:
    store, effects = tmp_path / "store", tmp_path / "effects.txt"
    seeds = [10, 11, 12]
    results = _run_together(tmp_path, store, effects, seeds)
    for (code, out, err), seed in zip(results, seeds, strict=True):
        assert code == 0, err
        assert _report_of(out) == expected_report(seed)
    assert_store_sound(store)


def test_the_same_fingerprint_is_not_computed_twice_at_once(tmp_path: Path) -> None:
    """The second run starts once the first has started computing: it waits for the first's results."""
    store, effects = tmp_path / "store", tmp_path / "effects.txt"
    flow = tmp_path / "together.py"
    flow.write_text(textwrap.dedent(FLOW), encoding="utf-8")
    marker = f"flowconc-{uuid.uuid4().hex}"
    args = ["run", str(flow), "--json", "--workers", "2"]
    env = flow_env(store, marker, EFFECTS=str(effects))
    first = start_flow(args, env, tmp_path)
    assert first.stdout is not None
    for line in first.stdout:
        if json.loads(line).get("event") == "step_started":
            break
    time.sleep(0.2)  # the first run's 'running' row is committed (the writer batches over ~5 ms)
    second = start_flow(args, env, tmp_path)
    out2, err2 = second.communicate(timeout=120)
    rest, err1 = first.communicate(timeout=120)
    assert first.returncode == 0 and second.returncode == 0, (err1, err2)
    assert _report_of(out2) == expected_report(0)
    assert_no_orphans(marker)
    assert_store_sound(store)
    overlaps = []
    for key, spans in _intervals(effects).items():
        spans.sort()
        for (_, e1, p1), (s2, _, p2) in zip(spans, spans[1:], strict=False):
            if s2 < e1:
                overlaps.append((key, p1, p2))
    assert not overlaps, f"computed twice at once: {overlaps}"
    assert len(_intervals(effects)[("load", 0)]) == 1, "the second run reused the first's result"


def _fingerprint_of_load(tmp_path: Path) -> str:
    """The fingerprint of `load` (seed 0): from a run on a scratch store (it does not depend on the store)."""
    flow = tmp_path / "together.py"
    flow.write_text(textwrap.dedent(FLOW), encoding="utf-8")
    proc = start_flow(
        ["run", str(flow), "--json", "--only", "load"],
        flow_env(tmp_path / "scratch", "x", EFFECTS=str(tmp_path / "scratch-effects")),
        tmp_path,
    )
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return next(
        e["fingerprint"]
        for e in map(json.loads, out.splitlines())
        if e.get("event") == "step_finished" and e["step"] == "load"
    )


def test_a_fingerprint_leased_by_another_live_process_is_not_computed(tmp_path: Path) -> None:
    fingerprint = _fingerprint_of_load(tmp_path)
    store_dir, effects = tmp_path / "store", tmp_path / "effects.txt"
    Store(store_dir).close()
    hold_s = 2.0
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                sys.path.insert(0, {str(REPO)!r})
                from runner.store import Store
                store = Store({str(store_dir)!r})
                assert store.acquire_lease({fingerprint!r}) is None
                print("held", flush=True)
                time.sleep({hold_s})
                store.release_lease({fingerprint!r})
                store.flush()
                print(time.time(), flush=True)
                store.close()
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    marker = f"flowconc-{uuid.uuid4().hex}"
    proc = start_flow(
        ["run", str(tmp_path / "together.py"), "--json"],
        flow_env(store_dir, marker, EFFECTS=str(effects)),
        tmp_path,
    )
    out, err = proc.communicate(timeout=120)
    released = float(holder.communicate(timeout=30)[0].strip())
    assert proc.returncode == 0, err
    ((start, _, _),) = _intervals(effects)[("load", 0)]
    assert start >= released, f"computed {released - start:.2f}s before the other process released its lease"


# ----- the lease API across processes --------------------------------------------------------

_WORKER = r"""
import os, sys, time, json
sys.path.insert(0, {repo!r})
from runner.store import Store
store = Store({store!r})
computed = []
for fp in [f"{{i:064x}}" for i in range({n})]:
    while True:
        hit = store.lookup(fp)
        if hit is not None:
            break
        holder = store.acquire_lease(fp)
        if holder is None:
            if store.lookup(fp) is not None:    # finished between our lookup and our lease
                store.release_lease(fp)
                store.flush()
                break
            computed.append(fp)
            time.sleep(0.01)
            store.record_output("h" + fp[:8], 0, b"", cache_as=fp, step="x", run_id=0, preview=None)
            store.release_lease(fp)      # queued after the cache row: commits with or after it
            store.flush()
            break
        deadline = time.monotonic() + 30   # another process computes it: wait for its result or release
        while store.lookup(fp) is None and store.lease_holder(fp) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        if store.lookup(fp) is not None:
            break
print(json.dumps(computed))
store.close()
"""


def test_leases_make_two_processes_compute_each_fingerprint_once(tmp_path: Path) -> None:
    store = tmp_path / "store"
    Store(store).close()
    n = 60
    code = _WORKER.format(repo=str(REPO), store=str(store), n=n)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    computed: list[str] = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        computed += json.loads(out)
    counts = collections.Counter(computed)
    assert len(counts) == n and max(counts.values()) == 1, counts.most_common(3)
    print(f"\n{n} fingerprints, 3 processes: computed {len(computed)} times in all")


def test_a_lease_is_exclusive_and_dies_with_its_holder(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    store = Store(store_dir)
    fp = "a" * 64
    holder_code = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from runner.store import Store
        store = Store({str(store_dir)!r})
        assert store.acquire_lease({fp!r}) is None
        print("held", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", holder_code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        other = store.acquire_lease(fp)
        assert other is not None and other.pid == proc.pid
        assert store.lease_holder(fp) is not None
        assert store.lookup(fp) is None  # still held, nothing cached
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert store.lease_holder(fp) is None, "a dead holder's lease is void"
        assert store.acquire_lease(fp) is None, "and can be taken over"
        assert store.acquire_lease(fp) is None, "re-entrant for its holder"
        store.release_lease(fp)
        store.flush()
        assert store._conn.execute("SELECT COUNT(*) FROM leases").fetchone()[0] == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        store.close()


def test_close_releases_every_lease_of_the_process(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    for i in range(5):
        assert store.acquire_lease(f"{i:064x}") is None
    store.close()
    again = Store(tmp_path / "store")
    try:
        assert again._conn.execute("SELECT COUNT(*) FROM leases").fetchone()[0] == 0
    finally:
        again.close()


def test_environment_of_helpers_is_clean() -> None:
    env = flow_env(Path("/x"), "m", EFFECTS="e")
    assert env["FLOW_STORE"] == "/x" and "FLOW_FAULT_KILL" not in env and env["EFFECTS"] == "e"
    assert os.environ.get("FLOW_FAULT_KILL") is None
