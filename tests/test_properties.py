"""Property-based tests (hypothesis) over random DAGs, on the real engine with worker processes.

- Every step runs at most once per run, and only after every one of its upstream steps finished
  (checked on the engine's event order and on side-effect files the steps write).
- After an edit to random steps, exactly the steps whose fingerprints changed re-execute: the edited
  steps, plus the descendants of the edited steps whose output changed (early cut-off: a code-only
  edit that leaves the output alone does not invalidate downstream).
"""

from __future__ import annotations

import collections
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.events import StepFinished, StepStarted
from tests.conftest import EngineHarness


@st.composite
def dags(draw: st.DrawFn) -> dict[int, list[int]]:
    """node -> its upstream nodes (all smaller: acyclic by construction)."""
    n = draw(st.integers(min_value=2, max_value=8))
    graph: dict[int, list[int]] = {}
    for node in range(n):
        candidates = list(range(node))
        ups = draw(st.lists(st.sampled_from(candidates), unique=True, max_size=3)) if candidates else []
        graph[node] = sorted(ups)
    return graph


def render(
    graph: dict[int, list[int]], versions: dict[int, int], noise: dict[int, int], effects: Path
) -> str:
    lines = ["from dsl import step", ""]
    for node, ups in graph.items():
        args = ", ".join(f"s{u}" for u in ups)
        lines += [
            "@step",
            f"def s{node}({args}):",
            f"    open({str(effects)!r}, 'a').write('s{node}\\n')",
        ]
        if noise[node]:
            lines.append(f"    _noise = {noise[node]}  # a code edit that leaves the output alone")
        inputs = " + ".join(f"'|' + str(s{u})" for u in ups) or "''"
        lines += [f"    return 's{node}v{versions[node]}' + {inputs}", ""]
    return "\n".join(lines)


def descendants(graph: dict[int, list[int]], roots: set[int]) -> set[int]:
    down: dict[int, list[int]] = collections.defaultdict(list)
    for node, ups in graph.items():
        for u in ups:
            down[u].append(node)
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        for child in down[stack.pop()]:
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return seen


def check_order(events: list, run_id: int, graph: dict[int, list[int]]) -> list[str]:
    """Assert the at-most-once and after-upstream properties; return the steps that executed."""
    finished_at: dict[str, int] = {}
    started: collections.Counter[str] = collections.Counter()
    for index, event in enumerate(events):
        if getattr(event, "run_id", None) != run_id:
            continue
        if isinstance(event, StepStarted):
            started[event.step] += 1
            node = int(event.step[1:])
            for u in graph[node]:
                assert f"s{u}" in finished_at, f"{event.step} started before its upstream s{u} finished"
        elif isinstance(event, StepFinished):
            assert event.step not in finished_at, f"{event.step} finished twice"
            finished_at[event.step] = index
            node = int(event.step[1:])
            for u in graph[node]:
                assert finished_at[f"s{u}"] < index
    assert all(count == 1 for count in started.values()), started
    assert set(finished_at) == {f"s{n}" for n in graph}
    return sorted(started)


@settings(max_examples=15, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    graph=dags(),
    data=st.data(),
)
def test_random_dags_run_in_order_once_and_reexecute_exactly_what_changed(graph, data) -> None:
    nodes = sorted(graph)
    output_edits = set(data.draw(st.lists(st.sampled_from(nodes), unique=True, max_size=3), label="output"))
    code_edits = set(data.draw(st.lists(st.sampled_from(nodes), unique=True, max_size=2), label="code"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        effects = root / "effects.txt"
        flow = root / "project" / "dag.py"
        flow.parent.mkdir()
        versions = {n: 0 for n in nodes}
        noise = {n: 0 for n in nodes}
        flow.write_text(render(graph, versions, noise, effects), encoding="utf-8")
        harness = EngineHarness(root / "store", workers=2)
        try:
            first = harness.run(flow)
            assert first.status == "succeeded"
            executed = check_order(harness.events, first.id, graph)
            assert executed == sorted(f"s{n}" for n in nodes)
            assert sorted(effects.read_text().split()) == executed, "each step's body ran exactly once"
            effects.write_text("")

            for n in output_edits:
                versions[n] += 1
            for n in code_edits:
                noise[n] += 1
            flow.write_text(render(graph, versions, noise, effects), encoding="utf-8")
            second = harness.run(flow)
            assert second.status == "succeeded"
            executed = check_order(harness.events, second.id, graph)
            expected = sorted(f"s{n}" for n in output_edits | code_edits | descendants(graph, output_edits))
            assert executed == expected, (graph, output_edits, code_edits)
            assert sorted(effects.read_text().split()) == expected
            statuses = {s.name: s.status for s in second.steps}
            assert {n for n, s in statuses.items() if s == "cached"} == {f"s{n}" for n in nodes} - set(
                expected
            )
        finally:
            harness.close()
