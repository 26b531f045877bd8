"""The content-addressed cache, proven by side-effect files: a step appends a line to a log in tmp each
time it really executes, so "cached" means "did not run", not merely "reported as cached"."""

from __future__ import annotations

import os
import sqlite3
import textwrap
import threading
from pathlib import Path

import pytest

from runner.store import Store
from tests.conftest import EngineHarness
from tests.helpers_core import calls_to, executed, flow_source, reset, statuses, steps_of


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "executed.log"


CHAIN = """
    @step
    def a():
        mark("a")
        return 1

    @step
    def b(a):
        mark("b")
        return a + 1

    @step
    def c(b):
        mark("c")
        return b * 10

    @step
    def d():
        mark("d")
        return "independent"
"""


def write(write_flow, log: Path, body: str, name: str = "flow_file.py") -> Path:
    return write_flow(flow_source(log, body), name=name)


def rewrite(path: Path, log: Path, body: str) -> None:
    path.write_text(flow_source(log, body), encoding="utf-8")


# ----- unchanged flow ------------------------------------------------------------------------


def test_second_run_of_unchanged_flow_executes_nothing(harness, write_flow, log):
    path = write(write_flow, log, CHAIN)
    first = harness.run(path)
    assert first.status == "succeeded"
    assert sorted(executed(log)) == ["a", "b", "c", "d"]
    assert {s.reason for s in first.steps} == {"no earlier result"}
    reset(log)
    second = harness.run(path)
    assert second.status == "succeeded"
    assert executed(log) == []
    assert set(statuses(second).values()) == {"cached"}
    assert all(s.attempts == 0 for s in second.steps)


def test_cache_survives_a_new_engine_and_process(flow_cli, write_flow, log):
    path = write(write_flow, log, CHAIN)
    assert flow_cli("run", str(path)).code == 0
    reset(log)
    result = flow_cli("run", str(path), "--json")
    assert result.code == 0, result
    assert executed(log) == []
    finished = [e for e in result.events() if e["event"] == "step_finished"]
    assert {e["status"] for e in finished} == {"cached"}


def test_a_long_lived_engine_reuses_what_another_process_computed_meanwhile(
    harness, flow_cli, write_flow, log
):
    """The engine remembers which fingerprints the store holds (so a cold run skips a SQLite lookup
    per step); a result another process stored after that must still be found, not recomputed."""
    path = write(write_flow, log, "@step\ndef a(n: int = 1):\n    mark(f'a{n}')\n    return n\n")
    assert harness.run(path).status == "succeeded"
    assert flow_cli("run", str(path), "-p", "n=2").code == 0
    assert flow_cli("run", str(path), "-p", "n=3").code == 0
    reset(log)
    for n in (2, 3):
        run = harness.run(path, {"n": n})
        assert statuses(run) == {"a": "cached"}, n
    assert executed(log) == []


def test_a_new_engine_reads_the_cache_listing_only_for_a_step_the_last_runs_hits_do_not_answer(
    store_dir, write_flow, log, monkeypatch
):
    """A new engine (a new `flow run`) takes a re-run's results from the last run's hits, read in one
    query: a fully cached re-run reads no listing of the cache's fingerprints. A re-run with an edited
    step reads it once, at that step, and still asks SQLite nothing for the fingerprints it shows are
    not cached (the edited step and what its output invalidates)."""
    path = write(write_flow, log, CHAIN)
    first = EngineHarness(store_dir)
    try:
        first.run(path)
    finally:
        first.close()
    listings = calls_to(monkeypatch, Store, "cache_rows_after", lambda store, *args: args)
    lookups = calls_to(monkeypatch, Store, "lookup", lambda store, *args: args)
    for edit in (None, ("return a + 1", "return a + 2")):
        if edit is not None:
            rewrite(path, log, CHAIN.replace(*edit))
        reset(log)
        listings.clear()
        engine = EngineHarness(store_dir)
        try:
            run = engine.run(path)
        finally:
            engine.close()
        assert run.status == "succeeded"
        if edit is None:
            assert executed(log) == []
            assert listings == []
        else:
            assert sorted(executed(log)) == ["b", "c"]
            assert len(listings) == 1
        assert lookups == []


METRICS = """
    from dsl import log_metric

    @step
    def a():
        mark("a")
        log_metric("rows", 10)
        return 1

    @step
    def b(a):
        mark("b")
        log_metric("loss", 0.5)
        return a + 1
"""


def test_a_new_engine_takes_cached_steps_metrics_with_the_last_runs_hits(
    store_dir, write_flow, log, monkeypatch
):
    """A cached step carries the metrics of the run that computed it. A new engine reads them as it
    reads the last run's hits, for every run those came from in one query, on the thread that starts
    the run. A fully cached re-run then connects to the store from that thread and the writer's only:
    not from the scheduler's, nor from the heartbeat's before its first checkpoint (opening a
    connection took 0.3-0.5 ms of a short run)."""
    from runner.store import owners

    monkeypatch.setattr(owners, "CHECKPOINT_S", 3600.0)
    path = write(write_flow, log, METRICS)
    edited = METRICS.replace("return a + 1", "return a + 2").replace('"loss", 0.5', '"loss", 0.25')
    for body in (METRICS, edited):  # `a` computed by the first run, `b` by the second
        rewrite(path, log, body)
        engine = EngineHarness(store_dir)
        try:
            assert engine.run(path).status == "succeeded"
        finally:
            engine.close()
    computed_by = {"a": 1, "b": 2}
    reset(log)
    connected = calls_to(monkeypatch, Store, "_connect", lambda store: threading.current_thread().name)
    asked = calls_to(monkeypatch, Store, "metrics_by_fingerprint", lambda store, run_ids: sorted(run_ids))
    engine = EngineHarness(store_dir)
    try:
        run = engine.run(path)
    finally:
        engine.close()
    assert executed(log) == []
    assert {s.name: (s.status, s.reason, s.metrics) for s in run.steps} == {
        name: ("cached", f"cached: same fingerprint as run #{computed_by[name]}", metrics)
        for name, metrics in (("a", {"rows": 10.0}), ("b", {"loss": 0.25}))
    }
    assert asked == [[1, 2]]
    assert sorted(set(connected)) == ["MainThread", "flow-store-writer"]


# ----- code edits ----------------------------------------------------------------------------


def test_editing_one_step_reruns_exactly_it_and_what_its_output_invalidates(harness, write_flow, log):
    path = write(write_flow, log, CHAIN)
    harness.run(path)
    reset(log)
    rewrite(path, log, CHAIN.replace("return a + 1", "return a + 2"))
    run = harness.run(path)
    assert sorted(executed(log)) == ["b", "c"]
    st = steps_of(run)
    assert st["a"].status == "cached" and st["d"].status == "cached"
    assert st["b"].reason == "code changed"
    assert st["c"].reason == "upstream output changed: b"


def test_comment_docstring_and_formatting_edits_rerun_nothing(harness, write_flow, log):
    path = write(write_flow, log, CHAIN)
    harness.run(path)
    reset(log)
    edited = CHAIN.replace(
        'def b(a):\n        mark("b")\n        return a + 1',
        'def b(a):\n        """Now with a docstring."""\n        # and a comment\n'
        '        mark( "b" )   # trailing\n\n\n        return (a\n                + 1)',
    )
    assert edited != CHAIN
    rewrite(path, log, "\n    # a comment at the top\n" + edited + "\n\n    # the end\n")
    run = harness.run(path)
    assert executed(log) == []
    assert set(statuses(run).values()) == {"cached"}


TAILS = """
    @step
    def only_doc():
        \"\"\"A body of only a docstring: no code to find its last line by.\"\"\"

    @step
    def tail(only_doc):
        mark("tail")
        value = 1
        if only_doc:
            value = 2
        else:
            pass

    @step
    def lines(tail):
        mark("lines")
        return (
            tail,
            1
        )
"""


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("        else:\n            pass\n", "        else:\n            value = 3\n", ["tail"]),
        ("            tail,\n            1\n", "            tail,\n            2\n", ["lines"]),
        ('last line by."""\n', 'last line by."""\n        mark("only_doc")\n', ["only_doc"]),
    ],
    ids=["trailing-else-gets-code", "last-line-of-a-multi-line-return", "docstring-only-body-gets-code"],
)
def test_edits_at_the_end_of_a_function_are_seen(harness, write_flow, log, old, new, expected):
    """A function's text is cut out by the lines its code comes from; an edit in what follows its
    last line of code (a trailing `else: pass`, the docstring of an empty body) must still count."""
    path = write(write_flow, log, TAILS)
    assert harness.run(path).status == "succeeded"
    reset(log)
    assert old in TAILS
    rewrite(path, log, TAILS.replace(old, new))
    run = harness.run(path)
    assert executed(log) == expected
    assert steps_of(run)[expected[0]].reason == "code changed"
    reset(log)
    assert set(statuses(harness.run(path)).values()) == {"cached"}
    assert executed(log) == []


def test_early_cutoff_when_an_edited_step_returns_the_same_value(harness, write_flow, log):
    path = write(write_flow, log, CHAIN)
    harness.run(path)
    reset(log)
    rewrite(path, log, CHAIN.replace("return a + 1", "return 3 - a"))  # still 2
    run = harness.run(path)
    assert executed(log) == ["b"]
    st = steps_of(run)
    assert st["b"].status == "succeeded" and st["b"].reason == "code changed"
    assert st["c"].status == "cached"


def test_two_quick_edits_with_the_same_size_give_the_new_result(harness, write_flow, log, tmp_path):
    """The .pyc trap: two writes within the same mtime granularity and of equal length."""
    helper = tmp_path / "project" / "consts.py"
    helper.parent.mkdir(exist_ok=True)
    body = """
        from consts import VALUE

        @step
        def read():
            mark("read")
            return VALUE
    """
    path = write(write_flow, log, body)
    values = []
    for digit in "123":
        helper.write_text(f"VALUE = {digit}\n")
        stat = helper.stat()
        os.utime(helper, ns=(stat.st_atime_ns, 1_000_000_000))  # same mtime every time
        run = harness.run(path)
        values.append(harness.store.read_artifact(steps_of(run)["read"].output_hash))
    import pickle

    assert [pickle.loads(v) for v in values] == [1, 2, 3]
    assert executed(log) == ["read", "read", "read"]


def test_same_size_edit_of_the_flow_file_itself(harness, write_flow, log):
    body = """
        @step
        def k():
            mark("k")
            return 111
    """
    path = write(write_flow, log, body)
    harness.run(path)
    stat = path.stat()
    rewrite(path, log, body.replace("111", "222"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    run = harness.run(path)
    assert steps_of(run)["k"].preview == "222"
    assert executed(log) == ["k", "k"]


# ----- helpers -------------------------------------------------------------------------------

HELPERS = """
    def scale(x):
        return x * 2

    def unrelated(x):
        return x - 1

    @step
    def uses_scale():
        mark("uses_scale")
        return scale(5)

    @step
    def uses_unrelated():
        mark("uses_unrelated")
        return unrelated(5)
"""


def test_editing_a_helper_in_the_flow_file_reruns_only_its_users(harness, write_flow, log):
    path = write(write_flow, log, HELPERS)
    harness.run(path)
    reset(log)
    rewrite(path, log, HELPERS.replace("return x * 2", "return x * 3"))
    run = harness.run(path)
    assert executed(log) == ["uses_scale"]
    st = steps_of(run)
    assert st["uses_scale"].reason.startswith("helper changed")
    assert "scale" in st["uses_scale"].reason
    assert st["uses_unrelated"].status == "cached"


def test_editing_a_transitive_helper_reruns_its_users(harness, write_flow, log):
    body = """
        def inner(x):
            return x + 1

        def outer(x):
            return inner(x) * 2

        @step
        def top():
            mark("top")
            return outer(1)

        @step
        def other():
            mark("other")
            return 0
    """
    path = write(write_flow, log, body)
    harness.run(path)
    reset(log)
    rewrite(path, log, body.replace("return x + 1", "return x + 7"))
    run = harness.run(path)
    assert executed(log) == ["top"]
    assert steps_of(run)["top"].reason.startswith("helper changed")


LOCAL_MODULE = """
    def double(x):
        return x * 2

    def triple(x):
        return x * 3

    FACTOR = 10
"""

USES_LOCAL = """
    import helpers
    from helpers import double

    @step
    def from_import():
        mark("from_import")
        return double(1)

    @step
    def attribute_import():
        mark("attribute_import")
        return helpers.triple(1)

    @step
    def constant_user():
        mark("constant_user")
        return helpers.FACTOR

    @step
    def plain():
        mark("plain")
        return 0
"""


@pytest.fixture
def local_project(write_flow, log, tmp_path):
    module = tmp_path / "project" / "helpers.py"
    module.parent.mkdir(exist_ok=True)
    module.write_text(textwrap.dedent(LOCAL_MODULE))
    path = write(write_flow, log, USES_LOCAL)
    return path, module


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("return x * 2", "return x * 4", "from_import"),
        ("return x * 3", "return x * 5", "attribute_import"),
        ("FACTOR = 10", "FACTOR = 11", "constant_user"),
    ],
    ids=["from-import", "module-attribute", "module-constant"],
)
def test_editing_a_local_module_reruns_exactly_its_users(harness, local_project, log, old, new, expected):
    path, module = local_project
    harness.run(path)
    reset(log)
    module.write_text(textwrap.dedent(LOCAL_MODULE).replace(old, new))
    run = harness.run(path)
    assert executed(log) == [expected]
    assert steps_of(run)[expected].reason.startswith("helper changed")
    for name, record in steps_of(run).items():
        if name != expected:
            assert record.status == "cached", (name, record)


def test_a_module_level_constant_change_reruns_its_users(harness, write_flow, log):
    body = """
        THRESHOLD = 0.5
        UNUSED = 1

        @step
        def gate():
            mark("gate")
            return THRESHOLD

        @step
        def free():
            mark("free")
            return 1
    """
    path = write(write_flow, log, body)
    harness.run(path)
    reset(log)
    rewrite(path, log, body.replace("THRESHOLD = 0.5", "THRESHOLD = 0.7"))
    run = harness.run(path)
    assert executed(log) == ["gate"]
    assert steps_of(run)["gate"].preview == "0.7"
    assert "THRESHOLD" in steps_of(run)["gate"].reason
    reset(log)
    rewrite(path, log, body.replace("THRESHOLD = 0.5", "THRESHOLD = 0.7").replace("UNUSED = 1", "UNUSED = 2"))
    harness.run(path)
    assert executed(log) == []


def test_a_closure_value_change_reruns_the_step(harness, write_flow, log):
    body = """
        def make(k):
            @step(name="closure_step")
            def inner():
                mark("closure_step")
                return k
            return inner

        closure_step = make(3)
    """
    path = write(write_flow, log, body)
    harness.run(path)
    reset(log)
    harness.run(path)
    assert executed(log) == []
    rewrite(path, log, body.replace("make(3)", "make(4)"))
    run = harness.run(path)
    assert executed(log) == ["closure_step"]
    assert steps_of(run)["closure_step"].preview == "4"


# ----- parameters ----------------------------------------------------------------------------

PARAMS = """
    @step
    def reader(lr: float = 0.1):
        mark("reader")
        return lr

    @step
    def other(rows: int = 5):
        mark("other")
        return rows

    @step
    def after(reader):
        mark("after")
        return reader * 2
"""


def test_a_parameter_change_reruns_only_its_readers(harness, write_flow, log):
    path = write(write_flow, log, PARAMS)
    harness.run(path)
    reset(log)
    run = harness.run(path, {"lr": "0.2"})
    assert sorted(executed(log)) == ["after", "reader"]
    st = steps_of(run)
    assert st["reader"].reason == "parameter changed: lr"
    assert st["after"].reason == "upstream output changed: reader"
    assert st["other"].status == "cached"
    assert run.params["lr"] == 0.2
    reset(log)
    back = harness.run(path, {"lr": "0.1"})  # the old value is still in the cache
    assert executed(log) == []
    assert set(statuses(back).values()) == {"cached"}


def test_parameter_change_reason_through_the_cli(flow_cli, write_flow, log):
    path = write(write_flow, log, PARAMS)
    assert flow_cli("run", str(path)).code == 0
    result = flow_cli("run", str(path), "-p", "lr=0.3")
    assert result.code == 0, result
    shown = flow_cli("show", "last", "--json").json()
    reasons = {s["name"]: s["reason"] for s in shown["steps"]}
    assert reasons["reader"] == "parameter changed: lr"
    assert shown["params"]["lr"] == 0.3


# ----- force and cache=False -------------------------------------------------------------------


def test_force_reruns_every_step_with_reason_forced(harness, write_flow, log):
    path = write(write_flow, log, CHAIN)
    harness.run(path)
    reset(log)
    run = harness.run(path, force=True)
    assert sorted(executed(log)) == ["a", "b", "c", "d"]
    assert {s.reason for s in run.steps} == {"forced"}


def test_force_through_the_cli(flow_cli, write_flow, log):
    path = write(write_flow, log, CHAIN)
    assert flow_cli("run", str(path)).code == 0
    reset(log)
    assert flow_cli("run", str(path), "--force").code == 0
    assert sorted(executed(log)) == ["a", "b", "c", "d"]
    shown = flow_cli("show", "last", "--json").json()
    assert {s["reason"] for s in shown["steps"]} == {"forced"}


def test_cache_false_always_runs_but_downstream_uses_early_cutoff(harness, write_flow, log):
    body = """
        @step(cache=False)
        def volatile():
            mark("volatile")
            return 42

        @step
        def consumer(volatile):
            mark("consumer")
            return volatile + 1
    """
    path = write(write_flow, log, body)
    harness.run(path)
    reset(log)
    run = harness.run(path)
    assert executed(log) == ["volatile"]
    st = steps_of(run)
    assert st["volatile"].status == "succeeded"
    assert "cache" in st["volatile"].reason
    assert st["consumer"].status == "cached"


def test_version_option_invalidates(harness, write_flow, log):
    body = """
        @step(version="1")
        def v():
            mark("v")
            return 1
    """
    path = write(write_flow, log, body)
    harness.run(path)
    rewrite(path, log, body.replace('version="1"', 'version="2"'))
    run = harness.run(path)
    assert executed(log) == ["v", "v"]
    assert steps_of(run)["v"].status == "succeeded"


# ----- corrupt artifacts ------------------------------------------------------------------------


def test_a_corrupt_inline_artifact_is_detected_and_the_step_reruns(flow_cli, write_flow, log, store_dir):
    path = write(write_flow, log, CHAIN)
    assert flow_cli("run", str(path)).code == 0
    conn = sqlite3.connect(store_dir / "flow.db")
    shown = flow_cli("show", "last", "--json").json()
    digest = next(s["output_hash"] for s in shown["steps"] if s["name"] == "b")
    import pickle

    with conn:
        conn.execute("UPDATE artifacts SET data=? WHERE hash=?", (pickle.dumps(999), digest))
    conn.close()
    reset(log)
    result = flow_cli("run", str(path))
    assert result.code == 0, result
    assert executed(log) == ["b"]  # c is reused: b's recomputed output has the same hash again
    shown = flow_cli("show", "last", "--json").json()
    st = {s["name"]: s for s in shown["steps"]}
    assert st["b"]["status"] == "succeeded"
    assert st["b"]["reason"].startswith("its cached result could not be used: artifact "), st["b"]["reason"]
    assert "corrupt" in st["b"]["reason"]
    assert st["c"]["status"] == "cached"
    assert st["c"]["preview"] == "20"


def _corrupt_the_one_file_artifact(store_dir: Path) -> None:
    files = [p for p in (store_dir / "artifacts").rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert len(files) == 1
    data = bytearray(files[0].read_bytes())
    data[-5] ^= 0xFF  # same size, different content
    files[0].write_bytes(bytes(data))


BIG = """
    @step
    def big():
        mark("big")
        return b"x" * (2 << 20)

    @step
    def size(big):
        mark("size")
        return len(big)
"""


def test_a_corrupt_file_artifact_is_detected_and_the_step_reruns(flow_cli, write_flow, log, store_dir):
    path = write(write_flow, log, BIG)
    assert flow_cli("run", str(path)).code == 0
    _corrupt_the_one_file_artifact(store_dir)
    reset(log)
    result = flow_cli("run", str(path))
    assert result.code == 0, result
    assert executed(log) == ["big"]  # never used: re-run; `size` reuses (same output hash)


def test_a_corrupt_file_artifact_is_healed_for_downstream_steps(flow_cli, write_flow, log, store_dir):
    path = write(write_flow, log, BIG)
    assert flow_cli("run", str(path)).code == 0
    _corrupt_the_one_file_artifact(store_dir)
    path.write_text(path.read_text().replace("return len(big)", "return len(big) + 1"))
    reset(log)
    result = flow_cli("run", str(path))
    assert result.code == 0, result
    assert executed(log) == ["big", "size"]
    again = flow_cli("run", str(path))
    assert again.code == 0, again


def test_a_missing_file_artifact_reruns_the_step(harness, write_flow, log, store_dir):
    body = """
        @step
        def big():
            mark("big")
            return b"y" * (2 << 20)
    """
    path = write(write_flow, log, body)
    harness.run(path)
    for p in (store_dir / "artifacts").rglob("*"):
        if p.is_file():
            p.unlink()
    run = harness.run(path)
    assert executed(log) == ["big", "big"]
    assert steps_of(run)["big"].status == "succeeded"
    reason = steps_of(run)["big"].reason
    assert reason == "its cached result could not be used: its artifact file is gone or changed on disk"


def test_a_corrupt_inline_artifact_is_healed_by_the_rerun(harness, write_flow, log, store_dir):
    path = write(write_flow, log, CHAIN)
    first = harness.run(path)
    digest = steps_of(first)["b"].output_hash
    import pickle

    conn = sqlite3.connect(store_dir / "flow.db")
    with conn:
        conn.execute("UPDATE artifacts SET data=? WHERE hash=?", (pickle.dumps(999), digest))
    conn.close()
    harness.run(path)
    reset(log)
    third = harness.run(path)
    assert executed(log) == []
    assert set(statuses(third).values()) == {"cached"}


def test_a_corrupt_file_artifact_in_a_long_lived_engine(harness, write_flow, log, store_dir):
    path = write(write_flow, log, BIG)
    harness.run(path)
    _corrupt_the_one_file_artifact(store_dir)
    path.write_text(path.read_text().replace("return len(big)", "return len(big) + 1"))
    reset(log)
    run = harness.run(path)
    assert run.status == "succeeded", {s.name: s.error for s in run.steps}
    assert executed(log) == ["big", "size"]
