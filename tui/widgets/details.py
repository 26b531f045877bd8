"""Provides `StepDetails`: one step's status, why it ran, timing, error and traceback, metrics,
output preview and parameters, for the run being viewed — wrapped, never cut.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.content import Content
from textual.widgets import Static

from runner.status import StepStatus
from tui.controllers.views import StepView
from tui.data import format as fmt
from tui.text import plain

WHOLE = 10_000
"""Values are shown whole here (wrapped): this is where a value cut elsewhere can be read."""
PREVIEW = 500
"""Characters of the output preview's first line shown (the step's output itself can be huge)."""

STATUS_STYLE: dict[str, str] = {
    StepStatus.SUCCEEDED: "$success",
    StepStatus.CACHED: "$text-secondary",
    StepStatus.FAILED: "$error",
    StepStatus.RUNNING: "$accent",
    fmt.RETRYING: "$warning",
    StepStatus.CANCELLED: "$warning",
    StepStatus.SKIPPED: "$text-muted",
}


def _field(label: str, value: str, style: str = "") -> Content:
    return Content.assemble((f"{label:<12}", "$text-muted"), plain(value, style))


def describe(view: StepView) -> Content:
    """The details text of a step (pure: unit- and snapshot-friendly)."""
    step, info, run_id, options, params = view.step, view.info, view.run_id, view.options, view.params
    parts: list[Content] = []
    status = info.status if info else fmt.IDLE
    symbol = fmt.symbol(status)
    title = plain(f"{symbol} {step}", f"bold {STATUS_STYLE.get(status, '')}".strip(), newlines=False)
    parts.append(title)
    if info is None:
        where = f"run #{run_id}" if run_id is not None else "any run yet"
        parts.append(Content.styled(f"not part of {where}", "$text-muted"))
    else:
        parts.append(_field("status", status, STATUS_STYLE.get(status, "")))
        if status == StepStatus.CACHED:
            parts.append(_field("cached", info.reason or "same fingerprint as an earlier run"))
        elif info.reason:
            label = "skipped" if status == StepStatus.SKIPPED else "why it ran"
            parts.append(_field(label, info.reason))
        if info.duration_s is not None and status not in (StepStatus.CACHED, StepStatus.SKIPPED):
            parts.append(_field("duration", fmt.duration(info.duration_s)))
        if info.attempts:
            retries = options.get("retries", 0)
            parts.append(_field("attempts", f"{info.attempts} of {1 + retries}"))
        if info.instances:
            parts.append(_field("fan-out", f"{info.instances_done}/{info.instances} items done"))
        if info.fingerprint:
            parts.append(_field("fingerprint", info.fingerprint[:16]))
        if info.job:
            parts.append(_field("job", info.job, STATUS_STYLE.get(info.job.partition(" ")[0], "")))
        if info.retry_error:
            parts.append(_field("retrying", info.retry_error, "$warning"))
        if info.error:
            parts.append(_field("error", info.error, "$error"))
        if info.metrics:
            metrics = "  ".join(f"{k}={fmt.value(v, WHOLE)}" for k, v in info.metrics.items())
            parts.append(_field("metrics", metrics, "bold"))
        if info.preview:
            lines = info.preview.splitlines() or [""]
            shown = lines[0][:PREVIEW] + ("…" if len(lines[0]) > PREVIEW or len(lines) > 1 else "")
            parts.append(_field("output", shown))
    if view.planned is not None:
        planned = view.planned
        condition = f"; {planned.condition}" if planned.condition else ""
        style = "$warning" if planned.action in ("run", "unknown", "waiting") else "$text-muted"
        said = (
            planned.reason
            if planned.reason.startswith(planned.action)
            else f"{planned.action}: {planned.reason}"
        )
        parts.append(_field("next run", f"{said}{condition}", style))
    if params:
        parts.append(_field("parameters", "  ".join(f"{k}={fmt.value(v, WHOLE)}" for k, v in params.items())))
    declared = [f"{k}={v}" for k, v in options.items() if v not in (None, 0, True, "all_succeeded", 0.0)]
    if declared:
        parts.append(_field("options", "  ".join(declared), "$text-muted"))
    if view.outputs:
        outputs = "  ".join(f"{name}={fmt.value(value, WHOLE)}" for name, value in view.outputs.items())
        parts.append(_field("run outputs", outputs, "bold"))
    if info is not None and info.traceback:
        parts.append(Content(""))
        parts.append(Content.styled("traceback", "bold $error"))
        parts.append(plain(info.traceback.rstrip(), "$text-error"))
    return Content("\n").join(parts)


class StepDetails(VerticalScroll):
    """A scrollable panel with `describe()`'s text."""

    BINDINGS = [
        Binding("down,j", "scroll_down", "Down", show=False, tooltip="Scroll down"),
        Binding("up,k", "scroll_up", "Up", show=False, tooltip="Scroll up"),
    ]

    DEFAULT_CSS = """
    StepDetails { background: $surface; padding: 0 1; }
    StepDetails > Static { width: 100%; }
    """

    def compose(self) -> ComposeResult:
        yield Static(id="details-text")

    def show(self, content: Content) -> None:
        self.query_one("#details-text", Static).update(content)
