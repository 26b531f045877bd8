"""Provides `Flow`, the optional declaration of a flow's name, description, outputs and how it is
operated."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from dsl import wiring
from dsl.errors import FlowError
from dsl.operating import hook_list, parse_duration

if TYPE_CHECKING:
    from dsl.graph import Graph

CATCH_UP_POLICIES = ("once", "skip")
"""What `flow serve` does with scheduled runs missed while it was down (or busy with the last run):
`once` runs the flow once for all of them, `skip` waits for the next due time."""


class Flow:
    """Names the flow defined in this file; without one, the flow is named after the file's stem.

    Example:
        ```python
        flow = Flow("train_and_eval", description="Train and evaluate the model",
                    outputs={"accuracy": (evaluate, "accuracy"), "model": train})
        ```

    `outputs` are the flow's results, printed after `flow run`, stored with the run and shown by
    `flow show`: each is a step (its whole output), `(step, "key")` (one key of a step's dict output),
    or the text `"{{ steps.STEP.outputs.KEY }}"` as in a YAML flow.

    Operating options (see the README's "Operating flows"):
        schedule: a cron expression (`"0 3 * * *"`) for `flow serve`, evaluated in `timezone`.
        every: or an interval (`"30s"`, `"5m"`, `"1h30m"`, or seconds) for `flow serve`.
        timezone: the IANA time zone the cron expression is read in (default UTC).
        catch_up: a policy from `CATCH_UP_POLICIES` for runs missed while `flow serve` was down.
        overlap: let `flow serve` start a due run while the previous one is still running.
        loop: `flow run` runs the flow again after each run (True) or every given interval.
        max_iterations: stop a loop after this many runs.
        on_success, on_failure, on_retry: hooks (callables, or lists of them) called with the run's
            details when the run succeeds or fails, or a step is retried.
        hook_timeout: seconds a hook may take before it is stopped and reported.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        description: str = "",
        outputs: Mapping[str, Any] | None = None,
        schedule: str | None = None,
        every: str | float | None = None,
        timezone: str = "UTC",
        catch_up: str = "once",
        overlap: bool = False,
        loop: bool | str | float = False,
        max_iterations: int | None = None,
        on_success: Callable[..., Any] | list[Callable[..., Any]] | None = None,
        on_failure: Callable[..., Any] | list[Callable[..., Any]] | None = None,
        on_retry: Callable[..., Any] | list[Callable[..., Any]] | None = None,
        hook_timeout: float = 30.0,
    ) -> None:
        self.name = name
        self.description = description
        self.outputs = dict(outputs or {})
        self.file, self.line = wiring.caller_location(2)
        self._operating(schedule, every, timezone, catch_up, overlap, loop, max_iterations)
        try:
            self.on_success = hook_list(on_success, "on_success")
            self.on_failure = hook_list(on_failure, "on_failure")
            self.on_retry = hook_list(on_retry, "on_retry")
            self.hook_timeout = parse_duration(hook_timeout)
        except ValueError as exc:
            raise self._error(str(exc)) from None
        wiring.current().flows.append(self)

    def _operating(
        self,
        schedule: str | None,
        every: str | float | None,
        timezone: str,
        catch_up: str,
        overlap: bool,
        loop: bool | str | float,
        max_iterations: int | None,
    ) -> None:
        """Validate and keep the schedule and loop options (the cron syntax is the runner's to check)."""
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        if schedule is not None and every is not None:
            raise self._error("give schedule= (cron) or every= (an interval), not both")
        if schedule is not None and (not isinstance(schedule, str) or not schedule.strip()):
            raise self._error(f"schedule= must be a cron expression like '0 3 * * *', got {schedule!r}")
        try:
            self.every = parse_duration(every) if every is not None else None
            self.loop_every = parse_duration(loop) if loop is not True and loop is not False else None
        except ValueError as exc:
            raise self._error(str(exc)) from None
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise self._error(
                f"timezone={timezone!r} is not a known IANA time zone (e.g. 'Europe/Berlin')"
            ) from None
        if catch_up not in CATCH_UP_POLICIES:
            raise self._error(f"catch_up must be one of {', '.join(CATCH_UP_POLICIES)}, got {catch_up!r}")
        if max_iterations is not None and (
            not isinstance(max_iterations, int) or isinstance(max_iterations, bool) or max_iterations < 1
        ):
            raise self._error(f"max_iterations must be a whole number >= 1, got {max_iterations!r}")
        self.schedule = schedule.strip() if schedule is not None else None
        self.timezone = timezone
        self.catch_up = catch_up
        self.overlap = bool(overlap)
        self.loop = loop is not False
        self.max_iterations = max_iterations

    def _error(self, message: str) -> FlowError:
        return FlowError(message, file=self.file, line=self.line)

    def __repr__(self) -> str:
        return f"<Flow {self.name!r}>"

    def output_refs(self, graph: Graph) -> dict[str, tuple[str, str | None]]:
        """Each output as (step name, key or None), checked against the graph.

        Raises:
            FlowError: an output that names no step of the flow, or is none of the three forms.
        """
        from dsl import templates
        from dsl.step import Step

        refs: dict[str, tuple[str, str | None]] = {}
        for name, value in self.outputs.items():
            key: str | None = None
            if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], str):
                value, key = value
            if isinstance(value, str):
                found = templates.references(value) if "{{" in value else []
                if len(found) != 1 or found[0].step is None or found[0].text != value.strip():
                    raise FlowError(
                        f"flow output '{name}' must be a step, (step, 'key') or "
                        "'{{ steps.STEP.outputs.KEY }}'",
                        file=self.file,
                        line=self.line,
                    )
                step_name, key = str(found[0].step), found[0].output
            elif isinstance(value, Step):
                step_name = value.name
            else:
                raise FlowError(
                    f"flow output '{name}' must be a step, (step, 'key') or "
                    f"'{{{{ steps.STEP.outputs.KEY }}}}', got {value!r}",
                    file=self.file,
                    line=self.line,
                )
            if step_name not in graph.nodes:
                raise FlowError(
                    f"flow output '{name}' names '{step_name}', which is not a step of this flow",
                    file=self.file,
                    line=self.line,
                )
            refs[str(name)] = (step_name, key)
        return refs
