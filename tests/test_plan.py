"""`flow plan`: what a run with the same arguments would do, checked against what that run then does,
for every kind of reason; nothing runs and nothing is recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CLIResult
from tests.helpers_core import readable_within, step_status_in_db, wait_for

BASE = """
import os
from pathlib import Path
from dsl import command, step

HERE = Path(__file__).parent

def normalize(x):
    return x * 2

@step
def fetch(rows: int = 3):
    return list(range(rows))

@step
def prep(fetch):
    return [normalize(x) for x in fetch]

@step
def train(prep, lr: float = 0.1):
    return sum(prep) * lr

@step(inputs=["data.csv"], env=["MODE"])
def extra():
    return (HERE / "data.csv").read_text() + os.environ.get("MODE", "")

@step(cache=False)
def report(train, extra):
    return f"{train} {extra}"

shout = command("shout", ["echo", "hi"])
"""

RAN_AS = {"run": {"succeeded", "failed"}, "cached": {"cached"}, "skipped": {"skipped"}}


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


Scenario = tuple[Callable[[Path], None], list[str], dict[str, str], dict[str, str]]
"""(change after the first run, extra arguments, environment, step -> the reason the plan must give)."""

SCENARIOS: dict[str, Scenario] = {
    "code changed": (
        lambda f: _edit(f, "sum(prep) * lr", "sum(prep) * lr + 1"),
        [],
        {},
        {"train": "code changed", "prep": "cached: same fingerprint as run #1"},
    ),
    "helper changed": (
        lambda f: _edit(f, "x * 2", "x * 3"),
        [],
        {},
        {"prep": "helper changed: normalize", "train": "upstream will re-run: prep"},
    ),
    "parameter changed": (lambda f: None, ["-p", "lr=0.5"], {}, {"train": "parameter changed: lr"}),
    "forced": (lambda f: None, ["--force"], {}, {"fetch": "forced", "shout": "forced"}),
    "input file changed": (
        lambda f: (f.parent / "data.csv").write_text("b,2\n"),
        [],
        {},
        {"extra": "input file changed: data.csv"},
    ),
    "environment changed": (lambda f: None, [], {"MODE": "other"}, {"extra": "environment changed: MODE"}),
    "cache disabled": (lambda f: None, [], {}, {"report": "cache disabled (cache=False)"}),
    "command changed": (
        lambda f: _edit(f, '"echo", "hi"', '"echo", "ho"'),
        [],
        {},
        {"shout": "command changed"},
    ),
}


def _steps(result: CLIResult) -> dict[str, dict[str, Any]]:
    assert result.code in (0, 1), result
    return {s["step"]: s for s in result.json()["steps"]}


def _matches(planned: dict[str, dict[str, Any]], ran: dict[str, dict[str, Any]]) -> None:
    """Every planned step did what the plan said, for the reason it gave."""
    assert set(planned) == set(ran)
    for name, step in planned.items():
        record = ran[name]
        assert record["status"] in RAN_AS[step["action"]], (name, step, record)
        if step["action"] == "run":
            expected = step["reason"].replace("upstream will re-run:", "upstream output changed:")
            assert record["reason"] == expected, (name, step, record)
        else:
            assert record["reason"] == step["reason"], (name, step, record)


@pytest.mark.parametrize("kind", list(SCENARIOS))
def test_a_plan_then_run_matches_what_ran(
    kind: str, write_flow: Callable[..., Path], flow_cli: Callable[..., CLIResult]
) -> None:
    change, args, env, expected = SCENARIOS[kind]
    path = write_flow(BASE)
    (path.parent / "data.csv").write_text("a,1\n")
    base_env = {"MODE": "one"}
    assert flow_cli("run", str(path), env=base_env).code == 0
    change(path)
    run_env = {**base_env, **env}
    planned = _steps(flow_cli("plan", str(path), *args, "--json", env=run_env))
    for name, reason in expected.items():
        assert planned[name]["reason"] == reason, planned[name]
    runs_before = flow_cli("runs", "--json").json()
    assert [r["id"] for r in runs_before] == [1]  # the plan recorded nothing
    ran = flow_cli("run", str(path), *args, "--json", env=run_env)
    assert ran.code == 0, ran
    shown = flow_cli("show", "last", "--json").json()
    assert shown["id"] == 2  # the plan used no run number
    _matches(planned, {s["name"]: s for s in shown["steps"]})


def test_a_plan_without_any_run_says_no_earlier_result_and_creates_no_store(
    write_flow: Callable[..., Path], flow_cli: Callable[..., CLIResult], store_dir: Path
) -> None:
    path = write_flow(BASE)
    (path.parent / "data.csv").write_text("a,1\n")
    planned = _steps(flow_cli("plan", str(path), "--json"))
    assert not store_dir.exists()
    assert planned["fetch"] == {**planned["fetch"], "action": "run", "reason": "no earlier result"}
    assert planned["train"]["reason"] == "no earlier result"
    ran = flow_cli("run", str(path))
    assert ran.code == 0, ran
    _matches(planned, {s["name"]: s for s in flow_cli("show", "last", "--json").json()["steps"]})


def test_exit_code_says_whether_anything_would_run(
    write_flow: Callable[..., Path], flow_cli: Callable[..., CLIResult]
) -> None:
    path = write_flow(BASE.replace("@step(cache=False)", "@step"))
    (path.parent / "data.csv").write_text("a,1\n")
    assert flow_cli("plan", str(path), "--exit-code").code == 1
    assert flow_cli("run", str(path)).code == 0
    current = flow_cli("plan", str(path), "--exit-code")
    assert current.code == 0, current
    assert "6 cached" in current.stdout
    _edit(path, "x * 2", "x * 5")
    stale = flow_cli("plan", str(path), "--exit-code")
    assert stale.code == 1
    assert "prep" in stale.stdout and "helper changed: normalize" in stale.stdout


def test_diff_shows_the_code_behind_a_rerun(
    write_flow: Callable[..., Path], flow_cli: Callable[..., CLIResult]
) -> None:
    path = write_flow(BASE)
    (path.parent / "data.csv").write_text("a,1\n")
    assert flow_cli("run", str(path)).code == 0
    _edit(path, "x * 2", "x * 3")
    _edit(path, "sum(prep) * lr", "sum(prep) * lr + 1")
    text = flow_cli("plan", str(path), "--diff")
    assert text.code == 0, text
    lines = text.stdout.splitlines()
    assert "      --- normalize (last result)" in lines
    assert "      -    return x * 2" in lines and "      +    return x * 3" in lines
    assert "      -    return sum(prep) * lr" in lines and "      +    return sum(prep) * lr + 1" in lines
    data = flow_cli("plan", str(path), "--diff", "--json").json()
    by_step = {s["step"]: s for s in data["steps"]}
    assert [c["part"] for c in by_step["train"]["diff"]] == ["code"]
    assert [c["part"] for c in by_step["prep"]["diff"]] == ["normalize"]
    assert by_step["fetch"]["diff"] == []


def test_a_when_step_and_a_fan_out_say_what_a_plan_cannot_know(
    write_flow: Callable[..., Path], flow_cli: Callable[..., CLIResult]
) -> None:
    path = write_flow(
        """
        from dsl import step

        @step
        def check(n: int = 2):
            return {"ok": n > 1}

        @step(when=lambda check: check["ok"])
        def train(check):
            return 1

        @step(foreach="items")
        def each(items=(1, 2)):
            return items
        """
    )
    planned = _steps(flow_cli("plan", str(path), "--json"))
    assert planned["train"]["condition"] == "if its when= predicate holds (it reads check's new output)"
    assert planned["each"]["action"] == "unknown"
    assert flow_cli("run", str(path)).code == 0
    again = _steps(flow_cli("plan", str(path), "--json"))
    assert again["train"]["action"] == "cached"
    assert again["train"]["condition"] == "if its when= predicate holds (user code: a plan does not run it)"


def test_a_selection_upstream_of_uncached_steps_is_refused_as_a_run_would(
    write_flow: Callable[..., Path], flow_cli: Callable[..., CLIResult], store_dir: Path
) -> None:
    path = write_flow(BASE)
    (path.parent / "data.csv").write_text("a,1\n")
    planned = flow_cli("plan", str(path), "--only", "train")
    assert planned.code == 2
    assert "has no cached result" in planned.stderr and "Traceback" not in planned.stderr
    assert flow_cli("run", str(path)).code == 0
    only = _steps(flow_cli("plan", str(path), "--only", "train", "--force", "--json"))
    assert only["train"]["reason"] == "forced"
    assert only["prep"]["selected"] is False and only["prep"]["action"] == "cached"
    unknown = flow_cli("plan", str(path), "--only", "nope")
    assert unknown.code == 2 and "no step named 'nope'" in unknown.stderr
    assert json.loads(flow_cli("runs", "--json").stdout)[0]["id"] == 1


BLOCKING = """
import os
from dsl import step

@step
def slow():
    fd = os.open(os.environ["STARTED_FIFO"], os.O_WRONLY)
    os.write(fd, b"x")
    os.close(fd)
    fd = os.open(os.environ["GO_FIFO"], os.O_RDONLY)
    os.read(fd, 2)
    return 1

@step
def after(slow):
    return slow + 1
"""


def test_a_step_another_process_is_computing_is_planned_as_waiting(
    write_flow: Callable[..., Path], flow_cli: Callable[..., CLIResult], store_dir: Path, tmp_path: Path
) -> None:
    started, go = tmp_path / "started", tmp_path / "go"
    os.mkfifo(started)
    os.mkfifo(go)
    path = write_flow(BLOCKING)
    listen = os.open(started, os.O_RDONLY | os.O_NONBLOCK)
    env = {**os.environ, "FLOW_STORE": str(store_dir), "STARTED_FIFO": str(started), "GO_FIFO": str(go)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", "run", str(path)], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL
    )
    release = None
    try:
        assert readable_within(listen, 60), "the step never started"
        # The run's rows reach the store from its writer thread, which tells no one: poll, bounded.
        wait_for(lambda: step_status_in_db(store_dir, "slow") == ["running"])
        planned = _steps(flow_cli("plan", str(path), "--json"))
        assert planned["slow"]["action"] == "waiting"
        assert planned["slow"]["reason"] == "waiting: run #1 is computing the same step"
        assert planned["after"]["action"] == "unknown"
        assert planned["after"]["reason"] == "depends on the output of slow (not known before it runs)"
        release = os.open(go, os.O_RDWR)
        os.write(release, b"go")
        assert proc.wait(timeout=60) == 0
    finally:
        os.close(listen)
        if release is not None:
            os.close(release)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    done = _steps(flow_cli("plan", str(path), "--json"))
    assert {s["action"] for s in done.values()} == {"cached"}


def test_bad_arguments_are_one_clear_line_and_change_nothing(
    write_flow: Callable[..., Path], flow_cli: Callable[..., CLIResult], store_dir: Path, tmp_path: Path
) -> None:
    path = write_flow(BASE)
    (path.parent / "data.csv").write_text("a,1\n")
    cases: list[tuple[tuple[str, ...], str]] = [
        (("-p", "nope=1"), "unknown parameter 'nope' (this flow's parameters: "),
        (("-p", "rows=many"), "step 'fetch': parameter 'rows': 'many' is not a valid int"),
        (("--params", str(tmp_path / "missing.toml")), "missing.toml: cannot read the params file"),
        (("--from", "nope"), "--from nope: no step named 'nope'"),
    ]
    for args, message in cases:
        bad = flow_cli("plan", str(path), *args)
        assert bad.code == 2 and message in bad.stderr, bad
        assert len(bad.stderr.strip().splitlines()) == 1 and bad.stdout == "", bad
        assert not store_dir.exists()  # a plan never creates the store, even to fail
    missing = flow_cli("plan", str(path.parent / "nothing.py"))
    assert missing.code == 2 and "nothing.py: no such file" in missing.stderr, missing
    assert flow_cli("run", str(path)).code == 0
    for args, message in cases:
        bad = flow_cli("plan", str(path), *args)
        assert bad.code == 2 and message in bad.stderr, bad
    assert [r["id"] for r in flow_cli("runs", "--json").json()] == [1]
    assert {s["action"] for s in _steps(flow_cli("plan", str(path), "--json")).values()} == {"cached", "run"}
