"""Provides `Schedule` and `decide`: when a scheduled flow is due, and what to do about missed runs.

Everything here is pure and takes the time as an argument (Unix seconds), so tests evaluate cron
expressions, time zones, DST and the catch-up policy with an injected clock; `flow serve` passes
`time.time()`. Cron expressions are evaluated by cronsim (maintained, DST-aware) in the flow's
explicit IANA time zone.

The catch-up policy (documented in the README, "Schedules"):

- The first time `flow serve` sees a flow, a cron schedule waits for its next due time; an `every`
  schedule runs at once.
- Due times that passed while `flow serve` was down (after the last due time it handled, which
  the store keeps per flow): `catch_up="once"` (default) runs the flow once for all of them;
  `catch_up="skip"` runs nothing and waits for the next due time.
- Due times that pass while the flow's previous run is still going (and `overlap` is off) collapse
  into one run started when that run ends.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from dsl.errors import FlowError
from dsl.flow import Flow
from dsl.loader import LoadedFlow

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo


def _zone(name: str) -> ZoneInfo:
    """The IANA time zone `name`. `zoneinfo` and `cronsim` are imported on first use: every `flow run`
    checks its flow's schedule, and most flows have none (~5 ms of start-up)."""
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


def _cron(expression: str, start: datetime) -> Iterator[datetime]:
    """The due times of a cron expression after `start` (see `_zone` for the lazy import)."""
    from cronsim import CronSim

    return iter(CronSim(expression, start))


MAX_COUNTED_MISSES = 10_000
"""Missed cron due times are counted (for the message) up to this many; a minute-by-minute cron down
for a week is 10,080: counting further costs time and changes nothing."""


@dataclass(frozen=True)
class Schedule:
    """A flow's schedule: a cron expression or an interval, plus how `flow serve` treats it.

    Attributes:
        cron: a cron expression, or None for an interval.
        every: the interval in seconds, or None for a cron expression.
        timezone: the IANA zone the cron expression is read in.
        catch_up: `once` or `skip` (see the module docstring).
        overlap: whether a due run may start while the previous one runs.
    """

    cron: str | None
    every: float | None
    timezone: str = "UTC"
    catch_up: str = "once"
    overlap: bool = False

    def next_after(self, moment: float) -> float:
        """The first due time strictly after `moment` (an interval counts from `moment`)."""
        if self.every is not None:
            return moment + self.every
        assert self.cron is not None
        start = datetime.fromtimestamp(moment, _zone(self.timezone))
        return next(_cron(self.cron, start)).timestamp()

    def due_between(self, after: float, until: float) -> tuple[int, float | None]:
        """How many due times fall in `(after, until]`, and the latest of them (None if none)."""
        if self.every is not None:
            count = math.floor((until - after) / self.every + 1e-9)
            return (count, after + count * self.every) if count > 0 else (0, None)
        count, latest = 0, None
        assert self.cron is not None
        for due in _cron(self.cron, datetime.fromtimestamp(after, _zone(self.timezone))):
            stamp = due.timestamp()
            if stamp > until:
                break
            count, latest = count + 1, stamp
            if count >= MAX_COUNTED_MISSES:
                # Only the newest due time matters from here on: jump to it.
                previous = self._latest_before(until)
                return count, max(stamp, previous)
        return count, latest

    def _latest_before(self, until: float) -> float:
        """The latest cron due time at or before `until` (searching back a day at a time)."""
        step = 86_400.0
        start = until - step
        while True:
            latest = None
            for due in _cron(self.cron or "", datetime.fromtimestamp(start, _zone(self.timezone))):
                if due.timestamp() > until:
                    break
                latest = due.timestamp()
            if latest is not None:
                return latest
            start -= step

    def describe(self) -> str:
        """`cron '0 3 * * *' (Europe/Berlin)` or `every 30s`."""
        if self.every is not None:
            return f"every {format_duration(self.every)}"
        return f"cron '{self.cron}' ({self.timezone})"


@dataclass(frozen=True)
class Decision:
    """What `flow serve` does for one flow at one moment.

    Attributes:
        run: start a run now.
        handled: the due time to record as handled (run or skipped), or None to record nothing.
        missed: how many due times this decision covers (more than 1: a catch-up).
        next_due: when to look again.
        note: why, for the log ("first seen", "2 missed runs skipped").
    """

    run: bool
    handled: float | None
    missed: int
    next_due: float
    note: str = ""


def decide(schedule: Schedule, last_due: float | None, now: float, served_since: float) -> Decision:
    """Decide for a flow whose last handled due time is `last_due`, at `now`.

    `served_since` is when this `flow serve` process started watching the flow: due times before it
    were missed while the server was down, and the catch-up policy applies to them.
    """
    if last_due is None:
        if schedule.every is not None:
            return Decision(True, now, 1, now + schedule.every, "first run of an interval schedule")
        return Decision(False, now, 0, schedule.next_after(now), "first seen; waiting for its due time")
    count, latest = schedule.due_between(last_due, now)
    if count == 0 or latest is None:
        return Decision(False, None, 0, schedule.next_after(last_due))
    follows = schedule.next_after(latest)
    missed_down = schedule.due_between(last_due, served_since)[0] if served_since > last_due else 0
    if missed_down and schedule.catch_up == "skip":
        if count > missed_down:  # a due time since the server started: that one runs
            return Decision(True, latest, 1, follows, f"{missed_down} missed run(s) skipped")
        return Decision(False, latest, 0, follows, f"{missed_down} missed run(s) skipped (catch_up='skip')")
    note = f"catching up {count} missed run(s) with one run" if count > 1 else ""
    return Decision(True, latest, count, follows, note)


def schedule_of(loaded: LoadedFlow) -> Schedule | None:
    """The flow's schedule, validated (None when it declares none).

    Raises:
        FlowError: the cron expression is invalid; names the `Flow(...)` line.
    """
    declaration = loaded.declaration
    if declaration is None or (declaration.schedule is None and declaration.every is None):
        return None
    return _schedule(declaration)


def _schedule(declaration: Flow) -> Schedule:
    if declaration.schedule is not None:
        from cronsim import CronSimError

        try:
            zone = _zone(declaration.timezone)
            next(_cron(declaration.schedule, datetime.now(zone)))
        except (CronSimError, StopIteration) as exc:
            detail = str(exc) or "it never matches a date"
            raise FlowError(
                f"schedule={declaration.schedule!r} is not a valid cron expression ({detail}); "
                "use five fields: minute hour day-of-month month day-of-week, e.g. '0 3 * * *'",
                file=declaration.file,
                line=declaration.line,
            ) from None
    return Schedule(
        cron=declaration.schedule,
        every=declaration.every,
        timezone=declaration.timezone,
        catch_up=declaration.catch_up,
        overlap=declaration.overlap,
    )


def format_duration(seconds: float) -> str:
    """`90` -> `1m30s`, `0.5` -> `500ms`, `3600` -> `1h`."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    parts = []
    rest = seconds
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if rest >= size:
            whole = int(rest // size)
            parts.append(f"{whole}{unit}")
            rest -= whole * size
    if rest or not parts:
        parts.append(f"{rest:g}s")
    return "".join(parts)
