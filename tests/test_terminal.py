"""`flow run` on a real pseudo-terminal: the live view never hangs, Ctrl-C is honoured in every state,
step output is shown byte for byte (never as markup, never as terminal control), and the scrollback
tells what a pipe tells. See `tests/pty_harness.py` for how the terminal is driven.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.pty_harness import Terminal, plain

HONOURED_S = 1.0
"""Ctrl-C must end the command within this (issue 14: 'Ctrl-C honoured within 1 s in each state')."""

NOISY = """
    import time
    from dsl import step

    def chatter(name):
        for i in range(60):
            print(f"[{name} {i}] loss 0.25 [bold]not bold[/] regex [a-z]+ [/]")
            if i % 10 == 0:
                time.sleep(0.002)
        return name

    @step(cache=False)
    def one():
        return chatter("one")

    @step(cache=False)
    def two():
        return chatter("two")

    @step(cache=False)
    def three():
        return chatter("three")

    @step(cache=False)
    def four():
        return chatter("four")

    @step(cache=False)
    def join(one, two, three, four):
        print("joined", one, two, three, four)
        return 4
"""


def _project(tmp_path: Path, text: str, name: str = "flow_file.py") -> Path:
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    (project / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return project


def _store(project: Path) -> dict[str, str]:
    """The project's own store, whatever `.flow/` directories the machine has above the test's."""
    return {"FLOW_STORE": str(project / ".flow")}


def _runs(project: Path) -> list[dict[str, object]]:
    done = subprocess.run(
        [sys.executable, "-m", "runner", "runs", "--json"],
        cwd=project,
        env={**os.environ, **_store(project)},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


def test_a_hundred_runs_of_a_noisy_parallel_flow_on_a_terminal_never_hang(tmp_path: Path) -> None:
    """The live view's deadlock (scheduler, Rich's refresh and the printing thread waiting on each
    other's locks) struck 4 runs in 20; 100 in a row must all finish, each with every log line shown."""
    project = _project(tmp_path, NOISY)
    for attempt in range(100):
        with Terminal("run", "flow_file.py", "--workers", "2", cwd=project, env=_store(project)) as term:
            code = term.wait_exit(timeout=30)
            shown = plain(term.output)
            assert code == 0, f"run {attempt + 1} exited {code}:\n{term.screen()}"
            assert "5 succeeded" in shown, f"run {attempt + 1}:\n{term.screen()}"
            for name in ("one", "two", "three", "four"):
                assert f"[{name} 59] loss 0.25 [bold]not bold[/] regex [a-z]+ [/]" in shown, term.screen()
            assert "subscriber failed" not in shown


def test_step_output_reaches_the_terminal_byte_for_byte_never_as_markup_or_control(tmp_path: Path) -> None:
    """Markup-looking text is text; ESC, OSC, BEL, CR in output, errors and the flow's name are shown
    as symbols, so a step can neither restyle nor retitle, clear or link the user's terminal."""
    project = _project(
        tmp_path,
        r"""
        from dsl import Flow, step

        flow = Flow("etl \x1b]0;owned\x07 [/data/in]")

        @step
        def train():
            print("[epoch 3] loss 0.25")
            print("[train] starting")
            print("regex [a-z]+")
            print("[bold red]x[/] and [/]")
            print(":smile: [link=http://x]y[/link]")
            print("title \x1b]0;owned\x07 clear \x1b[2J", end=" ")
            print("link \x1b]8;;http://evil\x1b\\here\x1b]8;;\x1b\\ cr \rX")
            return 1

        @step
        def judge(train):
            raise ValueError("bad \x1b[31mred\x1b[0m [/x] value")
        """,
    )
    with Terminal("run", "flow_file.py", cwd=project, env=_store(project)) as term:
        assert term.wait_exit() == 1
        out = term.output
    for line in (
        b"[epoch 3] loss 0.25",
        b"[train] starting",
        b"regex [a-z]+",
        b"[bold red]x[/] and [/]",
        b":smile: [link=http://x]y[/link]",
    ):
        assert line in out, term.screen()
    shown = "title ␛]0;owned␇ clear ␛[2J link ␛]8;;http://evil␛\\here␛]8;;␛\\ cr ␍X".encode()
    assert shown in out, term.screen()
    assert "ValueError: bad ␛[31mred␛[0m [/x] value".encode() in out, term.screen()
    assert "etl ␛]0;owned␇ [/data/in]".encode() in out, term.screen()
    for raw in (b"\x1b]0;owned", b"\x1b[2J", b"\x1b]8;;http://evil", b"\x1b[31mred"):
        assert raw not in out, f"{raw!r} reached the terminal:\n{term.screen()}"
    assert b"MarkupError" not in out and b"subscriber failed" not in out


def test_a_terminal_run_leaves_the_same_story_as_a_pipe_header_reasons_and_summary(tmp_path: Path) -> None:
    project = _project(
        tmp_path,
        """
        from dsl import step

        @step
        def load(rows: int = 3):
            return list(range(rows))

        @step
        def total(load):
            return sum(load)
        """,
    )
    piped = subprocess.run(
        [sys.executable, "-m", "runner", "run", "flow_file.py", "-p", "rows=5"],
        cwd=project,
        env={**os.environ, **_store(project)},
        capture_output=True,
        text=True,
    )
    with Terminal("run", "flow_file.py", "-p", "rows=6", cwd=project, env=_store(project)) as term:
        assert term.wait_exit() == 0
        shown = plain(term.output)
    assert "run #1 of flow_file (2 steps) with rows=5" in piped.stdout
    assert "run #2 of flow_file (2 steps) with rows=6" in shown, term.screen()
    assert "▶ load started (parameter changed: rows)" in shown, term.screen()
    assert "▶ total started (upstream output changed: load)" in shown, term.screen()
    assert re.search(r"run #2 succeeded in [\d.]+s: 2 succeeded \(ran: load, total\)", shown), term.screen()


WATCHED = """
    import time
    from dsl import step

    @step
    def data():
        return [1, 2, 3]

    @step
    def model(data):
        print("[model] fitting")
        return sum(data) * VERSION

    VERSION = 1
"""


def test_watch_on_a_terminal_keeps_the_reload_line_run_headers_and_reasons_in_the_scrollback(
    tmp_path: Path,
) -> None:
    project = _project(tmp_path, WATCHED)
    flow_file = project / "flow_file.py"
    with Terminal("run", "flow_file.py", "--watch", cwd=project, env=_store(project)) as term:
        term.wait_for(rb"run #1 succeeded")
        term.wait_for(rb"watching flow_file\.py")
        flow_file.write_text(textwrap.dedent(WATCHED).replace("VERSION = 1", "VERSION = 2"), encoding="utf-8")
        term.wait_for(rb"run #2 succeeded")
        term.type(b"\x03")
        assert term.wait_exit() == 0
        shown = plain(term.output)
    assert "watching flow_file.py (Ctrl-C to stop)" in shown, term.screen()
    assert re.search(r"↻ flow_file\.py saved; .*model", shown), term.screen()
    assert "run #2 of flow_file (2 steps) [watch: flow_file.py changed]" in shown, term.screen()
    assert "▶ model started (helper changed: VERSION)" in shown.split("[watch: flow_file.py changed]")[1]
    assert "    model | [model] fitting" in shown
    for markup in ("[cyan]", "[bold]", "[/]", "[dim]"):
        assert markup not in shown, f"raw markup {markup} on the terminal:\n{term.screen()}"


SLOW = """
    import time
    from dsl import step

    @step
    def quick():
        return 1

    @step
    def slow(quick):
        print("slow-started", flush=True)
        time.sleep(120)
        return 2
"""


def _ctrl_c(term: Terminal) -> float:
    """Type Ctrl-C; return how long the command took to end."""
    began = time.monotonic()
    term.type(b"\x03")
    term.wait_exit(timeout=10)
    return time.monotonic() - began


def test_ctrl_c_while_steps_run_stops_the_run_within_a_second_and_records_it_cancelled(
    tmp_path: Path,
) -> None:
    project = _project(tmp_path, SLOW)
    with Terminal("run", "flow_file.py", cwd=project, env=_store(project)) as term:
        term.wait_for(rb"slow-started")
        took = _ctrl_c(term)
        assert term.proc.returncode == 1
        shown = plain(term.output)
    assert took < HONOURED_S, f"Ctrl-C took {took:.2f}s:\n{term.screen()}"
    assert "stopping the run" in shown and "run #1 cancelled" in shown, term.screen()
    assert _runs(project)[0]["status"] == "cancelled"


def test_ctrl_c_between_steps_waiting_for_a_retry_stops_within_a_second(tmp_path: Path) -> None:
    project = _project(
        tmp_path,
        """
        from dsl import step

        @step(retries=3, retry_delay=120)
        def flaky():
            raise RuntimeError("not yet")
        """,
    )
    with Terminal("run", "flow_file.py", cwd=project, env=_store(project)) as term:
        term.wait_for(rb"retrying in 120s")
        took = _ctrl_c(term)
        assert term.proc.returncode == 1
    assert took < HONOURED_S, f"Ctrl-C took {took:.2f}s:\n{term.screen()}"
    assert _runs(project)[0]["status"] == "cancelled"


def test_ctrl_c_under_watch_while_idle_ends_within_a_second(tmp_path: Path) -> None:
    project = _project(tmp_path, WATCHED)
    with Terminal("run", "flow_file.py", "--watch", cwd=project, env=_store(project)) as term:
        term.wait_for(rb"watching flow_file\.py")
        term.wait_for(rb"run #1 succeeded")
        took = _ctrl_c(term)
        assert term.proc.returncode == 0
    assert took < HONOURED_S, f"Ctrl-C took {took:.2f}s:\n{term.screen()}"


def test_ctrl_c_under_watch_mid_run_stops_the_run_within_a_second(tmp_path: Path) -> None:
    project = _project(tmp_path, SLOW)
    with Terminal("run", "flow_file.py", "--watch", cwd=project, env=_store(project)) as term:
        term.wait_for(rb"slow-started")
        took = _ctrl_c(term)
        assert term.proc.returncode == 1
        shown = plain(term.output)
    assert took < HONOURED_S, f"Ctrl-C took {took:.2f}s:\n{term.screen()}"
    assert "run #1 cancelled" in shown, term.screen()
    assert _runs(project)[0]["status"] == "cancelled"


@pytest.mark.parametrize("watch", [False, True], ids=["run", "watch"])
def test_a_second_ctrl_c_exits_at_once_when_the_first_cannot_stop_the_run(
    tmp_path: Path, watch: bool
) -> None:
    """An in-process step (`--executor inline`) cannot be killed: the first Ctrl-C asks, the second
    ends the process with 130 at once, in every mode."""
    project = _project(tmp_path, SLOW)
    args = ["run", "flow_file.py", "--executor", "inline", *(["--watch"] if watch else [])]
    with Terminal(*args, cwd=project, env=_store(project)) as term:
        term.wait_for("▶ slow started".encode())
        term.type(b"\x03")
        term.wait_for(rb"Ctrl-C again to exit at once")
        took = _ctrl_c(term)
        assert term.proc.returncode == 130
        assert b"\x1b[?25h" in term.output.rsplit(b"Ctrl-C again", 1)[1], "the cursor was not given back"
    assert took < HONOURED_S, f"the second Ctrl-C took {took:.2f}s:\n{term.screen()}"


def test_pdb_on_a_terminal_gets_plain_lines_no_live_panel_redrawn_into_the_debugger(tmp_path: Path) -> None:
    project = _project(
        tmp_path,
        """
        from dsl import step

        @step
        def broken():
            answer = 41
            raise ValueError("look at answer")
        """,
    )
    with Terminal("run", "flow_file.py", "--pdb", cwd=project, env=_store(project)) as term:
        term.wait_for(rb"\(Pdb\) ")
        term.type(b"p answer + 1\n")
        term.wait_for(rb"\r?\n42\r?\n")
        term.type(b"q\n")
        assert term.wait_exit() == 1
        out = term.output
    assert "▶ broken started (no earlier result)".encode() in out
    for redraw in (b"\x1b[?25l", b"\x1b[2K", b"\x1b[1A"):
        assert redraw not in out, f"live-panel redraw {redraw!r} in a --pdb session:\n{term.screen()}"


def test_closing_the_terminal_stops_the_run_and_records_it_cancelled(tmp_path: Path) -> None:
    """SIGHUP (the window closed) is a clean stop too, not a run left `running` until the store is
    next opened."""
    project = _project(tmp_path, SLOW)
    with Terminal("run", "flow_file.py", cwd=project, env=_store(project)) as term:
        term.wait_for(rb"slow-started")
        term.hang_up()
        term.proc.wait(timeout=10)
    assert _runs(project)[0]["status"] == "cancelled"


def test_a_hung_when_predicate_under_watch_cannot_hold_ctrl_c_hostage(tmp_path: Path) -> None:
    """Issue 15's case: a `when=` predicate that sleeps for 40 s under `--watch`. Whether or not the
    first Ctrl-C can stop it cleanly (that depends on where predicates run), the command ends within a
    second of the second one at the latest."""
    project = _project(
        tmp_path,
        """
        import time
        from dsl import step

        @step
        def a():
            return 1

        @step(when=lambda a: time.sleep(40) or True)
        def b(a):
            return 2
        """,
    )
    with Terminal("run", "flow_file.py", "--watch", cwd=project, env=_store(project)) as term:
        term.wait_for("✓ a succeeded".encode())
        term.type(b"\x03")
        term.wait_for(rb"Ctrl-C again to exit at once")
        try:
            term.proc.wait(HONOURED_S)
        except subprocess.TimeoutExpired:
            took = _ctrl_c(term)
            assert term.proc.returncode == 130
            assert took < HONOURED_S, f"the second Ctrl-C took {took:.2f}s:\n{term.screen()}"
