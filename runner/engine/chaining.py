"""Provides `Chaining`: the next steps of a chain handed to the worker while the step before them runs.

A chain of quick steps paid a round trip per step: the worker sent a result and waited while the runner
took it, decided the next step and sent that. Now, as a step's task is sent, the tasks of the steps
after it (up to `CHAIN_DEPTH`) go to the same worker, each chained to the one before it
(`LocalExecutor.follow`): the worker starts each the moment the one before it succeeds, with its output,
while the runner takes the results and decides each step as it always does. Deciding a chained step to
execute adopts the task already there instead of sending a new one (`_adopt`).

Nothing runs that the runner would not have run: a task is chained only when its step's decision cannot
depend on the output it waits for, so that deciding the step later can only say "execute":

* the step before it is its only upstream step not final, and that one succeeding lets it proceed (its
  trigger), with no `when=` or `foreach` to ask; it is not a job, a command or a step with a timeout;
* the cache holds no result of a step of its name (`CacheIndex.never_cached`), or the run is forced.
  Within the flow no other step can share its fingerprint: that would need the same upstream steps,
  so the step before it would have two downstream steps, and it is chained only to a step's only one.
  (A step of another flow in the same store with another name and the same code, parameters, upstream
  names and outputs would share it: that one case would execute once when it could be found cached.)
* no other process uses the store (it could store that result meanwhile), no other run is in flight
  in this engine and none is parked (no execution of the same fingerprint to join), and the run
  resumes nothing.

If the decision still says otherwise, or the step before fails, is retried or is stopped, the chained
task (and those behind it) is cancelled: a worker skips it unless it claimed it already, and then it is
killed.
"""

from __future__ import annotations

from dsl.graph import Node
from runner.artifacts import ArtifactError
from runner.engine.decide import trigger_blocks
from runner.engine.executing import Executing
from runner.engine.inputs import input_ref
from runner.engine.model import Execution, Follow, Run
from runner.executors.base import InputRef, Task, TaskResult
from runner.fingerprint import StaticPrint
from runner.status import StepStatus

CHAIN_DEPTH = 8
"""Steps chained ahead of the one running, at most: the worker goes on while the runner takes a
result late (another thread, another process had the core), and the runner while the worker runs.
As many as a worker's pipe holds (`runner.executors.local.QUEUE_DEPTH`): traced, a 1,000-step chain's
worker ran the 4 chained steps of the first version in ~0.3 ms, then waited for the runner whenever
the OS kept the runner off a core for longer, 7-34 times a run for 1-2 ms each; with 8, a cold chain
ran lower in 20 of 30 alternating runs (medians 1-3% lower), its worker polling less."""


CHAIN_INPUTS_MAX = 16
"""Steps taking more upstream outputs than this are not chained: their inputs alone would outgrow a
chained frame (`LocalExecutor.follow`), and gathering them (a fan-out's join of 1,000) costs ~1 µs each."""


class TaskError(Exception):
    """A step's task cannot be made: why, as the step's error says it."""


class Chaining(Executing):
    """Chained tasks (see `runner.engine.state`)."""

    def _task(
        self,
        run: Run,
        name: str,
        step_name: str,
        node: Node,
        static: StaticPrint,
        params: dict[str, str],
        item: tuple[str, str, bytes] | None,
        *,
        chained_to: str | None = None,
    ) -> Task:
        """A new task for the step (`name`: the step, or a fan-out instance of `step_name`): its inputs,
        parameters and code gathered now. `chained_to`: the upstream step whose output the worker
        passes (`runner.executors.wire.RunTask.after`); its arguments are left out.

        Raises:
            TaskError: an input cannot be read, a parameter pickled or the code shipped.
        """
        request = run.request
        kwargs: dict[str, InputRef] = {}
        try:
            for arg, upstream in node.inputs.items():
                if upstream != chained_to:
                    kwargs[arg] = input_ref(self.store, run.states[upstream].output)
        except ArtifactError as exc:
            raise TaskError(f"an input could not be read: {exc}") from exc
        try:
            for p in node.params:
                kwargs[p] = InputRef(hash=params.get(p, ""), data=run.param_pickle(p))
        except Exception as exc:
            raise TaskError(f"a parameter cannot be pickled: {exc}") from exc
        if item is not None:
            arg, item_hash, data = item
            kwargs[arg] = InputRef(hash=item_hash, data=data)
        try:
            bundle = self._bundles.code(request.loaded, step_name)
        except Exception as exc:
            raise TaskError(f"the step's code cannot be shipped to a worker: {exc}") from exc
        return Task(
            id=f"t{next(self._task_ids)}",
            step=name,
            code_key=bundle.key,
            code=bundle.code,
            kwargs=kwargs,
            run_id=run.id,
            attempt=1,
            timeout=node.step.timeout,
            artifact_dir=str(self.store.artifact_dir),
            sys_path=(str(request.loaded.root), *request.loaded.search_paths),
            resources=dict(node.step.resources),
            entry=bundle.entry,
            expect=static.files,
            modules=bundle.modules,
        )

    def _chain(self, execution: Execution) -> None:
        """The execution's task was just sent (or adopted): keep up to `CHAIN_DEPTH` steps after it
        chained behind it, one after the other, where their decisions can only be to execute them
        (see the module)."""
        if (
            self._chains is None
            or execution.job is not None
            or len(execution.waiters) != 1
            or len(self._runs) != 1
            or self._parked
        ):
            return
        run, name = execution.waiters[0]
        if run.cancelled or run.resume:
            return
        task_id = execution.task.id
        nodes = run.graph.nodes
        for _ in range(CHAIN_DEPTH):
            node = nodes.get(name)
            if node is None or len(node.downstream) != 1:
                return
            after = node.downstream[0]
            follow = self._follows.get((run.id, after)) or self._follow(run, name, task_id, after)
            if follow is None:
                return
            name, task_id = after, follow.task.id

    def _follow(self, run: Run, name: str, task_id: str, after: str) -> Follow | None:
        """Chain a task of step `after` to task `task_id` of step `name`, if `after`'s decision can
        only be to execute it once `name` succeeds (see the module)."""
        state = run.states[after]
        if state.pending != 1 or state.status != StepStatus.PENDING or after not in run.inside:
            return None
        node = run.graph.nodes[after]
        item = node.step
        if len(node.inputs) > CHAIN_INPUTS_MAX:
            return None  # a join: its task would be too big to chain, and costly to make for nothing
        if item.when is not None or item.foreach is not None or item.job is not None or item.timeout:
            return None
        static = run.static[after]
        if static.untrusted or static.command:
            return None
        states = run.states
        upstream = [(u, StepStatus.SUCCEEDED if u == name else states[u].status) for u in node.upstream]
        if trigger_blocks(item.trigger, upstream) is not None:
            return None
        request = run.request
        forced = (request.force and after in run.inside) or after in request.force_steps
        if not (forced or self._index.never_cached(after)) or self._claims.others_live():
            return None
        try:
            params = {p: run.param_hash(p) for p in node.params}
            task = self._task(run, after, after, node, static, params, None, chained_to=name)
        except Exception:  # noqa: BLE001 - not chained then: deciding the step later says what is wrong
            return None
        inputs = tuple(arg for arg, source in node.inputs.items() if source == name)
        assert self._chains is not None
        if not self._chains.follow(task, task_id, inputs):
            return None
        follow = self._follows[(run.id, after)] = Follow(task, task_id, name, inputs)
        self._follow_after[task_id] = (run.id, after)
        return follow

    def _adopt(self, run: Run, name: str) -> Task | None:
        """The step is decided to execute: the task chained for it, with every argument, if one was
        and still runs (or ran) on its worker; None otherwise (then a new task is sent)."""
        follow = self._follows.pop((run.id, name), None)
        if follow is None:
            return None
        self._follow_after.pop(follow.after, None)
        kwargs = dict(follow.task.kwargs)
        if follow.inputs:
            ref = input_ref(self.store, run.states[follow.upstream].output)
            for arg in follow.inputs:
                kwargs[arg] = ref
        # A copy with every argument (the executor keeps the one it sent): the frozen dataclass's
        # fields set at once, a quarter of what `copy.copy` takes.
        task = object.__new__(Task)
        task.__dict__.update(follow.task.__dict__, kwargs=kwargs)
        assert self._chains is not None
        if not self._chains.adopt(task):
            self._unfollow(task.id)  # dropped unstarted: so are those chained behind it
            return None
        self._busy += 1  # from now on it holds a slot, as a task sent for it would
        return task

    def _unfollow(self, after: str) -> None:
        """Task `after` ended without its chained step being adopted, or was stopped: cancel the
        task chained to it, and those chained behind that one."""
        while (key := self._follow_after.pop(after, None)) is not None:
            follow = self._follows.pop(key, None)
            if follow is None:
                return
            self.executor.cancel(follow.task.id)
            after = follow.task.id

    def _task_done(self, task_id: str, result: TaskResult) -> None:
        """A task's result: taken as always; then the step chained to it, if any, is decided at once
        (the worker runs it already: its logs and result may be next in this very batch), or its
        chained task cancelled."""
        key = self._follow_after.get(task_id) if self._follow_after else None
        super()._task_done(task_id, result)
        if key is None:
            return
        run = self._runs.get(key[0])
        if result.ok and key in self._follows and run is not None and not run.cancelled:
            try:
                run.ready.remove(key[1])
            except ValueError:
                pass
            else:
                self._guarded([run], self._advance, run, key[1])
        self._unfollow(task_id)

    def _kill(self, execution: Execution) -> None:
        task_id = execution.task.id
        super()._kill(execution)
        if self._follow_after:
            self._unfollow(task_id)
