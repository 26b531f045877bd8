"""One status vocabulary: the run narration (plain and live), `flow show` and the TUI mark a status with
the same symbol, `runner.status.SYMBOLS`; `▶` marks a step's start line (an event, not a status)."""

from __future__ import annotations

import io

import pytest

from runner.events import StepFinished, StepStarted
from runner.output.plain import PlainReporter
from runner.status import SYMBOLS, StepStatus


def finished(status: str, reason: str = "") -> StepFinished:
    return StepFinished(
        run_id=1,
        step="train",
        status=status,
        attempts=1,
        duration_s=0.5,
        reason=reason,
        error="boom" if status == StepStatus.FAILED else None,
        traceback=None,
        fingerprint=None,
        output_hash=None,
        preview=None,
        metrics={},
        ts=0.0,
    )


@pytest.mark.parametrize(
    ("status", "symbol"),
    [
        (StepStatus.SUCCEEDED, "✓"),
        (StepStatus.CACHED, "≡"),
        (StepStatus.FAILED, "✗"),
        (StepStatus.SKIPPED, "⊘"),
        (StepStatus.CANCELLED, "■"),
    ],
)
def test_a_finished_step_line_starts_with_its_status_symbol(status: StepStatus, symbol: str) -> None:
    out = io.StringIO()
    PlainReporter(out)(finished(status, reason="upstream failed"))
    assert SYMBOLS[status] == symbol
    assert out.getvalue().startswith(f"  {symbol} train {status}"), out.getvalue()


def test_a_start_line_keeps_the_started_marker() -> None:
    out = io.StringIO()
    PlainReporter(out)(StepStarted(1, "train", 1, "no earlier result", "f00d", 0.0))
    assert out.getvalue() == "  ▶ train started (no earlier result)\n"


def test_flow_show_marks_skipped_and_cached_steps_with_the_shared_symbols(flow_cli, write_flow) -> None:
    path = write_flow(
        """
        from dsl import step

        @step
        def check():
            return False

        @step(when=lambda check: check)
        def train(check):
            return 1

        @step
        def report():
            return "ok"
        """
    )
    assert flow_cli("run", str(path)).code == 0
    assert flow_cli("run", str(path)).code == 0
    shown = flow_cli("show", "last").stdout
    rows = [line.split()[:3] for line in shown.splitlines()]
    assert ["≡", "report", "cached"] in rows, shown
    assert ["⊘", "train", "skipped"] in rows, shown
