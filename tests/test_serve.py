"""`flow serve` and `flow schedules` as real processes on a real store: due runs recorded with trigger
`schedule`, SIGTERM, restart, the catch-up policy for runs missed while down, broken/edited/new flow
files, no overlapping runs of one flow. Waits are on the store or on the server's own messages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from runner.operate.schedule import Schedule
from runner.records import RunRecord
from runner.store import Store
from tests.conftest import SAMPLE_FLOWS

DEADLINE_S = 30.0


class Served:
    """A `flow serve DIR` process whose stderr lines are collected as they come."""

    def __init__(self, directory: Path, store_dir: Path, cwd: Path) -> None:
        self.store_dir = store_dir
        self.process = subprocess.Popen(
            [sys.executable, "-m", "runner", "serve", str(directory)],
            env={**os.environ, "FLOW_STORE": str(store_dir)},
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def said(self, text: str, *, after: int = 0) -> int:
        """Wait until a stderr line (from index `after`) contains `text`; return the next index."""
        deadline = time.monotonic() + DEADLINE_S
        with self._changed:
            while True:
                for index, line in enumerate(self.lines[after:], start=after):
                    if text in line:
                        return index + 1
                left = deadline - time.monotonic()
                assert left > 0 and self.process.poll() is None, f"never said {text!r}: {self.lines}"
                self._changed.wait(left)

    def runs(self) -> list[RunRecord]:
        if not self.store_dir.exists():
            return []
        store = Store(self.store_dir, create=False)
        try:
            return sorted(store.list_runs(limit=1000), key=lambda r: r.id)
        finally:
            store.close()

    def wait_for_runs(self, predicate: Callable[[list[RunRecord]], bool]) -> list[RunRecord]:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            runs = self.runs()
            if predicate(runs):
                return runs
            assert time.monotonic() < deadline and self.process.poll() is None, "\n".join(self.lines)
            time.sleep(0.05)

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=DEADLINE_S)
        self._reader.join(DEADLINE_S)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def serve(store_dir: Path, tmp_path: Path) -> Iterator[Callable[[Path], Served]]:
    started: list[Served] = []

    def start(directory: Path) -> Served:
        served = Served(directory, store_dir, tmp_path)
        started.append(served)
        return served

    yield start
    for served in started:
        served.kill()


@pytest.fixture
def flows(tmp_path: Path) -> Callable[..., Path]:
    directory = tmp_path / "flows"
    directory.mkdir()

    def write(name: str, text: str) -> Path:
        path = directory / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


def flow_source(name: str, options: str, body: str = "return 'v1'") -> str:
    return f"""
from dsl import Flow, step

flow = Flow("{name}", {options})

@step(cache=False)
def work():
    {body}
"""


def of(runs: list[RunRecord], flow: str) -> list[RunRecord]:
    return [r for r in runs if r.flow == flow]


def test_a_one_second_interval_runs_each_second_until_sigterm(flows, serve):
    path = flows("ticker.py", flow_source("ticker", 'every="1s"'))
    served = serve(path.parent)
    runs = served.wait_for_runs(lambda runs: len([r for r in runs if r.status == "succeeded"]) >= 3)
    assert served.terminate() == 0
    assert "serve stopped" in served.lines[-1]
    done = [r for r in runs if r.status == "succeeded"][:3]
    assert all(r.trigger.startswith("schedule") for r in done)  # a late one says "(catch-up of 2)"
    gaps = [b.started_at - a.started_at for a, b in zip(done, done[1:], strict=False)]
    assert all(0.9 <= gap <= 3.0 for gap in gaps), gaps


def test_runs_missed_while_down_are_caught_up_once_after_a_restart(flows, serve, store_dir):
    path = flows("hourly.py", flow_source("hourly", 'every="1h"'))
    first = serve(path.parent)
    first.wait_for_runs(lambda runs: [r.status for r in runs] == ["succeeded"])
    assert first.terminate() == 0
    # The server was "down" for a bit over three hours: rewind what it handled.
    store = Store(store_dir)
    store.set_last_due(str(path.resolve()), time.time() - 3 * 3600 - 5)
    store.close()
    second = serve(path.parent)
    second.said("catching up 3 missed run(s) with one run")
    runs = second.wait_for_runs(lambda runs: len(runs) == 2 and runs[1].status == "succeeded")
    assert runs[1].trigger == "schedule (catch-up of 3)"
    assert second.terminate() == 0
    assert len(second.runs()) == 2  # one run for the three missed due times


def test_catch_up_skip_runs_nothing_for_the_missed_due_times(flows, serve, store_dir):
    path = flows("hourly.py", flow_source("hourly", 'every="1h", catch_up="skip"'))
    store = Store(store_dir)
    store.set_last_due(str(path.resolve()), time.time() - 2 * 3600 - 5)
    store.close()
    served = serve(path.parent)
    served.said("2 missed run(s) skipped (catch_up='skip')")
    assert served.terminate() == 0
    assert served.runs() == []
    store = Store(store_dir)
    handled = store.last_due(str(path.resolve()))
    store.close()
    assert handled is not None and time.time() - 3600 < handled <= time.time()


def test_sigterm_stops_a_run_in_flight_which_runs_again_on_restart(flows, serve, tmp_path):
    gate = tmp_path / "gate"
    body = (
        "import time, pathlib\n    deadline = time.monotonic() + 60\n"
        f"    while not pathlib.Path({str(gate)!r}).exists() and time.monotonic() < deadline:\n"
        "        time.sleep(0.02)\n    return 'done'"
    )
    path = flows("slow.py", flow_source("slow", 'every="1h"', body))
    first = serve(path.parent)
    first.wait_for_runs(lambda runs: bool(runs) and any(s.status == "running" for s in runs[0].steps))
    assert first.terminate() == 0
    assert [r.status for r in first.runs()] == ["cancelled"]
    assert any("run #1 stopped; it runs again when served next" in line for line in first.lines)
    gate.write_text("")
    second = serve(path.parent)
    runs = second.wait_for_runs(lambda runs: len(runs) == 2 and runs[1].status == "succeeded")
    assert runs[1].trigger == "schedule"
    assert second.terminate() == 0


def test_broken_edited_and_new_flow_files_are_picked_up_while_serving(flows, serve):
    good = flows("good.py", flow_source("good", 'every="1s"'))
    broken = flows("broken.py", "from dsl import step\n\n@step\ndef oops(:\n    pass\n")
    flows("plain.py", flow_source("plain", ""))  # a flow without a schedule: served, never run
    served = serve(good.parent)
    served.said(f"broken.py: {broken}:4: syntax error")
    served.wait_for_runs(lambda runs: len(of(runs, "good")) >= 1)

    good.write_text(flow_source("good", 'every="1s"', "return 'v2'"))
    served.wait_for_runs(lambda runs: any(s.preview == "'v2'" for r in of(runs, "good") for s in r.steps))

    broken.write_text(flow_source("fixed", 'every="1h"'))
    served.wait_for_runs(lambda runs: len(of(runs, "fixed")) == 1)
    flows("new.py", flow_source("new", 'every="1h"'))
    served.wait_for_runs(lambda runs: len(of(runs, "new")) == 1)

    mark = len(served.lines)
    good.write_text("from dsl import step\n\n@step\ndef half_saved(:\n")
    served.said("(the last good version stays scheduled); retried on its next save", after=mark)
    count = len(of(served.runs(), "good"))
    runs = served.wait_for_runs(lambda runs: len(of(runs, "good")) >= count + 2)
    assert served.terminate() == 0
    assert of(runs, "plain") == []
    assert all(r.trigger.startswith("schedule") for r in runs)


def test_a_flow_never_overlaps_its_own_previous_run(flows, serve):
    body = "import time\n    time.sleep(0.7)\n    return 1"
    path = flows("busy.py", flow_source("busy", 'every="200ms"', body))
    served = serve(path.parent)
    runs = served.wait_for_runs(lambda runs: len([r for r in runs if r.status == "succeeded"]) >= 3)
    assert served.terminate() == 0
    done = [r for r in runs if r.finished_at is not None]
    for earlier, later in zip(done, done[1:], strict=False):
        assert later.started_at >= earlier.finished_at, (earlier, later)
    assert any(r.trigger.startswith("schedule (catch-up of") for r in done[1:])


def test_flow_schedules_lists_each_flows_next_due_time(flows, flow_cli):
    nightly = flows("nightly.py", flow_source("nightly", 'schedule="0 3 * * *", timezone="Europe/Berlin"'))
    flows("ticker.py", flow_source("ticker", 'every="30s"'))
    flows("plain.py", flow_source("plain", ""))
    flows("broken.py", flow_source("broken", 'schedule="0 3 * * * * *"'))
    before = time.time()
    result = flow_cli("schedules", str(nightly.parent), "--json")
    assert result.code == 0, result
    rows: dict[str, Any] = {Path(r["file"]).name: r for r in result.json()}
    expected = Schedule("0 3 * * *", None, "Europe/Berlin").next_after(before)
    assert rows["nightly.py"]["schedule"] == "cron '0 3 * * *' (Europe/Berlin)"
    assert rows["nightly.py"]["next_due"] == pytest.approx(expected, abs=1)
    assert rows["ticker.py"]["schedule"] == "every 30s" and rows["ticker.py"]["next_due"] >= before
    assert rows["plain.py"]["schedule"] is None and rows["plain.py"]["error"] is None
    assert "not a valid cron expression" in rows["broken.py"]["error"]
    text = flow_cli("schedules", str(nightly.parent))
    local = datetime.fromtimestamp(expected, ZoneInfo("Europe/Berlin")).strftime("%Y-%m-%d 03:00:00 %Z")
    line = f"nightly.py (nightly): cron '0 3 * * *' (Europe/Berlin), next {local}, catch-up once"
    assert line in text.stdout
    assert "plain.py (plain): not scheduled" in text.stdout
    assert "broken.py: does not load:" in text.stdout


def test_serve_refuses_a_path_that_is_not_a_directory(flows, flow_cli):
    path = flows("x.py", flow_source("x", ""))
    result = flow_cli("serve", str(path))
    assert result.code == 2 and "not a directory" in result.stderr


def test_the_nightly_report_sample_is_due_at_three_in_berlin(flow_cli):
    before = time.time()
    result = flow_cli("schedules", str(SAMPLE_FLOWS), "--json")
    assert result.code == 0, result
    rows = {r["flow"]: r for r in result.json()}
    nightly = rows["nightly_report"]
    assert nightly["schedule"] == "cron '0 3 * * *' (Europe/Berlin)" and nightly["catch_up"] == "once"
    due = datetime.fromtimestamp(nightly["next_due"], ZoneInfo("Europe/Berlin"))
    assert (due.hour, due.minute) == (3, 0) and 0 < nightly["next_due"] - before <= 86400
    assert all(r["schedule"] is None for name, r in rows.items() if name != "nightly_report")


def test_a_second_server_for_the_same_flows_and_store_is_refused(flows, serve, flow_cli):
    path = flows("hourly.py", flow_source("hourly", 'every="1h"'))
    first = serve(path.parent)
    first.wait_for_runs(lambda runs: [r.status for r in runs] == ["succeeded"])
    second = flow_cli("serve", str(path.parent), timeout=30)
    assert second.code == 2, second
    assert f"another `flow serve` (pid {first.process.pid}) is already serving {path.parent}" in second.stderr
    elsewhere = path.parent.parent / "elsewhere"
    elsewhere.mkdir()
    missing = flow_cli("serve", str(elsewhere), "--release", "nightly@latest", timeout=30)
    assert missing.code == 2 and "no release named 'nightly'" in missing.stderr
    assert first.terminate() == 0
    assert len(first.runs()) == 1
