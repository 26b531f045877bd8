"""A `flow run`'s early worker imports the flow's libraries while the runner loads the flow
(`runner.executors.preload`), and is used only if it then has what a worker started afterwards would.

The libraries here are real modules of an installed distribution (a directory on `PYTHONPATH` with
their `*.dist-info/RECORD`); the runs are the real console entry point with real workers.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from runner.executors.preload import imported_modules
from runner.store import Store
from tests.helpers_core import install_library


def test_the_top_level_imports_of_a_flow_file_are_read_without_running_it() -> None:
    source = textwrap.dedent(
        """
        \"\"\"A flow.\"\"\"
        from __future__ import annotations

        import os.path, json as j
        import xml.dom.minidom
        from collections import abc
        from . import sibling
        from .near import thing
        from dsl import step
        import runner.api
        import tui

        try:
            import optional_lib
        except ImportError:
            pass

        def f():
            import inside
        """
    )
    assert imported_modules(source) == ["os.path", "json", "xml.dom.minidom", "collections"]


@pytest.fixture
def library_env(tmp_path: Path) -> dict[str, str]:
    """An environment in which `flowtest_envlib` (sets a variable when imported, as scikit-learn does)
    and `flowtest_unused` are installed libraries: a directory on `PYTHONPATH` with their RECORD."""
    sets_a_variable = 'import os\n\nos.environ.setdefault("FLOWTEST_LIB_SET", "yes")\n'
    libs = install_library(tmp_path / "libs", "flowtest_envlib", sets_a_variable)
    install_library(libs, "flowtest_unused", "VALUE = 1\n")
    env = {k: v for k, v in os.environ.items() if k not in ("FLOW_EXECUTOR", "FLOW_STORE")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(libs), env.get("PYTHONPATH", "")) if p)
    return env


PROBE = """
import os
import sys

import flowtest_envlib
import flowtest_unused
from dsl import step
{extra}

@step(cache=False)
def probe():
    import colorsys

    return {{
        "pid": os.getpid(),
        "lib_set": os.environ.get("FLOWTEST_LIB_SET"),
        "user_set": os.environ.get("FLOWTEST_USER_SET"),
        "unused_imported": "flowtest_unused" in sys.modules,
        "colorsys": getattr(colorsys, "MARK", "the standard library's"),
    }}
"""


def _run_early(
    path: Path, store_dir: Path, env: dict[str, str], cwd: Path, *args: str, step: str = "probe"
) -> tuple[int, Any]:
    """`flow run path [args]` through the console entry point: (the early worker's pid, the output of
    `step`)."""
    code = textwrap.dedent(
        f"""
        import sys
        sys.argv = ["flow", "run", {str(path)!r}, "--store", {str(store_dir)!r}, *{list(args)!r}]
        from runner.executors import spawn

        start = spawn.start_early

        def recorded(*flow_file):
            start(*flow_file)
            print(f"early pid {{spawn._early.proc.pid}} for {{flow_file}}", file=sys.stderr, flush=True)

        spawn.start_early = recorded
        from runner.cli import main

        main()
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("early pid ")]
    assert line.endswith(f" for ({str(path)!r},)")
    store = Store(store_dir)
    try:
        record = store.get_run(1)
        assert record is not None and record.status == "succeeded"
        (found,) = [s for s in record.steps if s.name == step]
        assert found.output_hash is not None
        seen = pickle.loads(store.read_artifact(found.output_hash))
    finally:
        store.close()
    return int(line.split()[2]), seen


def test_the_early_worker_imports_the_flows_libraries_and_runs_the_steps(
    library_env: dict[str, str], tmp_path: Path
) -> None:
    """The library changed the environment in the worker as in the runner: the worker is used (before,
    any change to the environment after the early start made the runner start another)."""
    project = tmp_path / "project"
    project.mkdir()
    path = project / "preloaded.py"
    path.write_text(PROBE.format(extra=""))
    early, seen = _run_early(path, tmp_path / "store", library_env, tmp_path)
    assert seen == {
        "pid": early,
        "lib_set": "yes",
        "user_set": None,
        "unused_imported": True,  # imported before the first task, though no step refers to it
        "colorsys": "the standard library's",
    }


def test_a_variable_the_flow_sets_keeps_the_early_worker_out(
    library_env: dict[str, str], tmp_path: Path
) -> None:
    """The libraries the early worker imported did not see a variable the flow set for them: a worker
    started after the load runs the steps, and sees it."""
    project = tmp_path / "project"
    project.mkdir()
    path = project / "sets_env.py"
    path.write_text(PROBE.format(extra='os.environ["FLOWTEST_USER_SET"] = "1"'))
    early, seen = _run_early(path, tmp_path / "store", library_env, tmp_path)
    assert seen["pid"] != early and seen["user_set"] == "1" and seen["lib_set"] == "yes"


def test_a_library_the_project_shadows_is_forgotten_before_a_step_imports_it(
    library_env: dict[str, str], tmp_path: Path
) -> None:
    """The flow imports `colorsys` from its own lib/ (a `sys.path.insert`): the early worker, which
    knows nothing of lib/, imported the standard library's; a step's own `import colorsys` must find
    the project's, as in a worker started afterwards."""
    project = tmp_path / "project"
    (project / "lib").mkdir(parents=True)
    (project / "lib" / "colorsys.py").write_text('MARK = "the project\'s"\n')
    path = project / "shadowed.py"
    extra = 'sys.path.insert(0, os.path.join(os.path.dirname(__file__), "lib"))\nimport colorsys'
    path.write_text(PROBE.format(extra=extra))
    early, seen = _run_early(path, tmp_path / "store", library_env, tmp_path)
    assert seen["pid"] == early and seen["colorsys"] == "the project's"


def test_preload_leaves_the_users_modules_alone(library_env: dict[str, str], tmp_path: Path) -> None:
    """Only libraries: not the flow's own modules, nor a library a file beside the flow shadows."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "helpers.py").write_text("raise SystemExit('a worker imported the user module')\n")
    (project / "wave.py").write_text("raise SystemExit('a worker imported the shadowing file')\n")
    path = project / "mixed.py"
    path.write_text("import helpers\nimport wave\nimport flowtest_unused\nfrom xml.dom import minidom\n")
    code = textwrap.dedent(
        f"""
        import sys
        from runner.executors.preload import preload
        imported, changed = preload({str(path)!r})
        print(imported, changed, "helpers" in sys.modules, "wave" in sys.modules, "xml.dom" in sys.modules)
        """
    )
    env = dict(library_env, PYTHONSAFEPATH="1")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["['flowtest_unused',", "'xml']", "{}", "False", "False", "True"]


SLOW_TO_IMPORT = """
import os
import sys
import time

if "runner.executors.worker" in sys.orig_argv:
    with open(os.environ["FLOWTEST_IMPORTERS"], "a") as log:
        log.write(f"{os.getpid()}\\n")
    try:
        os.close(os.open(os.environ["FLOWTEST_IMPORTERS"] + ".first", os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        time.sleep(3600)  # every worker after the first: an import that never ends
"""

WIDE = """
import os
import time

import flowtest_slow
from dsl import step


@step
def a():
    return os.getpid()


@step
def b():
    return os.getpid()


@step
def c(a, b):
    importers = os.environ["FLOWTEST_IMPORTERS"]
    deadline = time.monotonic() + 60
    while len(open(importers).read().split()) < 2:  # the second worker is in its import now
        assert time.monotonic() < deadline, "no second worker imported the flow's library"
        time.sleep(0.01)
    return {"a": a, "b": b, "c": os.getpid(), "importers": [int(p) for p in open(importers).read().split()]}
"""


def test_a_worker_still_importing_the_flows_libraries_is_not_given_a_task(
    library_env: dict[str, str], tmp_path: Path
) -> None:
    """`a` and `b` are ready at once with two workers allowed: the second worker, started for one of
    them, imports the flow's library first (here an import that never ends) and the first worker runs
    every step meanwhile. Before, the second worker was sent a step at once, which waited for its
    import: here the run never ended."""
    install_library(tmp_path / "libs", "flowtest_slow", SLOW_TO_IMPORT)
    env = dict(library_env, FLOWTEST_IMPORTERS=str(tmp_path / "importers"))
    project = tmp_path / "project"
    project.mkdir()
    path = project / "wide.py"
    path.write_text(WIDE)
    early, seen = _run_early(path, tmp_path / "store", env, tmp_path, "--workers", "2", step="c")
    first, second = seen["importers"]
    assert (seen["a"], seen["b"], seen["c"], first) == (early, early, early, early)
    assert second != early  # started for this run: it preloaded the flow's library too


def test_a_library_that_kills_a_worker_on_import_is_not_preloaded_again(
    library_env: dict[str, str], tmp_path: Path
) -> None:
    """A library that ends a worker process when imported there, which no step uses: the early worker
    and the one started to preload it die; the step runs in a worker started without preloading."""
    install_library(
        tmp_path / "libs",
        "flowtest_fatal",
        'import os, sys\n\nif "runner.executors.worker" in sys.orig_argv:\n    os._exit(3)\n',
    )
    project = tmp_path / "project"
    project.mkdir()
    path = project / "fatal.py"
    path.write_text(PROBE.format(extra="import flowtest_fatal"))
    early, seen = _run_early(path, tmp_path / "store", library_env, tmp_path)
    assert seen["pid"] != early and seen["unused_imported"] is False
