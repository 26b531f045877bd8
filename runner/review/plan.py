"""Provides `make_plan`: what `flow run` with the same arguments would do with each step, and why,
without running or recording anything.

The plan walks the graph in order and asks, for each step, the engine's own decisions: `gate` (trigger
rules) and `decide` (reuse, refuse, wait, execute), with the fingerprint `combine` builds and the
reason `explain` gives, the very functions a run calls (`runner.engine.decide`, `runner.fingerprint`).
Only the lookups differ (`_PlanLookups`): they read the store and never write it (no lease is taken,
a broken cache entry is reported, not forgotten).

What a plan cannot know, it says:

- a step downstream of one that will run gets that step's new output, unknown until it exists: it
  runs unless its upstream returns the same bytes (early cut-off), so its reason is
  `upstream will re-run: X`;
- a `when=` predicate and a `foreach` iteration are user code, which never runs in the runner (see
  `runner.probes`); a plan does not start workers to run them either. A `when=` step is planned as if
  its predicate held, with that said in `condition`; a `foreach` step's instances depend on its items,
  so its action is `unknown`;
- another process computing the same fingerprint right now: `waiting`; a step downstream of it
  (and of nothing this run re-runs) depends on that process's output, and that process may compute
  it too, so its action is `unknown`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from dsl.errors import FlowError
from dsl.loader import LoadedFlow
from runner.artifacts import ArtifactError
from runner.engine.decide import Execute, Facts, Refuse, Reusable, Reuse, Skip, Wait, decide, gate
from runner.engine.model import NONE_OUTPUT_HASH
from runner.fingerprint import StaticPrint, Untrusted, combine, explain, static_prints, value_hash
from runner.fingerprint.declared import declared_inputs
from runner.selection import external_inputs, select_steps
from runner.status import StepStatus
from runner.store import Store

RUN, CACHED, SKIPPED, WAITING, UNKNOWN = "run", "cached", "skipped", "waiting", "unknown"
"""A planned step's `action`."""

_PENDING = "\0pending:"
"""Marks, in a planned fingerprint's inputs, the output of an upstream step not known before it runs."""


@dataclass(frozen=True)
class PlannedStep:
    """What a run would do with one step.

    Attributes:
        step: its name.
        action: `run`, `cached`, `skipped`, `waiting` or `unknown` (see the module's docstring).
        reason: why, in the words `flow show` uses for a run.
        selected: inside the selection (`--only/--from/--to`); outside, it is reused or refused.
        condition: what the action rests on that a plan cannot check (a `when=` predicate), or None.
        cached_from: the run that computed the result it would reuse.
        fingerprint: its fingerprint, where known before the run.
        previous: its fingerprint parts in the flow's latest run that decided it (for the code diff).
        current: its fingerprint parts now.
    """

    step: str
    action: str
    reason: str
    selected: bool = True
    condition: str | None = None
    cached_from: int | None = None
    fingerprint: str | None = None
    previous: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    current: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["previous"], data["current"]
        return data


@dataclass
class Plan:
    """A whole plan: the flow, its parameters, and one `PlannedStep` per step in scope (and each step
    upstream of the selection that the selection needs), in graph order."""

    flow: str
    file: str
    params: dict[str, Any]
    steps: list[PlannedStep]
    static: dict[str, StaticPrint] = field(repr=False)

    @property
    def would_run(self) -> list[PlannedStep]:
        """The steps whose results are not current: they run, may run, or wait for another process."""
        return [s for s in self.steps if s.action in (RUN, UNKNOWN, WAITING)]


class _PlanLookups:
    """`decide`'s lookups for a plan: read-only (see `runner.engine.deciding._Lookups`, the run's)."""

    def __init__(
        self,
        store: Store | None,
        fingerprint: str | None,
        cache: bool,
        previous: dict[str, Any] | None,
        detail: dict[str, Any],
    ) -> None:
        self._store = store
        self._fingerprint = fingerprint
        self._cache = cache
        self._previous = previous
        self._detail = detail
        self._unusable: str | None = None

    def reusable(self) -> Reusable | None:
        if self._store is None or self._fingerprint is None or not self._cache:
            return None  # a `cache=False` step reuses only a resumed run's result
        hit = self._store.lookup(self._fingerprint, verify=True)
        if hit is None:
            return None
        if not hit.intact:
            try:
                self._store.artifact_location(hit.output_hash)
            except ArtifactError as exc:
                self._unusable = str(exc)
                return None
        return Reusable(hit.output_hash, hit.run_id, hit.preview)

    def elsewhere(self) -> str | None:
        if self._store is None or self._fingerprint is None:
            return None
        other = self._store.running_elsewhere(self._fingerprint)
        if other is not None:
            return f"run #{other}"
        holder = self._store.lease_holder(self._fingerprint)
        return f"process {holder.pid}" if holder is not None else None

    def unusable(self) -> str | None:
        return self._unusable

    def explain(self) -> str:
        return explain(self._previous, self._detail)


def _upstream_reason(reason: str, rerun: set[str]) -> str | None:
    """`explain`'s "upstream output changed: X" where X's output is not known yet: what a plan says."""
    if not reason.startswith("upstream output changed: "):
        return None
    names = reason.removeprefix("upstream output changed: ").split(", ")
    will = [n for n in names if n in rerun]
    if will:
        return f"upstream will re-run: {', '.join(will)}"
    return f"depends on the output of {', '.join(names)} (not known before it runs)"


def make_plan(
    store: Store | None,
    loaded: LoadedFlow,
    params: dict[str, Any],
    *,
    only: tuple[str, ...] = (),
    from_steps: tuple[str, ...] = (),
    to_steps: tuple[str, ...] = (),
    force: bool = False,
    static: dict[str, StaticPrint] | None = None,
) -> Plan:
    """Plan a run of `loaded` with `params` (resolved as `flow run` resolves them) and a selection.

    `store` None: there is no store yet, so nothing is cached. `static`: the load's static
    fingerprints, where they are already known (an engine keeps them per load); else computed here.

    Raises:
        FlowError: the selection names no step, or a run would refuse to start (a step upstream of
            the selection with no cached result), exactly as `flow run` would.
    """
    graph = loaded.graph
    scope = select_steps(graph, only, from_steps, to_steps)
    external = external_inputs(graph, scope)
    inside = set(scope)
    if static is None:
        static = static_prints(loaded)
    previous = store.previous_details(loaded.name) if store is not None else {}
    outputs: dict[str, str] = {}
    """Step -> its output's hash as a run would have it, or a `_PENDING` mark."""
    statuses: dict[str, str] = {}
    rerun: set[str] = set()
    elsewhere: set[str] = set()
    """Steps whose output another process is computing (or that depend on such an output)."""
    planned: list[PlannedStep] = []
    param_hashes: dict[str, str] = {}
    for name in graph.order:
        if name not in inside and name not in external:
            continue
        node = graph.nodes[name]
        item = node.step
        selected = name in inside
        verdict = gate(
            item.trigger,
            [(u, statuses[u]) for u in node.upstream],
            has_when=item.when is not None,
            when_checked=True,
            has_foreach=item.foreach is not None,
            items_known=False,
        )
        if isinstance(verdict, Skip):
            statuses[name] = verdict.status
            outputs[name] = NONE_OUTPUT_HASH
            planned.append(PlannedStep(name, SKIPPED, verdict.reason, selected))
            continue
        pending = [u for u in node.upstream if outputs[u].startswith(_PENDING)]
        condition = None
        if item.when is not None:
            reads = [a for a in node.when_args if a in pending]
            condition = (
                f"if its when= predicate holds (it reads {', '.join(reads)}'s new output)"
                if reads
                else "if its when= predicate holds (user code: a plan does not run it)"
            )
        statuses[name] = StepStatus.SUCCEEDED  # as its downstream steps see it, if it does succeed
        outputs[name] = _PENDING + name
        if item.foreach is not None:
            over = item.foreach
            source = node.inputs.get(over)
            why = (
                f"fan-out over {over}: depends on {source}'s new output"
                if source in pending
                else f"fan-out over {over}: each item is decided when the run iterates it (user code)"
            )
            if force and selected:
                planned.append(PlannedStep(name, RUN, "forced", selected, condition))
                rerun.add(name)
            else:
                planned.append(PlannedStep(name, UNKNOWN, why, selected, condition))
            continue
        step_static = static[name]
        values: dict[str, str] = {}
        try:
            for p in node.params:
                if p not in param_hashes:
                    param_hashes[p] = value_hash(params[p])
                values[p] = param_hashes[p]
        except Untrusted as exc:
            step_static = StaticPrint(code="", untrusted=f"parameter value: {exc}")
        inputs = {u: outputs[u] for u in node.upstream}
        declared = declared_inputs(item, loaded.root) if item.inputs or item.env else None
        fingerprint, detail = combine(step_static, values, inputs, declared=declared)
        known = not pending and not step_static.untrusted
        facts = Facts(
            forced=force and selected,
            untrusted=step_static.untrusted or None,
            cache=item.cache,
            cache_only=not selected,
            running_here=False,
        )
        before = previous.get(name)
        lookups = _PlanLookups(store, fingerprint if known else None, item.cache, before, detail)
        decision = decide(facts, lookups)
        if isinstance(decision, Reuse):
            outputs[name] = decision.found.output_hash
            statuses[name] = StepStatus.CACHED
            where = f"run #{decision.found.run_id}" if decision.found.run_id else "the cache"
            planned.append(
                PlannedStep(
                    name,
                    CACHED,
                    f"cached: same fingerprint as {where}",
                    selected,
                    condition,
                    decision.found.run_id,
                    fingerprint,
                    before,
                    detail,
                )
            )
            continue
        if isinstance(decision, Refuse):
            if pending:
                decision = Refuse(
                    f"it is upstream of the selected steps and depends on {', '.join(pending)}, which "
                    "has no cached result either; run them first (or drop --only/--from)"
                )
            raise FlowError(decision.message, step=name)
        shown = fingerprint if known else None
        if isinstance(decision, Wait):
            elsewhere.add(name)
            planned.append(
                PlannedStep(
                    name,
                    WAITING,
                    f"waiting: {decision.who} is computing the same step",
                    selected,
                    condition,
                    None,
                    shown,
                    before,
                    detail,
                )
            )
            continue
        assert isinstance(decision, Execute)  # a plan runs nothing, so there is nothing to join
        reason = decision.reason
        action = RUN
        upstream = _upstream_reason(reason, rerun) if pending else None
        always = facts.forced or facts.untrusted is not None or not item.cache
        if upstream is None and not always and elsewhere & set(pending) and not rerun & set(pending):
            # Its inputs come from another process, which may compute this step too: then it is reused.
            elsewhere.add(name)
            upstream = f"depends on the output of {', '.join(pending)} (not known before it runs)"
        if upstream is not None:
            reason = upstream
            action = RUN if upstream.startswith("upstream will re-run") else UNKNOWN
        if action == RUN:
            rerun.add(name)
        planned.append(PlannedStep(name, action, reason, selected, condition, None, shown, before, detail))
    return Plan(loaded.name, str(loaded.path), dict(params), planned, static)
