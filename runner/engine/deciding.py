"""Provides `Deciding`: a ready step's fingerprint and what to do about it — skip, ask a probe, fan out,
reuse, wait for another process, join the execution already running, or execute. The decisions are
`runner.engine.decide`'s pure functions; this part gathers what they need and acts on the answer."""

from __future__ import annotations

import functools
import sys
import time
import uuid
from typing import Any

from dsl.errors import FlowError
from dsl.graph import Node
from runner.artifacts import content_hash
from runner.engine.cache_index import CacheIndex
from runner.engine.chaining import TaskError
from runner.engine.decide import Ask, Facts, Join, Refuse, Reusable, Reuse, Skip, Wait, decide, gate
from runner.engine.leases import Claims
from runner.engine.model import NONE_OUTPUT_HASH, READY, Execution, Output, Run, StepState
from runner.engine.probing import Probing
from runner.events import StepStarted
from runner.fingerprint import StaticPrint, Untrusted, combine, explain
from runner.fingerprint.declared import declared_inputs
from runner.status import FINAL, OK, StepStatus

REMOTE_POLL_S = 0.1
"""How often a step waiting on another process's computation of the same fingerprint checks again."""


class _Lookups:
    """What `decide` may look up about one step, from the engine's memory and the store."""

    __slots__ = ("_index", "_claims", "_run", "_name", "_fingerprint", "_detail")

    def __init__(
        self,
        index: CacheIndex,
        claims: Claims,
        run: Run,
        name: str,
        fingerprint: str,
        detail: dict[str, Any],
    ) -> None:
        self._index = index
        self._claims = claims
        self._run = run
        self._name = name
        self._fingerprint = fingerprint
        self._detail = detail

    def reusable(self) -> Reusable | None:
        """Nothing: the engine asks the cache index before it asks `decide`, which asks this only
        where the engine did (`Deciding._execute_or_reuse`)."""
        return None

    def elsewhere(self) -> str | None:
        return self._claims.computing_elsewhere(self._fingerprint)

    def unusable(self) -> str | None:
        return self._index.pop_unusable(self._fingerprint)

    def explain(self) -> str:
        return explain(self._index.previous_detail(self._run, self._name), self._detail)


@functools.lru_cache(maxsize=64)
def _reuse_reason(run_id: int | None) -> str:
    """A cached step's reason (made once per run it reuses, not once per step)."""
    return f"cached: same fingerprint as {f'run #{run_id}' if run_id else 'the cache'}"


class Deciding(Probing):
    """Deciding ready steps (see `runner.engine.state`)."""

    def _advance(
        self,
        run: Run,
        name: str,
        *,
        cache_only: bool = False,
        when_checked: bool = False,
        items: list[bytes] | None = None,
    ) -> None:
        """All upstream steps of `name` are final: skip it, reuse a cached result, or execute it.

        A `when=` predicate or a `foreach` iteration is user code: it is asked of a probe task
        (`_ask`), and the step is advanced again with the answer (`when_checked`, `items`)."""
        node: Node = run.graph.nodes[name]
        item = node.step
        states = run.states
        inputs: dict[str, str] = {}
        gated = item.when is not None or item.foreach is not None
        for u in node.upstream:
            upstream = states[u]
            gated = gated or upstream.status not in OK
            output = upstream.output
            inputs[u] = output.hash if output is not None else NONE_OUTPUT_HASH
        if gated:
            # Not the common case (every upstream step succeeded or cached, nothing to ask), in which
            # every trigger rule proceeds: `gate` decides.
            verdict = gate(
                item.trigger,
                [(u, states[u].status) for u in node.upstream],
                has_when=item.when is not None,
                when_checked=when_checked,
                has_foreach=item.foreach is not None,
                items_known=items is not None,
            )
            if isinstance(verdict, Skip):
                self._finish(run, name, verdict.status, reason=verdict.reason)
                return
            if isinstance(verdict, Ask):
                args = node.when_args if verdict.kind == "when" else (item.foreach or "",)
                self._ask(run, name, verdict.kind, args, cache_only)
                return
        static = run.static[name]
        params = {}
        try:
            for p in node.params:
                params[p] = run.param_hash(p)
        except Untrusted as exc:
            static = StaticPrint(code="", untrusted=f"parameter value: {exc}")
        declared = declared_inputs(item, run.request.loaded.root) if item.inputs or item.env else None
        if items is not None:
            self._fan_out(run, name, node, static, params, inputs, cache_only, items, declared)
            return
        fingerprint, detail = combine(static, params, inputs, declared=declared)
        self._execute_or_reuse(run, name, name, node, static, fingerprint, detail, cache_only, None)

    def _fan_out(
        self,
        run: Run,
        name: str,
        node: Node,
        static: StaticPrint,
        params: dict[str, str],
        inputs: dict[str, str],
        cache_only: bool,
        pickled: list[bytes],
        declared: dict[str, str] | None,
    ) -> None:
        arg = node.step.foreach
        assert arg is not None
        state = run.states[name]
        state.instances = []
        state.status = StepStatus.RUNNING
        if not pickled:
            self._finish_fan_out(run, name)
            return
        instances = [f"{name}[{index}]" for index in range(len(pickled))]
        for instance in instances:
            run.states[instance] = StepState(instance, parent=name)
        state.instances = instances
        state.pending = len(instances)
        own_inputs = {k: v for k, v in inputs.items() if k != arg}
        for instance, data in zip(instances, pickled, strict=True):
            item_hash = content_hash(data)
            fingerprint, detail = combine(static, params, own_inputs, item=item_hash, declared=declared)
            self._execute_or_reuse(
                run, instance, name, node, static, fingerprint, detail, cache_only, (arg, item_hash, data)
            )

    def _execute_or_reuse(
        self,
        run: Run,
        name: str,
        step_name: str,
        node: Node,
        static: StaticPrint,
        fingerprint: str,
        detail: dict[str, Any],
        cache_only: bool,
        item: tuple[str, str, bytes] | None,
    ) -> None:
        """The step's fingerprint is known: reuse a stored result, or act on `decide`'s decision (see
        `runner.engine.decide`)."""
        state = run.states[name]
        request = run.request
        forced = (request.force and step_name in run.inside) or step_name in request.force_steps
        if static.untrusted:
            fingerprint = f"untrusted-{uuid.uuid4().hex}"
        state.fingerprint = fingerprint
        state.detail = detail
        if not forced and not static.untrusted:
            # `decide`'s first rule, asked before the other facts are gathered: most steps of a re-run
            # are reused, and gathering them cost a tenth of a cached step.
            found = self._index.reusable(run, name, fingerprint, node.step.cache, self._claims.others_live)
            if found is not None:
                self._reuse(run, name, fingerprint, detail, found)
                return
        facts = Facts(
            forced=forced,
            untrusted=static.untrusted or None,
            cache=node.step.cache,
            cache_only=cache_only,
            running_here=fingerprint in self._executions,
        )
        lookups = _Lookups(self._index, self._claims, run, name, fingerprint, detail)
        decision = decide(facts, lookups)
        assert not isinstance(decision, Reuse), "what could be reused was found above"
        if isinstance(decision, Refuse):
            raise FlowError(decision.message, step=step_name)
        if isinstance(decision, Wait):
            state.status = StepStatus.RUNNING
            waiting = f"waiting: {decision.who} is computing the same step"
            if state.reason != waiting:  # said once, not at every poll
                state.reason = waiting
                self._emit(StepStarted(run.id, name, 0, state.reason, fingerprint, time.time()))
            retry = (run, name, step_name, node, static, fingerprint, detail, item)
            self._remote.append((time.monotonic() + REMOTE_POLL_S, retry))
            return
        state.reason = decision.reason
        state.status = StepStatus.RUNNING
        if isinstance(decision, Join):
            execution = self._executions[fingerprint]
            self._parked.pop(fingerprint, None)
            execution.waiters.append((run, name))
            state.attempts = execution.task.attempt
            state.reason = f"{decision.reason} (joined the execution already running)"
            if execution.submitted:
                self._emit(StepStarted(run.id, name, state.attempts, state.reason, fingerprint, time.time()))
            return
        self._execute(run, name, step_name, node, static, fingerprint, detail, item, forced)

    def _reuse(self, run: Run, name: str, fingerprint: str, detail: dict[str, Any], found: Reusable) -> None:
        run.states[name].output = Output(found.output_hash)
        self._index.remember_detail(run, name, detail)
        self._finish(
            run,
            name,
            StepStatus.CACHED,
            reason=_reuse_reason(found.run_id),
            preview_text=found.preview,
            metrics=self._index.metrics_of(run, found.run_id, fingerprint),
        )

    def _execute(
        self,
        run: Run,
        name: str,
        step_name: str,
        node: Node,
        static: StaticPrint,
        fingerprint: str,
        detail: dict[str, Any],
        item: tuple[str, str, bytes] | None,
        forced: bool,
    ) -> None:
        """Queue a new execution of the step (its task's inputs, parameters and code gathered now), or
        take the task chained for it, already on its worker (`runner.engine.chaining`)."""
        request = run.request
        self._recorder.record_texts(static.texts)
        if self._parked:
            self._release_parked(run, name)
        task = self._adopt(run, name) if self._follows else None
        chained = task is not None
        if task is None:
            try:
                task = self._task(run, name, step_name, node, static, detail["params"], item)
            except TaskError as exc:
                self._claims.release(fingerprint)
                self._finish(run, name, StepStatus.FAILED, error=str(exc))
                return
        execution = Execution(
            key=fingerprint,
            task=task,
            retries=node.step.retries,
            retry_delay=node.step.retry_delay,
            waiters=[(run, name)],
            loaded=request.loaded,
            timed=self._timed,
        )
        if node.step.job is not None:
            self._job_begin(run, name, execution, node.step.timeout)
        if not forced or fingerprint not in self._executions:
            self._executions[fingerprint] = execution
        self._by_task[execution.task.id] = execution
        if chained:
            self._submitted(execution)
            self._chain(execution)
        else:
            self._queue.append(execution)

    def _poll_remote(self) -> None:
        now = time.monotonic()
        due = [entry for entry in self._remote if entry[0] <= now]
        if not due:
            return
        self._remote = [entry for entry in self._remote if entry[0] > now]
        waited = False
        for _, (run, name, step_name, node, static, fingerprint, detail, item) in due:
            if run.cancelled or run.states[name].status in FINAL:
                continue
            run.states[name].status = READY
            self._execute_or_reuse(run, name, step_name, node, static, fingerprint, detail, False, item)
            waited = waited or not run.states[name].reason.startswith("waiting:")
        if waited:
            # The other process finished, or died: if it died, its run reads interrupted from now on.
            try:
                self.store.mark_interrupted()
            except Exception as exc:  # noqa: BLE001 - housekeeping: a failure must not stop the waiting run
                print(f"flow: could not mark a dead run interrupted: {exc}", file=sys.stderr)
