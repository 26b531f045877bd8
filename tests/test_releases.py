"""Releases: `flow release` freezes a flow's code, its local modules and parameter defaults as
NAME@1, NAME@2…; `flow run NAME@VERSION|NAME@latest` runs exactly that code after the working files
changed, moved or were deleted; a run records its release and `flow show` prints it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from runner.store import Store
from tests.conftest import SAMPLE_FLOWS
from tests.helpers_core import set_schema


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A flow that imports a local module, both edited by the tests."""
    root = tmp_path / "project"
    (root / "lib").mkdir(parents=True)
    (root / "lib" / "__init__.py").write_text("")
    (root / "lib" / "scoring.py").write_text("def score(rows):\n    return sum(rows) * 10\n")
    (root / "nightly.py").write_text(
        textwrap.dedent(
            """
            from dsl import Flow, step
            from lib.scoring import score

            flow = Flow("nightly")

            @step
            def rows(n: int = 4):
                return list(range(n))

            @step
            def report(rows):
                print("version one")
                return score(rows)
            """
        )
    )
    return root


def output_of(flow_cli, step: str) -> str:
    run = flow_cli("show", "last", "--json").json()
    return next(s["preview"] for s in run["steps"] if s["name"] == step)


def test_a_release_runs_its_frozen_code_after_the_files_changed_and_moved(project, flow_cli, tmp_path):
    flow_file = project / "nightly.py"
    made = flow_cli("release", str(flow_file))
    assert made.code == 0, made
    assert "released nightly@1 (3 file(s))" in made.stdout
    # Edit the flow, its parameter default and the local module; then move the project away.
    edited = flow_file.read_text().replace("version one", "version two").replace("n: int = 4", "n: int = 9")
    flow_file.write_text(edited)
    (project / "lib" / "scoring.py").write_text("def score(rows):\n    return -1\n")
    assert flow_cli("run", str(flow_file)).code == 0
    assert output_of(flow_cli, "report") == "-1"
    shutil.move(project, tmp_path / "moved")

    result = flow_cli("run", "nightly@latest")
    assert result.code == 0, result
    assert "version one" in result.stdout
    run = flow_cli("show", "last", "--json").json()
    assert run["release"] == "nightly@1" and run["params"] == {"n": 4}
    assert output_of(flow_cli, "report") == "60"
    shown = flow_cli("show", "last")
    assert "  release: nightly@1" in shown.stdout
    assert flow_cli("run", "nightly@1", "-p", "n=2").code == 0
    assert output_of(flow_cli, "report") == "10"


def test_each_changed_release_is_a_new_immutable_version(project, flow_cli, store_dir):
    flow_file = project / "nightly.py"
    assert "nightly@1" in flow_cli("release", str(flow_file)).stdout
    again = flow_cli("release", str(flow_file))
    assert again.code == 0 and "unchanged: nightly@1" in again.stdout
    flow_file.write_text(flow_file.read_text().replace("version one", "version two"))
    assert "released nightly@2" in flow_cli("release", str(flow_file)).stdout
    listed = flow_cli("releases", "--json").json()
    assert [(r["name"], r["version"]) for r in listed] == [("nightly", 2), ("nightly", 1)]
    # Tampering with a laid-out release is undone: the store holds the truth.
    assert flow_cli("run", "nightly@1").code == 0
    laid_out = next(store_dir.glob("releases/nightly@1/nightly.py"))
    laid_out.write_text(laid_out.read_text().replace("version one", "tampered"))
    result = flow_cli("run", "nightly@1", "--force")
    assert "version one" in result.stdout and "tampered" not in result.stdout
    assert "tampered" not in laid_out.read_text()
    latest = flow_cli("run", "nightly@latest")
    assert "version two" in latest.stdout
    assert flow_cli("show", "last", "--json").json()["release"] == "nightly@2"


def test_a_release_name_is_kept_for_one_flow(project, flow_cli, write_flow):
    assert flow_cli("release", str(project / "nightly.py"), "--name", "prod").code == 0
    other = write_flow("from dsl import step\n\n@step\ndef a():\n    return 1\n", name="other.py")
    result = flow_cli("release", str(other), "--name", "prod")
    assert result.code == 2, result
    assert "release name 'prod' is taken by flow 'nightly' (prod@1); choose another" in result.stderr


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("nightly@7", "no release nightly@7; there are nightly@1"),
        ("weekly@latest", "no release named 'weekly' in the store at"),
        ("nightly@first", "'nightly@first' is not a release: use NAME@VERSION"),
    ],
)
def test_a_release_that_does_not_exist_is_a_clear_error(project, flow_cli, ref, message):
    assert flow_cli("release", str(project / "nightly.py")).code == 0
    result = flow_cli("run", ref)
    assert result.code == 2, result
    assert message in result.stderr and "Traceback" not in result.stderr


def test_serve_can_schedule_a_release(project, flow_cli, store_dir, tmp_path):
    flow_file = project / "nightly.py"
    flow_file.write_text(flow_file.read_text().replace('Flow("nightly")', 'Flow("nightly", every="1h")'))
    assert flow_cli("release", str(flow_file)).code == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "runner", "serve", str(empty), "--release", "nightly@latest"],
        env={**os.environ, "FLOW_STORE": str(store_dir)},
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        finished = []
        while not finished:
            assert time.monotonic() < deadline and process.poll() is None
            store = Store(store_dir, create=False)
            finished = [r for r in store.list_runs() if r.status == "succeeded"]
            release = store.run_release(finished[0].id) if finished else None
            store.close()
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0
    assert finished[0].trigger == "schedule" and release == "nightly@1"


def test_the_ml_pipeline_sample_released_then_edited_runs_the_released_code(flow_cli, tmp_path):
    copy = tmp_path / "ml_pipeline.py"
    shutil.copy(SAMPLE_FLOWS / "ml_pipeline.py", copy)
    assert flow_cli("run", str(copy)).code == 0
    assert flow_cli("release", str(copy)).code == 0
    source = copy.read_text()
    assert "lr * g / n" in source
    copy.write_text(source.replace("lr * g / n", "lr * g / n / 2"))  # the author keeps working
    assert flow_cli("run", str(copy)).code == 0
    assert {s["name"]: s["status"] for s in flow_cli("show", "last", "--json").json()["steps"]}["train"] == (
        "succeeded"
    )
    result = flow_cli("run", "ml_pipeline@latest")
    assert result.code == 0, result
    run = flow_cli("show", "last", "--json").json()
    assert run["release"] == "ml_pipeline@1"
    assert {s["status"] for s in run["steps"]} == {"cached"}  # exactly the code of the first run


def test_a_store_from_before_releases_is_migrated_to_hold_them(store_dir):
    Store(store_dir).close()
    set_schema(store_dir, 3, *(f"DROP TABLE {t}" for t in ("releases", "run_releases", "schedule_state")))
    store = Store(store_dir)
    try:
        assert store.add_release("n", "flow", "f.py", "d", {"f.py": "x = 1\n"}, {"a": 1}) == 1
        assert store.get_release("n")["sources"] == {"f.py": "x = 1\n"}
        store.set_last_due("f.py", 12.5)
        assert store.last_due("f.py") == 12.5
    finally:
        store.close()
