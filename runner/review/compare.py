"""Provides `compare_runs`: two runs of one flow side by side, as `flow diff` and the TUI's compare view
show them: parameters added, removed or changed; metrics with both values and the delta; the steps
whose status, fingerprint or output differ, with the code diff behind a changed fingerprint and whether
their outputs are equal (by content hash) with short previews.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from dsl.errors import FlowError
from runner.fingerprint import explain
from runner.records import RunRecord, StepRecord
from runner.review.sources import CodeChange, code_changes
from runner.store import Store

_ABSENT = object()


@dataclass(frozen=True)
class ParamChange:
    """A parameter that differs: `change` is `added`, `removed` or `changed`."""

    change: str
    a: Any = None
    b: Any = None


@dataclass(frozen=True)
class MetricChange:
    """A metric in either run: both values (None where absent) and `b - a` when both exist."""

    a: float | None
    b: float | None
    delta: float | None


@dataclass(frozen=True)
class StepChange:
    """A step whose status, fingerprint or output differ between the runs.

    Attributes:
        step: its name.
        status: its status in each run (None: not in that run).
        fingerprint_changed: its fingerprints differ (so what it computes from differs).
        why: what differs in its fingerprint, in `explain`'s words (`code changed`, …), or None.
        output: `equal`, `different`, or `missing` (a side has no output).
        preview: the short repr of its output in each run.
        code: the diffs of its code and helpers, where they changed.
    """

    step: str
    status: tuple[str | None, str | None]
    fingerprint_changed: bool
    why: str | None
    output: str
    preview: tuple[str | None, str | None]
    output_hash: tuple[str | None, str | None]
    code: list[CodeChange] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"], data["preview"] = list(self.status), list(self.preview)
        data["output_hash"] = list(self.output_hash)
        data["code"] = [c.as_dict() for c in self.code]
        return data


@dataclass(frozen=True)
class Comparison:
    """`flow diff A B`: run `a` against run `b` (of one flow)."""

    a: RunRecord
    b: RunRecord
    params: dict[str, ParamChange]
    metrics: dict[str, MetricChange]
    steps: list[StepChange]
    unchanged: int
    """Steps present in both runs with the same status, fingerprint and output."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "flow": self.a.flow,
            "a": self.a.id,
            "b": self.b.id,
            "params": {k: asdict(v) for k, v in self.params.items()},
            "metrics": {k: asdict(v) for k, v in self.metrics.items()},
            "steps": [s.as_dict() for s in self.steps],
            "unchanged": self.unchanged,
        }


def _params(a: dict[str, Any], b: dict[str, Any]) -> dict[str, ParamChange]:
    found: dict[str, ParamChange] = {}
    for name in [*a, *(k for k in b if k not in a)]:
        before, after = a.get(name, _ABSENT), b.get(name, _ABSENT)
        if before is _ABSENT:
            found[name] = ParamChange("added", None, after)
        elif after is _ABSENT:
            found[name] = ParamChange("removed", before, None)
        elif before != after:
            found[name] = ParamChange("changed", before, after)
    return found


def _metrics(a: dict[str, float], b: dict[str, float]) -> dict[str, MetricChange]:
    found: dict[str, MetricChange] = {}
    for name in [*a, *(k for k in b if k not in a)]:
        before, after = a.get(name), b.get(name)
        delta = after - before if before is not None and after is not None else None
        found[name] = MetricChange(before, after, delta)
    return found


def _output(a: StepRecord | None, b: StepRecord | None) -> str:
    left = a.output_hash if a is not None else None
    right = b.output_hash if b is not None else None
    if left is None or right is None:
        return "missing"
    return "equal" if left == right else "different"


def compare_runs(store: Store, a: RunRecord, b: RunRecord) -> Comparison:
    """Compare run `a` with run `b`.

    Raises:
        FlowError: they are runs of different flows.
    """
    if a.flow != b.flow:
        raise FlowError(
            f"run #{a.id} is of flow '{a.flow}' and run #{b.id} of flow '{b.flow}': flow diff compares "
            "two runs of one flow"
        )
    details_a, details_b = store.run_details(a.id), store.run_details(b.id)
    steps_a = {s.name: s for s in a.steps}
    steps_b = {s.name: s for s in b.steps}
    changes: list[StepChange] = []
    unchanged = 0
    for name in [*steps_a, *(n for n in steps_b if n not in steps_a)]:
        left, right = steps_a.get(name), steps_b.get(name)
        status = (left.status if left else None, right.status if right else None)
        prints = (left.fingerprint if left else None, right.fingerprint if right else None)
        output = _output(left, right)
        changed_print = prints[0] != prints[1]
        if status[0] == status[1] and not changed_print and output == "equal":
            unchanged += 1
            continue
        before, after = details_a.get(name), details_b.get(name)
        why = explain(before, after) if changed_print and before and after else None
        code = (
            code_changes(
                before, after, {}, store.source_texts, old_name=f"run #{a.id}", new_name=f"run #{b.id}"
            )
            if changed_print and before and after
            else []
        )
        changes.append(
            StepChange(
                name,
                status,
                changed_print,
                why,
                output,
                (left.preview if left else None, right.preview if right else None),
                (left.output_hash if left else None, right.output_hash if right else None),
                code,
            )
        )
    return Comparison(a, b, _params(a.params, b.params), _metrics(a.metrics, b.metrics), changes, unchanged)
