"""The engine's decisions about one step, as pure functions: no process, no store, no scheduler.

`runner.engine.decide.gate` (skip, ask a probe, proceed) and `decide` (reuse, refuse, wait, join,
execute) are driven with plain values and a recording `Lookups`, which also proves each lookup is made
only when the decision needs it (a forced step never costs a cache lookup).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from runner.engine.decide import (
    REFUSED,
    Ask,
    Execute,
    Facts,
    Join,
    Proceed,
    Refuse,
    Reusable,
    Reuse,
    Skip,
    Wait,
    decide,
    gate,
    trigger_blocks,
)
from runner.status import StepStatus

HIT = Reusable("out-hash", 3, "42")


@dataclass
class Recorded:
    """A `Lookups` answering from fixed values and recording what was asked, in order."""

    hit: Reusable | None = None
    who: str | None = None
    why_unusable: str | None = None
    why: str = "code changed"
    asked: list[str] = field(default_factory=list)

    def reusable(self) -> Reusable | None:
        self.asked.append("reusable")
        return self.hit

    def elsewhere(self) -> str | None:
        self.asked.append("elsewhere")
        return self.who

    def unusable(self) -> str | None:
        self.asked.append("unusable")
        return self.why_unusable

    def explain(self) -> str:
        self.asked.append("explain")
        return self.why


def facts(**changes: object) -> Facts:
    values: dict[str, object] = {
        "forced": False,
        "untrusted": None,
        "cache": True,
        "cache_only": False,
        "running_here": False,
    }
    values.update(changes)
    return Facts(**values)  # type: ignore[arg-type]


# ----- gate -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "upstream", "expected"),
    [
        ("all_succeeded", [], None),
        ("all_succeeded", [("a", "succeeded"), ("b", "cached")], None),
        ("all_succeeded", [("a", "succeeded"), ("b", "failed")], "upstream 'b' failed"),
        ("all_succeeded", [("a", "skipped")], "upstream 'a' was skipped"),
        ("all_succeeded", [("a", "failed"), ("b", "cancelled")], "upstream 'b' was cancelled"),
        ("all_done", [("a", "failed"), ("b", "cancelled")], None),
        ("none_failed", [("a", "skipped"), ("b", "succeeded")], None),
        ("none_failed", [("a", "skipped"), ("b", "failed")], "upstream 'b' failed"),
        ("any_succeeded", [("a", "failed"), ("b", "succeeded")], None),
        ("any_succeeded", [("a", "failed"), ("b", "skipped")], "no upstream step succeeded"),
    ],
)
def test_trigger_rules(rule: str, upstream: list[tuple[str, str]], expected: str | None) -> None:
    assert trigger_blocks(rule, upstream) == expected


def test_a_blocked_step_is_skipped_or_cancelled_after_a_cancelled_upstream() -> None:
    options = {"has_when": False, "when_checked": False, "has_foreach": False, "items_known": False}
    skipped = gate("all_succeeded", [("a", StepStatus.FAILED)], **options)
    assert skipped == Skip(StepStatus.SKIPPED, "upstream 'a' failed")
    cancelled = gate("all_succeeded", [("a", StepStatus.CANCELLED)], **options)
    assert cancelled == Skip(StepStatus.CANCELLED, "upstream 'a' was cancelled")


def test_user_code_is_asked_before_the_step_proceeds() -> None:
    ok = [("a", StepStatus.SUCCEEDED)]
    assert gate(
        "all_succeeded", ok, has_when=True, when_checked=False, has_foreach=True, items_known=False
    ) == Ask("when")
    assert gate(
        "all_succeeded", ok, has_when=True, when_checked=True, has_foreach=True, items_known=False
    ) == Ask("foreach")
    assert (
        gate("all_succeeded", ok, has_when=True, when_checked=True, has_foreach=True, items_known=True)
        == Proceed()
    )
    assert (
        gate("all_succeeded", ok, has_when=False, when_checked=False, has_foreach=False, items_known=False)
        == Proceed()
    )


def test_a_skip_wins_over_asking() -> None:
    """A step whose upstream failed is skipped without running its `when=` predicate."""
    verdict = gate(
        "all_succeeded",
        [("a", "failed")],
        has_when=True,
        when_checked=False,
        has_foreach=False,
        items_known=False,
    )
    assert isinstance(verdict, Skip)


# ----- decide ---------------------------------------------------------------------------------------


def test_a_stored_result_is_reused_after_one_lookup() -> None:
    lookups = Recorded(hit=HIT)
    assert decide(facts(), lookups) == Reuse(HIT)
    assert lookups.asked == ["reusable"]


def test_a_forced_step_executes_without_looking_anything_up() -> None:
    lookups = Recorded(hit=HIT, who="run #2")
    assert decide(facts(forced=True), lookups) == Execute("forced")
    assert lookups.asked == []


def test_a_forced_step_starts_its_own_execution_even_if_one_runs() -> None:
    assert decide(facts(forced=True, running_here=True), Recorded()) == Execute("forced")


def test_an_untrusted_step_always_executes() -> None:
    lookups = Recorded(hit=HIT)
    decision = decide(facts(untrusted="a module imported by a computed name"), lookups)
    assert decision == Execute("cannot fingerprint (a module imported by a computed name); always runs")
    assert lookups.asked == []


def test_upstream_of_a_selection_it_reuses_or_refuses_never_executes() -> None:
    assert decide(facts(cache_only=True), Recorded(hit=HIT)) == Reuse(HIT)
    lookups = Recorded()
    assert decide(facts(cache_only=True), lookups) == Refuse(REFUSED)
    assert lookups.asked == ["reusable"], "no lease is taken for a step that will not run"


def test_it_waits_for_another_process_computing_the_same_fingerprint() -> None:
    lookups = Recorded(who="process 4242")
    assert decide(facts(), lookups) == Wait("process 4242")
    assert lookups.asked == ["reusable", "elsewhere"]


def test_it_joins_the_execution_already_running_here_without_asking_other_processes() -> None:
    lookups = Recorded(who="process 4242")
    assert decide(facts(running_here=True), lookups) == Join("code changed")
    assert lookups.asked == ["reusable", "unusable", "explain"]


def test_the_reason_to_execute() -> None:
    assert decide(facts(cache=False), Recorded()) == Execute("cache disabled (cache=False)")
    unusable = Recorded(why_unusable="its artifact file is gone or changed on disk")
    assert decide(facts(), unusable) == Execute(
        "its cached result could not be used: its artifact file is gone or changed on disk"
    )
    assert unusable.asked == ["reusable", "elsewhere", "unusable"], "no explanation needed then"
    explained = Recorded(why="upstream output changed: load")
    assert decide(facts(), explained) == Execute("upstream output changed: load")
    assert explained.asked == ["reusable", "elsewhere", "unusable", "explain"]
