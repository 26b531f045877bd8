"""Hostile and odd input: unicode and very long names, a flow that starts threads at import,
parameter values that look like code or shell, 10,000-step flows, 100 nested helper calls, the
store's permissions, and where artifacts may be unpickled from."""

from __future__ import annotations

import ast
import os
import subprocess
import time
from pathlib import Path

import pytest

from runner.store import Store
from tests.conftest import REPO


def steps_of(result) -> dict:
    return {e["step"]: e for e in result.events() if e.get("event") == "step_finished"}


def test_unicode_step_and_parameter_names(flow_cli, write_flow) -> None:
    path = write_flow(
        """
        from dsl import step

        @step
        def données(taille: int = 3, étiquette: str = "α"):
            return [étiquette] * taille

        @step
        def 训练(données):
            return "·".join(données)

        @step(name="résumé")
        def summary(训练):
            return len(训练)
        """
    )
    result = flow_cli("run", str(path), "--json", "-p", "taille=4", "-p", "étiquette=ß🙂")
    assert result.code == 0, result
    steps = steps_of(result)
    assert steps["训练"]["preview"] == repr("·".join(["ß🙂"] * 4))
    assert steps["résumé"]["status"] == "succeeded"
    shown = flow_cli("show", "last", "--json")
    assert shown.code == 0 and "训练" in shown.json()["steps"][1]["name"]
    assert flow_cli("logs", "last", "训练").code == 0
    again = flow_cli("run", str(path), "--json", "-p", "taille=4", "-p", "étiquette=ß🙂")
    assert {s["status"] for s in steps_of(again).values()} == {"cached"}
    bad = write_flow(
        'from dsl import step\n\n@step(name="résumé ✓")\ndef a():\n    return 1\n', name="bad.py"
    )
    refused = flow_cli("run", str(bad))
    assert refused.code == 2 and "valid Python identifier" in refused.stderr, refused


def test_very_long_step_and_parameter_names(flow_cli, write_flow) -> None:
    step_name = "s" * 300
    param_name = "p" * 300
    path = write_flow(
        f"""
        from dsl import step

        @step
        def {step_name}({param_name}: int = 1):
            return {param_name} * 2

        @step(name={"n" * 1000!r})
        def short({step_name}):
            return {step_name} + 1
        """
    )
    result = flow_cli("run", str(path), "--json", "-p", f"{param_name}=20")
    assert result.code == 0, result
    steps = steps_of(result)
    assert steps[step_name]["preview"] == "40" and steps["n" * 1000]["preview"] == "41"
    assert flow_cli("runs").code == 0 and flow_cli("show", "last").code == 0


def test_a_flow_that_starts_daemon_threads_at_import(flow_cli, write_flow) -> None:
    path = write_flow(
        """
        import threading, time
        from dsl import step

        def churn():
            while True:
                time.sleep(0.01)

        for _ in range(5):
            threading.Thread(target=churn, daemon=True).start()

        @step
        def a():
            return threading.active_count() >= 1
        """
    )
    started = time.monotonic()
    result = flow_cli("run", str(path), "--json", timeout=60)
    assert result.code == 0, result
    assert time.monotonic() - started < 30


def test_a_flow_that_starts_a_non_daemon_thread_at_import_still_exits(flow_cli, write_flow) -> None:
    path = write_flow(
        """
        import threading, time
        from dsl import step

        threading.Thread(target=lambda: time.sleep(120)).start()

        @step
        def a():
            return 1
        """
    )
    try:
        result = flow_cli("run", str(path), "--json", timeout=10)
    except subprocess.TimeoutExpired:
        raise AssertionError("flow run did not exit after the run finished") from None
    assert result.code == 0


SHELLISH = [
    "$(rm -rf ~)",
    "`touch {canary}`",
    "__import__('os').system('touch {canary}')",
    "'; DROP TABLE runs; --",
    "{{7*7}} ${{HOME}} %(x)s",
    "eval(compile('open(\"{canary}\",\"w\")','x','exec'))",
]


@pytest.mark.parametrize("value", SHELLISH)
def test_a_parameter_that_looks_like_code_or_shell_stays_a_string(
    flow_cli, write_flow, tmp_path, value
) -> None:
    canary = tmp_path / "canary"
    value = value.format(canary=canary)
    path = write_flow(
        """
        from dsl import step

        @step
        def echo(x: str = "", n: int = 1):
            return x
        """
    )
    result = flow_cli("run", str(path), "--json", "-p", f"x={value}")
    assert result.code == 0, result
    preview = steps_of(result)["echo"]["preview"]  # a long value's preview is cut in the middle
    head, cut, tail = preview.partition("...")
    assert preview == repr(value) or (cut and repr(value).startswith(head) and repr(value).endswith(tail))
    assert not canary.exists()
    runs = flow_cli("runs", "--json")
    assert runs.json()[0]["params"]["x"] == value
    bad = flow_cli("run", str(path), "-p", f"n={value}")
    assert bad.code == 2 and "Traceback" not in bad.stderr, bad
    assert not canary.exists()
    assert (Path.home()).exists()


def test_no_eval_or_exec_of_user_values_anywhere() -> None:
    """The only exec is the loader running the flow file's own code; no eval at all. The dataclass
    cache compiles (then runs) only the text `dataclasses` hands its `exec`, which `dataclasses` would
    have run itself (`runner.dataclass_cache`); `dsl.flowcode`, `dsl.splitcompile` and `dsl.codecache`
    compile only the flow file's own text (in the parts the loader runs) and the user's modules it
    imports."""
    found = []
    for package in ("dsl", "runner", "tui"):
        for path in (REPO / package).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                    if node.func.id in ("eval", "exec", "compile"):
                        found.append(f"{path.relative_to(REPO)}:{node.lineno} {node.func.id}")
                if isinstance(node, ast.Attribute) and node.attr in ("literal_eval",):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno} {node.attr}")
    allowed = {"dsl/loader.py"}
    offenders = [f for f in found if f.split(":")[0] not in allowed]
    compiling = (
        "runner/dataclass_cache.py:",
        "dsl/flowcode.py:",
        "dsl/splitcompile.py:",
        "dsl/codecache.py:",
    )
    offenders = [f for f in offenders if not (f.startswith(compiling) and f.endswith(" compile"))]
    assert not offenders, offenders
    assert any(f.startswith("dsl/loader.py") and f.endswith("exec") for f in found), found


def _wide_flow(n: int, tag: str = "") -> str:
    lines = ["from dsl import step", "", "@step", "def root():", f"    return 1{tag}", ""]
    for i in range(n - 1):
        lines += ["@step", f"def s{i}(root):", f"    return root + {i}", ""]
    return "\n".join(lines)


def test_a_10000_step_flow_loads_runs_and_reruns_cached(flow_cli, write_flow, store_dir) -> None:
    n = 10_000
    path = write_flow(_wide_flow(n), name="wide.py")
    started = time.monotonic()
    check = flow_cli("check", str(path), timeout=300)
    load_s = time.monotonic() - started
    assert check.code == 0 and f"{n} steps" in check.stdout, check
    started = time.monotonic()
    cold = flow_cli("run", str(path), "--executor", "inline", timeout=600)
    cold_s = time.monotonic() - started
    assert cold.code == 0, cold.stderr[-2000:]
    started = time.monotonic()
    cached = flow_cli("run", str(path), "--json", timeout=600)
    cached_s = time.monotonic() - started
    assert cached.code == 0, cached.stderr[-2000:]
    statuses = [e["status"] for e in cached.events() if e.get("event") == "step_finished"]
    assert len(statuses) == n and set(statuses) == {"cached"}
    print(f"\n{n} steps: check {load_s:.1f}s, cold run (inline) {cold_s:.1f}s, cached run {cached_s:.1f}s")
    assert load_s < 60 and cached_s < 60


def test_100_nested_helper_calls_are_fingerprinted(flow_cli, write_flow, tmp_path) -> None:
    effects = tmp_path / "effects.txt"
    depth = 100

    def source(last_body: str) -> str:
        lines = ["import os", "from dsl import step", ""]
        for i in range(depth - 1):
            lines += [f"def h{i}(x):", f"    return h{i + 1}(x) + 1", ""]
        lines += [f"def h{depth - 1}(x):", f"    {last_body}", ""]
        lines += [
            "@step",
            "def deep():",
            f"    open({str(effects)!r}, 'a').write('ran\\n')",
            "    return h0(0)",
        ]
        return "\n".join(lines)

    path = write_flow(source("return x"), name="deep.py")
    first = flow_cli("run", str(path), "--json")
    assert first.code == 0, first
    assert steps_of(first)["deep"]["preview"] == str(depth - 1)
    again = flow_cli("run", str(path), "--json")
    assert steps_of(again)["deep"]["status"] == "cached"
    path.write_text(source("return x + 1000"), encoding="utf-8")  # the innermost helper changes
    changed = flow_cli("run", str(path), "--json")
    assert changed.code == 0
    deep = steps_of(changed)["deep"]
    assert deep["status"] == "succeeded" and deep["preview"] == str(depth - 1 + 1000)
    assert "helper" in deep["reason"] or "code" in deep["reason"], deep["reason"]
    assert effects.read_text().count("ran") == 2


def test_the_store_is_private(flow_cli, write_flow, store_dir) -> None:
    path = write_flow("from dsl import step\n\n@step\ndef a():\n    return b'x' * (2 << 20)\n")
    old = os.umask(0)
    try:
        assert flow_cli("run", str(path)).code == 0
    finally:
        os.umask(old)
    assert store_dir.stat().st_mode & 0o777 == 0o700
    assert (store_dir / "artifacts").stat().st_mode & 0o777 == 0o700
    nested = store_dir.parent / "deeper" / "and" / "store"
    assert Store(nested).root.stat().st_mode & 0o777 == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand the store to another user")
def test_artifacts_are_only_unpickled_from_the_users_own_store(flow_cli, write_flow, store_dir) -> None:
    """A store another user owns, or anyone may write to, could hold planted pickles: refused."""
    path = write_flow("from dsl import step\n\n@step\ndef a():\n    return 1\n")
    assert flow_cli("run", str(path)).code == 0
    os.chown(store_dir, 65534, 65534)
    try:
        foreign = flow_cli("run", str(path))
    finally:
        os.chown(store_dir, 0, 0)
    assert foreign.code == 2 and "owned by" in foreign.stderr, foreign
    store_dir.chmod(0o777)
    try:
        writable = flow_cli("run", str(path))
    finally:
        store_dir.chmod(0o700)
    assert writable.code == 2 and "writable by every user" in writable.stderr, writable
    assert flow_cli("run", str(path)).code == 0


def test_file_inputs_always_resolve_inside_the_store(harness, write_flow) -> None:
    """The runner hands workers artifact paths it derives from the hash inside its own store."""
    path = write_flow(
        """
        from dsl import step

        @step
        def big():
            return b"y" * (3 << 20)

        @step
        def use(big):
            return len(big)
        """
    )
    run = harness.run(path)
    assert {s.status for s in run.steps} == {"succeeded"}
    store = harness.store
    for step in run.steps:
        _, where = store.artifact_location(step.output_hash)
        if where is not None:
            assert Path(where).resolve().is_relative_to(store.artifact_dir.resolve())
