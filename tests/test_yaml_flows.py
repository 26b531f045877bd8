"""YAML flows with the real CLI, real worker processes and real commands: they compile to the same
graph as Python flows, so selection, parameters, the cache, outputs and hot reload work unchanged.
Every broken YAML flow is a fixture under tests/flows/ (bad_*.yaml): exit 2, one line naming the
file and line, nothing run, no store created."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from dsl import load_flow
from dsl.yamlflow import INPUT_KEYS, TOP_KEYS
from dsl.yamlstep import STEP_KEYS
from runner.events import FlowReloaded, LoadFailed
from runner.session import FlowSession
from tests.helpers_core import set_schema
from tests.helpers_watch import EventLog, save_in_place, watching

FLOWS = Path(__file__).parent / "flows"
REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample_flows" / "yaml_pipeline.yaml"

CHAIN = """\
name: chain
inputs:
  greeting: {{type: str, default: hello}}
outputs:
  last: "{{{{ steps.c.outputs.out }}}}"
steps:
  - name: a
    command: "echo a >> {log}; echo A > $FLOW_OUTPUTS/out"
    shell: true
    outputs: [out]
  - name: b
    command: "echo b >> {log}; echo {{{{ steps.a.outputs.out }}}}-B1 > $FLOW_OUTPUTS/out"
    shell: true
    outputs: [out]
  - name: c
    command: >-
      echo c >> {log}; echo {{{{ steps.b.outputs.out }}}}-{{{{ inputs.greeting }}}} > $FLOW_OUTPUTS/out
    shell: true
    outputs: [out]
  - name: d
    command: "echo d >> {log}"
    shell: true
    needs: a
"""


def ran(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def steps_of(flow_cli: Callable[..., object]) -> dict[str, tuple[str, str]]:
    record = flow_cli("show", "last", "--json").json()  # type: ignore[attr-defined]
    return {s["name"]: (s["status"], s["reason"]) for s in record["steps"]}


@pytest.mark.parametrize(
    ("name", "line", "fragment"),
    [
        ("bad_yaml_syntax.yaml", 5, "YAML syntax error: expected ',' or ']'"),
        ("bad_unknown_key.yaml", 5, "unknown key 'comand' in step 'train'"),
        ("bad_unknown_step.yaml", 6, "{{ steps.prepair.outputs.data }} names an unknown step 'prepair'"),
        ("bad_unknown_input.yaml", 5, "{{ inputs.rate }} names no input of the flow (inputs: lr)"),
        ("bad_unknown_output.yaml", 8, "step 'prepare' declares no output 'dataset' (its outputs: data)"),
        ("bad_type_mismatch.yaml", 4, "input 'rows': default 'ten' is not an int"),
        ("bad_option_type.yaml", 4, "'retries' must be a whole number >= 0, got str 'two'"),
        ("bad_reference_cycle.yaml", 2, "cycle: first >> second >> first"),
        ("bad_duplicate_step.yaml", 6, "two steps are named 'prepare' (the other at line 2)"),
        ("bad_command_not_found.yaml", 5, "command 'no-such-program-for-flow' not found on PATH"),
        ("bad_needs.yaml", 8, "needs: unknown step 'cleanup'"),
        ("bad_flow_output.yaml", 2, "flow output 'accuracy': {{ steps.evaluate.outputs.accuracy }} names an"),
        ("bad_step_kind.yaml", 4, "a step needs exactly one of `command:`, `image:` or `uses:`"),
        ("bad_uses_import.yaml", 3, "uses: cannot import no_such_module_for_flow: ModuleNotFoundError"),
        ("bad_command_string.yaml", 3, "'command' must be a list of words"),
        ("bad_expression.yaml", 3, "'{{ params.lr }}' is not an expression flow knows"),
        ("bad_image.yaml", 3, "image must be an image reference such as python:3.12-slim"),
    ],
)
def test_a_bad_yaml_flow_is_one_line_naming_file_and_line_exit_2_before_anything_runs(
    flow_cli, store_dir, name, line, fragment
):
    for command in ("run", "check"):
        result = flow_cli(command, str(FLOWS / name))
        assert result.code == 2, result
        assert "Traceback" not in result.stderr, result
        lines = [text for text in result.stderr.splitlines() if text.strip()]
        assert len(lines) == 1, result
        assert f"{name}:{line}: " in lines[0], lines[0]
        assert fragment in lines[0], lines[0]
    assert not store_dir.exists(), "an invalid flow must not create the store"


def test_flow_run_of_a_file_that_is_not_a_flow_says_so(flow_cli, tmp_path):
    notes = tmp_path / "notes.md"
    notes.write_text("# Notes\n\nflow run this? no.\n")
    result = flow_cli("run", str(notes))
    assert result.code == 2, result
    assert "notes.md: is not a flow file: a flow is a .py, .yaml or .yml file" in result.stderr
    assert "syntax error" not in result.stderr and "Traceback" not in result.stderr


def test_the_sample_yaml_flow_runs_prints_its_output_and_reruns_only_what_a_parameter_changes(flow_cli):
    first = flow_cli("run", str(SAMPLE))
    assert first.code == 0, first
    assert "accuracy = " in first.stdout, first.stdout
    shown = flow_cli("show", "last", "--json").json()
    assert shown["status"] == "succeeded"
    accuracy = float(shown["outputs"]["accuracy"])
    assert 0.8 <= accuracy <= 1.0
    assert f"accuracy = {shown['outputs']['accuracy']}" in first.stdout
    logs = flow_cli("logs", "last", "prepare").stdout
    assert "prepared 200 rows" in logs  # a command's stdout streams into the step's logs

    second = flow_cli("run", str(SAMPLE), "-p", "lr=0.2")
    assert second.code == 0, second
    assert steps_of(flow_cli) == {
        "prepare": ("cached", "cached: same fingerprint as run #1"),
        "train": ("succeeded", "parameter changed: lr"),
        "evaluate": ("succeeded", "upstream output changed: train"),
    }
    bad = flow_cli("run", str(SAMPLE), "-p", "rows=many")
    assert bad.code == 2 and "parameter 'rows': 'many' is not a valid int" in bad.stderr, bad


def test_editing_one_yaml_step_reruns_it_and_what_it_feeds(flow_cli, write_flow, tmp_path):
    log = tmp_path / "ran.log"
    path = write_flow(CHAIN.format(log=log), name="chain.yaml")
    assert flow_cli("run", str(path)).code == 0
    assert sorted(ran(log)) == ["a", "b", "c", "d"]
    assert flow_cli("show", "last", "--json").json()["outputs"] == {"last": "A-B1-hello"}

    log.unlink()
    path.write_text(path.read_text().replace("-B1", "-B2"))
    result = flow_cli("run", str(path))
    assert result.code == 0, result
    assert sorted(ran(log)) == ["b", "c"]
    assert steps_of(flow_cli) == {
        "a": ("cached", "cached: same fingerprint as run #1"),
        "b": ("succeeded", "command changed"),
        "c": ("succeeded", "upstream output changed: b"),
        "d": ("cached", "cached: same fingerprint as run #1"),
    }
    assert "last = A-B2-hello" in result.stdout

    log.unlink()
    assert flow_cli("run", str(path), "-p", "greeting=hi").code == 0
    assert ran(log) == ["c"]
    assert flow_cli("show", "last", "--json").json()["outputs"] == {"last": "A-B2-hi"}


def test_a_uses_function_in_a_local_module_is_fingerprinted_by_its_code(flow_cli, write_flow, tmp_path):
    write_flow("def double(x):\n    return {'y': x * 2}\n", name="helpers_mod.py")
    path = write_flow(
        """\
        inputs:
          x: {type: int, default: 3}
        outputs:
          y: "{{ steps.twice.outputs.y }}"
        steps:
          - name: twice
            uses: helpers_mod:double
            inputs: {x: "{{ inputs.x }}"}
            outputs: [y]
        """,
        name="uses.yaml",
    )
    assert flow_cli("run", str(path)).code == 0
    assert flow_cli("show", "last", "--json").json()["outputs"] == {"y": "6"}
    assert flow_cli("run", str(path)).code == 0
    assert steps_of(flow_cli)["twice"][0] == "cached"
    (path.parent / "helpers_mod.py").write_text("def double(x):\n    return {'y': x * 20}\n")
    assert flow_cli("run", str(path)).code == 0
    assert steps_of(flow_cli)["twice"] == ("succeeded", "code changed")
    assert flow_cli("show", "last", "--json").json()["outputs"] == {"y": "60"}


def test_graph_check_and_selection_work_on_a_yaml_flow(flow_cli, write_flow, tmp_path):
    path = write_flow(CHAIN.format(log=tmp_path / "ran.log"), name="chain.yaml")
    check = flow_cli("check", str(path))
    assert check.code == 0 and "ok: chain has 4 steps and 1 parameter (greeting='hello')" in check.stdout
    mermaid = flow_cli("graph", str(path), "--format", "mermaid").stdout
    for edge in ("a --> b", "b --> c", "a --> d"):
        assert edge in mermaid, mermaid
    assert flow_cli("run", str(path), "--only", "a").code == 0
    assert ran(tmp_path / "ran.log") == ["a"]
    required = write_flow(
        "inputs:\n  n: {type: int}\nsteps:\n  - name: s\n    command: [echo, '{{ inputs.n }}']\n",
        name="required.yaml",
    )
    missing = flow_cli("run", str(required))
    assert missing.code == 2 and "parameter 'n' is required" in missing.stderr, missing
    assert flow_cli("run", str(required), "-p", "n=4").code == 0
    assert "4" in flow_cli("logs", "last", "s").stdout


def test_hot_reload_of_a_yaml_file_reruns_the_edited_step_and_keeps_the_last_good_graph(
    harness, write_flow, tmp_path
):
    log = tmp_path / "ran.log"
    path = write_flow(CHAIN.format(log=log), name="chain.yaml")
    events = EventLog()
    harness.engine.subscribe(events)
    session = FlowSession(path, harness.engine)
    session.load()
    mark = events.mark()
    session.run(trigger="first")
    events.wait_run(mark, "first")
    log.unlink()
    with watching(session):
        mark = events.mark()
        save_in_place(path, path.read_text().replace("-B1", "-B2"))
        reloaded = events.wait_reload(mark)
        assert isinstance(reloaded, FlowReloaded), reloaded
        assert (reloaded.changed, reloaded.rerun) == (("b",), ("b", "c"))
        started, finished = events.wait_run(mark, "watch:")
        assert finished.status == "succeeded"
        assert finished.outputs["last"].preview == "A-B2-hello"
        assert sorted(ran(log)) == ["b", "c"]

        mark = events.mark()
        good = path.read_text()
        save_in_place(path, good.replace("outputs: [out]\n  - name: b", "outputs: [out\n  - name: b"))
        failed = events.wait_reload(mark)
        assert isinstance(failed, LoadFailed), failed
        assert "chain.yaml:" in failed.error and "YAML syntax error" in failed.error, failed.error
        assert session.loaded is not None and list(session.loaded.graph.nodes) == ["a", "b", "c", "d"]

        mark = events.mark()
        save_in_place(path, good.replace("-B2", "-B3"))
        _, finished = events.wait_run(mark, "watch:")
        assert finished.outputs["last"].preview == "A-B3-hello"


def test_python_flow_outputs_are_stored_with_the_run_and_readable_as_objects(harness, write_flow):
    path = write_flow(
        """\
        from dsl import Flow, step

        @step
        def train():
            return {"accuracy": 0.75, "weights": [1, 2, 3]}

        @step
        def report(train):
            return f"acc={train['accuracy']}"

        flow = Flow("outs", outputs={"accuracy": (train, "accuracy"), "report": report,
                                     "weights": "{{ steps.train.outputs.weights }}"})
        """
    )
    record = harness.run(path)
    assert record.status == "succeeded"
    assert record.as_dict()["outputs"] == {"accuracy": "0.75", "report": "acc=0.75", "weights": "[1, 2, 3]"}
    assert harness.store.flow_output(record.id, "weights") == [1, 2, 3]
    assert harness.store.flow_output(record.id, "accuracy") == 0.75
    again = harness.run(path)  # all cached: outputs come from the cache
    assert {s.status for s in again.steps} == {"cached"}
    assert harness.store.flow_output(again.id, "report") == "acc=0.75"


def test_an_object_flow_output_shows_its_preview_and_never_runs_user_code_in_the_runner(
    harness, write_flow, tmp_path
):
    marker = tmp_path / "reduced"
    path = write_flow(
        f"""\
        import os
        from dsl import Flow, step

        def _touch():
            with open({str(marker)!r}, "a") as handle:
                handle.write(f"{{os.getpid()}}\\n")
            return Model()

        class Model:
            def __repr__(self):
                return "Model(fitted)"

            def __reduce__(self):
                return (_touch, ())

        @step
        def train():
            return Model()

        @step
        def pack(train):
            return {{"model": train}}

        flow = Flow("objs", outputs={{"model": train, "inner": (pack, "model")}})
        """
    )
    record = harness.run(path)
    assert record.status == "succeeded"
    outputs = record.as_dict()["outputs"]
    assert outputs["model"] == "Model(fitted)"
    assert outputs["inner"] == "<an object: see pack's output>"
    unpickled_in = marker.read_text().split()  # `pack`'s worker unpickles train's output: expected
    assert unpickled_in and str(os.getpid()) not in unpickled_in  # the runner never ran __reduce__


def test_a_flow_output_naming_no_step_is_an_invalid_flow(flow_cli, write_flow):
    path = write_flow(
        """\
        from dsl import Flow, step

        @step
        def train():
            return 1

        flow = Flow("outs", outputs={"accuracy": "{{ steps.evaluate.outputs.accuracy }}"})
        """
    )
    result = flow_cli("check", str(path))
    assert result.code == 2, result
    assert "flow_file.py:7: flow output 'accuracy' names 'evaluate', which is not a step" in result.stderr


def test_the_json_schema_for_editors_lists_exactly_the_keys_the_loader_accepts():
    schema = json.loads((REPO / "docs" / "flow.schema.json").read_text())
    assert set(schema["properties"]) == set(TOP_KEYS)
    assert set(schema["$defs"]["step"]["properties"]) == set(STEP_KEYS)
    assert set(schema["$defs"]["input"]["properties"]) == set(INPUT_KEYS)
    loaded = load_flow(SAMPLE)
    assert list(loaded.graph.nodes) == ["prepare", "train", "evaluate"]
    assert loaded.outputs == {"accuracy": ("evaluate", "accuracy")}


def test_a_store_of_schema_3_gains_the_flow_outputs_column(store_dir, write_flow):

    from runner import store as store_module
    from runner.store import Store

    Store(store_dir).close()
    set_schema(store_dir, 3, "ALTER TABLE runs DROP COLUMN outputs")
    store = Store(store_dir)
    try:
        version = store._conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
        assert int(version) == store_module.SCHEMA_VERSION >= 5
        columns = [row[1] for row in store._conn.execute("PRAGMA table_info(runs)")]
        assert "outputs" in columns
    finally:
        store.close()


def test_a_uses_function_receives_objects_and_nested_references(harness, write_flow):
    write_flow(
        "def make():\n    return {'rows': [1, 2, 3]}\n\n"
        "def summary(config, label):\n"
        "    return {'text': f\"{label}: {sum(config['rows']) * config['scale']}\"}\n",
        name="objs.py",
    )
    path = write_flow(
        """\
        inputs:
          scale: {type: int, default: 10}
        outputs:
          text: "{{ steps.summarise.outputs.text }}"
        steps:
          - name: make
            uses: objs:make
            outputs: [rows]
          - name: summarise
            uses: objs:summary
            inputs:
              config: {rows: "{{ steps.make.outputs.rows }}", scale: "{{ inputs.scale }}"}
              label: "sum of {{ steps.make.outputs.rows }}"
            outputs: [text]
        """,
        name="objects.yaml",
    )
    record = harness.run(path)
    assert record.status == "succeeded", [(s.name, s.error) for s in record.steps]
    assert harness.store.flow_output(record.id, "text") == "sum of [1, 2, 3]: 60"


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("bad_alias_bomb.yaml", "the document expands to more than 200000 values (aliases?)"),
        ("bad_recursive_alias.yaml", "the document nests too deeply (or an alias refers to itself)"),
    ],
)
def test_a_yaml_document_that_expands_without_end_is_refused(flow_cli, name, fragment):
    result = flow_cli("check", str(FLOWS / name), timeout=60)
    assert result.code == 2, result
    assert "Traceback" not in result.stderr and fragment in result.stderr, result


def test_cache_false_runs_a_yaml_step_every_time(flow_cli, write_flow, tmp_path):
    log = tmp_path / "ran.log"
    path = write_flow(
        f"""\
        steps:
          - name: always
            command: [sh, -c, "echo always >> {log}"]
            cache: false
          - name: once
            command: [sh, -c, "echo once >> {log}"]
        """,
        name="cache.yaml",
    )
    assert flow_cli("run", str(path)).code == 0
    assert flow_cli("run", str(path)).code == 0
    assert sorted(ran(log)) == ["always", "always", "once"]
