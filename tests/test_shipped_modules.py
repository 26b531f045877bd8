"""A local module the steps use as a module travels once (`runner.shipping.pickle_shipped`).

`import helpers` then `helpers.f(x)` in a step made cloudpickle pickle the whole of `helpers` into
every chunk of steps (`runner.engine.bundles`), and each worker unpickle it again per chunk. Now the
module is pickled once per load, referred to by key from the chunks, and installed once per worker
(`runner.executors.execute.install_modules`). Real loads of real files; the last tests run the real
CLI with real worker processes.
"""

from __future__ import annotations

import json
import pickle
import textwrap
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dsl import load_flow
from runner.engine.bundles import Bundle, CodeBundles
from runner.executors import execute, isolation
from tests.conftest import CLIResult
from tests.helpers_core import calls_to

HELPERS = '''
"""Helpers the steps call."""

import utils

MARK = "helpers-namespace-mark"


def double(x):
    return utils.twice(x)


def triple(x):
    return x * 3
'''

UTILS = '''
"""Used by helpers, not by the flow."""


def twice(x):
    return 2 * x
'''


def _chain(count: int) -> str:
    lines = ["import helpers", "from dsl import step", ""]
    for i in range(count):
        arg = f"s{i - 1}" if i else ""
        value = f"helpers.double({arg})" if i else "1"
        lines += ["@step", f"def s{i}({arg}):", f"    return {value}", ""]
    return "\n".join(lines)


def _project(tmp_path: Path, flow: str, **modules: str) -> Path:
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    for name, text in modules.items():
        (project / f"{name}.py").write_text(textwrap.dedent(text), encoding="utf-8")
    path = project / "shipping_flow.py"
    path.write_text(flow, encoding="utf-8")
    return path


@pytest.fixture
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> dict[str, types.ModuleType]:
    """This process's shipped modules, empty for the test (the inline executor shares the global)."""
    registry: dict[str, types.ModuleType] = {}
    monkeypatch.setattr(execute, "_shipped", registry)
    monkeypatch.setattr(execute, "_unloadable", {})
    return registry


def _unpickle(code: bytes, modules: tuple[tuple[str, str, bytes], ...]) -> dict[str, Any]:
    execute.install_modules(modules)
    functions: dict[str, Any] = pickle.loads(code)
    return functions


def test_a_module_is_pickled_once_per_load_and_no_chunk_holds_it(
    tmp_path: Path, fresh_registry: dict[str, types.ModuleType]
) -> None:
    loaded = load_flow(_project(tmp_path, _chain(100), helpers=HELPERS, utils=UTILS))
    bundles = CodeBundles()
    chunks: dict[str, Bundle] = {}
    for name in loaded.graph.order:
        bundle = bundles.code(loaded, name)
        chunks.setdefault(bundle.key, bundle)
    assert len(chunks) == 7  # of 1, 2, 4, 8, 16, 32 and 37 steps
    alone = chunks.pop(f"{loaded.load_id}:s0")
    assert alone.modules == ()  # s0 uses no module
    shipped = {bundle.modules for bundle in chunks.values()}
    assert len(shipped) == 1  # the same modules, as the same bytes, with every other chunk
    (modules,) = shipped
    assert sorted(name for _, name, _ in modules) == ["helpers", "utils"]  # and what helpers uses
    assert all(key.startswith(f"{loaded.load_id}:module:") for key, _, _ in modules)
    assert not any(b"helpers-namespace-mark" in bundle.code for bundle in chunks.values())
    assert any(b"helpers-namespace-mark" in data for _, _, data in modules)

    # Unpickled as a worker does: the chunks' steps share one module, and compute right.
    steps: dict[str, Any] = {}
    for bundle in [alone, *chunks.values()]:
        steps.update(_unpickle(bundle.code, bundle.modules))
    assert steps["s3"](steps["s2"](steps["s1"](steps["s0"]()))) == 8
    first, last = steps["s1"].__globals__["helpers"], steps["s99"].__globals__["helpers"]
    assert first is last and isinstance(first, types.ModuleType) and first.MARK == "helpers-namespace-mark"
    assert len(fresh_registry) == 2

    again = load_flow(loaded.path)  # a save: the new load ships its own modules
    bundle = bundles.code(again, "s5")
    assert {key for key, _, _ in bundle.modules}.isdisjoint(key for key, _, _ in modules)
    assert _unpickle(bundle.code, bundle.modules)["s5"](4) == 8


def test_modules_that_import_each_other_are_shipped_and_rebuilt(
    tmp_path: Path, fresh_registry: dict[str, types.ModuleType]
) -> None:
    ping = "import pong\n\n\ndef ping(n):\n    return 0 if n == 0 else pong.pong(n - 1) + 1\n"
    pong = "import ping\n\n\ndef pong(n):\n    return 0 if n == 0 else ping.ping(n - 1) + 1\n"
    flow = "import ping\nfrom dsl import step\n\n\n@step\ndef bounce():\n    return ping.ping(5)\n"
    loaded = load_flow(_project(tmp_path, flow, ping=ping, pong=pong))
    bundle = CodeBundles().code(loaded, "bounce")
    assert sorted(name for _, name, _ in bundle.modules) == ["ping", "pong"]
    assert _unpickle(bundle.code, bundle.modules)["bounce"]() == 5


def test_the_executor_knows_which_modules_a_worker_kept(
    monkeypatch: pytest.MonkeyPatch, fresh_registry: dict[str, types.ModuleType]
) -> None:
    """`LocalExecutor` leaves out the modules its worker has; both ends drop the oldest alike."""
    monkeypatch.setattr(execute, "SHIPPED_MODULES_KEPT", 3)
    data = pickle.dumps({"X": 1})
    ledger: dict[str, None] = {}
    sends = [["a", "b"], ["b", "c"], ["d"], ["a", "d"], ["e", "b", "c"]]
    for keys in sends:
        modules = tuple((key, f"m_{key}", data) for key in keys)
        fresh = {key for key, _, _ in execute.admit_modules(ledger, modules, lambda _: None)}
        execute.install_modules(tuple(m if m[0] in fresh else (*m[:2], b"") for m in modules))
        assert list(ledger) == list(fresh_registry)
        assert all(key in fresh_registry for key in keys)  # what the step needs is there
    assert list(ledger) == ["e", "b", "c"]  # least recently used out first


def test_a_shipped_module_is_walked_once_per_worker_for_isolation(
    tmp_path: Path, fresh_registry: dict[str, types.ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every step reaching a shipped module would walk its functions again: now once per module,
    and a step that rebinds one of its names is still seen."""
    loaded = load_flow(_project(tmp_path, _chain(10), helpers=HELPERS, utils=UTILS))
    bundles = CodeBundles()
    early, late = bundles.code(loaded, "s1"), bundles.code(loaded, "s8")
    assert early.key != late.key
    first = _unpickle(early.code, early.modules)["s1"]
    second = _unpickle(late.code, late.modules)["s8"]

    walked = calls_to(monkeypatch, isolation, "import_names", lambda code: code.co_name)
    monkeypatch.setattr(isolation, "_shipped_walks", {})
    isolation.reachable_namespaces(first)
    assert {"double", "triple", "twice"} <= set(walked)
    walked.clear()
    namespaces = isolation.reachable_namespaces(second)
    assert walked == ["s8"]  # the step itself; its module as walked for s1
    helpers = second.__globals__["helpers"]
    assert any(namespace.live is vars(helpers) for namespace in namespaces)
    assert any(namespace.live is vars(helpers.utils) for namespace in namespaces)
    helpers.utils.twice = lambda x: x
    assert [name for namespace in namespaces for name in namespace.changed()] == ["utils.twice"]


FlowCLI = Callable[..., CLIResult]

BEACON = '''
"""A module whose namespace says where, and how often, it is unpickled."""

import os


class Beacon:
    def __reduce__(self):
        return (arrived, ())


def arrived():
    with open(os.environ["BEACON_FILE"], "a") as log:
        log.write(f"{os.getpid()}\\n")
    return Beacon()


HERE = Beacon()


def inc(x):
    return x + 1
'''


def test_a_worker_unpickles_a_module_once_per_run_of_a_load(flow_cli: FlowCLI, tmp_path: Path) -> None:
    """40 steps in six chunks on one worker, five of them using the module: its namespace arrives
    once (before: once per chunk, five times)."""
    flow = _chain(40).replace("helpers.double", "beacon.inc").replace("import helpers", "import beacon")
    path = _project(tmp_path, flow, beacon=BEACON)
    log = tmp_path / "beacon.log"
    done = flow_cli("run", str(path), "--workers", "1", env={"BEACON_FILE": str(log)})
    assert done.code == 0, done
    shown = flow_cli("show", "last", "--json")
    assert {step["name"]: step["preview"] for step in shown.json()["steps"]}["s39"] == "40"
    assert len(log.read_text().split()) == 1


def test_a_module_that_cannot_be_rebuilt_in_the_worker_fails_its_steps_clearly(
    flow_cli: FlowCLI, tmp_path: Path
) -> None:
    broken = BEACON.replace("def arrived():\n", 'def arrived():\n    raise OSError("the device is gone")\n')
    flow = (
        "import beacon\nfrom dsl import step\n\n\n@step\ndef alone():\n    return 1\n\n\n"
        "@step\ndef uses(alone):\n    return beacon.inc(alone)\n"
    )
    path = _project(tmp_path, flow, beacon=broken)
    done = flow_cli("run", str(path), "--workers", "1", "--json")
    assert done.code != 0
    steps = {step["name"]: step for step in json.loads(flow_cli("show", "last", "--json").stdout)["steps"]}
    assert steps["alone"]["status"] == "succeeded"
    assert steps["uses"]["status"] == "failed"
    assert "module beacon cannot be loaded: OSError: the device is gone" in steps["uses"]["error"]
    assert "Traceback" not in done.stderr


PURE = '''
"""Functions and plain values only."""

import math

LIMIT = int(open(__file__.replace("helpers.py", "limit.txt")).read())
NAMES = ("a", "b")


def double(x, factor=2):
    return min(x * factor, LIMIT) + math.floor(0.5)
'''


def _helper_bundle(bundles: CodeBundles, path: Path) -> tuple[Bundle, dict[str, Any]]:
    loaded = load_flow(path)
    bundle = bundles.code(loaded, "s1")
    return bundle, _unpickle(bundle.code, bundle.modules)


def test_a_module_the_save_left_alone_reuses_its_last_pickle_and_nothing_else_does(
    tmp_path: Path, fresh_registry: dict[str, types.ModuleType]
) -> None:
    """A save of the flow file imports the user's modules again: an unchanged one's namespace is the
    same, and its last pickle serves (not pickled again); a value read at import from a file that
    changed, an object, another module's function or an edit of the module's text make a new pickle."""
    path = _project(tmp_path, _chain(3), helpers=PURE)
    limit = path.parent / "limit.txt"
    limit.write_text("100")
    bundles = CodeBundles()
    first, steps = _helper_bundle(bundles, path)
    assert steps["s1"](4) == 8

    path.write_text(_chain(3) + "\n# a save of the flow file\n")
    second, steps_again = _helper_bundle(bundles, path)
    ((key, _, data),) = first.modules
    ((key_again, _, data_again),) = second.modules
    assert key_again != key and data_again is data  # the last pickle, under this load's key
    assert steps_again["s1"].__globals__["helpers"] is not steps["s1"].__globals__["helpers"]  # rebuilt

    limit.write_text("5")  # the module's text is unchanged; what it read at import is not
    third, steps_now = _helper_bundle(bundles, path)
    assert third.modules[0][2] != data and steps_now["s1"](4) == 5

    (path.parent / "helpers.py").write_text(PURE + "\nCACHE = {'k': [1, 2.5]}\n")
    fourth, _ = _helper_bundle(bundles, path)
    fifth, _ = _helper_bundle(bundles, path)
    assert fourth.modules[0][2] is not third.modules[0][2]  # edited: pickled again
    assert fifth.modules[0][2] is fourth.modules[0][2]  # plain containers, equal: the same

    (path.parent / "helpers.py").write_text(PURE + "\nimport types\nSETTINGS = types.SimpleNamespace(k=1)\n")
    sixth, _ = _helper_bundle(bundles, path)
    seventh, _ = _helper_bundle(bundles, path)
    assert seventh.modules[0][2] is not sixth.modules[0][2]  # an object: never taken as the same

    (path.parent / "utils.py").write_text(UTILS)
    (path.parent / "helpers.py").write_text(PURE + "\nfrom utils import twice\n")
    eighth, _ = _helper_bundle(bundles, path)
    ninth, _ = _helper_bundle(bundles, path)
    assert ninth.modules[0][2] is not eighth.modules[0][2]  # another module's function: its globals differ
