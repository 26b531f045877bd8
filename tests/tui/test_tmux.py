"""The real `flow tui` in a real terminal (tmux): open a sample flow, run it, read the screen."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def capture(session: str) -> str:
    return subprocess.run(
        ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True, check=False
    ).stdout


def wait_screen(session: str, predicate, timeout: float = 30.0) -> str:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = capture(session)
        if predicate(screen):
            return screen
        time.sleep(0.1)
    raise AssertionError(f"screen never matched; last screen:\n{screen}")


def test_flow_tui_in_tmux(tmp_path: Path) -> None:
    flow = tmp_path / "ml_pipeline.py"
    shutil.copy(ROOT / "sample_flows" / "ml_pipeline.py", flow)
    store = tmp_path / "store"
    flow_cmd = shutil.which("flow") or f"{sys.executable} -m runner.cli"
    session = f"flowtui-{uuid.uuid4().hex[:8]}"
    command = (
        f"cd {tmp_path} && env -u COLUMNS -u LINES {flow_cmd} tui {flow} --store {store} --workers 2;"
        " echo EXITED $?; sleep 30"
    )
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "36", command], check=True)
    subprocess.run(["tmux", "resize-window", "-t", session, "-x", "120", "-y", "36"], check=False)
    try:
        screen = wait_screen(session, lambda s: "collect_data" in s and "evaluate" in s)
        assert "ml_pipeline" in screen and "no run" in screen
        subprocess.run(["tmux", "send-keys", "-t", session, "r"], check=True)
        screen = wait_screen(session, lambda s: "run #1 ✓ succeeded" in s, timeout=60)
        assert screen.count("✓") >= 5  # the title and four boxes
        subprocess.run(["tmux", "send-keys", "-t", session, "l", "l", "l", "2"], check=True)
        screen = wait_screen(session, lambda s: "accuracy=" in s)
        assert "evaluate" in screen
        subprocess.run(["tmux", "send-keys", "-t", session, "3"], check=True)
        screen = wait_screen(session, lambda s: "#1" in s and "trigger" in s)
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        wait_screen(session, lambda s: "EXITED 0" in s)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False, capture_output=True)
