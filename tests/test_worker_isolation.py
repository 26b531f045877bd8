"""Steps do not leak into each other through a warm worker (issue 13, item 6).

Each test runs a real flow through the real `flow` CLI with real worker processes: step `a` changes
something about its process, step `b` (downstream, so on the same worker under `--workers 1`) looks.
`b` must see a clean process, and its result must not depend on scheduling: `--workers 1` (a then b
in one worker) and `--only b --force` (b alone in a fresh worker) give the same output for the same
fingerprint. Every test here fails on the code before the isolation (main at 936ad4f).
"""

from __future__ import annotations

import ast
import dis
import json
import subprocess
import sys
import textwrap
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runner.executors.isolation import import_names
from runner.store import Store
from tests.conftest import CLIResult

FlowCLI = Callable[..., CLIResult]


def _write(project: Path, body: str, name: str = "leaky.py") -> Path:
    project.mkdir(exist_ok=True)
    path = project / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def _show(flow_cli: FlowCLI) -> dict[str, dict[str, Any]]:
    shown = flow_cli("show", "last", "--json")
    assert shown.code == 0, shown
    return {step["name"]: step for step in shown.json()["steps"]}


def _logs(store_dir: Path, step: str) -> list[str]:
    store = Store(store_dir, create=False)
    try:
        run_id = store.latest_run_id()
        assert run_id is not None
        return [line.line for line in store.get_logs(run_id, step)]
    finally:
        store.close()


def _b_both_ways(flow_cli: FlowCLI, path: Path, *, restored: bool = False) -> dict[str, Any]:
    """Run the flow with one warm worker, then `b` alone in a fresh one; return `b` as first run.

    Asserts that both runs succeeded and gave `b` the same output (hash and preview). `restored`:
    what `a` changed is cheap to put back, so `b` ran in the same warm worker (no process start).
    """
    chained = flow_cli("run", str(path), "--workers", "1")
    assert chained.code == 0, chained
    together = _show(flow_cli)
    assert together["a"]["status"] == "succeeded", together["a"]
    if restored:
        assert together["a"]["where"] == together["b"]["where"], "the worker was replaced, not restored"
    alone_run = flow_cli("run", str(path), "--only", "b", "--force")
    assert alone_run.code == 0, alone_run
    alone = _show(flow_cli)["b"]
    assert alone["fingerprint"] == together["b"]["fingerprint"]
    assert (together["b"]["preview"], together["b"]["output_hash"]) == (
        alone["preview"],
        alone["output_hash"],
    ), "b's result depends on which worker ran it"
    return together["b"]


def test_a_steps_chdir_is_not_seen_by_the_next_step(flow_cli: FlowCLI, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    path = _write(
        tmp_path / "project",
        f"""
        import mimetypes
        import os
        import tempfile
        import warnings
        from dsl import step

        @step
        def a():
            # Libraries that set their own globals in normal use do not cost a new worker.
            tempfile.gettempdir()
            mimetypes.guess_type("data.csv")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
            os.chdir({str(elsewhere)!r})
            return 1

        @step
        def b(a):
            return os.path.basename(os.getcwd())
        """,
    )
    b = _b_both_ways(flow_cli, path, restored=True)
    assert b["preview"] == repr(tmp_path.name)


def test_a_steps_environment_changes_are_not_seen_by_the_next_step(flow_cli: FlowCLI, tmp_path: Path) -> None:
    path = _write(
        tmp_path / "project",
        """
        import os
        import subprocess
        from dsl import step

        @step
        def a():
            os.environ["FLOW_LEAKED"] = "from a"
            del os.environ["FLOW_KEPT"]
            os.environ["FLOW_CHANGED"] = "by a"
            return 1

        @step
        def b(a):
            # also what a child process inherits (the C-level environment, not only os.environ)
            shell = subprocess.run(
                ["sh", "-c", 'echo "$FLOW_LEAKED|$FLOW_KEPT|$FLOW_CHANGED"'], capture_output=True, text=True
            ).stdout.strip()
            seen = [os.environ.get(name) for name in ("FLOW_LEAKED", "FLOW_KEPT", "FLOW_CHANGED")]
            return seen, shell
        """,
    )
    original = {"FLOW_KEPT": "kept", "FLOW_CHANGED": "original"}
    b = _b_both_ways(lambda *args: flow_cli(*args, env=original), path, restored=True)
    assert b["preview"] == repr(([None, "kept", "original"], "|kept|original"))


PATCHES = {
    # what a rebinds, what b returns, what b must see
    "library function": ("json.dumps = lambda *args, **kwargs: 'patched'", "json.dumps([1])", "[1]"),
    "flow's own module": ("helpers.SCALE = 100", "helpers.SCALE", 2),
    "flow global": ("global COUNT\n    COUNT += 10", "COUNT", 0),
    "module imported in the step": ("import inner\n    inner.FACTOR = 30", "__import__('inner').FACTOR", 3),
}


@pytest.mark.parametrize("kind", sorted(PATCHES))
def test_a_steps_monkeypatch_of_a_module_attribute_is_not_seen_by_the_next_step(
    flow_cli: FlowCLI, tmp_path: Path, kind: str
) -> None:
    patch, read, expected = PATCHES[kind]
    project = tmp_path / "project"
    _write(project, "SCALE = 2\n\n\ndef scale(x):\n    return x * SCALE\n", name="helpers.py")
    _write(project, "FACTOR = 3\n", name="inner.py")
    source = textwrap.dedent(
        """
        import json
        import helpers
        from dsl import step

        COUNT = 0

        @step
        def a():
            PATCH
            return 1

        @step
        def b(a):
            return READ
        """
    )
    path = _write(project, source.replace("PATCH", patch).replace("READ", read))
    # A module of the user's imported by the step is simply forgotten: no new worker needed.
    b = _b_both_ways(flow_cli, path, restored=kind == "module imported in the step")
    assert b["preview"] == repr(expected)


def test_a_steps_sys_path_and_signal_handlers_are_not_seen_by_the_next_step(
    flow_cli: FlowCLI, tmp_path: Path
) -> None:
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "only_on_extra.py").write_text("VALUE = 1\n")
    path = _write(
        tmp_path / "project",
        f"""
        import importlib.util
        import signal
        import sys
        from dsl import step

        @step
        def a():
            sys.path.insert(0, {str(extra)!r})
            signal.signal(signal.SIGUSR1, lambda *args: None)
            return 1

        @step
        def b(a):
            found = importlib.util.find_spec("only_on_extra") is not None
            return found, signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
        """,
    )
    b = _b_both_ways(flow_cli, path)
    assert b["preview"] == repr((False, True))


def test_a_steps_logging_warnings_and_recursion_settings_are_not_seen_by_the_next_step(
    flow_cli: FlowCLI, store_dir: Path, tmp_path: Path
) -> None:
    path = _write(
        tmp_path / "project",
        """
        import logging
        import sys
        import warnings
        from dsl import step

        @step
        def a():
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("a's handler: %(message)s"))
            logging.getLogger().addHandler(handler)
            logging.getLogger().setLevel(logging.DEBUG)
            warnings.simplefilter("error")
            sys.setrecursionlimit(200)
            return 1

        @step
        def b(a):
            logging.getLogger("b").debug("debug from b")
            try:
                warnings.warn("a warning is not an error")
                warned = "warned"
            except UserWarning:
                warned = "raised"
            return logging.getLogger().level, warned, sys.getrecursionlimit() > 200
        """,
    )
    b = _b_both_ways(flow_cli, path, restored=True)
    assert ast.literal_eval(b["preview"]) == (20, "warned", True)
    assert not any("a's handler" in line or "debug from b" in line for line in _logs(store_dir, "b"))


FD_CHANGES = {
    "closed": "os.close(1)\n    os.close(2)",
    "redirected to a file": (
        "fd = os.open(os.path.join(os.path.dirname(__file__), 'sink.txt'), os.O_WRONLY | os.O_CREAT)\n"
        "    os.dup2(fd, 1)\n"
        "    os.dup2(fd, 2)"
    ),
}


@pytest.mark.parametrize("change", sorted(FD_CHANGES))
def test_a_step_that_closes_or_redirects_fds_1_and_2_leaves_later_steps_working(
    flow_cli: FlowCLI, store_dir: Path, tmp_path: Path, change: str
) -> None:
    source = textwrap.dedent(
        """
        import os
        from dsl import step

        @step
        def a():
            CHANGE
            return 1

        @step
        def b(a):
            os.write(1, b"raw stdout of b\\n")
            os.write(2, b"raw stderr of b\\n")
            print("printed by b")
            return "ok"
        """
    )
    path = _write(tmp_path / "project", source.replace("CHANGE", FD_CHANGES[change]))
    b = _b_both_ways(flow_cli, path, restored=True)
    assert b["status"] == "succeeded" and b["preview"] == "'ok'"
    flow_cli("run", str(path), "--workers", "1", "--force")
    assert {"raw stdout of b", "raw stderr of b", "printed by b"} <= set(_logs(store_dir, "b"))


STRAY_THREAD = """
import os
import threading
import time
from dsl import step

TICKS = {ticks!r}


def tick_file_count():
    try:
        with open(TICKS) as handle:
            return len(handle.read())
    except FileNotFoundError:
        return 0


@step
def a():
    def stray():
        time.sleep({delay})  # daemon: print only after the step returned
        while True:
            print("stray line from a's thread")
            with open(TICKS, "a") as handle:
                handle.write("x")
            time.sleep(0.002)

    threading.Thread(target=stray, name="stray", daemon={daemon}).start()
    return 1


@step
def b(a):
    # If a's thread is alive in this process (a warm worker that was not replaced), wait until it
    # has printed a few lines while b runs: that is the leak. Otherwise there is nothing to wait for.
    if any(t.name == "stray" for t in threading.enumerate()):
        start = tick_file_count()
        deadline = time.monotonic() + 10
        while tick_file_count() < start + 5 and time.monotonic() < deadline:
            time.sleep(0.001)
    print("b's own line")
    return "b"


@step
def c(b):
    print("c's own line")
    return "c"
"""


@pytest.mark.parametrize("daemon", [False, True], ids=["non-daemon", "daemon"])
def test_a_thread_left_running_never_writes_into_another_steps_logs(
    flow_cli: FlowCLI, store_dir: Path, tmp_path: Path, daemon: bool
) -> None:
    """A thread a step leaves running (printing after the step returned) neither lands in a later
    step's stored logs nor crashes the worker; the worker that ran it is replaced, and says so."""
    path = _write(
        tmp_path / "project",
        STRAY_THREAD.format(ticks=str(tmp_path / "ticks"), delay=0.05 if daemon else 0, daemon=daemon),
    )
    result = flow_cli("run", str(path), "--workers", "1")
    assert result.code == 0, result
    steps = _show(flow_cli)
    assert {name: step["status"] for name, step in steps.items()} == dict.fromkeys("abc", "succeeded")
    assert _logs(store_dir, "b") == ["b's own line"]
    assert _logs(store_dir, "c") == ["c's own line"]
    assert steps["a"]["where"] != steps["b"]["where"], "the worker that ran a was not replaced"
    a_logs = _logs(store_dir, "a")
    assert any("left 1 thread(s) running (stray)" in line for line in a_logs), a_logs


SWAPPING = """
import sys
import threading

from runner.executors.base import Task
from runner.executors.execute import execute


def chatter():
    while True:
        print("a line from a thread that outlived its step")


threading.Thread(target=chatter, daemon=True).start()
task = Task(id="t", step="s", code_key="k", code=b"", kwargs={})
for _ in range(30_000):
    assert execute(task, lambda: 1, lambda stream, line, ts: None).ok
"""


def test_a_thread_printing_while_steps_start_and_end_never_crashes_the_process(tmp_path: Path) -> None:
    """The crash itself, in the function every executor runs steps with: `print` holds a borrowed
    reference to `sys.stdout`, and a capture swapped out (and freed) at a step's end while a thread
    printed into it was a use-after-free (`AttributeError: 'LineCapture' object has no attribute
    '_lock'`, then SIGSEGV; every run of this script on main at 936ad4f)."""
    script = tmp_path / "swapping.py"
    script.write_text(SWAPPING)
    proc = subprocess.run(
        [sys.executable, str(script)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Error" not in proc.stderr, proc.stderr[-2000:]


def _imports_by_dis(code: types.CodeType) -> list[str]:
    names = [i.argval for i in dis.get_instructions(code) if i.opname == "IMPORT_NAME"]
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names += _imports_by_dis(const)
    return names


def test_the_modules_a_steps_code_imports_are_read_as_dis_reads_them() -> None:
    """`import_names` skips code whose bytes hold no IMPORT_NAME opcode: checked against `dis` on the
    standard library's functions and on code with more than 256 names (EXTENDED_ARG)."""
    many = "\n".join(f"    o.a{i} = {i}" for i in range(300))  # names: the import's index needs two bytes
    tail = "    import json.decoder\n    from os import path\n    return [__import__('x') for _ in ()]\n"
    source = f"def f(o):\n{many}\n{tail}"
    codes = [compile(source, "<many>", "exec")]
    for module in (json, subprocess, textwrap, ast, dis, pytest):
        codes += [f.__code__ for f in vars(module).values() if isinstance(f, types.FunctionType)]
    assert sum(1 for code in codes if _imports_by_dis(code)) >= 5  # the check sees imports
    for code in codes:
        assert import_names(code) == _imports_by_dis(code), code
