"""Provides `declaration`: a YAML flow's operating keys (`schedule`, `every`, `timezone`, `catch_up`,
`overlap`, `loop`, `max_iterations`) as the same `Flow` declaration a Python flow's `Flow(...)` gives.

`flow serve`, `flow schedules` and `flow run --loop` read a flow's schedule and loop from its
declaration only, so a YAML flow that declares one is scheduled and looped exactly like a Python flow.
Every problem names the YAML file and the line of the key it is about (the cron syntax itself is
checked by the runner, which reports the line of `schedule:`).
"""

from __future__ import annotations

from typing import Any

from dsl.errors import FlowError
from dsl.flow import Flow
from dsl.operating import parse_duration
from dsl.yamldoc import Checker, Located, describe

OPERATING_KEYS = ("schedule", "every", "timezone", "catch_up", "overlap", "loop", "max_iterations")
"""The top-level keys of a YAML flow that say how it is operated (see `dsl.flow.Flow`)."""


def declaration(top: Checker, name: str | None, description: str) -> Flow | None:
    """The flow's `Flow` declaration when it sets any operating key (else None).

    Raises:
        FlowError: a value of the wrong type, a bad duration, an unknown time zone or catch-up policy,
            both `schedule` and `every`; the message names the file and the key's line.
    """
    given = {key: top.get(key) for key in OPERATING_KEYS if key in top.located.entries}
    if not given:
        return None
    for key, value in given.items():
        if isinstance(value, Located) or value is None:
            raise top.error(f"'{key}' must be a single value, got {describe(value)}", key)
    for key in ("schedule", "timezone", "catch_up"):
        if key in given and not isinstance(given[key], str):
            raise top.error(f"'{key}' must be text, got {describe(given[key])}", key)
    if "overlap" in given and not isinstance(given["overlap"], bool):
        raise top.error(f"'overlap' must be true or false, got {describe(given['overlap'])}", "overlap")
    for key in ("every", "loop"):
        value = given.get(key)
        if value is None or isinstance(value, bool):
            if key == "every" and "every" in given:
                raise top.error(f"'every' must be a duration like 30s, got {describe(value)}", key)
            continue
        try:
            parse_duration(value)
        except ValueError as exc:
            raise top.error(f"'{key}': {exc}", key) from None
    options: dict[str, Any] = dict(given)
    try:
        flow = Flow(name, description=description, **options)
    except FlowError as exc:
        message = exc.message
        raise top.error(message, _key_of(message, given)) from None
    flow.file = top.file
    flow.line = top.line_of("schedule" if "schedule" in given else next(iter(given)))
    return flow


def _key_of(message: str, given: dict[str, Any]) -> str:
    """The key an error of `Flow(...)` is about: the first given key its message names."""
    return next((key for key in given if key in message), next(iter(given)))
