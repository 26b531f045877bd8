"""Property (issue 13): after any sequence of edits, "cached" means "identical to re-running it".

A generated project reaches its code every way the fingerprint must follow: functions held in a
dict, closures made by one factory, a `functools.partial`, a local module imported by the flow, a
module imported inside a step body that imports another in turn, and a dict whose key order is an
output. Hypothesis draws edits to any of them (reverts included: an old fingerprint must still mean
the old result); after each one the outputs of a normal run (from the cache where it says it may)
must equal those of a `--force` run. The engine is real: worker processes that stay warm across the
edits, the store on disk.
"""

from __future__ import annotations

import tempfile
import textwrap
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import EngineHarness

KNOBS = ("plus_a", "plus_b", "factor", "partial_y", "lib", "inner", "deep", "order")


FLOW = """
import functools

import lib
from dsl import step


def add_a(x):
    return x + {plus_a}


def add_b(x):
    return x + {plus_b}


TABLE = {{"a": add_a, "b": add_b}}


def make(factor):
    def scale(x):
        return x * factor
    return scale


double = make(2)
scale = make({factor})


def combine(x, y):
    return x * 100 + y


with_y = functools.partial(combine, y={partial_y})
ORDER = {order}


@step
def table():
    return TABLE["a"](1) + TABLE["b"](1)


@step
def closure():
    return double(1) + scale(1)


@step
def partial():
    return with_y(1)


@step
def module():
    return lib.bump(1)


@step
def inner():
    import inner_mod
    return inner_mod.value()


@step
def order():
    return ",".join(ORDER)


@step
def total(table, closure, partial, module, inner, order):
    return [table, closure, partial, module, inner, order]
"""

FILES = {
    "lib.py": "def bump(x):\n    return x + {lib}\n",
    "inner_mod.py": "from deep import DEEP\n\n\ndef value():\n    return DEEP * 10 + {inner}\n",
    "deep.py": "DEEP = {deep}\n",
}

ORDERS = ('{"p": 1, "q": 2}', '{"q": 2, "p": 1}')


def render(project: Path, knobs: dict[str, int]) -> Path:
    values = {**knobs, "order": ORDERS[knobs["order"] % 2]}
    for name, text in FILES.items():
        (project / name).write_text(text.format(**values), encoding="utf-8")
    path = project / "flow.py"
    path.write_text(textwrap.dedent(FLOW).format(**values), encoding="utf-8")
    return path


def outputs(run: object) -> dict[str, str | None]:
    return {s.name: s.output_hash for s in run.steps}  # type: ignore[attr-defined]


edits = st.lists(
    st.tuples(st.sampled_from(KNOBS), st.integers(min_value=0, max_value=3)), min_size=1, max_size=6
)


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(edits=edits)
def test_after_any_edits_cached_outputs_equal_forced_outputs(edits: list[tuple[str, int]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "project"
        project.mkdir()
        knobs = dict.fromkeys(KNOBS, 0)
        harness = EngineHarness(Path(tmp) / "store", workers=2)
        try:
            path = render(project, knobs)
            assert harness.run(path).status == "succeeded"
            for knob, value in edits:
                knobs[knob] = value
                render(project, knobs)
                cached = harness.run(path)
                forced = harness.run(path, force=True)
                assert cached.status == forced.status == "succeeded"
                assert outputs(cached) == outputs(forced), (knob, value, knobs)
        finally:
            harness.close()
