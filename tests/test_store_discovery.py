"""Which store a command uses: `--store`, `$FLOW_STORE`, else the nearest `.flow/` from the working
directory upwards (as git finds `.git`), else a new `./.flow`; absolute from the start, so a step's
`os.chdir` cannot move where results go. Real `flow` subprocesses, real stores on disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

FLOW = """
    from dsl import step

    @step
    def load():
        print("loading")
        return [1, 2, 3]

    @step
    def total(load):
        return sum(load)
"""


def flow(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real `flow` command, with no FLOW_STORE unless given."""
    full = {k: v for k, v in os.environ.items() if k != "FLOW_STORE"}
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        cwd=cwd,
        env={**full, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "pipelines" / "deeper").mkdir(parents=True)
    (root / "pipelines" / "p.py").write_text(textwrap.dedent(FLOW), encoding="utf-8")
    return root


def test_a_command_in_a_subdirectory_uses_the_projects_store_found_upwards(project: Path) -> None:
    first = flow("run", "pipelines/p.py", cwd=project)
    assert first.returncode == 0, first.stderr
    second = flow("run", "p.py", cwd=project / "pipelines")
    assert second.returncode == 0, second.stderr
    assert "2 cached" in second.stdout, second.stdout  # the same store: everything reused
    assert not (project / "pipelines" / ".flow").exists()
    listed = flow("runs", "--json", cwd=project / "pipelines" / "deeper")
    assert [r["id"] for r in json.loads(listed.stdout)] == [2, 1]


def test_store_option_and_flow_store_win_over_the_store_found_upwards(project: Path, tmp_path: Path) -> None:
    assert flow("run", "pipelines/p.py", cwd=project).returncode == 0
    elsewhere = tmp_path / "elsewhere"
    by_env = flow("run", "p.py", cwd=project / "pipelines", env={"FLOW_STORE": str(elsewhere)})
    assert by_env.returncode == 0 and "2 succeeded" in by_env.stdout, by_env.stdout
    option = tmp_path / "option"
    by_option = flow(
        "run",
        "p.py",
        "--store",
        "../../option",
        cwd=project / "pipelines",
        env={"FLOW_STORE": str(elsewhere)},
    )
    assert by_option.returncode == 0 and "2 succeeded" in by_option.stdout, by_option.stdout
    assert (elsewhere / "flow.db").is_file() and (option / "flow.db").is_file()


def test_with_no_store_anywhere_up_a_new_one_is_made_in_the_working_directory(project: Path) -> None:
    done = flow("run", "p.py", cwd=project / "pipelines")
    assert done.returncode == 0, done.stderr
    assert (project / "pipelines" / ".flow" / "flow.db").is_file()
    assert not (project / ".flow").exists()


def test_doctor_says_which_store_is_used_and_how_it_was_found(project: Path) -> None:
    assert flow("run", "pipelines/p.py", cwd=project).returncode == 0
    deeper = project / "pipelines" / "deeper"
    shown = flow("doctor", cwd=deeper)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[:2] == [
        f"store {project / '.flow'}: healthy",
        "  which: found above the working directory",
    ]
    as_json = json.loads(flow("doctor", "--json", cwd=deeper).stdout)
    assert (
        as_json["store"] == str(project / ".flow") and as_json["found"] == "found above the working directory"
    )
    by_env = flow("doctor", cwd=deeper, env={"FLOW_STORE": str(project / ".flow")})
    assert "  which: $FLOW_STORE" in by_env.stdout.splitlines()


def test_a_file_as_the_store_is_one_clear_error_not_a_chmod_advice(project: Path) -> None:
    done = flow("run", "pipelines/p.py", cwd=project, env={"FLOW_STORE": os.devnull})
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == "flow: error: the store at /dev/null is not a directory; use --store or FLOW_STORE"
    )


CHDIR = """
    import os
    from dsl import step

    @step
    def big():
        os.chdir(os.environ["ELSEWHERE"])  # a step that moves the process's working directory
        return b"x" * (3 << 20)            # large enough to be written as an artifact file

    @step
    def size(big):
        return len(big)
"""


@pytest.mark.parametrize("executor", ["local", "inline"])
def test_a_step_that_changes_directory_does_not_move_the_default_store(tmp_path: Path, executor: str) -> None:
    """Issue 13 item 7: with the default relative store, results must land in the store the run
    started with, never in `<new cwd>/.flow/`."""
    project = tmp_path / "project"
    elsewhere = tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    (project / "f.py").write_text(textwrap.dedent(CHDIR), encoding="utf-8")
    env = {"ELSEWHERE": str(elsewhere)}
    done = flow("run", "f.py", "--executor", executor, cwd=project, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (elsewhere / ".flow").exists(), sorted(str(p) for p in elsewhere.rglob("*"))
    artifacts = [p for p in (project / ".flow" / "artifacts").rglob("*") if p.is_file()]
    assert len(artifacts) == 1 and artifacts[0].stat().st_size > 3 << 20
    again = flow("run", "f.py", "--executor", executor, cwd=project, env=env)
    assert "2 cached" in again.stdout, again.stdout
    assert flow("doctor", cwd=project).returncode == 0
