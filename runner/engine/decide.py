"""Provides the engine's decisions about one step, as pure functions of what is known about it.

A step is decided in two stages, because its fingerprint can only be computed in between (it needs its
upstream outputs, and a `foreach` step its items):

- `gate`: once every upstream step is final: skip it (its trigger rule says so), ask a probe (a `when=`
  predicate or a `foreach` iteration is user code, run as a task), or proceed;
- `decide`: once its fingerprint is known: reuse a stored result, refuse (a step upstream of a selection
  with nothing cached), wait for another process computing the same fingerprint, join the execution
  already running here, or execute it.

Nothing here touches a process, a store or the scheduler: what `decide` must look up (the cache, other
processes, the previous fingerprint) it asks of a `Lookups` the scheduler provides, lazily and in the
order the answers are needed, so a step that is forced never costs a cache lookup. Unit tests drive both
functions with plain values (`tests/test_engine_decide.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

from runner.status import OK, StepStatus


@dataclass(frozen=True)
class Skip:
    """The step does not run: `status` is `skipped` (or `cancelled`, after a cancelled upstream)."""

    status: StepStatus
    reason: str


@dataclass(frozen=True)
class Ask:
    """User code must answer first: the `when=` predicate, or the `foreach` iteration."""

    kind: Literal["when", "foreach"]


@dataclass(frozen=True)
class Proceed:
    """The step runs (or is reused): compute its fingerprint and `decide`."""


class Reusable(NamedTuple):
    """A stored result the step may reuse: its output hash, the run that computed it, its preview (a
    tuple, made once per step a re-run reuses)."""

    output_hash: str
    run_id: int | None
    preview: str | None


@dataclass(frozen=True)
class Reuse:
    """Take the stored result: the step ends `cached`."""

    found: Reusable


@dataclass(frozen=True)
class Refuse:
    """The step is upstream of the selection (`--only`/`--from`) and nothing is cached for it."""

    message: str


@dataclass(frozen=True)
class Wait:
    """Another process is computing this fingerprint (`who`): look again soon."""

    who: str


@dataclass(frozen=True)
class Join:
    """An execution of this fingerprint already runs here: wait on it too."""

    reason: str


@dataclass(frozen=True)
class Execute:
    """Run the step; `reason` says why (shown in the history and by `flow show`)."""

    reason: str


PROCEED = Proceed()
"""The one `Proceed` (most steps proceed: no need for a new object each time)."""

Gate = Skip | Ask | Proceed
Decision = Reuse | Refuse | Wait | Join | Execute

REFUSED = (
    "it is upstream of the selected steps but has no cached result for the current code and "
    "parameters; run it first (or drop --only/--from)"
)


def trigger_blocks(rule: str, upstream: Sequence[tuple[str, str]]) -> str | None:
    """None if the trigger rule lets the step run given its upstream `(name, status)`s, else why it is
    skipped (or cancelled)."""
    if not upstream or rule == "all_done":
        return None
    cancelled = [name for name, status in upstream if status == StepStatus.CANCELLED]
    if cancelled:
        return f"upstream '{cancelled[0]}' was cancelled"
    failed = [name for name, status in upstream if status == StepStatus.FAILED]
    not_ok = [(name, status) for name, status in upstream if status not in OK]
    if rule == "all_succeeded" and not_ok:
        name, status = not_ok[0]
        verb = "failed" if status == StepStatus.FAILED else "was skipped"
        return f"upstream '{name}' {verb}"
    if rule == "none_failed" and failed:
        return f"upstream '{failed[0]}' failed"
    if rule == "any_succeeded" and len(not_ok) == len(upstream):
        return "no upstream step succeeded"
    return None


def gate(
    rule: str,
    upstream: Sequence[tuple[str, str]],
    *,
    has_when: bool,
    when_checked: bool,
    has_foreach: bool,
    items_known: bool,
) -> Gate:
    """Every upstream step is final: skip the step, ask a probe, or proceed to `decide`."""
    blocked = trigger_blocks(rule, upstream)
    if blocked is not None:
        status = StepStatus.CANCELLED if "cancelled" in blocked else StepStatus.SKIPPED
        return Skip(status, blocked)
    if has_when and not when_checked:
        return Ask("when")
    if has_foreach and not items_known:
        return Ask("foreach")
    return PROCEED


class Facts(NamedTuple):
    """What the scheduler knows of a step at no cost once its fingerprint is computed (a named tuple:
    one is made for every step a run decides, cached ones included).

    Attributes:
        forced: `--force`, or a step of `force_steps`: executes even when cached.
        untrusted: why the step cannot be fingerprinted (then it always executes), or None.
        cache: the step's `cache=` option.
        cache_only: the step is upstream of the selection: reuse or refuse, never execute.
        running_here: an execution of this fingerprint is in flight in this engine.
    """

    forced: bool
    untrusted: str | None
    cache: bool
    cache_only: bool
    running_here: bool


class Lookups(Protocol):
    """What `decide` may need to look up, asked only when needed and in this order."""

    def reusable(self) -> Reusable | None:
        """A stored result for the fingerprint that is present and intact (cache, or resumed run)."""
        ...

    def elsewhere(self) -> str | None:
        """Who else computes the fingerprint now ("run #3", "process 123"), or None: it is ours."""
        ...

    def unusable(self) -> str | None:
        """Why the stored result for the fingerprint turned out unusable, if it did (asked once)."""
        ...

    def explain(self) -> str:
        """Why the step runs, compared with its previous fingerprint."""
        ...


def decide(facts: Facts, lookups: Lookups) -> Decision:
    """The step's fingerprint is known: reuse, refuse, wait, join or execute."""
    trusted = facts.untrusted is None
    if not facts.forced and trusted:
        found = lookups.reusable()
        if found is not None:
            return Reuse(found)
    if facts.cache_only:
        return Refuse(REFUSED)
    if not facts.forced and trusted and not facts.running_here:
        who = lookups.elsewhere()
        if who is not None:
            return Wait(who)
    reason = _reason(facts, lookups)
    if facts.running_here and not facts.forced:
        return Join(reason)
    return Execute(reason)


def _reason(facts: Facts, lookups: Lookups) -> str:
    if facts.forced:
        return "forced"
    if facts.untrusted is not None:
        return f"cannot fingerprint ({facts.untrusted}); always runs"
    if not facts.cache:
        return "cache disabled (cache=False)"
    unusable = lookups.unusable()
    if unusable is not None:
        return f"its cached result could not be used: {unusable}"
    return lookups.explain()
