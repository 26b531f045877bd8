"""Arrows point one way (tui -> runner -> dsl): the headless path never imports Textual."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def imported_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.split())


def test_dsl_imports_only_the_standard_library():
    baseline = imported_after("pass")  # site hooks (.pth files) may import a few modules at start-up
    modules = imported_after("import dsl") - baseline
    tops = {m.partition(".")[0] for m in modules}
    third_party = {t for t in tops if t not in sys.stdlib_module_names and t not in ("dsl", "__main__")}
    assert third_party == set(), third_party


def test_the_headless_runner_does_not_import_textual():
    modules = imported_after(
        "import dsl, runner.cli, runner.engine, runner.session, runner.output.plain, runner.store, "
        "runner.executors.local"
    )
    assert "textual" not in modules
    assert not any(m.startswith(("tui", "textual.")) for m in modules)


def _imported_by_flow_run(write_flow, store_dir: Path, tmp_path: Path) -> set[str]:
    """Every module a real `flow run` of a one-step flow imports, as `-X importtime` lists them."""
    path = write_flow("from dsl import step\n\n@step\ndef s():\n    return 1\n")
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "runner", "run", str(path), "--store", str(store_dir)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line}


def test_flow_run_does_not_import_textual(write_flow, store_dir, tmp_path):
    """`-X importtime` lists every module the real `flow run` process imports."""
    imported = _imported_by_flow_run(write_flow, store_dir, tmp_path)
    assert "runner.engine" in imported  # the listing works
    assert "textual" not in imported
    assert not {m for m in imported if m.startswith(("textual.", "tui"))}


def test_a_plain_flow_run_imports_no_module_it_does_not_use(write_flow, store_dir, tmp_path):
    """A plain `flow run` is parsed without Typer (`runner.cli.run_args`) and imports neither the
    other commands nor what only the TUI, `--watch`, Dask, YAML flows, a terminal's live view or other
    commands need: each of them costs every run milliseconds of its start-up."""
    imported = _imported_by_flow_run(write_flow, store_dir, tmp_path)
    assert {"runner.cli.running", "runner.engine"} <= imported  # the listing works
    unused = {"typer", "click", "rich", "textual", "tui", "distributed", "dask", "yaml", "watchfiles"}
    assert not unused & {m.partition(".")[0] for m in imported}
    # The other commands, `flow doctor`/`gc`, a params file, file artifacts, releases: none is used here.
    unused = {"runner.cli.commands", "runner.store.doctor", "runner.store.gc", "tomllib", "difflib"}
    unused |= {"tempfile", "shutil", "socket", "importlib.abc", "concurrent.futures"}  # the last: hooks
    # Site hooks (.pth files) may import some of these before any of flow's code runs: not ours to avoid.
    assert not unused & (imported - imported_after("pass"))


def test_flow_run_of_an_unscheduled_flow_does_not_import_the_cron_modules(write_flow, store_dir, tmp_path):
    """Every `flow run` checks its flow's schedule; `zoneinfo` and `cronsim` (~5 ms of start-up) are
    imported only when the flow has one."""
    imported = _imported_by_flow_run(write_flow, store_dir, tmp_path)
    assert "runner.operate.schedule" in imported  # the schedule was checked
    assert not {"cronsim", "zoneinfo"} & imported


def test_import_linter_contracts_hold():
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.skip("import-linter is not installed")
    proc = subprocess.run([exe], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_cli_starts_without_the_http_client():
    """`post_json` hooks import urllib.request when they send: it (with http.client and email) cost
    every `flow` command 20-40 ms at start-up."""
    modules = imported_after("import runner.cli")
    assert not {"urllib.request", "http.client", "email.parser"} & modules


def test_a_worker_imports_cloudpickle_before_its_first_task():
    """Unpickling the first task's code needs cloudpickle (~5 ms): a worker imports it while it waits,
    not on the first step's path."""
    assert "cloudpickle" in imported_after("import runner.executors.worker")
