"""`LiveReporter` in-process: the engine's scheduler thread never waits for the terminal, and what
reaches the terminal is exactly the narration a pipe gets. Rendered with a real Rich console on a
real pipe, forced into terminal mode (as rich's own tests do)."""

from __future__ import annotations

import os
import threading
import time

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
