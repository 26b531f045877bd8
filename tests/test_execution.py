"""Execution in real worker processes: parallelism, retries, timeouts, crash isolation, captured logs,
metrics, fan-out, conditions and trigger rules, Ctrl-C and SIGKILL of the runner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.helpers_core import (
    executed,
    flow_source,
    marks,
    pid_alive,
    reset,
    statuses,
    steps_of,
    wait_for,
    worker_pids,
)


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "executed.log"


def write(write_flow, log: Path, body: str, name: str = "flow_file.py") -> Path:
    return write_flow(flow_source(log, body), name=name)


# ----- parallelism ----------------------------------------------------------------------------


def test_independent_steps_overlap_in_time(harness, write_flow, log, tmp_path):
    """Each step records when it started and waits until the other has started too: only parallel
    execution lets both finish (a serial engine would time them out)."""
    body = f"""
        GATE = {str(tmp_path / "gate")!r}

        def meet(me, other):
            open(GATE + "." + me, "w").close()
            deadline = time.time() + 20
            while not os.path.exists(GATE + "." + other):
                if time.time() > deadline:
                    raise RuntimeError("the other step never started: no parallelism")
                time.sleep(0.01)

        @step(timeout=30)
        def left():
            mark("left-start")
            meet("left", "right")
            mark("left-end")
            return 1

        @step(timeout=30)
        def right():
            mark("right-start")
            meet("right", "left")
            mark("right-end")
            return 2

        @step
        def join(left, right):
            mark("join")
            return left + right
    """
    path = write(write_flow, log, body)
    run = harness.run(path)
    assert run.status == "succeeded", statuses(run)
    times = dict(marks(log))
    assert times["left-start"] < times["right-end"] and times["right-start"] < times["left-end"]
    assert times["join"] >= max(times["left-end"], times["right-end"])
    assert steps_of(run)["join"].preview == "3"
    assert steps_of(run)["left"].where != steps_of(run)["right"].where


# ----- retries and timeouts ----------------------------------------------------------------------


def test_retries_with_delay_record_attempts(harness, write_flow, log, tmp_path):
    body = f"""
        COUNT = {str(tmp_path / "count")!r}

        @step(retries=3, retry_delay=0.2)
        def flaky():
            mark("flaky")
            n = int(open(COUNT).read()) if os.path.exists(COUNT) else 0
            open(COUNT, "w").write(str(n + 1))
            if n < 2:
                raise ConnectionError(f"attempt {{n + 1}} failed")
            return n
    """
    path = write(write_flow, log, body)
    run = harness.run(path)
    assert run.status == "succeeded"
    record = steps_of(run)["flaky"]
    assert record.attempts == 3
    assert record.preview == "2"
    times = [t for _, t in marks(log)]
    assert len(times) == 3
    assert all(b - a >= 0.2 for a, b in zip(times, times[1:], strict=False))
    retrying = [e for e in harness.events if e.kind == "step_retrying"]
    assert [e.attempt for e in retrying] == [1, 2]


def test_retries_exhausted_fail_with_the_last_error(harness, write_flow, log):
    body = """
        @step(retries=1)
        def always():
            mark("always")
            raise ValueError("nope")
    """
    path = write(write_flow, log, body)
    run = harness.run(path)
    assert run.status == "failed"
    record = steps_of(run)["always"]
    assert record.attempts == 2
    assert "ValueError: nope" in record.error
    assert executed(log) == ["always", "always"]


def test_timeout_kills_the_step_and_its_process(harness, write_flow, log, tmp_path):
    body = f"""
        PID = {str(tmp_path / "pid")!r}

        @step(timeout=2)
        def sleepy():
            open(PID, "w").write(str(os.getpid()))
            mark("sleepy")
            time.sleep(60)
            return 1
    """
    path = write(write_flow, log, body)
    run = harness.run(path)
    assert run.status == "failed"
    record = steps_of(run)["sleepy"]
    assert "timed out" in record.error
    pid = int((tmp_path / "pid").read_text())
    wait_for(lambda: not pid_alive(pid), timeout=10)


# ----- crash isolation -----------------------------------------------------------------------------

CRASHES = {
    "raises": ("raise RuntimeError('boom')", "RuntimeError: boom"),
    "sys_exit": ("import sys; sys.exit(4)", "sys.exit(4)"),
    "os_exit": ("os._exit(3)", "exited with code 3"),
    "segfault": ("import ctypes; ctypes.string_at(0)", "SIGSEGV"),
    "hang": ("time.sleep(60)", "timed out"),
    "keyboard_interrupt": ("raise KeyboardInterrupt", "SIGINT"),
}


@pytest.mark.parametrize("kind", sorted(CRASHES))
def test_a_crashing_step_fails_alone_while_an_independent_branch_finishes(harness, write_flow, log, kind):
    code, expected = CRASHES[kind]
    body = f"""
        @step(timeout=1.5)
        def bad():
            mark("bad")
            {code}
            return "unreachable"

        @step
        def after_bad(bad):
            mark("after_bad")
            return bad

        @step
        def good():
            mark("good")
            time.sleep(0.3)
            return "fine"

        @step
        def after_good(good):
            mark("after_good")
            return good + "!"
    """
    path = write(write_flow, log, body)
    run = harness.run(path)
    st = steps_of(run)
    assert run.status == "failed"
    assert st["bad"].status == "failed"
    assert expected in st["bad"].error, st["bad"].error
    assert "\n" not in st["bad"].error
    assert st["after_bad"].status == "skipped"
    assert st["good"].status == "succeeded"
    assert st["after_good"].status == "succeeded" and st["after_good"].preview == "'fine!'"
    assert "after_bad" not in executed(log)
    # the engine is still usable: the next run reuses the good branch
    reset(log)
    again = harness.run(path)
    assert "good" not in executed(log) and "after_good" not in executed(log)
    assert steps_of(again)["after_good"].status == "cached"


def test_a_crash_through_the_cli_exits_1_with_the_step_named(flow_cli, write_flow, log):
    body = """
        @step
        def segv():
            import ctypes
            ctypes.string_at(0)

        @step
        def other():
            mark("other")
            return 1
    """
    path = write(write_flow, log, body)
    result = flow_cli("run", str(path))
    assert result.code == 1, result
    assert "segv" in result.stdout and "SIGSEGV" in result.stdout
    assert executed(log) == ["other"]


# ----- captured output and metrics ----------------------------------------------------------------


def test_stdout_stderr_and_logging_are_captured_line_by_line(flow_cli, write_flow, log):
    body = """
        import logging
        import sys

        @step
        def chatty():
            print("first line")
            print("partial", end="")
            print(" completed")
            print("to stderr", file=sys.stderr)
            logging.getLogger("mylogger").warning("a warning")
            os.write(1, b"raw fd write\\n")
            print("multi\\nline")
            return 1

        @step
        def quiet():
            return 2
    """
    path = write(write_flow, log, body)
    assert flow_cli("run", str(path)).code == 0
    result = flow_cli("logs", "last", "chatty")
    assert result.code == 0, result
    lines = result.stdout.splitlines()
    texts = [line.split(" ", 1)[1] for line in lines]
    for expected in [
        "first line",
        "partial completed",
        "to stderr",
        "WARNING mylogger: a warning",
        "multi",
        "line",
    ]:
        assert expected in texts, (expected, texts)
    assert texts.index("first line") < texts.index("partial completed") < texts.index("multi")
    import re

    assert all(re.match(r"\d\d:\d\d:\d\d ", line) for line in lines)
    everything = flow_cli("logs", "last").stdout
    assert "chatty | first line" in everything
    assert flow_cli("logs", "last", "quiet").stdout.strip() == ""


def test_output_written_to_file_descriptors_is_captured(harness, write_flow, log):
    body = """
        @step
        def native():
            os.write(1, b"from fd 1\\n")
            time.sleep(0.3)
            os.write(2, b"from fd 2\\n")
            time.sleep(0.3)
            return 0
    """
    path = write(write_flow, log, body)
    run = harness.run(path)
    harness.store.flush()
    lines = [(line.stream, line.line) for line in harness.store.get_logs(run.id, "native")]
    assert lines == [("stdout", "from fd 1"), ("stderr", "from fd 2")]


def test_fd_output_right_before_return_is_never_lost(harness, write_flow, log):
    body = """
        @step(cache=False)
        def native():
            print("python line")
            os.write(1, b"raw fd write\\n")
            return 0
    """
    path = write(write_flow, log, body)
    missing = 0
    for _ in range(20):
        run = harness.run(path)
        harness.store.flush()
        texts = [line.line for line in harness.store.get_logs(run.id, "native")]
        missing += "raw fd write" not in texts
    assert missing == 0, f"lost in {missing} of 20 runs"


def test_a_large_fd_write_right_before_return_is_captured_whole(harness, write_flow, log):
    """More than a pipe holds: the worker's write blocks until the runner reads, then the result
    follows at once; every line must still be attributed to the step."""
    body = """
        @step(cache=False)
        def native():
            os.write(1, b"".join(b"row %06d\\n" % i for i in range(20000)) + b"last line\\n")
            return 0
    """
    path = write(write_flow, log, body)
    for _ in range(3):
        run = harness.run(path)
        harness.store.flush()
        texts = [line.line for line in harness.store.get_logs(run.id, "native")]
        assert len(texts) == 20001 and texts[-1] == "last line", (len(texts), texts[-1:])


def test_logs_are_stored_with_timestamps_and_streams(harness, write_flow, log):
    body = """
        import sys

        @step
        def s():
            print("out")
            time.sleep(0.05)
            print("err", file=sys.stderr)
            return 0
    """
    path = write(write_flow, log, body)
    run = harness.run(path)
    harness.store.flush()
    lines = harness.store.get_logs(run.id, "s")
    assert [(line.stream, line.line) for line in lines] == [("stdout", "out"), ("stderr", "err")]
    assert lines[0].ts < lines[1].ts
    assert run.started_at <= lines[0].ts <= (run.finished_at or 0)


def test_metrics_land_in_show_json(flow_cli, write_flow, log):
    body = """
        @step
        def train():
            log_metric("accuracy", 0.93)
            log_metric("loss", 0.1)
            return 1

        @step
        def evaluate(train):
            log_metric("accuracy", 0.9)
            return 2
    """
    path = write(write_flow, log, body)
    assert flow_cli("run", str(path)).code == 0
    shown = flow_cli("show", "last", "--json").json()
    st = {s["name"]: s for s in shown["steps"]}
    assert st["train"]["metrics"] == {"accuracy": 0.93, "loss": 0.1}
    assert st["evaluate"]["metrics"] == {"accuracy": 0.9}
    assert shown["metrics"]["loss"] == 0.1
    text = flow_cli("show", "last").stdout
    assert "accuracy=0.93" in text


def test_metrics_are_kept_for_a_failing_step(harness, write_flow, log):
    body = """
        @step
        def half():
            log_metric("progress", 0.5)
            raise RuntimeError("later")
    """
    path = write(write_flow, log, body)
    run = harness.run(path)
    assert steps_of(run)["half"].metrics == {"progress": 0.5}


# ----- fan-out --------------------------------------------------------------------------------------

FANOUT = """
    @step
    def items():
        return [1, 2, 3]

    @step(foreach="items")
    def square(items):
        mark(f"square-{items}")
        return items * items

    @step
    def total(square):
        mark("total")
        return list(square)
"""


def test_foreach_runs_one_instance_per_item_and_downstream_gets_the_ordered_list(harness, write_flow, log):
    path = write(write_flow, log, FANOUT)
    run = harness.run(path)
    assert run.status == "succeeded"
    assert sorted(executed(log)) == ["square-1", "square-2", "square-3", "total"]
    st = steps_of(run)
    assert st["total"].preview == "[1, 4, 9]"
    assert {f"square[{i}]" for i in range(3)} <= set(st)
    assert st["square[1]"].parent == "square"


def test_changing_one_item_reruns_only_that_instance(harness, write_flow, log):
    path = write(write_flow, log, FANOUT)
    harness.run(path)
    reset(log)
    path.write_text(path.read_text().replace("return [1, 2, 3]", "return [1, 5, 3]"))
    run = harness.run(path)
    assert sorted(executed(log)) == ["square-5", "total"]
    st = steps_of(run)
    assert st["total"].preview == "[1, 25, 9]"
    assert st["square[0]"].status == "cached" and st["square[2]"].status == "cached"
    reset(log)
    path.write_text(path.read_text().replace("return [1, 5, 3]", "return [3, 1, 5, 7]"))
    run = harness.run(path)
    assert sorted(executed(log)) == ["square-7", "total"]
    assert steps_of(run)["total"].preview == "[9, 1, 25, 49]"


def test_foreach_over_a_parameter_and_an_empty_list(harness, write_flow, log):
    body = """
        @step(foreach="xs")
        def each(xs: list = [1, 2]):
            mark(f"each-{xs}")
            return xs + 100

        @step
        def collect(each):
            return each
    """
    path = write(write_flow, log, body)
    run = harness.run(path)
    assert steps_of(run)["collect"].preview == "[101, 102]"
    run = harness.run(path, {"xs": "[]"})
    assert run.status == "succeeded"
    assert steps_of(run)["collect"].preview == "[]"


def test_one_failing_item_fails_the_fan_out(harness, write_flow, log):
    body = """
        @step(foreach="xs")
        def each(xs: list = [1, 0, 2]):
            mark(f"each-{xs}")
            return 10 // xs

        @step
        def collect(each):
            mark("collect")
            return each
    """
    path = write(write_flow, log, body)
    run = harness.run(path)
    st = steps_of(run)
    assert st["each"].status == "failed"
    assert "ZeroDivisionError" in st["each"].error
    assert st["collect"].status == "skipped"
    assert "collect" not in executed(log)


# ----- conditions and trigger rules ------------------------------------------------------------------

BRANCH = """
    @step
    def check(threshold: float = 0.5):
        return {"ok": threshold < 0.8}

    @step(when=lambda check: check["ok"])
    def train(check):
        mark("train")
        return "model"

    @step(when=lambda check: not check["ok"])
    def notify(check):
        mark("notify")
        return "notified"

    @step(trigger="any_succeeded")
    def report(train, notify):
        mark("report")
        return f"{train}/{notify}"

    @step
    def strict_join(train, notify):
        mark("strict_join")
        return 0
"""


def test_when_branches_and_an_any_succeeded_join(harness, write_flow, log):
    path = write(write_flow, log, BRANCH)
    run = harness.run(path)
    st = steps_of(run)
    assert st["train"].status == "succeeded"
    assert st["notify"].status == "skipped"
    assert "when" in st["notify"].reason
    assert st["report"].status == "succeeded" and st["report"].preview == "'model/None'"
    assert st["strict_join"].status == "skipped"
    assert run.status == "succeeded"
    reset(log)
    run = harness.run(path, {"threshold": "0.9"})
    st = steps_of(run)
    assert st["train"].status == "skipped" and st["notify"].status == "succeeded"
    assert st["report"].preview == "'None/notified'"
    assert sorted(executed(log)) == ["notify", "report"]


def test_trigger_rules_after_a_failure(harness, write_flow, log):
    body = """
        @step
        def ok():
            return 1

        @step
        def broken():
            raise RuntimeError("x")

        @step(trigger="all_done")
        def cleanup(ok, broken):
            mark("cleanup")
            return (ok, broken)

        @step(trigger="none_failed")
        def careful(ok, broken):
            mark("careful")
            return 0

        @step(trigger="any_succeeded")
        def lenient(ok, broken):
            mark("lenient")
            return ok
    """
    path = write(write_flow, log, body)
    run = harness.run(path)
    st = steps_of(run)
    assert st["cleanup"].status == "succeeded" and st["cleanup"].preview == "(1, None)"
    assert st["careful"].status == "skipped"
    assert st["lenient"].status == "succeeded"
    assert sorted(executed(log)) == ["cleanup", "lenient"]
    assert run.status == "failed"


def test_a_raising_when_predicate_fails_the_step_with_a_clear_error(harness, write_flow, log):
    body = """
        @step
        def up():
            return {}

        @step(when=lambda up: up["missing"])
        def gated(up):
            mark("gated")
            return 1
    """
    path = write(write_flow, log, body)
    run = harness.run(path)
    record = steps_of(run)["gated"]
    assert record.status == "failed"
    assert "when" in record.error and "KeyError" in record.error
    assert executed(log) == []


# ----- Ctrl-C and SIGKILL of the runner --------------------------------------------------------------

SLOW = """
    @step
    def fast():
        mark("fast")
        return 1

    @step
    def slow(fast):
        mark("slow")
        time.sleep(60)
        return 2

    @step
    def after(slow):
        mark("after")
        return 3
"""


def start_runner(
    path: Path, store_dir: Path, tmp_path: Path, marker: str, *args: str
) -> subprocess.Popen[str]:
    env = {**os.environ, "FLOW_STORE": str(store_dir), "FLOW_TEST_MARKER": marker}
    return subprocess.Popen(
        [sys.executable, "-m", "runner", "run", str(path), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=tmp_path,
        start_new_session=True,
    )


def test_ctrl_c_cancels_the_run_keeps_finished_results_and_kills_the_step(
    flow_cli, write_flow, log, store_dir, tmp_path
):
    path = write(write_flow, log, SLOW)
    marker = uuid.uuid4().hex
    proc = start_runner(path, store_dir, tmp_path, marker)
    try:
        wait_for(lambda: "slow" in executed(log), timeout=30)
        wait_for(lambda: worker_pids(marker), timeout=10)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, (out, err)
    assert "Traceback" not in err
    wait_for(lambda: not worker_pids(marker), timeout=10)
    shown = flow_cli("show", "last", "--json").json()
    assert shown["status"] == "cancelled"
    st = {s["name"]: s["status"] for s in shown["steps"]}
    assert st == {"fast": "succeeded", "slow": "cancelled", "after": "cancelled"}
    reset(log)
    path.write_text(path.read_text().replace("time.sleep(60)", "time.sleep(0)"))
    result = flow_cli("run", str(path))
    assert result.code == 0, result
    assert executed(log) == ["slow", "after"]  # fast came from the cache


def test_sigkill_of_the_runner_leaves_no_orphans_and_the_next_run_reuses_what_finished(
    flow_cli, write_flow, log, store_dir, tmp_path
):
    path = write(write_flow, log, SLOW)
    marker = uuid.uuid4().hex
    proc = start_runner(path, store_dir, tmp_path, marker)
    try:
        wait_for(lambda: "slow" in executed(log), timeout=30)
        from tests.helpers_core import db_rows

        wait_for(
            lambda: db_rows(store_dir, "SELECT 1 FROM steps WHERE name='fast' AND status='succeeded'"),
            timeout=30,
        )
        assert worker_pids(marker)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    wait_for(lambda: not worker_pids(marker), timeout=10)
    reset(log)
    path.write_text(path.read_text().replace("time.sleep(60)", "time.sleep(0)"))
    result = flow_cli("run", str(path))
    assert result.code == 0, result
    assert executed(log) == ["slow", "after"]
    runs = flow_cli("runs", "--json").json()
    assert [r["status"] for r in runs] == ["succeeded", "interrupted"]
    st = {s["name"]: s for s in runs[1]["steps"]}
    assert st["fast"]["status"] == "succeeded"
    assert st["slow"]["status"] == "cancelled"
    assert st["after"]["status"] != "succeeded"
    assert runs[1]["finished_at"] is not None


def test_sigkill_then_runs_and_show_report_the_run_as_interrupted(
    flow_cli, write_flow, log, store_dir, tmp_path
):
    path = write(write_flow, log, SLOW)
    marker = uuid.uuid4().hex
    proc = start_runner(path, store_dir, tmp_path, marker)
    try:
        wait_for(lambda: "slow" in executed(log), timeout=30)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    wait_for(lambda: not worker_pids(marker), timeout=10)
    listed = flow_cli("runs", "--json")
    assert listed.code == 0, listed
    assert listed.json()[0]["status"] == "interrupted"
    shown = flow_cli("show", "last", "--json")
    assert shown.code == 0, shown
    assert shown.json()["status"] == "interrupted"


# ----- code shipping ------------------------------------------------------------------------------------

LRU_FLOW = """
    import functools

    @functools.lru_cache(maxsize=None)
    def cached_helper(x):
        return x + 1000

    @step
    def uses_lru():
        mark("uses_lru")
        return cached_helper(1)

    @step
    def plain():
        mark("plain")
        return 1
"""

POISON_FLOW = """
    class Poison:
        \"\"\"Pickles fine in the runner, but cannot be rebuilt where the step runs.\"\"\"

        def __reduce__(self):
            return (explode, ())

    def explode():
        raise RuntimeError("this object cannot be rebuilt in a worker")

    POISON = Poison()

    @step
    def uses_poison():
        mark("uses_poison")
        return repr(POISON)

    @step
    def plain():
        mark("plain")
        return 1
"""


def test_a_step_using_an_lru_cached_helper_runs(harness, write_flow, log):
    path = write(write_flow, log, LRU_FLOW)
    run = harness.run(path)
    assert steps_of(run)["uses_lru"].status == "succeeded", steps_of(run)["uses_lru"].error
    assert steps_of(run)["uses_lru"].preview == "1001"


def test_a_step_whose_code_cannot_be_shipped_fails_alone(harness, write_flow, log):
    """Steps' code travels in bundles; one step's unloadable global must fail only that step."""
    path = write(write_flow, log, POISON_FLOW)
    run = harness.run(path)
    assert steps_of(run)["plain"].status == "succeeded", steps_of(run)["plain"].error
    assert "plain" in executed(log)
    poisoned = steps_of(run)["uses_poison"]
    assert poisoned.status == "failed"
    assert "cannot load the step's code" in poisoned.error and "rebuilt in a worker" in poisoned.error


def test_inline_executor_reports_unshippable_code_instead_of_hanging(flow_cli, write_flow, log):
    path = write(write_flow, log, POISON_FLOW)
    try:
        result = flow_cli("run", str(path), "--executor", "inline", timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("flow run --executor inline hung")
    assert result.code == 1, result
    assert "Traceback" not in result.stderr


def test_timeout_does_not_count_worker_start_up(flow_cli, write_flow, log, tmp_path):
    slow = tmp_path / "slow_site"
    slow.mkdir()
    (slow / "sitecustomize.py").write_text(
        "import os, sys, time\n"
        "if os.environ.get('FLOW_TEST_SLOW_START') and 'executors.worker' in ' '.join(sys.orig_argv):\n"
        "    time.sleep(1.5)\n"
    )
    body = """
        @step(timeout=1)
        def quick():
            mark("quick")
            return 1
    """
    path = write(write_flow, log, body)
    env = {"PYTHONPATH": str(slow), "FLOW_TEST_SLOW_START": "1"}
    result = flow_cli("run", str(path), env=env)
    assert result.code == 0, result
    assert executed(log) == ["quick"]


def test_resume_after_ctrl_c_reruns_the_cancelled_steps(flow_cli, write_flow, log, store_dir, tmp_path):
    body = SLOW.replace("time.sleep(60)", "time.sleep(0 if os.path.exists(LOG + '.fast') else 60)")
    path = write(write_flow, log, body)
    marker = uuid.uuid4().hex
    proc = start_runner(path, store_dir, tmp_path, marker)
    try:
        wait_for(lambda: "slow" in executed(log), timeout=30)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1
    cancelled = flow_cli("show", "last", "--json").json()
    assert cancelled["status"] == "cancelled"
    Path(str(log) + ".fast").touch()
    reset(log)
    resumed = flow_cli("resume", str(cancelled["id"]))
    assert resumed.code == 0, resumed
    assert executed(log) == ["slow", "after"]
    wait_for(lambda: not worker_pids(marker), timeout=10)


def test_a_prioritised_step_is_reached_before_unrelated_ones(harness, write_flow, log):
    """A save's changed step goes first: its upstream steps are decided before any other branch's, so
    the step just edited starts without waiting for the rest of a big flow to be checked."""
    chains = [f"a{i}" for i in range(12)], [f"b{i}" for i in range(12)]
    body = ""
    for chain in chains:
        for i, name in enumerate(chain):
            arg = chain[i - 1] if i else ""
            body += f"\n@step\ndef {name}({arg}):\n    mark('{name}')\n    return {i}\n"
    path = write(write_flow, log, body)
    assert harness.run(path).status == "succeeded"
    path.write_text(flow_source(log, body.replace("mark('b8')", "mark('b8 edited')")), encoding="utf-8")
    harness.events.clear()
    harness.run(path, prioritise=("b8",))
    decided = [
        e.step
        for e in harness.events
        if (type(e).__name__ == "StepFinished" and e.status == "cached") or type(e).__name__ == "StepStarted"
    ]
    assert decided.index("b8") == 8, decided  # b0..b7 (cached), then b8 starts
    assert not any(name.startswith("a") for name in decided[:9]), decided


def test_an_inline_result_larger_than_a_pipe_read_arrives_whole(harness, write_flow, log):
    """Results up to 1 MiB travel inline in the result frame, which the runner reads 64 KiB at a time."""
    body = """
        @step
        def big():
            return bytes(range(256)) * 3000  # 768,000 bytes: inline, a dozen reads

        @step
        def check(big):
            return (len(big), big[:256] == bytes(range(256)), big[-1])
    """
    path = write(write_flow, log, body)
    run = harness.run(path)
    assert run.status == "succeeded"
    assert steps_of(run)["check"].preview == "(768000, True, 255)"


def test_a_run_started_after_close_never_starts_and_never_hangs(store_dir, write_flow, log):
    """The TUI may start a run from a worker thread while the app quits: once the engine is closed, a
    start returns a finished (cancelled) run instead of a scheduler on a closed executor."""
    from dsl import load_flow
    from runner.engine import Engine, RunRequest
    from runner.executors.local import LocalExecutor
    from runner.store import Store

    path = write(write_flow, log, "@step\ndef a():\n    mark('a')\n    return 1\n")
    store = Store(store_dir)
    engine = Engine(store, LocalExecutor(1))
    loaded = load_flow(path)
    engine.close()
    handle = engine.start(RunRequest(loaded, {}))
    assert handle.wait(5) == "cancelled"
    assert executed(log) == []
    store.close()
