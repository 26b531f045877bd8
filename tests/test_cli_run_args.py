"""A plain `flow run` is parsed without Typer (`runner.cli.run_args`): whatever that parser accepts, it
must read exactly as Typer reads it, and everything else must be left to Typer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer.main
from hypothesis import given, settings
from hypothesis import strategies as st

import runner.cli.run
from runner.cli.commands import app
from runner.cli.run_args import plain_run

COMMAND = typer.main.get_command(app)
RUN = COMMAND.commands["run"]  # type: ignore[attr-defined]


def typer_reads(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any] | str:
    """What Typer hands to `run_flow` for `flow ARGV`, or "error" when click refuses the command line."""
    seen: dict[str, Any] = {}
    with monkeypatch.context() as patch:
        patch.setattr(runner.cli.run, "run_flow", lambda **kwargs: seen.update(kwargs))
        try:
            COMMAND.main(argv, prog_name="flow", standalone_mode=False)
        except Exception as exc:
            if getattr(exc, "exit_code", None) == 2:  # a usage error (as `runner.cli.exits` tells them)
                return "error"
            raise
    return seen if seen else "error"


COMMON = [
    ["run", "f.py"],
    ["run", "f.py", "--store", "/tmp/somewhere"],
    ["run", "--store=st", "f.py"],
    ["run", "f.py", "-p", "n=3", "--param", "name=x", "--param=k=v=w"],
    ["run", "f.py", "--params", "p.toml", "--json"],
    ["run", "f.py", "--only", "a", "--only=b", "--from", "c", "--to", "d"],
    ["run", "f.py", "--force", "--watch", "--pdb", "--loop"],
    ["run", "f.py", "--loop", "--every", "30s", "--max-iterations", "3"],
    ["run", "f.py", "--executor", "dask://127.0.0.1:8786", "--workers", "4"],
    ["run", "flow@latest"],
]


@pytest.mark.parametrize("argv", COMMON, ids=" ".join)
def test_a_plain_run_is_read_without_typer_exactly_as_typer_reads_it(argv, monkeypatch):
    args = plain_run(argv)
    assert args is not None, "this command line should not need Typer"
    assert args == typer_reads(argv, monkeypatch)


@pytest.mark.parametrize(
    "argv",
    [
        ["runs"],
        ["run"],
        ["run", "f.py", "g.py"],
        ["run", "f.py", "--help"],
        ["run", "-h"],
        ["run", "f.py", "--bogus"],
        ["run", "f.py", "--stor", "x"],
        ["run", "f.py", "--store"],
        ["run", "f.py", "--workers", "two"],
        ["run", "f.py", "--workers", "-1"],
        ["run", "f.py", "--json=yes"],
        ["run", "f.py", "--force", "--force"],
        ["run", "f.py", "--store", "a", "--store", "b"],
        ["run", "f.py", "-pn=1"],
        ["run", "f.py", "-p=n=1"],
        ["run", "--", "f.py"],
        ["run", "-"],
        ["run", ""],
        ["--version"],
    ],
    ids=repr,
)
def test_anything_else_is_left_to_typer(argv):
    assert plain_run(argv) is None


def test_the_parser_knows_every_option_flow_run_declares(monkeypatch):
    """A new option of `flow run` must be taught to `run_args` too (or it would be left to Typer
    silently, and the start-up would be slow again for whoever uses it)."""
    options = [param for param in RUN.params if param.param_type_name == "option"]
    assert len(options) == 15
    for param in options:
        for name in param.opts:
            argv = ["run", "f.py", name] if getattr(param, "is_flag", False) else ["run", "f.py", name, "7"]
            args = plain_run(argv)
            assert args is not None, name
            assert args == typer_reads(argv, monkeypatch), name


def test_a_path_click_would_refuse_is_left_to_typer(tmp_path, monkeypatch):
    unreadable = tmp_path / "f.py"
    unreadable.write_text("")
    monkeypatch.setattr("os.access", lambda path, mode: False)
    assert plain_run(["run", str(unreadable)]) is None
    assert plain_run(["run", "f.py", "--store", str(unreadable)]) is None


FLAGS = ["--force", "--watch", "--json", "--pdb", "--loop", "--help", "-h", "--bogus", "--", "-x"]
VALUED = ["-p", "--param", "--params", "--only", "--from", "--to", "--executor", "--workers", "--every"]
VALUED += ["--max-iterations", "--store", "--pa", "--stor"]
VALUES = st.sampled_from(["x", "3", "-3", "", "-", "a=1", "st", "4 ", "1_0", "=", "--json"])


@st.composite
def run_command_lines(draw: st.DrawFn) -> list[str]:
    """`flow run` with mostly well-formed options in any order (and now and then a mistake)."""
    argv: list[str] = []
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.booleans()):
            argv.append(draw(st.sampled_from(FLAGS)))
        else:
            name, value = draw(st.sampled_from(VALUED)), draw(VALUES)
            argv += [f"{name}={value}"] if draw(st.booleans()) else [name, value]
    for _ in range(draw(st.sampled_from([1, 1, 1, 0, 2]))):
        argv.insert(draw(st.integers(0, len(argv))), draw(st.sampled_from(["f.py", "g.py", "3"])))
    return ["run", *argv]


@settings(max_examples=400, deadline=None)
@given(run_command_lines())
def test_any_command_line_the_parser_accepts_typer_reads_the_same(argv):
    args = plain_run(argv)
    if args is not None:
        with pytest.MonkeyPatch.context() as monkeypatch:
            assert args == typer_reads(argv, monkeypatch)


def test_a_path_value_is_a_path():
    args = plain_run(["run", "f.py", "--store", "st", "--params", "p.json"])
    assert args is not None
    assert (args["file"], args["store_dir"], args["params_file"]) == (
        Path("f.py"),
        Path("st"),
        Path("p.json"),
    )
