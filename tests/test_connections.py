"""Connections (flow.toml / [tool.flow] in pyproject.toml) with the real CLI and real workers: steps get
their variables; non-secret values are fingerprinted, secret ones are not; and a secret a step prints,
raises or returns never reaches the logs, `flow show`, the event stream the TUI reads, or any file
of the store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.redaction import Redactor

SECRET = "s3cr3t-Token-4f9a"
FLOW_TOML = """\
[connections.mlflow]
MLFLOW_TRACKING_URI = "http://mlflow.local:5000"
MLFLOW_TRACKING_TOKEN = { env = "FLOW_TEST_TOKEN", secret = true }
MLFLOW_EXPERIMENT = { env = "FLOW_TEST_EXPERIMENT", default = "dev" }
"""
STEPS_MODULE = """\
import os


class Box:
    def __init__(self, value):
        self.value = value


def leak():
    token = os.environ["MLFLOW_TRACKING_TOKEN"]
    print(f"function sees {token} at {os.environ['MLFLOW_TRACKING_URI']}")
    return {"token": token, "nested": [f"Bearer {token}"], "safe": "ok"}


def boom():
    raise ValueError(f"the server refused token {os.environ['MLFLOW_TRACKING_TOKEN']}")


def boxed():
    return Box(os.environ["MLFLOW_TRACKING_TOKEN"])
"""
FLOW = """\
outputs:
  token: "{{ steps.use_command.outputs.token }}"
steps:
  - name: use_command
    command: [sh, -c, 'echo "cmd $MLFLOW_TRACKING_URI $MLFLOW_EXPERIMENT $MLFLOW_TRACKING_TOKEN";
                       echo "err $MLFLOW_TRACKING_TOKEN" >&2;
                       echo "$MLFLOW_TRACKING_TOKEN" > $FLOW_OUTPUTS/token']
    connections: [mlflow]
    outputs: [token]
  - name: use_function
    uses: conn_steps:leak
    connections: mlflow
    outputs: [token]
"""
FAILING = """\
  - name: raise_it
    uses: conn_steps:boom
    connections: [mlflow]
  - name: box_it
    uses: conn_steps:boxed
    connections: [mlflow]
"""


@pytest.fixture
def project(write_flow):
    write_flow(FLOW_TOML, name="flow.toml")
    write_flow(STEPS_MODULE, name="conn_steps.py")
    return write_flow(FLOW, name="pipeline.yaml")


def env(token: str = SECRET, **more: str) -> dict[str, str]:
    return {"FLOW_TEST_TOKEN": token, **more}


def statuses(flow_cli) -> dict[str, tuple[str, str]]:
    return {s["name"]: (s["status"], s["reason"]) for s in flow_cli("show", "last", "--json").json()["steps"]}


def test_a_secret_printed_raised_or_returned_by_a_step_is_never_shown_nor_stored(
    flow_cli, project, store_dir
):
    project.write_text(project.read_text() + FAILING)
    run = flow_cli("run", str(project), "--json", env=env())
    assert run.code == 1, run
    assert SECRET not in run.stdout + run.stderr  # the event stream the reporter and the TUI consume
    show = flow_cli("show", "last", "--json")
    logs = flow_cli("logs", "last")
    for text in (show.stdout, logs.stdout, flow_cli("show", "last").stdout):
        assert SECRET not in text
    steps = {s["name"]: s for s in show.json()["steps"]}
    assert steps["use_command"]["status"] == "succeeded"
    assert steps["use_command"]["preview"] == "{'token': '***'}"
    assert steps["use_function"]["preview"] == "{'nested': ['Bearer ***'], 'safe': 'ok', 'token': '***'}"
    assert steps["raise_it"]["error"] == "ValueError: the server refused token ***"
    assert "***" in steps["raise_it"]["traceback"]
    assert steps["box_it"]["status"] == "failed"
    assert "the output holds a secret value inside an object" in steps["box_it"]["error"]
    assert show.json()["outputs"] == {"token": "***"}
    assert "cmd http://mlflow.local:5000 dev ***" in logs.stdout
    assert "err ***" in logs.stdout and "function sees *** at http://mlflow.local:5000" in logs.stdout
    stored = [path for path in store_dir.rglob("*") if path.is_file()]
    assert any(path.name == "flow.db" for path in stored)
    for path in stored:
        assert SECRET.encode() not in path.read_bytes(), path


def test_secret_values_are_not_fingerprinted_but_the_other_values_are(flow_cli, project, tmp_path):
    assert flow_cli("run", str(project), env=env()).code == 0
    assert flow_cli("run", str(project), env=env("another-token-value")).code == 0
    assert {status for status, _ in statuses(flow_cli).values()} == {"cached"}

    assert flow_cli("run", str(project), env=env(FLOW_TEST_EXPERIMENT="prod")).code == 0
    assert statuses(flow_cli)["use_command"] == ("succeeded", "command changed")
    assert "cmd http://mlflow.local:5000 prod ***" in flow_cli("logs", "last", "use_command").stdout

    toml = tmp_path / "project" / "flow.toml"
    toml.write_text(toml.read_text().replace("mlflow.local:5000", "mlflow.internal:80"))
    assert flow_cli("run", str(project), env=env(FLOW_TEST_EXPERIMENT="prod")).code == 0
    assert statuses(flow_cli) == {
        "use_command": ("succeeded", "command changed"),
        "use_function": ("succeeded", "command changed"),
    }


def test_connections_can_live_in_pyproject_toml(flow_cli, project, tmp_path):
    root = tmp_path / "project"
    (root / "flow.toml").unlink()
    (root / "pyproject.toml").write_text(
        '[project]\nname = "demo"\n\n' + FLOW_TOML.replace("[connections.", "[tool.flow.connections.")
    )
    assert flow_cli("run", str(project), env=env()).code == 0
    assert "cmd http://mlflow.local:5000 dev ***" in flow_cli("logs", "last", "use_command").stdout


@pytest.mark.parametrize(
    ("toml", "flow_edit", "fragments"),
    [
        (FLOW_TOML, None, ["pipeline.yaml:8: step 'use_command'", "$FLOW_TEST_TOKEN, which is not set"]),
        (
            FLOW_TOML,
            ("connections: [mlflow]", "connections: [mlflow, s3]"),
            ["pipeline.yaml:8: step 'use_command'", "unknown connection 's3'", "declared: mlflow"],
        ),
        (
            '[connections.mlflow]\nTOKEN = { value = "abc", secret = true }\n',
            None,
            ["flow.toml", "a secret must come from the environment"],
        ),
        ("[connections\n", None, ["flow.toml", "invalid TOML"]),
    ],
)
def test_a_bad_connection_is_an_invalid_flow(
    flow_cli, project, tmp_path, store_dir, toml, flow_edit, fragments
):
    (tmp_path / "project" / "flow.toml").write_text(toml)
    if flow_edit is not None:
        project.write_text(project.read_text().replace(*flow_edit))
    token_unset = toml == FLOW_TOML and flow_edit is None
    result = flow_cli("run", str(project), env={} if token_unset else env())
    assert result.code == 2, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert not store_dir.exists()


def test_the_redactor_masks_the_longest_secret_first_inside_nested_values():
    redactor = Redactor(["abc", "abcdef", ""])
    assert redactor.text("x abcdef y abc") == "x *** y ***"
    value = {"k abc": ["abcdef", ("abc",), {b"abc"}], "n": 3}
    assert redactor.value(value) == {"k ***": ["***", ("***",), {b"***"}], "n": 3}
    assert redactor.holds_secret(json.dumps(["x", "abc"]).encode())
    assert not redactor.holds_secret(b"ab c")
    assert not Redactor([]).secrets


def test_variables_reach_a_python_command_step(harness, write_flow, tmp_path, monkeypatch):
    monkeypatch.setenv("FLOW_TEST_TOKEN", SECRET)
    write_flow(FLOW_TOML, name="flow.toml")
    path = write_flow(
        """\
        from dsl import command

        probe = command("probe", ["sh", "-c", "echo $MLFLOW_TRACKING_URI-$MLFLOW_TRACKING_TOKEN"],
                        connections=["mlflow"])
        """
    )
    record = harness.run(path)
    assert record.status == "succeeded"
    lines = [line.line for line in harness.store.get_logs(record.id, "probe")]
    assert lines == ["http://mlflow.local:5000-***"]
    assert Path(harness.store.db_path).read_bytes().find(SECRET.encode()) == -1


def test_editing_flow_toml_reloads_and_reruns_the_steps_that_use_the_connection(
    harness, project, tmp_path, monkeypatch
):
    from runner.events import FlowReloaded
    from runner.session import FlowSession
    from tests.helpers_watch import EventLog, save_in_place, watching

    monkeypatch.setenv("FLOW_TEST_TOKEN", SECRET)
    events = EventLog()
    harness.engine.subscribe(events)
    session = FlowSession(project, harness.engine)
    session.load()
    mark = events.mark()
    session.run(trigger="first")
    events.wait_run(mark, "first")
    toml = tmp_path / "project" / "flow.toml"
    with watching(session):
        mark = events.mark()
        save_in_place(toml, toml.read_text().replace("mlflow.local:5000", "mlflow.internal:80"))
        reloaded = events.wait_reload(mark)
        assert isinstance(reloaded, FlowReloaded) and reloaded.changed_file == "flow.toml", reloaded
        assert reloaded.changed == ("use_command", "use_function")
        started, finished = events.wait_run(mark, "watch:")
        assert finished.status == "succeeded"
    lines = [line.line for line in harness.store.get_logs(started.run_id, "use_command")]
    # Its stdout and stderr are two pipes: which line the runner reads first is not defined.
    assert sorted(lines) == ["cmd http://mlflow.internal:80 dev ***", "err ***"]
