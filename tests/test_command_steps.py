"""Command and container steps in real worker processes: outputs through $FLOW_OUTPUTS, logs, failures,
timeouts that kill the command's processes, shell quoting, the exact container invocation, and
containers end to end — with a stand-in engine CLI (a script that runs the command on the host and
records what it was asked), and with a real docker or podman where one is usable."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dsl import FlowError, load_flow
from dsl.engines import container_engine
from tests.helpers_watch import pid_gone

REPO = Path(__file__).resolve().parent.parent

FAKE_ENGINE = """\
#!{python}
\"\"\"A stand-in for docker: `info`, `image inspect`, `rm -f`, and `run` executing the command on this host
with the outputs volume's host side as $FLOW_OUTPUTS. Every call is recorded in $FAKE_ENGINE_LOG.\"\"\"
import json, os, sys

args = sys.argv[1:]
with open(os.environ["FAKE_ENGINE_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
if args[:1] == ["info"]:
    if os.environ.get("FAKE_ENGINE_DOWN"):
        print("Cannot connect to the Docker daemon at unix:///var/run/docker.sock", file=sys.stderr)
        sys.exit(1)
    sys.exit(0)
if args[:2] == ["image", "inspect"]:
    print(os.environ.get("FAKE_ENGINE_DIGEST", "sha256:1111"))
    sys.exit(0)
if args[:2] == ["rm", "-f"]:
    sys.exit(0)
assert args[0] == "run", args
rest, env, outputs, workdir = args[1:], dict(os.environ), None, None
while rest[0].startswith("--"):
    flag = rest.pop(0)
    if flag == "--rm":
        continue
    value = rest.pop(0)
    if flag == "--volume" and value.split(":")[1] == "/flow/outputs":
        outputs = value.split(":")[0]
    elif flag == "--workdir":
        workdir = value
image, command = rest[0], rest[1:]
env["FLOW_OUTPUTS"] = outputs
os.chdir(workdir)
os.execvpe(command[0], command, env)
"""


@pytest.fixture
def fake_engine(tmp_path: Path) -> dict[str, str]:
    """Environment for `flow` that makes the stand-in engine the container engine."""
    engine = tmp_path / "bin" / "fake-docker"
    engine.parent.mkdir()
    engine.write_text(FAKE_ENGINE.format(python=sys.executable))
    engine.chmod(0o755)
    return {"FLOW_CONTAINER_ENGINE": str(engine), "FAKE_ENGINE_LOG": str(tmp_path / "engine.log")}


def engine_calls(env: dict[str, str]) -> list[list[str]]:
    path = Path(env["FAKE_ENGINE_LOG"])
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_until(what: str, condition, timeout: float = 30.0) -> None:
    """Poll a condition another process makes true (no event to wait on across processes), bounded."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.02)


def test_the_sample_python_flow_mixes_function_and_command_steps(flow_cli):
    result = flow_cli("run", str(REPO / "sample_flows" / "mixed_steps.py"))
    assert result.code == 0, result
    assert "total = 45" in result.stdout and "mean = 4.5" in result.stdout
    record = flow_cli("show", "last", "--json").json()
    summarise = next(s for s in record["steps"] if s["name"] == "summarise")
    assert summarise["preview"] == "{'total': '45'}"  # a command's output: the dict of its outputs' text
    assert "summed 10 numbers" in flow_cli("logs", "last", "summarise").stdout
    assert flow_cli("run", str(REPO / "sample_flows" / "mixed_steps.py"), "-p", "count=4").code == 0
    assert flow_cli("show", "last", "--json").json()["outputs"] == {"total": "6", "mean": "1.5"}


def test_stdout_and_stderr_stream_into_the_logs_and_a_non_zero_exit_fails_with_the_stderr_tail(
    flow_cli, write_flow
):
    path = write_flow(
        """\
        steps:
          - name: noisy
            command: [sh, -c, "echo to-stdout; echo first-err >&2; echo last-err >&2; exit 3"]
        """,
        name="fails.yaml",
    )
    result = flow_cli("run", str(path))
    assert result.code == 1, result
    step = flow_cli("show", "last", "--json").json()["steps"][0]
    assert step["status"] == "failed"
    assert "CommandFailed: `sh -c" in step["error"] and "exited with code 3" in step["error"]
    assert step["error"].endswith("first-err\nlast-err"), step["error"]
    logs = flow_cli("logs", "last", "noisy").stdout
    assert "to-stdout" in logs and "first-err" in logs and "last-err" in logs


def test_a_declared_output_the_command_did_not_write_fails_the_step_naming_it(flow_cli, write_flow):
    path = write_flow(
        """\
        steps:
          - name: half
            command: [sh, -c, "echo yes > $FLOW_OUTPUTS/model"]
            outputs: [model, metrics]
        """,
        name="half.yaml",
    )
    assert flow_cli("run", str(path)).code == 1
    error = flow_cli("show", "last", "--json").json()["steps"][0]["error"]
    assert error.startswith("MissingOutput: exited 0 but wrote no output 'metrics'"), error


def test_values_filled_into_a_shell_command_are_quoted_and_inputs_arrive_as_environment(
    flow_cli, write_flow, tmp_path
):
    path = write_flow(
        """\
        inputs:
          name: {type: str, default: world}
        steps:
          - name: greet
            shell: true
            command: "echo hello {{ inputs.name }} > $FLOW_OUTPUTS/text"
            outputs: [text]
          - name: show
            command: [sh, -c, 'echo "$FLOW_INPUT_WHO|$FLOW_INPUT_FIXED|$GREETING|$1"', sh,
                      "{{ steps.greet.outputs.text }}"]
            inputs: {who: "{{ inputs.name }}", fixed: 7}
            env: {GREETING: "hi {{ inputs.name }}"}
        """,
        name="quote.yaml",
    )
    hostile = "x; touch pwned; echo $(id)"
    result = flow_cli("run", str(path), "-p", f"name={hostile}")
    assert result.code == 0, result
    assert not (tmp_path / "project" / "pwned").exists() and not (tmp_path / "pwned").exists()
    logs = flow_cli("logs", "last", "show").stdout
    assert f"{hostile}|7|hi {hostile}|hello {hostile}" in logs, logs


def test_a_timeout_kills_the_command_and_the_processes_it_started(flow_cli, write_flow, tmp_path):
    pids = tmp_path / "pids"
    path = write_flow(
        f"""\
        steps:
          - name: hang
            command: [sh, -c, "sleep 300 & echo $$ $! > {pids}; wait"]
            timeout: 1
        """,
        name="hang.yaml",
    )
    result = flow_cli("run", str(path))
    assert result.code == 1, result
    step = flow_cli("show", "last", "--json").json()["steps"][0]
    assert step["status"] == "failed" and "timed out" in step["error"], step
    shell, child = map(int, pids.read_text().split())
    wait_until("the command and its child to be killed", lambda: pid_gone(shell) and pid_gone(child))


def test_the_exact_container_invocation(fake_engine, monkeypatch, write_flow, tmp_path):
    for name, value in fake_engine.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("FAKE_ENGINE_DIGEST", "sha256:abcd")
    write_flow("print('train')\n", name="train.py")
    path = write_flow(
        """\
        inputs:
          lr: {type: float, default: 0.1}
        steps:
          - name: train
            image: python:3.12-slim
            command: [python, train.py, --lr, "{{ inputs.lr }}"]
            env: {MODE: fast}
            inputs: {epochs: 3}
            outputs: [model]
        """,
        name="container.yaml",
    )
    loaded = load_flow(path)
    item = loaded.graph.nodes["train"].step
    project = str(path.parent)
    argv, env = item.fn.invocation({"lr": 0.5}, "/tmp/outs", "flow-train-1")
    assert argv == [
        fake_engine["FLOW_CONTAINER_ENGINE"],
        "run",
        "--rm",
        "--name",
        "flow-train-1",
        "--workdir",
        project,
        "--volume",
        "/tmp/outs:/flow/outputs",
        "--env",
        "FLOW_OUTPUTS",
        "--volume",
        f"{project}/train.py:{project}/train.py:ro",  # an argv word naming a project file is an input
        "--env",
        "FLOW_INPUT_EPOCHS",
        "--env",
        "MODE",
        "python:3.12-slim",
        "python",
        "train.py",
        "--lr",
        "0.5",
    ]
    assert env == {"FLOW_INPUT_EPOCHS": "3", "MODE": "fast", "FLOW_OUTPUTS": "/flow/outputs"}
    assert item.inputs == ("train.py",)  # hashed into the fingerprint as a declared input file
    assert item.spec["image"] == "python:3.12-slim" and item.spec["image_id"] == "sha256:abcd"


def test_a_container_step_end_to_end_with_a_stand_in_engine(flow_cli, fake_engine, write_flow):
    path = write_flow(
        """\
        outputs:
          answer: "{{ steps.compute.outputs.answer }}"
        steps:
          - name: compute
            image: alpine:3.20
            command: [sh, -c, "echo container-log; echo 42 > $FLOW_OUTPUTS/answer"]
            outputs: [answer]
        """,
        name="container.yaml",
    )
    result = flow_cli("run", str(path), env=fake_engine)
    assert result.code == 0, result
    assert "answer = 42" in result.stdout
    assert "container-log" in flow_cli("logs", "last", "compute").stdout
    runs = [call for call in engine_calls(fake_engine) if call[0] == "run"]
    assert len(runs) == 1 and "alpine:3.20" in runs[0]
    assert flow_cli("run", str(path), env=fake_engine).code == 0
    assert flow_cli("show", "last", "--json").json()["steps"][0]["status"] == "cached"
    # The image was re-pulled: a new digest re-runs the step.
    rerun = flow_cli("run", str(path), env={**fake_engine, "FAKE_ENGINE_DIGEST": "sha256:2222"})
    assert rerun.code == 0, rerun
    step = flow_cli("show", "last", "--json").json()["steps"][0]
    assert (step["status"], step["reason"]) == ("succeeded", "command changed")


def test_a_timeout_removes_the_container(flow_cli, fake_engine, write_flow):
    path = write_flow(
        """\
        steps:
          - name: hang
            image: alpine:3.20
            command: [sleep, "300"]
            timeout: 1
        """,
        name="hang.yaml",
    )
    result = flow_cli("run", str(path), env=fake_engine)
    assert result.code == 1, result
    name = next(call for call in engine_calls(fake_engine) if call[0] == "run")[3]
    assert name.startswith("flow-hang-")
    wait_until("the guard to remove the container", lambda: ["rm", "-f", name] in engine_calls(fake_engine))


def test_a_container_flow_without_a_usable_engine_is_invalid_before_it_runs(
    flow_cli, fake_engine, write_flow, store_dir
):
    path = write_flow(
        """\
        steps:
          - name: compute
            image: alpine:3.20
            command: [true]
        """,
        name="container.yaml",
    )
    down = {**fake_engine, "FAKE_ENGINE_DOWN": "1"}
    result = flow_cli("run", str(path), env=down)
    assert result.code == 2, result
    assert "container.yaml:3: step 'compute': container steps need docker or podman" in result.stderr
    assert "is installed but not usable (Cannot connect to the Docker daemon" in result.stderr
    assert not store_dir.exists()
    assert not [call for call in engine_calls(down) if call[0] == "run"]


def test_a_container_step_end_to_end_with_a_real_engine(flow_cli, write_flow, monkeypatch):
    """Runs where docker or podman is usable; a CLI whose daemon is down (this CI) skips, with why."""
    monkeypatch.delenv("FLOW_CONTAINER_ENGINE", raising=False)
    try:
        container_engine()
    except FlowError as exc:
        pytest.skip(str(exc))
    path = write_flow(
        textwrap.dedent(
            """\
            steps:
              - name: compute
                image: alpine:3.20
                command: [sh, -c, "echo 42 > $FLOW_OUTPUTS/answer"]
                outputs: [answer]
            outputs:
              answer: "{{ steps.compute.outputs.answer }}"
            """
        ),
        name="real_container.yaml",
    )
    result = flow_cli("run", str(path), timeout=600)
    assert result.code == 0, result
    assert flow_cli("show", "last", "--json").json()["outputs"] == {"answer": "42"}


def test_python_command_steps_wire_by_name_and_with_shift(harness, write_flow, tmp_path):
    marker = tmp_path / "after"
    path = write_flow(
        f"""\
        from dsl import command, param, step

        @step
        def words():
            return {{"first": "alpha", "second": "beta"}}

        join = command(
            "join",
            ["sh", "-c", 'printf "%s-%s-%s" "$1" "$2" "$3" > $FLOW_OUTPUTS/joined', "sh",
             "{{{{ steps.words.outputs.first }}}}", "{{{{ steps.words.outputs.second }}}}",
             "{{{{ inputs.sep }}}}"],
            outputs=["joined"],
            params={{"sep": param("x", help="a separator")}},
        )
        touch = command("touch", ["sh", "-c", "touch {marker}"])

        @step
        def upper(join):
            return join["joined"].upper()

        join >> touch
        """
    )
    loaded = load_flow(path)
    assert loaded.graph.nodes["join"].upstream == ["words"]
    assert loaded.graph.nodes["touch"].upstream == ["join"]
    assert loaded.graph.params["sep"].help == "a separator"
    record = harness.run(path, {"sep": "+"})
    assert record.status == "succeeded", [(s.name, s.error) for s in record.steps]
    assert {s.name: s.preview for s in record.steps}["upper"] == "'ALPHA-BETA-+'"
    assert marker.exists()
    assert os.path.getsize(marker) == 0


def test_stopping_a_run_kills_the_running_command(harness, write_flow, tmp_path):
    from runner.engine import RunRequest

    pids = tmp_path / "pids"
    path = write_flow(
        f"""\
        steps:
          - name: hang
            command: [sh, -c, "sleep 300 & echo $$ $! > {pids}.tmp && mv {pids}.tmp {pids}; wait"]
        """,
        name="hang.yaml",
    )
    handle = harness.engine.start(RunRequest(load_flow(path), {}))
    wait_until("the command to start", pids.exists)
    harness.engine.cancel(handle.id)
    assert handle.wait(30) == "cancelled"
    shell, child = map(int, pids.read_text().split())
    wait_until("the command and its child to be killed", lambda: pid_gone(shell) and pid_gone(child))


def test_a_failing_command_is_retried(flow_cli, write_flow, tmp_path):
    marker = tmp_path / "failed-once"
    path = write_flow(
        f"""\
        steps:
          - name: flaky
            shell: true
            command: "if [ -e {marker} ]; then echo ok > $FLOW_OUTPUTS/r; else touch {marker}; exit 1; fi"
            outputs: [r]
            retries: 1
        """,
        name="flaky.yaml",
    )
    assert flow_cli("run", str(path)).code == 0
    step = flow_cli("show", "last", "--json").json()["steps"][0]
    assert (step["status"], step["attempts"], step["preview"]) == ("succeeded", 2, "{'r': 'ok'}")
