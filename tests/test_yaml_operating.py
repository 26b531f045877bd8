"""A YAML flow's `schedule`/`every`/`timezone`/`catch_up`/`loop` keys: `flow serve` runs it when due,
`flow schedules` lists it, `flow run` loops it, and a bad value names the file and the key's line.
Real `flow` processes on a real store."""

from __future__ import annotations

import textwrap

import pytest

from runner.store import Store
from tests.test_serve import flows, of, serve  # noqa: F401 - fixtures

TICKER = """\
name: yaml_ticker
every: 1s
steps:
  - name: work
    command: [echo, tick]
    cache: false
"""


def test_flow_serve_runs_a_yaml_flow_with_every_on_its_interval(flows, serve):  # noqa: F811
    path = flows("ticker.yaml", TICKER)
    served = serve(path.parent)
    runs = served.wait_for_runs(
        lambda runs: len([r for r in of(runs, "yaml_ticker") if r.status == "succeeded"]) >= 2
    )
    assert served.terminate() == 0
    done = [r for r in of(runs, "yaml_ticker") if r.status == "succeeded"]
    assert all(r.trigger.startswith("schedule") for r in done)
    assert done[1].started_at - done[0].started_at >= 0.9


def test_flow_schedules_lists_a_yaml_cron_schedule_in_its_time_zone(flows, flow_cli):  # noqa: F811
    text = TICKER.replace("every: 1s", 'schedule: "0 3 * * *"\ntimezone: Europe/Berlin\ncatch_up: skip')
    path = flows("nightly.yaml", text)
    result = flow_cli("schedules", str(path.parent), "--json")
    assert result.code == 0, result
    (row,) = result.json()
    assert row["schedule"] == "cron '0 3 * * *' (Europe/Berlin)"
    assert row["catch_up"] == "skip"
    assert row["next_due"] is not None


def test_a_yaml_flow_declaring_a_loop_runs_its_iterations(write_flow, flow_cli, store_dir):
    path = write_flow(TICKER.replace("every: 1s", "loop: true\nmax_iterations: 2"), name="loop.yaml")
    result = flow_cli("run", str(path))
    assert result.code == 0, result
    store = Store(store_dir, create=False)
    try:
        runs = store.list_runs(limit=10)
    finally:
        store.close()
    assert [r.trigger for r in runs] == ["loop", "loop"]


@pytest.mark.parametrize(
    ("options", "line", "message"),
    [
        ("every: soon", 2, "'every': 'soon' is not a duration"),
        ("every: 5s\nschedule: '0 3 * * *'", 3, "give schedule= (cron) or every= (an interval), not both"),
        ("every: 5s\ntimezone: Mars/Base", 3, "timezone='Mars/Base' is not a known IANA time zone"),
        ("every: 5s\ncatch_up: twice", 3, "catch_up must be one of once, skip"),
        ("loop: {a: 1}", 2, "'loop' must be a single value, got a mapping"),
        ("loop: true\nmax_iterations: 0", 3, "max_iterations must be a whole number >= 1"),
        ("schedule: '99 * * * *'", 2, "is not a valid cron expression"),
    ],
)
def test_a_bad_operating_key_names_the_yaml_file_and_line(write_flow, flow_cli, options, line, message):
    text = "name: bad\n" + textwrap.dedent(options) + "\nsteps:\n  - name: work\n    command: [echo, hi]\n"
    path = write_flow(text, name="bad.yaml")
    result = flow_cli("run", str(path))
    assert result.code == 2, result
    assert f"bad.yaml:{line}: " in result.stderr and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
