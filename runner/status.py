"""Provides the one status vocabulary: `StepStatus`, `RunStatus`, which of them are final, and a symbol
for each, used alike by the engine, the store's records, the CLI, the reporter and the TUI.

The values are the strings of the public contract (DESIGN.md: `--json`, `flow show`, the store), and the
enums are `StrEnum`s, so a status compares equal to its string and serialises as it. It lives apart from
`runner.events` because the records the events carry (`runner.records`) need it too.
"""

from __future__ import annotations

from enum import StrEnum


class StepStatus(StrEnum):
    """Where a step stands in one run."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    CACHED = "cached"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class RunStatus(StrEnum):
    """How a run stands; `interrupted` is found when a store opens: its runner died before it ended."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


FINAL: frozenset[str] = frozenset(
    {StepStatus.SUCCEEDED, StepStatus.CACHED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED}
)
"""A step in one of these will not change again in its run."""

OK: frozenset[str] = frozenset({StepStatus.SUCCEEDED, StepStatus.CACHED})
"""A step in one of these has an output its downstream steps can use."""

SYMBOLS: dict[str, str] = {
    StepStatus.PENDING: "○",
    StepStatus.RUNNING: "◐",
    StepStatus.SUCCEEDED: "✓",
    StepStatus.CACHED: "≡",
    StepStatus.FAILED: "✗",
    StepStatus.SKIPPED: "⊘",
    StepStatus.CANCELLED: "■",
    RunStatus.INTERRUPTED: "■",
}
"""One symbol per status, so every view reads without colour too (the TUI, `flow show`, live output)."""
