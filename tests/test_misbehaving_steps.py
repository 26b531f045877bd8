"""Steps that misbehave fail alone, with a clear reason, and leave nothing behind.

Each test runs a real flow through the real engine with local worker processes: a step that raises,
calls sys.exit or os._exit, segfaults, loops past its timeout, leaves a child process running, hogs
memory past its limit, returns something unpicklable, returns a huge output, or prints a million
lines. Its independent sibling always succeeds.
"""

from __future__ import annotations

import os
import textwrap
import time

import psutil
import pytest

from tests.conftest import EngineHarness

SIBLING = """
@step
def sibling():
    return "fine"
"""


def _steps(run) -> dict:
    return {s.name: s for s in run.steps}


BAD_STEPS = {
    "raises": ("raise ValueError('bad input row 7')", "ValueError: bad input row 7"),
    "sys_exit": ("import sys; sys.exit(3)", "the step called sys.exit(3)"),
    "os_exit": ("import os; os._exit(7)", "exited with code 7"),
    "segfault": ("import ctypes; ctypes.string_at(0)", "SIGSEGV (segmentation fault)"),
    "unpicklable": ("import threading; return threading.Lock()", "cannot be stored"),
}


@pytest.mark.parametrize("kind", sorted(BAD_STEPS))
def test_a_misbehaving_step_fails_alone_with_a_clear_reason(harness, write_flow, kind) -> None:
    body, reason = BAD_STEPS[kind]
    path = write_flow(
        textwrap.dedent(f"""
        from dsl import step
        @step
        def bad():
            {body}
        """)
        + SIBLING
    )
    run = harness.run(path)
    steps = _steps(run)
    assert run.status == "failed"
    assert steps["bad"].status == "failed"
    assert reason in (steps["bad"].error or ""), steps["bad"].error
    assert steps["sibling"].status == "succeeded"
    # The engine keeps working after the crash: the next run reuses the sibling, fails bad again.
    again = _steps(harness.run(path))
    assert again["sibling"].status == "cached" and again["bad"].status == "failed"


def test_an_infinite_loop_is_killed_at_its_timeout(harness, write_flow) -> None:
    path = write_flow(
        textwrap.dedent("""
        from dsl import step
        @step(timeout=1)
        def spin():
            while True:
                pass
        """)
        + SIBLING
    )
    started = time.monotonic()
    run = harness.run(path)
    took = time.monotonic() - started
    steps = _steps(run)
    assert steps["spin"].status == "failed"
    assert "timed out after 1s" in steps["spin"].error
    assert steps["sibling"].status == "succeeded"
    assert took < 10


def test_a_child_process_that_outlives_its_step_is_killed(harness, write_flow, tmp_path) -> None:
    pids = tmp_path / "pids.txt"
    path = write_flow(
        textwrap.dedent(f"""
        import subprocess
        from dsl import step
        @step
        def spawner():
            direct = subprocess.Popen(["sleep", "300"])
            # a grandchild whose parent exits at once (a daemonised helper)
            helper = subprocess.Popen(["sh", "-c", "sleep 300 & echo $!"], stdout=subprocess.PIPE, text=True)
            grandchild = int(helper.stdout.readline())
            helper.wait()
            with open({str(pids)!r}, "w") as handle:
                handle.write(f"{{direct.pid}} {{grandchild}}")
            return "spawned"
        """)
    )
    run = harness.run(path)
    steps = _steps(run)
    assert steps["spawner"].status == "succeeded"
    children = [int(p) for p in pids.read_text().split()]
    for pid in children:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, pid
    logs = [line.line for line in harness.store.get_logs(run.id, "spawner")]
    assert any("killed 2 process(es) the step left running" in line for line in logs), logs


def test_a_memory_hog_past_its_limit_fails_as_such(harness, write_flow) -> None:
    path = write_flow(
        textwrap.dedent("""
        from dsl import step
        @step(resources={"memory": "200MB"})
        def hog():
            blocks = []
            for _ in range(100):
                blocks.append(bytearray(50 << 20))
            return len(blocks)

        @step(resources={"memory": "200MB"})
        def modest():
            return len(bytearray(20 << 20))
        """)
        + SIBLING
    )
    run = harness.run(path)
    steps = _steps(run)
    assert steps["hog"].status == "failed"
    assert "exceeded its memory limit" in steps["hog"].error
    assert steps["modest"].status == "succeeded"
    assert steps["sibling"].status == "succeeded"


def test_a_memory_limit_from_the_environment(store_dir, write_flow, monkeypatch) -> None:
    monkeypatch.setenv("FLOW_MEMORY_LIMIT", "150MB")
    path = write_flow(
        """
        from dsl import step

        @step
        def hog():
            return len(bytearray(400 << 20))
        """
    )
    h = EngineHarness(store_dir)
    try:
        steps = _steps(h.run(path))
    finally:
        h.close()
    assert steps["hog"].status == "failed"
    assert "MemoryError" in steps["hog"].error


BIG_MB = int(os.environ.get("FLOW_BIG_OUTPUT_MB", "1024"))


def test_a_huge_output_is_streamed_to_disk_not_held_twice(store_dir, write_flow, tmp_path) -> None:
    """A 1 GB output: the worker's peak RSS stays near one copy (the value), not two (value + pickle)."""
    size = BIG_MB << 20
    rss_file = tmp_path / "rss.txt"
    path = write_flow(
        f"""
        import resource
        from dsl import step

        @step
        def huge():
            return b"\\x01" * {size}

        @step
        def peak(huge):
            # peak RSS of this worker process so far (kilobytes on Linux); the same warm worker may
            # have produced `huge`, so record both before reading the input and after
            with open({str(rss_file)!r}, "a") as handle:
                handle.write(f"{{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}}\\n")
            return len(huge)
        """
    )
    harness = EngineHarness(store_dir, workers=1)  # `huge` and `peak` run in the same worker
    started = time.monotonic()
    try:
        run = harness.run(path)
    finally:
        harness.close()
    took = time.monotonic() - started
    steps = _steps(run)
    assert steps["huge"].status == "succeeded", steps["huge"].error
    assert steps["peak"].status == "succeeded", steps["peak"].error
    artifact = next(harness.store.artifact_dir.rglob(steps["huge"].output_hash))
    assert artifact.stat().st_size > size
    peak_kb = max(int(x) for x in rss_file.read_text().split())
    peak = peak_kb * 1024
    # one copy of the value (size) plus interpreter overhead; holding the pickle too would be 2x
    assert peak < size * 1.5, f"worker peak RSS {peak / 2**20:.0f} MiB for a {BIG_MB} MiB output"
    print(f"\n{BIG_MB} MiB output: worker peak RSS {peak / 2**20:.0f} MiB, run took {took:.1f}s")


def test_a_million_log_lines_keep_runner_memory_bounded(store_dir, write_flow, tmp_path) -> None:
    """`flow run` (the real CLI, plain reporter) while a step prints 1,000,000 lines: the runner's
    RSS stays bounded and every line lands in the store."""
    import subprocess
    import sys

    lines = 1_000_000
    path = write_flow(
        f"""
        import sys
        from dsl import step

        @step
        def chatty():
            write = sys.stdout.write
            for i in range({lines}):
                write(f"line {{i}}\\n")
            return "done"
        """
    )
    env = {**os.environ, "FLOW_STORE": str(store_dir)}
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", "run", str(path)],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    runner = psutil.Process(proc.pid)
    samples = []
    while proc.poll() is None:
        try:
            samples.append(runner.memory_info().rss)
        except psutil.Error:
            break
        time.sleep(0.05)
    took = time.monotonic() - started
    assert proc.wait() == 0, proc.stderr.read() if proc.stderr else ""
    from runner.store import Store

    store = Store(store_dir, create=False)
    try:
        run_id = store.latest_run_id()
        (count,) = store._conn.execute(
            "SELECT COUNT(*) FROM logs WHERE run_id=? AND step='chatty'", (run_id,)
        ).fetchone()
        first = store.get_logs(run_id, "chatty", limit=1)[0].line
    finally:
        store.close()
    assert count == lines, "every line is kept"
    assert first == "line 0"
    peak = max(samples) / 2**20
    settled = samples[min(len(samples) - 1, 20)] / 2**20
    print(f"\n1,000,000 lines in {took:.1f}s; runner RSS peak {peak:.0f} MiB (at start {settled:.0f} MiB)")
    assert peak < 150, f"runner RSS reached {peak:.0f} MiB for 1M log lines"
