"""A user's own `runner`, `dsl` or `tui` never shadows ours in any process flow starts (issue 14, item 9).

The project directory holds `runner`, `dsl` and `tui` of the user's (modules or packages) that fail
loudly when imported, beside a flow that imports its own local module `helpers` at the top and
inside a step. `flow` (the installed console script) runs it from that directory with local worker
processes and with a real local Dask cluster: every step succeeds, and the flow's own imports still
resolve.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FLOW = """
from dsl import step
import helpers


@step
def a():
    return helpers.double(2)


@step
def b(a):
    import helpers as again
    return again.double(a)
"""

BOOBY_TRAP = "raise SystemExit('the user\\'s own {name} was imported by flow')\n"


def _project(tmp_path: Path, as_packages: bool) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    for name in ("runner", "dsl", "tui"):
        if as_packages:
            (project / name).mkdir()
            (project / name / "__init__.py").write_text(BOOBY_TRAP.format(name=name))
        else:
            (project / f"{name}.py").write_text(BOOBY_TRAP.format(name=name))
    (project / "helpers.py").write_text("def double(x):\n    return 2 * x\n")
    (project / "pipeline.py").write_text(FLOW)
    return project


def _flow(project: Path, store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed `flow` console script, run from the project directory."""
    command = shutil.which("flow", path=str(Path(sys.executable).parent))
    assert command, "the flow console script is not installed beside this interpreter"
    return subprocess.run(
        [command, *args],
        cwd=project,
        env={**os.environ, "FLOW_STORE": str(store)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.parametrize("executor", ["local", "dask"])
@pytest.mark.parametrize("as_packages", [False, True], ids=["modules", "packages"])
def test_a_users_runner_dsl_tui_never_shadow_ours(tmp_path: Path, executor: str, as_packages: bool) -> None:
    if executor == "dask":
        pytest.importorskip("distributed")
    project = _project(tmp_path, as_packages)
    store = tmp_path / "store"
    ran = _flow(project, store, "run", "pipeline.py", "--executor", executor, "--workers", "1")
    assert ran.returncode == 0, (ran.stdout, ran.stderr)
    assert "was imported by flow" not in ran.stdout + ran.stderr
    shown = _flow(project, store, "show", "last", "--json")
    steps = {step["name"]: step for step in json.loads(shown.stdout)["steps"]}
    assert (steps["a"]["preview"], steps["b"]["preview"]) == ("4", "8")
