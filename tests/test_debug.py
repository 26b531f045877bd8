"""`flow debug RUN STEP`: a step of a past run re-executed under pdb, on a real pseudo-terminal, with
the inputs it received and the code the run ran."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import CLIResult
from tests.pty_harness import Terminal, plain

FLOW = """
import os
from dsl import step

@step
def fetch(rows: int = 3):
    return list(range(rows))

@step
def train(fetch, lr: float = 0.1):
    total = sum(fetch) * lr
    if total > 0.2:
        raise ValueError(f"too big: {total}")
    return total

class Handle:
    # Pickled by reference to a module that exists only where it ran (MOD names it; json elsewhere).

    def __reduce__(self):
        import importlib

        return (importlib.import_module, (os.environ.get("MOD", "json"),))

@step(env=["MOD"])
def handle():
    return Handle()

@step
def use(handle):
    return repr(handle)
"""


def _debug(project: Path, store_dir: Path, *args: str) -> Terminal:
    return Terminal("debug", *args, cwd=project, env={"FLOW_STORE": str(store_dir)})


def test_a_failed_step_stops_at_its_failing_line_with_its_stored_inputs(
    write_flow: Callable[..., Path], flow_cli: Callable[..., CLIResult], store_dir: Path
) -> None:
    path = write_flow(FLOW)
    assert flow_cli("run", str(path), "-p", "rows=4").code == 1
    with _debug(path.parent, store_dir, "1", "train") as term:
        term.wait_for(rb"raise ValueError\(f\"too big: \{total\}\"\)\r?\n\(Pdb\) ")
        assert f"{path}(13)train()" in plain(term.output)
        term.type(b"p fetch\r")
        term.wait_for(rb"\[0, 1, 2, 3\]\r?\n\(Pdb\) ")
        term.type(b"p lr, total\r")
        term.wait_for(rb"\(0\.1, 0\.6000000000000001\)\r?\n\(Pdb\) ")
        term.type(b"q\r")
        assert term.wait_exit() == 1


def test_break_stops_at_the_first_line_of_the_code_the_run_ran(
    write_flow: Callable[..., Path], flow_cli: Callable[..., CLIResult], store_dir: Path
) -> None:
    path = write_flow(FLOW)
    assert flow_cli("run", str(path), "-p", "rows=2").code == 0
    path.write_text(FLOW.replace("sum(fetch) * lr", "sum(fetch) * lr * 100"))
    with _debug(path.parent, store_dir, "1", "train", "--break") as term:
        term.wait_for(rb"-> total = sum\(fetch\) \* lr\r?\n\(Pdb\) ")
        screen = plain(term.output)
        assert "the code has changed since run #1 (flow_file.py): debugging the code run #1 ran" in screen
        term.type(b"n\r")
        term.wait_for(rb"\(Pdb\) ")
        term.type(b"p total\r")
        term.wait_for(rb"0\.1\r?\n\(Pdb\) ")
        term.type(b"c\r")
        assert term.wait_exit() == 0
        assert "train returned 0.1" in plain(term.output)


def test_bad_requests_are_one_clear_line(
    write_flow: Callable[..., Path], flow_cli: Callable[..., CLIResult], store_dir: Path
) -> None:
    path = write_flow(
        FLOW
        + """
@step
def after(train):
    return train
"""
    )
    assert flow_cli("run", str(path), "-p", "rows=4").code == 1
    for args, message in [
        (("1", "nope"), "run #1 has no step 'nope'"),
        (("4", "train"), "no run #4"),
        (("1", "after"), "step 'after' never got its inputs in run #1 (it is skipped)"),
    ]:
        bad = flow_cli("debug", *args)
        assert bad.code == 2 and message in bad.stderr, bad
        assert "Traceback" not in bad.stderr
    assert flow_cli("run", str(path), "-p", "rows=2").code == 0
    path.write_text(FLOW.replace("range(rows)", "range(rows + 1)"))
    assert flow_cli("run", str(path), "-p", "rows=2").code == 1
    assert flow_cli("gc", "--keep-last", "1").code == 0
    gone = flow_cli("debug", "2", "train")
    assert gone.code == 2 and "input 'fetch' of step 'train' in run #2" in gone.stderr
    assert "no longer in the store" in gone.stderr
    assert flow_cli("run", str(path), env={"MOD": "module_only_where_it_ran"}).code == 1
    foreign = flow_cli("debug", "4", "use")
    assert foreign.code == 2, foreign
    assert (
        "the input 'handle' of step 'use' in run #4 (the output of handle) cannot be unpickled here: "
        "ModuleNotFoundError: No module named 'module_only_where_it_ran'"
    ) in foreign.stderr
    assert len(foreign.stderr.strip().splitlines()) == 1
    assert [r["id"] for r in flow_cli("runs", "--json").json()] == [4, 3, 2, 1]  # debug records nothing
