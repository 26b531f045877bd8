"""`@step(connections=[...])` on a plain Python step, with the real CLI, real workers and the real store:
the function sees its connections' variables in `os.environ` for its call only (a later step on the
same warm worker does not), non-secret values are fingerprinted and secret ones are not, and a secret
the step prints, raises or returns is `***` everywhere it is shown or stored."""

from __future__ import annotations

import pytest

from tests.test_connections import FLOW_TOML, SECRET, env, statuses

FLOW = """\
import os

from dsl import step


@step(connections=["mlflow"], cache={cache})
def use_it():
    token = os.environ["MLFLOW_TRACKING_TOKEN"]
    print(f"sees {{token}} at {{os.environ['MLFLOW_TRACKING_URI']}} in {{os.environ['MLFLOW_EXPERIMENT']}}")
    return {{"token": token, "uri": os.environ["MLFLOW_TRACKING_URI"]}}


@step
def after(use_it):
    return sorted(name for name in os.environ if name.startswith("MLFLOW_"))


@step(connections=["mlflow"])
def fails():
    raise RuntimeError(f"refused {{os.environ['MLFLOW_TRACKING_TOKEN']}}")
"""


@pytest.fixture
def project(write_flow):
    write_flow(FLOW_TOML, name="flow.toml")
    return write_flow(FLOW.format(cache=True))


def test_a_python_step_gets_its_connection_for_its_call_only_and_secrets_are_masked(
    flow_cli, project, store_dir
):
    run = flow_cli("run", str(project), "--workers", "1", "--json", env=env())
    assert run.code == 1, run  # `fails` fails
    assert SECRET not in run.stdout + run.stderr
    show = flow_cli("show", "last", "--json")
    logs = flow_cli("logs", "last")
    steps = {s["name"]: s for s in show.json()["steps"]}
    assert steps["use_it"]["status"] == "succeeded"
    assert steps["use_it"]["preview"] == "{'token': '***', 'uri': 'http://mlflow.local:5000'}"
    assert steps["after"]["status"] == "succeeded"
    assert steps["after"]["preview"] == "[]"  # same worker (--workers 1): the variables are gone
    assert steps["fails"]["error"] == "RuntimeError: refused ***"
    assert "sees *** at http://mlflow.local:5000 in dev" in logs.stdout
    assert SECRET not in show.stdout + logs.stdout
    for path in (p for p in store_dir.rglob("*") if p.is_file()):
        assert SECRET.encode() not in path.read_bytes(), path


def test_a_python_steps_connection_values_are_fingerprinted_but_not_its_secrets(flow_cli, project):
    project.write_text(project.read_text().split("@step\ndef after")[0])
    assert flow_cli("run", str(project), env=env()).code == 0
    assert flow_cli("run", str(project), env=env("another-token-value")).code == 0
    assert statuses(flow_cli)["use_it"][0] == "cached"
    assert flow_cli("run", str(project), env=env(FLOW_TEST_EXPERIMENT="prod")).code == 0
    assert statuses(flow_cli)["use_it"][0] == "succeeded"
    assert "in prod" in flow_cli("logs", "last", "use_it").stdout


def test_the_inline_executor_sets_and_restores_the_variables_too(flow_cli, project):
    project.write_text(project.read_text().split('@step(connections=["mlflow"])\ndef fails')[0])
    result = flow_cli("run", str(project), "--executor", "inline", "--json", env=env())
    assert result.code == 0, result
    steps = {s["name"]: s for s in flow_cli("show", "last", "--json").json()["steps"]}
    assert steps["after"]["preview"] == "[]"
    assert steps["use_it"]["preview"] == "{'token': '***', 'uri': 'http://mlflow.local:5000'}"


@pytest.mark.parametrize(
    ("edit", "fragments"),
    [
        (None, ["flow_file.py:6: step 'use_it'", "$FLOW_TEST_TOKEN, which is not set"]),
        (('connections=["mlflow"], cache', 'connections=["s3"], cache'), ["unknown connection 's3'"]),
        (('connections=["mlflow"], cache', "connections=[3], cache"), ["connections= must be a list"]),
    ],
)
def test_a_bad_connection_of_a_python_step_is_an_invalid_flow(flow_cli, project, store_dir, edit, fragments):
    if edit is not None:
        project.write_text(project.read_text().replace(*edit))
    result = flow_cli("run", str(project), env={} if edit is None else env())
    assert result.code == 2, result
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    assert not store_dir.exists()
