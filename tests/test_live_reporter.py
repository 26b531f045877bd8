"""`LiveReporter` in-process: the engine's scheduler thread never waits for the terminal, and what
reaches the terminal is exactly the narration a pipe gets. Rendered with a real Rich console on a
real pipe, forced into terminal mode (as rich's own tests do)."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from rich.console import Console

from runner.events import RunFinished, RunStarted, StepFinished, StepLog, StepStarted
from runner.output.live import LiveReporter
from runner.output.plain import PlainReporter


def _events(lines: int) -> list[object]:
    now = time.time()
    return [
        RunStarted(1, "demo", "demo.py", {"rows": 3}, ("train",), "cli", now),
        StepStarted(1, "train", 1, "no earlier result", "fp", now),
        *(StepLog(1, "train", "stdout", f"[epoch {i}] loss 0.25 {'x' * 60}", now) for i in range(lines)),
        StepFinished(1, "train", "succeeded", 1, 0.5, "", None, None, "fp", "h", None, {}, now),
        RunFinished(1, "succeeded", 0.6, {"succeeded": 1}, now),
    ]


def test_a_terminal_that_does_not_read_never_blocks_the_scheduler_thread() -> None:
    """A paused terminal (nobody reading the pty) used to stop the whole engine: the scheduler printed
    through Rich itself. Now it only queues; the writer thread is the one that waits."""
    read_end, write_end = os.pipe()
    console = Console(file=os.fdopen(write_end, "w"), force_terminal=True, width=100, height=30)
    reporter = LiveReporter(console)
    events = _events(2000)  # ~200 KB: three times what a pipe holds before write() blocks
    began = time.monotonic()
    for event in events:
        reporter(event)  # type: ignore[arg-type]
    took = time.monotonic() - began
    drained = bytearray()

    def drain() -> None:
        while chunk := os.read(read_end, 65536):
            drained.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    reporter.close()
    console.file.close()
    reader.join(10)
    os.close(read_end)
    assert took < 2.0, f"the subscriber waited {took:.2f}s for the terminal"
    assert b"[epoch 1999] loss 0.25" in drained
    assert not reporter.closed.is_set()


def test_the_terminal_gets_the_same_lines_as_a_pipe() -> None:
    read_end, write_end = os.pipe()
    console = Console(file=os.fdopen(write_end, "w"), force_terminal=True, width=200, height=30)
    live = LiveReporter(console)
    piped: list[str] = []

    class Collect:
        def write(self, text: str) -> None:
            piped.append(text)

        def flush(self) -> None:
            pass

    plain = PlainReporter(Collect())  # type: ignore[arg-type]
    for event in _events(3):
        live(event)  # type: ignore[arg-type]
        plain(event)  # type: ignore[arg-type]
    live.close()
    console.file.close()
    shown = b""
    while chunk := os.read(read_end, 65536):
        shown += chunk
    os.close(read_end)
    text = shown.decode()
    for line in "".join(piped).splitlines():
        assert line in text.replace("\x1b[2m", "").replace("\x1b[0m", ""), (line, text)


SHORT_RUN = """
import sys, time
from runner.events import RunFinished, RunStarted, StepFinished, StepStarted
from runner.output import live
from runner.output.live import LiveReporter

live.PANEL_AFTER_S = float(sys.argv[1])
reporter = LiveReporter()
now = time.time()
reporter(RunStarted(1, "demo", "demo.py", {}, ("train",), "cli", now))
reporter(StepStarted(1, "train", 1, "no earlier result", "fp", now))
time.sleep(float(sys.argv[2]))
reporter(StepFinished(1, "train", "succeeded", 1, 0.5, "", None, None, "fp", "h", None, {}, now))
reporter(RunFinished(1, "succeeded", 0.6, {"succeeded": 1}, now))
reporter.close()
sys.stderr.write("rich imported" if "rich.live" in sys.modules else "rich not imported")
"""


def _short_run(panel_after: float, step_s: float, **env: str) -> tuple[str, str]:
    """(what the script wrote to its terminal, a pseudo-terminal, with its line ends as written; what
    it said on stderr)."""
    repo = str(Path(__file__).resolve().parent.parent)
    main, side = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-c", SHORT_RUN, str(panel_after), str(step_s)],
        stdout=side,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": repo, **env},
    )
    os.close(side)
    shown = b""
    try:
        while chunk := os.read(main, 65536):
            shown += chunk
    except OSError:  # EIO: the script, the terminal's last holder, is done with it
        pass
    os.close(main)
    _, said = proc.communicate(timeout=60)
    assert proc.returncode == 0, said
    return shown.decode().replace("\r\n", "\n"), said


def test_a_short_run_is_narrated_without_rich_in_the_codes_rich_writes() -> None:
    shown, said = _short_run(30.0, 0.0)
    assert said == "rich not imported"
    assert shown == (
        "\x1b[1mrun #1 of demo (1 step)\x1b[0m\n"
        "  ▶ train started (no earlier result)\n"
        "\x1b[32m  ✓ train succeeded in 0.50s\x1b[0m\n"
        "\x1b[1;32mrun #1 succeeded in 0.60s: 1 succeeded (ran: train)\x1b[0m\n"
    )
    plain, _ = _short_run(30.0, 0.0, NO_COLOR="1")
    assert plain == "run #1 of demo (1 step)\n  ▶ train started (no earlier result)\n" + (
        "  ✓ train succeeded in 0.50s\nrun #1 succeeded in 0.60s: 1 succeeded (ran: train)\n"
    )


def test_a_run_that_goes_on_gets_the_panel_of_running_steps() -> None:
    shown, said = _short_run(0.05, 1.0)
    assert said == "rich imported"
    assert re.search(r"train +\S*[0-9.]+s", shown), shown  # the panel's row of the running step
    assert "0/1" in shown  # and of its run
    assert "\x1b[1;32mrun #1 succeeded in 0.60s: 1 succeeded (ran: train)\x1b[0m\n" in shown
