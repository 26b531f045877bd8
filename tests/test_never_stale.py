"""Never stale (issue 13): every path by which an edit could leave an old cached result in place.

Each test runs a flow through the real `flow` CLI (a subprocess, real worker processes, the store on
disk), edits what a step really depends on, runs again, and asserts the new output; the needless
re-run tests assert what did *not* run. Each case failed on main at 936ad4f.
"""

from __future__ import annotations

import importlib.machinery
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from runner.events import FlowReloaded
from runner.session import FlowSession
from tests.conftest import CLIResult
from tests.helpers_watch import EventLog, save_in_place, watching

Steps = dict[str, dict[str, Any]]
EXTENSION_SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def wait_for_file(path: Path, timeout: float = 60.0) -> None:
    """Wait (bounded) for a file a step creates to say it reached a point."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"timed out waiting for {path}"
        time.sleep(0.01)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def run(
    flow_cli: Callable[..., CLIResult], path: Path, *args: str, env: dict[str, str] | None = None
) -> Steps:
    """`flow run PATH --json`: each step's `step_finished` event by name."""
    result = flow_cli("run", str(path), "--json", *args, env=env)
    assert result.code == 0, result
    return {e["step"]: e for e in result.events() if e["event"] == "step_finished"}


def pythonpath(*directories: Path) -> str:
    """`PYTHONPATH` with `directories` first (keeping what the test run itself was given)."""
    return os.pathsep.join([*map(str, directories), *filter(None, [os.environ.get("PYTHONPATH")])])


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new), encoding="utf-8")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return tmp_path / "project"


def rerun_shows(flow_cli: Callable[..., CLIResult], path: Path, step: str, before: str, after: str) -> Steps:
    """Run, (the caller edits between the two), check the step's output went from `before` to `after`."""
    steps = run(flow_cli, path)
    assert steps[step]["status"] == "succeeded", steps[step]
    assert steps[step]["preview"] == after, (steps[step], before)
    return steps


# ----- 1. helpers that are not plain functions ------------------------------------------------

WRAPPED_HELPERS = {
    "lru_cache": (
        """
        import functools

        @functools.lru_cache(maxsize=None)
        def helper(x):
            return x + 1
        """,
        "helper(1)",
    ),
    "cache": (
        """
        import functools

        @functools.cache
        def helper(x):
            return x + 1
        """,
        "helper(1)",
    ),
    "contextmanager": (
        """
        import contextlib

        @contextlib.contextmanager
        def helper(x):
            yield x + 1
        """,
        "helper(1).__enter__()",
    ),
    "partial": (
        """
        import functools

        def add(x, y):
            return x + 1 + y

        helper = functools.partial(add, y=0)
        """,
        "helper(1)",
    ),
    "dict_of_functions": (
        """
        def plus(x):
            return x + 1

        def minus(x):
            return x - 1

        HANDLERS = {"plus": plus, "minus": minus}
        helper = lambda x: HANDLERS["plus"](x)  # noqa: E731
        """,
        "HANDLERS['plus'](1)",
    ),
    "list_of_functions": (
        """
        def plus(x):
            return x + 1

        PIPELINE = [plus]
        """,
        "PIPELINE[0](1)",
    ),
    "bound_method": (
        """
        class Tokenizer:
            def tokenize(self, x):
                return x + 1

        helper = Tokenizer().tokenize
        """,
        "helper(1)",
    ),
    "singledispatch": (
        """
        import functools

        @functools.singledispatch
        def helper(x):
            return "other"

        @helper.register
        def _(x: int):
            return x + 1
        """,
        "helper(1)",
    ),
}


@pytest.mark.parametrize("kind", sorted(WRAPPED_HELPERS))
def test_editing_a_wrapped_or_held_helper_reruns_its_user(flow_cli, project, kind):
    """lru_cache, cache, contextmanager, partial, a dict or list of functions, a bound method and a
    singledispatch function are all followed to the code they run (singledispatch used not to ship)."""
    helpers, call = WRAPPED_HELPERS[kind]
    path = write(
        project / "flow.py",
        "from dsl import step\n" + textwrap.dedent(helpers) + f"\n\n@step\ndef use():\n    return {call}\n",
    )
    assert run(flow_cli, path)["use"]["preview"] == "2"
    assert run(flow_cli, path)["use"]["status"] == "cached"
    edit(path, "x + 1", "x + 100")
    steps = run(flow_cli, path)
    assert (steps["use"]["status"], steps["use"]["preview"]) == ("succeeded", "101"), steps["use"]


# ----- 2. closures from one factory -----------------------------------------------------------


def test_closures_from_one_factory_are_told_apart_by_what_they_capture(flow_cli, project):
    path = write(
        project / "flow.py",
        """
        from dsl import step

        def make_scaler(factor):
            def scale(x):
                return x * factor
            return scale

        double = make_scaler(2)
        triple = make_scaler(3)

        @step
        def use():
            return double(1) + triple(1)
        """,
    )
    assert run(flow_cli, path)["use"]["preview"] == "5"
    edit(path, "make_scaler(3)", "make_scaler(30)")
    assert run(flow_cli, path)["use"]["preview"] == "32"


def test_helpers_made_by_a_decorator_without_wraps_are_told_apart(flow_cli, project):
    path = write(
        project / "flow.py",
        """
        from dsl import step

        def logged(fn):
            def inner(*args):
                return fn(*args)
            return inner

        @logged
        def first(x):
            return x + 1

        @logged
        def second(x):
            return x + 2

        @step
        def use():
            return first(0) * 10 + second(0)
        """,
    )
    assert run(flow_cli, path)["use"]["preview"] == "12"
    edit(path, "return x + 2", "return x + 5")
    assert run(flow_cli, path)["use"]["preview"] == "15"


# ----- 3. dict order ----------------------------------------------------------------------------


def test_reordering_a_global_dicts_keys_reruns_its_user(flow_cli, project):
    path = write(
        project / "flow.py",
        """
        from dsl import step

        STAGES = {"clean": 1, "train": 2}

        @step
        def order():
            return ",".join(STAGES)
        """,
    )
    assert run(flow_cli, path)["order"]["preview"] == "'clean,train'"
    edit(path, '{"clean": 1, "train": 2}', '{"train": 2, "clean": 1}')
    assert run(flow_cli, path)["order"]["preview"] == "'train,clean'"


def test_reordering_a_dict_parameters_keys_reruns_its_reader(flow_cli, project, tmp_path):
    path = write(
        project / "flow.py",
        """
        from dsl import param, step

        @step
        def order(columns: dict = param({})):
            return ",".join(columns)
        """,
    )
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"columns": {"a": 1, "b": 2}}))
    assert run(flow_cli, path, "--params", str(params))["order"]["preview"] == "'a,b'"
    params.write_text(json.dumps({"columns": {"b": 2, "a": 1}}))
    assert run(flow_cli, path, "--params", str(params))["order"]["preview"] == "'b,a'"


# ----- 4. code outside the flow file's directory ------------------------------------------------

USES_SHARED = """
from dsl import step
import shared_util

@step
def use():
    return shared_util.value()
"""


def test_a_sibling_directory_on_pythonpath_is_hashed_by_content(flow_cli, tmp_path, project):
    shared = write(tmp_path / "shared" / "shared_util.py", "def value():\n    return 1\n")
    path = write(project / "flow.py", USES_SHARED)
    env = {"PYTHONPATH": pythonpath(tmp_path / "shared")}
    assert run(flow_cli, path, env=env)["use"]["preview"] == "1"
    assert run(flow_cli, path, env=env)["use"]["status"] == "cached"
    edit(shared, "return 1", "return 2")
    steps = run(flow_cli, path, env=env)
    assert (steps["use"]["status"], steps["use"]["preview"]) == ("succeeded", "2")
    assert "shared_util" in steps["use"]["reason"]


def test_an_editable_install_of_the_users_package_is_hashed_by_content(flow_cli, tmp_path, project):
    """An editable install: a dist-info whose RECORD lists only the install hook, the sources elsewhere
    (so `importlib.metadata.version` answers "1.0" however the code changes)."""
    site = tmp_path / "site"
    write(
        site / "shared_util-1.0.dist-info" / "METADATA",
        "Metadata-Version: 2.1\nName: shared_util\nVersion: 1.0\n",
    )
    write(
        site / "shared_util-1.0.dist-info" / "RECORD",
        "__editable__.shared_util-1.0.pth,,\nshared_util-1.0.dist-info/METADATA,,\nshared_util-1.0.dist-info/RECORD,,\n",
    )
    shared = write(tmp_path / "src" / "shared_util.py", "def value():\n    return 1\n")
    path = write(project / "flow.py", USES_SHARED)
    env = {"PYTHONPATH": pythonpath(site, tmp_path / "src")}
    assert run(flow_cli, path, env=env)["use"]["preview"] == "1"
    edit(shared, "return 1", "return 2")
    assert run(flow_cli, path, env=env)["use"]["preview"] == "2"


def test_a_directory_added_to_sys_path_by_the_flow_ships_and_is_hashed(flow_cli, tmp_path, project):
    lib = write(tmp_path / "lib" / "libmod.py", "def value():\n    return 1\n")
    path = write(
        project / "flow.py",
        """
        import sys
        from pathlib import Path

        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lib"))

        import libmod
        from dsl import step

        @step
        def use():
            return libmod.value()

        @step
        def inner():
            import libmod as again
            return again.value() * 10
        """,
    )
    steps = run(flow_cli, path)
    assert (steps["use"]["preview"], steps["inner"]["preview"]) == ("1", "10")
    edit(lib, "return 1", "return 2")
    steps = run(flow_cli, path)
    assert (steps["use"]["preview"], steps["inner"]["preview"]) == ("2", "20")


def test_a_project_directory_named_like_site_packages_is_still_the_users(flow_cli, tmp_path):
    project = tmp_path / "my-site-packages-tool"
    helper = write(project / "helpers.py", "def value():\n    return 1\n")
    path = write(project / "flow.py", USES_SHARED.replace("shared_util", "helpers"))
    assert run(flow_cli, path)["use"]["preview"] == "1"
    edit(helper, "return 1", "return 2")
    assert run(flow_cli, path)["use"]["preview"] == "2"


# ----- 9. attribute names are not globals ----------------------------------------------------------


def test_a_method_named_like_a_step_does_not_make_that_step_a_helper(flow_cli, project):
    path = write(
        project / "flow.py",
        """
        from dsl import step

        @step
        def split():
            rows = [1, 2, 3]
            return rows[:2]

        @step
        def configs(c_values: str = "0.1,1.0"):
            return [float(c) for c in c_values.split(",")]
        """,
    )
    run(flow_cli, path)
    edit(path, "rows = [1, 2, 3]\n    return rows[:2]", "data = [1, 2, 3]\n    return data[:2]")
    steps = run(flow_cli, path)
    assert steps["split"]["status"] == "succeeded"
    assert steps["configs"]["status"] == "cached", steps["configs"]


# ----- 5. modules imported inside a step body -------------------------------------------------------


def test_a_module_imported_in_a_step_body_is_hashed_with_what_it_imports(flow_cli, project):
    write(project / "helpers.py", "from deep import value\n\n\ndef scaled():\n    return value() * 10\n")
    deep = write(project / "deep.py", "def value():\n    return 1\n")
    path = write(
        project / "flow.py",
        """
        from dsl import step

        @step
        def use():
            import helpers
            return helpers.scaled()
        """,
    )
    assert run(flow_cli, path)["use"]["preview"] == "10"
    assert run(flow_cli, path)["use"]["status"] == "cached"
    edit(deep, "return 1", "return 2")
    steps = run(flow_cli, path)
    assert (steps["use"]["status"], steps["use"]["preview"]) == ("succeeded", "20")
    assert steps["use"]["reason"] == "imported module changed: helpers"


def test_importlib_import_module_with_a_literal_name_is_tracked(flow_cli, project):
    helpers = write(project / "helpers.py", "def value():\n    return 1\n")
    path = write(
        project / "flow.py",
        """
        import importlib
        from dsl import step

        @step
        def use():
            return importlib.import_module("helpers").value()
        """,
    )
    assert run(flow_cli, path)["use"]["preview"] == "1"
    edit(helpers, "return 1", "return 2")
    assert run(flow_cli, path)["use"]["preview"] == "2"


def test_a_computed_module_name_is_reported_and_the_step_always_runs(flow_cli, project):
    write(project / "helpers.py", "def value():\n    return 1\n")
    path = write(
        project / "flow.py",
        """
        import importlib
        from dsl import step

        @step
        def use(module: str = "helpers"):
            return importlib.import_module(module).value()
        """,
    )
    for _ in range(2):
        steps = run(flow_cli, path)
        assert steps["use"]["status"] == "succeeded", steps["use"]
        assert "cannot fingerprint" in steps["use"]["reason"] and "computed name" in steps["use"]["reason"]
    shown = flow_cli("show", "last")
    assert "computed name" in shown.stdout, shown


def test_a_compiled_extension_module_of_the_users_is_reported_and_the_step_always_runs(flow_cli, project):
    """Its source cannot be hashed: the fingerprint says so instead of trusting the cache."""
    write(project / f"fast{EXTENSION_SUFFIX}", "not really machine code")
    path = write(
        project / "flow.py",
        """
        from dsl import step

        @step
        def use():
            try:
                import fast  # noqa: F401
            except ImportError:
                return "not loadable"
            return "loaded"
        """,
    )
    for _ in range(2):
        steps = run(flow_cli, path)
        assert steps["use"]["status"] == "succeeded"
        assert "compiled extension module of yours" in steps["use"]["reason"], steps["use"]


def test_an_edit_during_the_run_is_never_cached_under_the_old_fingerprint(flow_cli, project, tmp_path):
    """The step imports its module after the save: the result of the new code must not be stored
    under the fingerprint of the old one, or reverting the edit would serve it forever."""
    helpers = write(project / "helpers.py", "VALUE = 'old'\n")
    waiting, go = tmp_path / "waiting", tmp_path / "go"
    path = write(
        project / "flow.py",
        f"""
        import os
        import time
        from dsl import step

        @step
        def use():
            open({str(waiting)!r}, "w").close()
            while not os.path.exists({str(go)!r}):
                time.sleep(0.01)
            import helpers
            return helpers.VALUE
        """,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", "run", str(path), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "FLOW_STORE": str(tmp_path / "store")},
        cwd=tmp_path,
    )
    try:
        wait_for_file(waiting)
        helpers.write_text("VALUE = 'new'\n", encoding="utf-8")  # saved while the step runs
        go.touch()
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    finished = [json.loads(line) for line in out.splitlines() if '"step_finished"' in line]
    assert finished[0]["preview"] == "'new'" and "not cached" in finished[0]["reason"], (out, err)
    helpers.write_text("VALUE = 'old'\n", encoding="utf-8")  # reverted
    steps = run(flow_cli, path)
    assert (steps["use"]["status"], steps["use"]["preview"]) == ("succeeded", "'old'"), steps["use"]
    assert run(flow_cli, path)["use"]["status"] == "cached"


# ----- 8. equal values hash equally, whatever process produced them --------------------------------

USER_CLASS_FLOW = """
from dsl import step
{import_line}

@step
def train():
    first = 1
    return Model([first, 2])

@step
def evaluate(train):
    return sum(train.weights)
"""

MODEL = """
class Model:
    def __init__(self, weights):
        self.weights = weights
"""


@pytest.mark.parametrize("where", ["flow_file", "local_module"])
def test_an_object_of_the_users_class_hashes_the_same_in_every_process(flow_cli, project, where):
    """A re-execution that returns an equal object leaves its downstream cached (early cut-off)."""
    if where == "flow_file":
        text = USER_CLASS_FLOW.format(import_line=MODEL)
    else:
        write(project / "models.py", MODEL)
        text = USER_CLASS_FLOW.format(import_line="from models import Model")
    path = write(project / "flow.py", text)
    first = run(flow_cli, path)
    forced = run(flow_cli, path, "--only", "train", "--force")
    assert forced["train"]["status"] == "succeeded"
    assert forced["train"]["output_hash"] == first["train"]["output_hash"]
    edit(path, "first = 1\n    return Model([first, 2])", "one = 1\n    return Model([one, 2])")
    steps = run(flow_cli, path)
    assert steps["train"]["status"] == "succeeded"
    assert steps["evaluate"]["status"] == "cached", steps["evaluate"]


def test_a_fitted_sklearn_pipeline_with_a_custom_transformer_hashes_stably(flow_cli, project):
    pytest.importorskip("sklearn")
    pytest.importorskip("pandas")
    path = write(
        project / "flow.py",
        """
        import numpy as np
        import pandas as pd
        from sklearn.base import BaseEstimator, TransformerMixin
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from dsl import step

        class Clipper(BaseEstimator, TransformerMixin):
            def __init__(self, low=-3.0, high=3.0):
                self.low = low
                self.high = high

            def fit(self, X, y=None):
                return self

            def transform(self, X):
                return np.clip(X, self.low, self.high)

        @step
        def data():
            rng = np.random.default_rng(0)
            frame = pd.DataFrame(rng.normal(size=(40, 3)), columns=["a", "b", "c"])
            return frame.assign(y=(frame["a"] > 0).astype(int))

        @step
        def train(data):
            c_value = 1.0
            model = make_pipeline(Clipper(), LogisticRegression(C=c_value))
            return model.fit(data[["a", "b", "c"]], data["y"])

        @step
        def evaluate(train, data):
            return float(train.score(data[["a", "b", "c"]], data["y"]))
        """,
    )
    first = run(flow_cli, path)
    edit(
        path,
        "c_value = 1.0\n    model = make_pipeline(Clipper(), LogisticRegression(C=c_value))",
        "c = 1.0\n    model = make_pipeline(Clipper(), LogisticRegression(C=c))",
    )
    steps = run(flow_cli, path)
    assert steps["train"]["status"] == "succeeded"
    assert steps["train"]["output_hash"] == first["train"]["output_hash"]
    assert steps["evaluate"]["status"] == "cached", steps["evaluate"]
    forced = run(flow_cli, path, "--only", "data", "--force")
    assert forced["data"]["output_hash"] == first["data"]["output_hash"]  # a stock DataFrame stays stable


# ----- 10. what may re-run, what did, and why ------------------------------------------------------


def test_upstream_output_changed_names_only_upstreams_that_differ_from_the_previous_run(flow_cli, project):
    path = write(
        project / "flow.py",
        """
        from dsl import step

        @step
        def configs():
            return [0.1, 1.0]

        @step
        def data():
            return [1, 2, 3]

        @step
        def train(configs, data):
            return len(configs) * sum(data)
        """,
    )
    run(flow_cli, path)
    edit(path, "return [0.1, 1.0]", "return [0.1, 1.0, 10.0]")
    assert run(flow_cli, path)["train"]["reason"] == "upstream output changed: configs"
    edit(path, "return [0.1, 1.0, 10.0]", "return [0.1, 1.0]")
    assert run(flow_cli, path)["train"]["status"] == "cached"
    edit(path, "return [1, 2, 3]", "return [1, 2, 3, 4]")
    steps = run(flow_cli, path)
    assert steps["train"]["reason"] == "upstream output changed: data", steps["train"]


# ----- declared inputs ---------------------------------------------------------------------------------

DECLARED_FLOW = """
import glob
import os
from dsl import step

HERE = os.path.dirname(__file__)

@step(inputs=["data/*.csv"], env=["MODE"])
def load():
    paths = sorted(glob.glob(os.path.join(HERE, "data", "*.csv")))
    rows = sum(len(open(p).read().splitlines()) for p in paths)
    return f"{rows} rows, mode {os.environ.get('MODE', 'unset')}"

@step
def report(load):
    return load.upper()
"""


def test_declared_input_files_and_variables_are_part_of_the_fingerprint(flow_cli, project, monkeypatch):
    monkeypatch.delenv("MODE", raising=False)
    path = write(project / "flow.py", DECLARED_FLOW)
    data = write(project / "data" / "a.csv", "x\n1\n")

    def load(mode: str | None) -> dict[str, Any]:
        return run(flow_cli, path, env={"MODE": mode} if mode is not None else {})["load"]

    assert load("fast")["preview"] == "'2 rows, mode fast'"
    assert load("fast")["status"] == "cached"

    data.write_text("x\n1\n2\n")
    step = load("fast")
    assert (step["preview"], step["reason"]) == ("'3 rows, mode fast'", "input file changed: data/a.csv")

    write(project / "data" / "b.csv", "y\n")
    step = load("fast")
    assert (step["preview"], step["reason"]) == ("'4 rows, mode fast'", "input file changed: data/b.csv")

    step = load("slow")
    assert (step["preview"], step["reason"]) == ("'4 rows, mode slow'", "environment changed: MODE")
    step = load(None)
    assert (step["preview"], step["reason"]) == ("'4 rows, mode unset'", "environment changed: MODE")
    assert load(None)["status"] == "cached"

    shown = flow_cli("show", "last")
    assert "declared inputs: data/a.csv, data/b.csv, env MODE" in shown.stdout, shown
    steps = {s["name"]: s for s in flow_cli("show", "last", "--json").json()["steps"]}
    assert steps["load"]["declared"] == ["file:data/a.csv", "file:data/b.csv", "env:MODE"]
    assert steps["report"]["declared"] == []


def test_a_pattern_that_matches_nothing_counts_and_the_first_match_reruns(flow_cli, project, monkeypatch):
    monkeypatch.delenv("MODE", raising=False)
    path = write(project / "flow.py", DECLARED_FLOW)
    assert run(flow_cli, path)["load"]["preview"] == "'0 rows, mode unset'"
    assert "data/*.csv (no file matches)" in flow_cli("show", "last").stdout
    write(project / "data" / "a.csv", "x\n")
    step = run(flow_cli, path)["load"]
    assert step["preview"] == "'1 rows, mode unset'"
    assert step["reason"] == "input file changed: data/a.csv, data/*.csv"


def test_a_declared_file_edited_during_the_run_is_not_cached_under_the_old_fingerprint(
    flow_cli, project, tmp_path
):
    data = write(project / "data.csv", "old\n")
    waiting, go = tmp_path / "waiting", tmp_path / "go"
    path = write(
        project / "flow.py",
        f"""
        import os
        import time
        from dsl import step

        @step(inputs=["data.csv"])
        def load():
            open({str(waiting)!r}, "w").close()
            while not os.path.exists({str(go)!r}):
                time.sleep(0.01)
            return open({str(data)!r}).read().strip()
        """,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", "run", str(path), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "FLOW_STORE": str(tmp_path / "store")},
        cwd=tmp_path,
    )
    try:
        wait_for_file(waiting)
        data.write_text("new\n")
        go.touch()
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    finished = [json.loads(line) for line in out.splitlines() if '"step_finished"' in line]
    assert "not cached: data.csv changed while the step ran" in finished[0]["reason"], (out, err)
    data.write_text("old\n")
    assert run(flow_cli, path)["load"]["preview"] == "'old'"


# ----- --watch: what a step imports in its body, and its declared files ------------------------------


@pytest.fixture
def watched(harness: Any, project: Path) -> Iterator[Callable[[Path], tuple[FlowSession, EventLog]]]:
    """Load a flow in a session on the real engine, run it once, then watch it."""
    with ExitStack() as stack:

        def start(path: Path) -> tuple[FlowSession, EventLog]:
            events = EventLog()
            harness.engine.subscribe(events)
            session = FlowSession(path, harness.engine)
            session.load()
            mark = events.mark()
            session.run(trigger="first")
            events.wait_run(mark, "first")
            stack.enter_context(watching(session))
            return session, events

        yield start


def steps_of_run(harness: Any, run_id: int) -> dict[str, tuple[str, str]]:
    record = harness.store.get_run(run_id)
    return {s.name: (s.status, s.preview) for s in record.steps}


def test_watch_reruns_when_a_module_imported_in_a_step_body_is_saved(watched, harness, project):
    deep = write(project / "deep.py", "VALUE = 1\n")
    write(project / "helpers.py", "from deep import VALUE\n")
    path = write(
        project / "flow.py",
        """
        from dsl import step

        @step
        def use():
            import helpers
            return helpers.VALUE
        """,
    )
    session, events = watched(path)
    assert deep.resolve() in session.watched_files()
    mark = events.mark()
    save_in_place(deep, "VALUE = 2\n")
    reloaded = events.wait_reload(mark)
    assert isinstance(reloaded, FlowReloaded) and reloaded.changed == ("use",), reloaded
    started, finished = events.wait_run(mark)
    assert finished.status == "succeeded"
    assert steps_of_run(harness, started.run_id) == {"use": ("succeeded", "2")}


def test_watch_reruns_when_a_declared_input_file_is_saved(watched, harness, project):
    data = write(project / "data" / "a.csv", "1\n")
    path = write(
        project / "flow.py",
        f"""
        from dsl import step

        @step(inputs=["data/*.csv"])
        def load():
            return open({str(data)!r}).read().strip()

        @step
        def other():
            return 0
        """,
    )
    session, events = watched(path)
    mark = events.mark()
    save_in_place(data, "2\n")
    reloaded = events.wait_reload(mark)
    assert isinstance(reloaded, FlowReloaded) and reloaded.changed == ("load",), reloaded
    started, _ = events.wait_run(mark)
    assert steps_of_run(harness, started.run_id) == {"load": ("succeeded", "'2'"), "other": ("cached", "0")}


def test_flow_graph_shows_declared_inputs(flow_cli, project):
    path = write(project / "flow.py", DECLARED_FLOW)
    result = flow_cli("graph", str(path))
    assert result.code == 0, result
    assert "[inputs data/*.csv, env MODE]" in result.stdout, result
