"""Every invalid flow or command line: exit 2, one clear line on stderr naming the file/line/step, no
traceback, and nothing executed. Broken flows are fixture files under tests/flows/, copied into tmp
so that the `.ran` marker a step would write lands in the test's own directory."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

FLOWS = Path(__file__).parent / "flows"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    target = tmp_path / "project"
    shutil.copytree(FLOWS, target, ignore=shutil.ignore_patterns("__pycache__", "*.ran"))
    return target


def assert_one_clear_line(result, *fragments: str, code: int = 2) -> str:
    assert result.code == code, result
    assert "Traceback" not in result.stderr, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result
    line = lines[0]
    assert line.startswith("flow: error: "), line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


def nothing_ran(project: Path) -> bool:
    return not list(project.glob("*.ran"))


@pytest.mark.parametrize(
    ("name", "fragments"),
    [
        ("bad_cycle.py", ["bad_cycle.py:23", "step 'a'", "cycle: a >> b >> c >> a"]),
        ("bad_duplicate.py", ["bad_duplicate.py:", "duplicate step name 'train'", "bad_duplicate.py:12"]),
        (
            "bad_required_param.py",
            ["bad_required_param.py:12", "step 'evaluate'", "'model'", "names no step"],
        ),
        ("bad_syntax.py", ["bad_syntax.py:8", "syntax error"]),
        ("bad_import.py", ["bad_import.py:3", "ModuleNotFoundError", "no_such_module_for_flow_tests"]),
        ("bad_raises_on_load.py", ["bad_raises_on_load.py:11", "KeyError"]),
        ("bad_self_edge.py", ["bad_self_edge.py:11", "step 'loop'", "after itself"]),
        ("bad_no_steps.py", ["bad_no_steps.py", "defines no step"]),
        ("bad_required_value.py", ["bad_required_value.py:", "step 'load'", "'dataset' is required"]),
        ("bad_wiring.py", ["bad_wiring.py:11", ">>"]),
    ],
)
@pytest.mark.parametrize("command", ["run", "check"])
def test_an_invalid_flow_file(flow_cli, project, name, fragments, command):
    result = flow_cli(command, str(project / name))
    assert_one_clear_line(result, *fragments)
    assert result.stdout == ""
    assert nothing_ran(project)


def test_check_names_the_file_of_a_parameter_error(flow_cli, project):
    result = flow_cli("check", str(project / "bad_required_value.py"))
    assert_one_clear_line(result, "bad_required_value.py:", "'dataset' is required")


@pytest.mark.parametrize("name", ["bad_cycle.py", "bad_syntax.py", "bad_import.py", "bad_duplicate.py"])
def test_graph_of_an_invalid_flow(flow_cli, project, name):
    assert_one_clear_line(flow_cli("graph", str(project / name)), name)


def test_a_missing_file(flow_cli, tmp_path):
    for command in ("run", "check", "graph"):
        assert_one_clear_line(flow_cli(command, str(tmp_path / "nope.py")), "nope.py", "no such file")


def test_a_directory_instead_of_a_file(flow_cli, tmp_path):
    assert_one_clear_line(flow_cli("run", str(tmp_path)), "directory")


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["-p", "nope=1"], ["good_params.py", "unknown parameter 'nope'", "lr"]),
        (["-p", "lr=abc"], ["good_params.py:", "step 'train'", "'lr'", "float"]),
        (["-p", "epochs=1.5"], ["step 'train'", "'epochs'", "int"]),
        (["-p", "optimizer=rmsprop"], ["step 'train'", "'optimizer'", "not one of", "'sgd'"]),
        (["-p", "verbose=maybe"], ["'verbose'", "bool"]),
        (["-p", "lr"], ["expected name=value"]),
        (["--only", "nope"], ["--only nope", "no step named 'nope'", "train"]),
        (["--from", "nope"], ["--from nope", "no step named 'nope'"]),
        (["--to", "nope"], ["--to nope", "no step named 'nope'"]),
        (["--only", "train", "--to", "nope"], ["--to nope"]),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) and v and v[0].startswith("-") else None,
)
def test_a_bad_command_line(flow_cli, project, args, fragments):
    result = flow_cli("run", str(project / "good_params.py"), *args)
    assert_one_clear_line(result, *fragments)
    assert nothing_ran(project)


def test_check_validates_parameter_values_too(flow_cli, project):
    assert_one_clear_line(flow_cli("check", str(project / "good_params.py"), "-p", "lr=x"), "'lr'")
    ok = flow_cli("check", str(project / "good_params.py"), "-p", "lr=0.5")
    assert ok.code == 0 and "lr=0.5" in ok.stdout
    assert nothing_ran(project)


@pytest.mark.parametrize(
    ("filename", "content", "fragments"),
    [
        ("bad.toml", "lr = [\n", ["bad.toml", "invalid TOML"]),
        ("bad.json", '{"lr": ', ["bad.json", "invalid JSON"]),
        ("list.json", "[1, 2]", ["list.json", "table/object"]),
        ("value.toml", 'lr = "x"\n', ["'lr'", "float"]),
        ("unknown.json", '{"nope": 1}', ["unknown parameter 'nope'"]),
    ],
)
def test_a_bad_params_file(flow_cli, project, filename, content, fragments):
    params = project / filename
    params.write_text(content)
    result = flow_cli("run", str(project / "good_params.py"), "--params", str(params))
    assert_one_clear_line(result, *fragments)
    assert nothing_ran(project)


def test_a_missing_params_file(flow_cli, project):
    result = flow_cli("run", str(project / "good_params.py"), "--params", str(project / "none.toml"))
    assert_one_clear_line(result, "none.toml")


def test_good_params_file_in_toml_and_json_and_p_wins(flow_cli, project):
    toml = project / "p.toml"
    toml.write_text('lr = 0.5\noptimizer = "adam"\n')
    result = flow_cli("run", str(project / "good_params.py"), "--params", str(toml), "-p", "epochs=7")
    assert result.code == 0, result
    shown = flow_cli("show", "last", "--json").json()
    assert shown["params"] == {"lr": 0.5, "epochs": 7, "optimizer": "adam", "verbose": False}
    js = project / "p.json"
    js.write_text('{"lr": 2, "verbose": true}')
    result = flow_cli("run", str(project / "good_params.py"), "--params", str(js), "-p", "lr=0.25")
    assert result.code == 0, result
    assert flow_cli("show", "last", "--json").json()["params"]["lr"] == 0.25
    assert flow_cli("show", "last", "--json").json()["params"]["verbose"] is True


def test_an_unpicklable_output_is_a_step_failure_naming_the_step_and_why(flow_cli, project):
    result = flow_cli("run", str(project / "bad_unpicklable_output.py"))
    assert result.code == 1, result
    assert "Traceback" not in result.stderr
    failed = [line for line in result.stdout.splitlines() if "make_lock failed" in line]
    assert len(failed) == 1, result
    assert "cannot be stored" in failed[0] and "lock" in failed[0] and "pickle" in failed[0]
    shown = flow_cli("show", "last", "--json").json()
    st = {s["name"]: s for s in shown["steps"]}
    assert st["make_lock"]["status"] == "failed"
    assert st["fine"]["status"] == "succeeded"


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["show", "999"], ["no run #999"]),
        (["show", "abc"], ["run id must be a number"]),
        (["logs", "999"], ["no run #999"]),
        (["resume", "999"], ["no run #999"]),
        (["delete", "999"], ["no run #999"]),
    ],
)
def test_commands_about_a_missing_run(flow_cli, store_dir, args, fragments):
    from runner.store import Store

    Store(store_dir).close()  # an existing, empty store
    assert_one_clear_line(flow_cli(*args), *fragments)


def test_logs_of_a_missing_step(flow_cli, project):
    assert flow_cli("run", str(project / "good_params.py")).code == 0
    assert_one_clear_line(flow_cli("logs", "last", "nostep"), "no step 'nostep'")


def test_show_without_any_store(flow_cli):
    result = flow_cli("show", "1")
    assert_one_clear_line(result, "no flow store")


def test_show_last_of_an_empty_store(flow_cli, store_dir):
    from runner.store import Store

    Store(store_dir).close()
    assert_one_clear_line(flow_cli("show", "last"), "no runs")


def test_graph_with_an_unknown_format(flow_cli, project):
    assert_one_clear_line(flow_cli("graph", str(project / "good_params.py"), "--format", "svg"), "--format")


def test_an_invalid_flow_creates_no_run(flow_cli, project, store_dir):
    assert flow_cli("run", str(project / "good_params.py")).code == 0
    assert flow_cli("run", str(project / "good_params.py"), "-p", "lr=x").code == 2
    assert flow_cli("run", str(project / "bad_cycle.py")).code == 2
    assert len(flow_cli("runs", "--json").json()) == 1


@pytest.mark.parametrize(
    "args",
    [("missing.py",), ("bad_syntax.py",), ("bad_cycle.py",), ("good_params.py", "-p", "nope=1")],
    ids=["missing", "syntax", "cycle", "unknown-param"],
)
def test_an_invalid_flow_leaves_no_store_behind(flow_cli, project, store_dir, args):
    """A typo'd file name or a broken flow must not create `.flow/` where the user happened to be."""
    result = flow_cli("run", str(project / args[0]), *args[1:])
    assert_one_clear_line(result)
    assert not store_dir.exists()
