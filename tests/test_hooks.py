"""Hooks: flow- and step-level callables on success, failure and retry, run in their own process
with a time limit; a hook that raises or hangs is reported and never changes or holds up the run.
Built-in hooks run a command or POST JSON to a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SAMPLE_FLOWS

RECORDER = """
import json
from pathlib import Path

def record(details):
    with Path(__file__).with_name("calls.jsonl").open("a") as out:
        out.write(json.dumps(details) + "\\n")
"""


def calls(path: Path) -> list[dict[str, Any]]:
    log = path.with_name("calls.jsonl")
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_failure_hooks_get_the_failed_steps_and_a_bad_hook_never_holds_up_the_run(write_flow, flow_cli):
    path = write_flow(
        RECORDER
        + """
import os, sys, time
from dsl import Flow, run_command, step

def raises(details):
    raise RuntimeError("the pager is down")

def hangs(details):
    time.sleep(120)

def exits(details):
    os._exit(3)

flow = Flow(
    "hooked",
    on_failure=[record, raises, hangs, exits, run_command([sys.executable, "-c",
        "import json, sys, pathlib; d = json.load(sys.stdin); "
        "pathlib.Path('command.json').write_text(json.dumps(d))"])],
    on_success=record,
    hook_timeout="1s",
)

@step
def load(rows: int = 5):
    return list(range(rows))

@step
def check(load):
    raise ValueError(f"{len(load)} rows is too few")
"""
    )
    started = time.monotonic()
    result = flow_cli("run", str(path))
    elapsed = time.monotonic() - started
    assert result.code == 1, result  # the step's failure, not the hooks'
    assert elapsed < 15, elapsed
    [call] = calls(path)
    assert call["hook"] == "failure" and call["status"] == "failed" and call["flow"] == "hooked"
    assert call["params"] == {"rows": 5}
    [failed] = call["failed_steps"]
    assert failed["name"] == "check" and failed["error"] == "ValueError: 5 rows is too few"
    assert "Traceback" in failed["traceback"] and "too few" in failed["traceback"]
    assert call["outputs"]["load"] == "[0, 1, 2, 3, 4]"
    command = json.loads((path.parent.parent / "command.json").read_text())
    assert command["run_id"] == call["run_id"]
    assert "hook raises (on failure, run #1) failed: RuntimeError: the pager is down" in result.stderr
    assert "hook hangs (on failure, run #1) timed out: still running after 1s; stopped" in result.stderr
    assert "hook exits (on failure, run #1) failed" in result.stderr
    assert "Traceback" not in result.stderr.split("run #1 failed")[-1]
    run = flow_cli("show", "last", "--json").json()
    assert run["status"] == "failed"


def test_success_and_step_hooks_fire_for_executed_steps_only(write_flow, flow_cli):
    path = write_flow(
        RECORDER
        + """
from pathlib import Path
from dsl import Flow, step

flow = Flow("hooked", on_success=record, on_retry=record)

@step(retries=1, on_retry=record, on_success=record)
def fetch():
    marker = Path(__file__).with_name("attempted")
    if not marker.exists():
        marker.write_text("")
        raise ConnectionError("flaky network")
    return 42
"""
    )
    result = flow_cli("run", "--json", str(path))
    assert result.code == 0, result
    seen = sorted((c["hook"], c["step"] or "-") for c in calls(path))
    assert seen == [("retry", "fetch"), ("retry", "fetch"), ("success", "-"), ("success", "fetch")]
    retry = next(c for c in calls(path) if c["hook"] == "retry")
    assert retry["attempt"] == 1 and retry["error"] == "ConnectionError: flaky network"
    success = next(c for c in calls(path) if c["hook"] == "success" and c["step"] is None)
    assert success["status"] == "succeeded" and success["outputs"] == {"fetch": "42"}
    finished = [e for e in result.events() if e["event"] == "hook_finished"]
    assert len(finished) == 4 and {e["outcome"] for e in finished} == {"ok"}
    path.with_name("calls.jsonl").unlink()
    again = flow_cli("run", str(path))  # all cached: the run succeeds, no step executed
    assert again.code == 0
    assert [(c["hook"], c["step"]) for c in calls(path)] == [("success", None)]


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], dict[str, Any]]] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((dict(self.headers), json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[tuple[dict[str, str], dict[str, Any]]]]]:
    """A real HTTP server on 127.0.0.1 that records what is POSTed to it."""
    received: list[tuple[dict[str, str], dict[str, Any]]] = []
    handler = type("Receiver", (_Receiver,), {"received": received})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()
    server.server_close()


def test_post_json_sends_the_details_with_the_token_from_the_environment(write_flow, flow_cli, webhook):
    url, received = webhook
    path = write_flow(
        """
from dsl import Flow, post_json, step

flow = Flow("posting", on_failure=post_json(url_env="TEAM_HOOK", token_env="TEAM_TOKEN"))

@step
def boom():
    raise KeyError("label")
"""
    )
    result = flow_cli("run", str(path), env={"TEAM_HOOK": url, "TEAM_TOKEN": "s3cret"})
    assert result.code == 1, result
    [(headers, body)] = received
    assert headers["Authorization"] == "Bearer s3cret"
    assert body["flow"] == "posting" and body["failed_steps"][0]["error"] == "KeyError: 'label'"
    missing = flow_cli("run", str(path))
    assert missing.code == 1
    assert "post_json($TEAM_HOOK) (on failure, run #2) failed: RuntimeError: $TEAM_HOOK is not set" in (
        missing.stderr
    )


def test_the_quality_gated_sample_notifies_the_data_team_through_a_hook(flow_cli, webhook):
    url, received = webhook
    sample = str(SAMPLE_FLOWS / "quality_gated.py")
    good = flow_cli("run", sample, env={"DATA_TEAM_WEBHOOK": url})
    assert good.code == 0 and received == []
    bad = flow_cli("run", sample, "-p", "noise=0.5", env={"DATA_TEAM_WEBHOOK": url})
    assert bad.code == 0, bad
    [(headers, body)] = received
    assert body["hook"] == "success" and body["step"] == "notify_data_team"
    assert body["params"]["noise"] == 0.5
    assert "data rejected" in body["outputs"]["notify_data_team"]


def test_a_fan_out_steps_hooks_run_once_for_the_step_and_retries_per_item(write_flow, flow_cli):
    path = write_flow(
        RECORDER
        + """
from dsl import step

@step
def items():
    return [1, 2, 3]

@step(foreach="items", retries=1, on_retry=record, on_failure=record, on_success=record)
def crunch(items):
    if items == 2:
        raise ValueError("two is bad")
    return items * 10
"""
    )
    result = flow_cli("run", str(path))
    assert result.code == 1, result
    seen = sorted((c["hook"], c["step"]) for c in calls(path))
    assert seen == [("failure", "crunch"), ("retry", "crunch[1]")]
    failure = next(c for c in calls(path) if c["hook"] == "failure")
    assert failure["error"] == "1 of 3 items failed: ValueError: two is bad"


def test_no_hook_starts_after_the_hook_runner_is_closed(write_flow, harness) -> None:
    """An event that races `close` (the scheduler thread delivering it as the host closes) starts no
    hook: the runner's thread pool is made for the first hook, and never after `close`."""
    from dsl import load_flow
    from runner.operate.hooks import HookRunner

    path = write_flow(
        RECORDER
        + "\nfrom dsl import Flow, step\n\nflow = Flow(on_success=record)\n\n@step\ndef a():\n    return 1\n"
    )
    loaded = load_flow(path)
    harness.run(path)
    assert calls(path) == []  # no hook runner was following that run
    hooks = HookRunner(harness.engine, lambda _file: loaded)
    hooks.close()
    for event in harness.events:  # the run's events, delivered late
        hooks(event)
    assert hooks.drain(timeout=30)
    assert calls(path) == []
    live = HookRunner(harness.engine, lambda _file: loaded)  # the same events, not closed: the hook runs
    for event in harness.events:
        live(event)
    assert live.drain(timeout=30)
    live.close()
    assert [c["hook"] for c in calls(path)] == ["success"]
