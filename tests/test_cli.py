"""The `flow` command line through real subprocesses: JSON shapes, exit codes, partial runs, resume,
history commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers_core import executed, flow_source, reset


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "executed.log"


def write(write_flow, log: Path, body: str, name: str = "flow_file.py") -> Path:
    return write_flow(flow_source(log, body), name=name)


DIAMOND = """
    flow = Flow("diamond", description="a small diamond")

    @step
    def load(rows: int = 3):
        mark("load")
        print(f"loading {rows}")
        return list(range(rows))

    @step
    def left(load):
        mark("left")
        return sum(load)

    @step
    def right(load):
        mark("right")
        return len(load)

    @step
    def join(left, right):
        mark("join")
        log_metric("score", left / max(1, right))
        return left + right

    @step
    def report(join):
        mark("report")
        return f"total {join}"
"""

RUN_KEYS = {"id", "flow", "status", "started_at", "finished_at", "params", "steps"}
STEP_KEYS = {"name", "status", "attempts", "duration_s", "error", "reason"}


# ----- JSON output and exit codes ----------------------------------------------------------------


def test_show_and_runs_json_have_the_documented_fields(flow_cli, write_flow, log):
    path = write(write_flow, log, DIAMOND)
    result = flow_cli("run", str(path), "-p", "rows=4")
    assert result.code == 0, result
    shown = flow_cli("show", "last", "--json")
    assert shown.code == 0, shown
    run = shown.json()
    assert RUN_KEYS <= set(run)
    assert run["flow"] == "diamond"
    assert run["status"] == "succeeded"
    assert run["params"] == {"rows": 4}
    assert isinstance(run["started_at"], float) and run["finished_at"] >= run["started_at"]
    assert [s["name"] for s in run["steps"]] == ["load", "left", "right", "join", "report"]
    for record in run["steps"]:
        assert STEP_KEYS <= set(record), record
        assert record["status"] == "succeeded"
        assert record["attempts"] == 1
        assert record["error"] is None
        assert record["reason"] == "no earlier result"
        assert isinstance(record["duration_s"], float) and record["duration_s"] >= 0
    listed = flow_cli("runs", "--json")
    assert listed.code == 0, listed
    runs = listed.json()
    assert isinstance(runs, list) and len(runs) == 1
    assert RUN_KEYS <= set(runs[0])
    assert runs[0]["id"] == run["id"]
    assert all(STEP_KEYS <= set(s) for s in runs[0]["steps"])


def test_a_failed_step_shows_its_error_in_json(flow_cli, write_flow, log):
    body = """
        @step
        def boom():
            raise ValueError("bad value 42")

        @step
        def after(boom):
            return boom
    """
    path = write(write_flow, log, body)
    result = flow_cli("run", str(path))
    assert result.code == 1, result
    assert "Traceback" not in result.stderr
    run = flow_cli("show", "last", "--json").json()
    assert run["status"] == "failed"
    st = {s["name"]: s for s in run["steps"]}
    assert st["boom"]["status"] == "failed"
    assert st["boom"]["error"] == "ValueError: bad value 42"
    assert st["boom"]["attempts"] == 1
    assert st["after"]["status"] == "skipped"
    assert "boom" in st["after"]["reason"] + (st["after"]["error"] or "")


def test_run_json_prints_one_event_per_line(flow_cli, write_flow, log):
    path = write(write_flow, log, DIAMOND)
    result = flow_cli("run", str(path), "--json")
    assert result.code == 0, result
    events = result.events()
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert kinds.count("step_started") == 5 and kinds.count("step_finished") == 5
    started = events[0]
    assert started["flow"] == "diamond" and started["params"] == {"rows": 3}
    assert started["steps"] == ["load", "left", "right", "join", "report"]
    logs = [e for e in events if e["event"] == "step_log"]
    assert [(e["step"], e["line"]) for e in logs] == [("load", "loading 3")]
    finished = {e["step"]: e for e in events if e["event"] == "step_finished"}
    assert finished["join"]["metrics"] == {"score": 1.0}
    assert events[-1]["status"] == "succeeded"
    assert {e["run_id"] for e in events} == {started["run_id"]}
    # order: a step finishes after it starts, and after its upstream finished
    position = {(e["event"], e.get("step")): i for i, e in enumerate(events)}
    assert position[("step_finished", "load")] < position[("step_started", "left")]
    assert position[("step_finished", "join")] < position[("step_started", "report")]
    cached = flow_cli("run", str(path), "--json").events()
    assert [e["status"] for e in cached if e["event"] == "step_finished"] == ["cached"] * 5


def test_exit_codes_0_1_2(flow_cli, write_flow, log):
    ok = write(write_flow, log, DIAMOND, name="ok.py")
    failing = write(write_flow, log, "@step\ndef f():\n    raise SystemError('x')\n", name="failing.py")
    assert flow_cli("run", str(ok)).code == 0
    assert flow_cli("run", str(failing)).code == 1
    assert flow_cli("run", str(ok), "-p", "nope=1").code == 2
    assert flow_cli("run", str(ok), "--no-such-option").code == 2
    assert flow_cli("frobnicate").code == 2


def test_plain_output_when_not_a_terminal(flow_cli, write_flow, log):
    path = write(write_flow, log, DIAMOND)
    result = flow_cli("run", str(path))
    assert result.code == 0
    assert "\x1b[" not in result.stdout
    assert "load | loading 3" in result.stdout
    assert "succeeded" in result.stdout.splitlines()[-1]


def test_show_text_prints_reasons_and_metrics(flow_cli, write_flow, log):
    path = write(write_flow, log, DIAMOND)
    flow_cli("run", str(path))
    first = flow_cli("show", "last")
    assert "score=" in first.stdout and "no earlier result" in first.stdout
    path.write_text(path.read_text().replace("return sum(load)", "return sum(load) + 0 * 1"))
    flow_cli("run", str(path))
    text = flow_cli("show", "last")
    assert text.code == 0, text
    assert "code changed" in text.stdout
    assert "cached" in text.stdout


def test_runs_filters_by_flow_and_delete_removes_a_run(flow_cli, write_flow, log):
    a = write(write_flow, log, DIAMOND, name="a.py")
    b = write(write_flow, log, "@step\ndef only():\n    return 1\n", name="b.py")
    assert flow_cli("run", str(a)).code == 0
    assert flow_cli("run", str(b)).code == 0
    assert flow_cli("run", str(a)).code == 0
    assert [r["flow"] for r in flow_cli("runs", "--json").json()] == ["diamond", "b", "diamond"]
    assert len(flow_cli("runs", "diamond", "--json").json()) == 2
    assert len(flow_cli("runs", str(b), "--json").json()) == 1
    assert "diamond" in flow_cli("runs").stdout
    first = flow_cli("runs", "--json").json()[-1]["id"]
    deleted = flow_cli("delete", str(first))
    assert deleted.code == 0, deleted
    assert flow_cli("show", str(first)).code == 2
    assert len(flow_cli("runs", "--json").json()) == 2
    reset(log)
    assert flow_cli("run", str(a)).code == 0  # results of a deleted run stay reusable
    assert executed(log) == []


# ----- partial runs ----------------------------------------------------------------------------------


def step_statuses(flow_cli) -> dict[str, str]:
    return {s["name"]: s["status"] for s in flow_cli("show", "last", "--json").json()["steps"]}


def test_only_runs_just_that_step_with_upstreams_from_the_cache(flow_cli, write_flow, log):
    path = write(write_flow, log, DIAMOND)
    assert flow_cli("run", str(path)).code == 0
    reset(log)
    path.write_text(path.read_text().replace("return left + right", "return left + right + 100"))
    result = flow_cli("run", str(path), "--only", "join")
    assert result.code == 0, result
    assert executed(log) == ["join"]
    assert step_statuses(flow_cli) == {"join": "succeeded"}


def test_only_two_steps_with_an_unselected_step_between_them_is_exit_2(flow_cli, write_flow, log):
    path = write(write_flow, log, DIAMOND)
    assert flow_cli("run", str(path)).code == 0
    reset(log)
    result = flow_cli("run", str(path), "--only", "report", "--only", "left")
    assert result.code == 2, result
    assert "Traceback" not in result.stderr
    assert "'join'" in result.stderr and "between selected steps" in result.stderr
    assert executed(log) == []


def test_only_with_an_upstream_that_has_no_cached_result_is_exit_2(flow_cli, write_flow, log):
    path = write(write_flow, log, DIAMOND)
    result = flow_cli("run", str(path), "--only", "join")
    assert result.code == 2, result
    assert "Traceback" not in result.stderr
    assert "no cached result" in result.stderr
    assert "load" in result.stderr or "left" in result.stderr
    assert executed(log) == []
    assert flow_cli("runs", "--json").json() == []


def test_from_runs_the_step_and_its_descendants(flow_cli, write_flow, log):
    path = write(write_flow, log, DIAMOND)
    assert flow_cli("run", str(path)).code == 0
    reset(log)
    path.write_text(path.read_text().replace("return sum(load)", "return sum(load) * 2"))
    result = flow_cli("run", str(path), "--from", "left")
    assert result.code == 0, result
    assert sorted(executed(log)) == ["join", "left", "report"]
    assert set(step_statuses(flow_cli)) == {"left", "join", "report"}


def test_to_runs_the_step_and_its_ancestors(flow_cli, write_flow, log):
    path = write(write_flow, log, DIAMOND)
    result = flow_cli("run", str(path), "--to", "left")
    assert result.code == 0, result
    assert sorted(executed(log)) == ["left", "load"]
    assert set(step_statuses(flow_cli)) == {"load", "left"}


def test_from_and_to_combined_is_the_intersection(flow_cli, write_flow, log):
    path = write(write_flow, log, DIAMOND)
    assert flow_cli("run", str(path)).code == 0
    reset(log)
    path.write_text(path.read_text().replace("return len(load)", "return len(load) * 2"))
    path.write_text(path.read_text().replace('return f"total {join}"', 'return f"total: {join}"'))
    result = flow_cli("run", str(path), "--from", "right", "--to", "join")
    assert result.code == 0, result
    assert sorted(executed(log)) == ["join", "right"]
    disjoint = flow_cli("run", str(path), "--from", "left", "--to", "right")
    assert disjoint.code == 2 and "select no step" in disjoint.stderr


# ----- resume ----------------------------------------------------------------------------------------

RESUMABLE = """
    @step
    def first(n: int = 2):
        mark("first")
        return n

    @step
    def flaky(first):
        mark("flaky")
        if not os.path.exists(LOG + ".ok"):
            raise RuntimeError("not yet")
        return first * 10

    @step
    def last(flaky):
        mark("last")
        return flaky + 1

    @step
    def side():
        mark("side")
        return 0
"""


def test_resume_reruns_only_failed_and_never_run_steps_with_the_original_params(flow_cli, write_flow, log):
    path = write(write_flow, log, RESUMABLE)
    failed = flow_cli("run", str(path), "-p", "n=5")
    assert failed.code == 1, failed
    run_id = flow_cli("show", "last", "--json").json()["id"]
    assert sorted(executed(log)) == ["first", "flaky", "side"]
    Path(str(log) + ".ok").touch()
    reset(log)
    resumed = flow_cli("resume", str(run_id))
    assert resumed.code == 0, resumed
    assert executed(log) == ["flaky", "last"]
    run = flow_cli("show", "last", "--json").json()
    assert run["id"] != run_id
    assert run["params"] == {"n": 5}
    assert run["status"] == "succeeded"
    st = {s["name"]: s for s in run["steps"]}
    assert st["last"]["status"] == "succeeded"
    assert f"#{run_id}" in run["trigger"]
    preview = st["last"].get("preview")
    assert preview == "51"


def test_resume_reuses_cache_false_steps_of_the_resumed_run(flow_cli, write_flow, log):
    body = """
        @step(cache=False)
        def volatile():
            mark("volatile")
            return 1

        @step
        def then(volatile):
            mark("then")
            if not os.path.exists(LOG + ".ok"):
                raise RuntimeError("not yet")
            return volatile
    """
    path = write(write_flow, log, body)
    assert flow_cli("run", str(path)).code == 1
    Path(str(log) + ".ok").touch()
    reset(log)
    assert flow_cli("resume", "last").code == 0
    assert executed(log) == ["then"]


def test_resume_of_a_succeeded_run_executes_nothing(flow_cli, write_flow, log):
    path = write(write_flow, log, DIAMOND)
    assert flow_cli("run", str(path), "-p", "rows=2").code == 0
    reset(log)
    result = flow_cli("resume", "last")
    assert result.code == 0, result
    assert executed(log) == []
    run = flow_cli("show", "last", "--json").json()
    assert run["params"] == {"rows": 2}
    assert {s["status"] for s in run["steps"]} == {"cached"}


def test_delete_refuses_a_run_that_is_still_running(flow_cli, store_dir):
    import os

    from runner.store import Store

    store = Store(store_dir)
    try:
        run_id = store.create_run("f", "/nowhere/f.py", {}, "cli", "local")  # pid: this live test process
        assert os.getpid() > 0
        result = flow_cli("delete", str(run_id))  # while this process (the run's owner) keeps it open
        assert result.code == 2, result
        assert "still running" in result.stderr
        assert flow_cli("show", str(run_id), "--json").json()["status"] == "running"
    finally:
        store.close()
