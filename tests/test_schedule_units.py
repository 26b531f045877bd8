"""Schedules without waiting: durations, cron in explicit time zones (DST included), the catch-up
policy with an injected clock, and invalid schedule options rejected at load time with file:line."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from dsl import FlowError, load_flow
from dsl.operating import parse_duration
from runner.operate.schedule import Schedule, decide, format_duration, schedule_of

BERLIN = ZoneInfo("Europe/Berlin")


def at(*parts: int, zone: ZoneInfo = BERLIN) -> float:
    return datetime(*parts, tzinfo=zone).timestamp()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h30m", 5400), ("1d", 86400), ("250ms", 0.25), ("2", 2), (1.5, 1.5)],
)
def test_durations_read_as_seconds(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5x", "-1s", "0", "0s", "1h foo", "m5", True, None, "inf"])
def test_a_bad_duration_says_what_is_accepted(text):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_format_duration_reads_back():
    assert [format_duration(s) for s in (0.5, 1, 90, 3600, 5400, 86400)] == [
        "500ms",
        "1s",
        "1m30s",
        "1h",
        "1h30m",
        "1d",
    ]


def test_cron_is_evaluated_in_the_flows_time_zone_across_the_dst_change():
    nightly = Schedule("0 3 * * *", None, "Europe/Berlin")
    # 29 March 2026: clocks go from 02:00 to 03:00 in Berlin; 3 am is still 3 am local time.
    before = at(2026, 3, 28, 12, 0)
    first = nightly.next_after(before)
    second = nightly.next_after(first)
    assert datetime.fromtimestamp(first, BERLIN) == datetime(2026, 3, 29, 3, 0, tzinfo=BERLIN)
    assert datetime.fromtimestamp(second, BERLIN) == datetime(2026, 3, 30, 3, 0, tzinfo=BERLIN)
    assert second - first == 24 * 3600  # both at 03:00 CEST
    utc = Schedule("0 3 * * *", None, "UTC")
    assert utc.next_after(before) - first == 2 * 3600  # 03:00 UTC is 05:00 in Berlin (CEST)


def test_counting_missed_cron_runs_stops_early_but_finds_the_latest():
    minutely = Schedule("* * * * *", None, "UTC")
    week = 7 * 86400
    count, latest = minutely.due_between(0, week)
    assert count >= 10_000 and latest == week


def test_an_interval_schedule_runs_at_once_the_first_time_then_every_interval():
    every = Schedule(None, 10.0)
    first = decide(every, None, now=1000.0, served_since=1000.0)
    assert first.run and first.handled == 1000.0 and first.next_due == 1010.0
    assert not decide(every, 1000.0, now=1009.0, served_since=1000.0).run
    due = decide(every, 1000.0, now=1010.2, served_since=1000.0)
    assert due.run and due.missed == 1 and due.handled == 1010.0 and due.next_due == 1020.0


def test_a_cron_schedule_seen_the_first_time_waits_for_its_due_time():
    nightly = Schedule("0 3 * * *", None, "Europe/Berlin")
    now = at(2026, 6, 1, 12, 0)
    first = decide(nightly, None, now, now)
    assert not first.run and first.handled == now
    assert first.next_due == at(2026, 6, 2, 3, 0)


def test_runs_missed_while_the_server_was_down_run_once_by_default():
    nightly = Schedule("0 3 * * *", None, "Europe/Berlin")
    last = at(2026, 6, 1, 3, 0)
    restarted = at(2026, 6, 4, 12, 0)  # down for the 2nd, 3rd and 4th
    decision = decide(nightly, last, restarted, restarted)
    assert decision.run and decision.missed == 3
    assert decision.handled == at(2026, 6, 4, 3, 0)
    assert decision.next_due == at(2026, 6, 5, 3, 0)
    assert "catching up 3" in decision.note


def test_catch_up_skip_runs_nothing_for_missed_runs_and_waits_for_the_next():
    nightly = Schedule("0 3 * * *", None, "Europe/Berlin", catch_up="skip")
    last = at(2026, 6, 1, 3, 0)
    restarted = at(2026, 6, 4, 12, 0)
    decision = decide(nightly, last, restarted, restarted)
    assert not decision.run and decision.handled == at(2026, 6, 4, 3, 0)
    assert decision.next_due == at(2026, 6, 5, 3, 0)
    later = decide(nightly, decision.handled, at(2026, 6, 5, 3, 0, 1), restarted)
    assert later.run and later.missed == 1


def test_catch_up_skip_still_runs_a_due_time_that_came_after_the_restart():
    every = Schedule(None, 60.0, catch_up="skip")
    decision = decide(every, 0.0, now=250.0, served_since=200.0)  # 60, 120, 180 missed; 240 not
    assert decision.run and decision.handled == 240.0


def test_due_times_passed_while_the_last_run_was_busy_collapse_into_one_run():
    every = Schedule(None, 1.0)
    decision = decide(every, 100.0, now=104.5, served_since=50.0)
    assert decision.run and decision.missed == 4 and decision.handled == 104.0 and decision.next_due == 105.0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ('schedule="61 * * * *"', "not a valid cron expression (Bad minute)"),
        ('schedule="0 3 * *"', "not a valid cron expression"),
        ('every="5 parsecs"', "is not a duration"),
        ('every="30s", schedule="* * * * *"', "not both"),
        ('schedule="0 3 * * *", timezone="Mars/Olympus"', "not a known IANA time zone"),
        ('every="1m", catch_up="always"', "catch_up must be one of once, skip"),
        ("loop=True, max_iterations=0", "max_iterations must be a whole number >= 1"),
        ('on_failure="email me"', "on_failure= must be a function"),
        ("hook_timeout=-1", "above zero"),
    ],
)
def test_invalid_operating_options_name_the_flow_line(write_flow, options, message):
    path = write_flow(
        f"""
        from dsl import Flow, step

        flow = Flow("ops", {options})

        @step
        def a():
            return 1
        """
    )
    with pytest.raises(FlowError) as caught:
        schedule_of(load_flow(path))
    assert message in str(caught.value)
    assert caught.value.file == str(path) and caught.value.line == 4


def test_flow_run_refuses_an_invalid_cron_expression_before_anything_runs(write_flow, flow_cli, store_dir):
    path = write_flow(
        """
        from dsl import Flow, step

        flow = Flow("ops", schedule="0 25 * * *")

        @step
        def a():
            return 1
        """
    )
    result = flow_cli("run", str(path))
    assert result.code == 2, result
    assert f"{path}:4: schedule='0 25 * * *' is not a valid cron expression (Bad hour)" in result.stderr
    assert "Traceback" not in result.stderr
    assert not store_dir.exists()
    check = flow_cli("check", str(path))
    assert check.code == 2 and "Bad hour" in check.stderr


def test_a_step_hook_that_is_not_callable_names_the_step(write_flow):
    path = write_flow(
        """
        from dsl import step

        @step(on_retry=[print, 42])
        def a():
            return 1
        """
    )
    with pytest.raises(FlowError) as caught:
        load_flow(path)
    assert caught.value.step == "a" and "on_retry= must be a function" in str(caught.value)
