"""Provides `Probing`: the questions user code must answer before a step is decided — a `when=` predicate,
a `foreach` iteration — run as tasks (so a timeout and a stop apply, and no user code runs in the
runner), and the planning of a selection's upstream steps that waits for those answers."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from runner.artifacts import ArtifactError, dumps
from runner.engine.chaining import Chaining
from runner.engine.executing import START_GRACE_S
from runner.engine.inputs import input_ref
from runner.engine.model import ASKING, READY, Planning, Probe, Run
from runner.executors.base import InputRef, Task, TaskResult
from runner.probes import PROBE_TIMEOUT_S, plain_loads
from runner.status import StepStatus


def _holds_a_set(value: object) -> bool:
    """Whether plain data holds a set anywhere: pickled, a set lists its items in Python's hash order,
    which for text differs from one process to the next. A worker's is fixed (`PYTHONHASHSEED=0`), so
    a probe pickles such an item into the same bytes in every run; the runner's is not."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, set | frozenset):
            return True
        if isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
    return False


class Probing(Chaining):
    """Probe tasks and their answers (see `runner.engine.state`)."""

    def _ask(self, run: Run, name: str, kind: str, args: Iterable[str], cache_only: bool) -> None:
        """Ask a probe task for a step's `when=` answer or `foreach` items; `_probe_done` goes on.
        The items of a plain list need no probe (`_plain_items`)."""
        if kind == "foreach":
            items = self._plain_items(run, name)
            if items is not None:
                self._advance(run, name, cache_only=cache_only, when_checked=True, items=items)
                return
        node = run.graph.nodes[name]
        what = "when= predicate" if kind == "when" else f"foreach '{node.step.foreach}'"
        kwargs: dict[str, InputRef] = {}
        try:
            for arg in args:
                if arg in run.graph.nodes:
                    kwargs[arg] = input_ref(self.store, run.states[arg].output)
                else:
                    kwargs[arg] = InputRef(hash="", data=run.param_pickle(arg))
        except ArtifactError as exc:
            self._finish(
                run, name, StepStatus.FAILED, error=f"an input of the {what} could not be read: {exc}"
            )
            return
        except Exception as exc:
            self._finish(
                run, name, StepStatus.FAILED, error=f"a parameter of the {what} cannot be pickled: {exc}"
            )
            return
        try:
            bundle = self._bundles.probe_code(run.request.loaded, name, kind)
        except Exception as exc:
            self._finish(
                run, name, StepStatus.FAILED, error=f"the {what} cannot be shipped to a worker: {exc}"
            )
            return
        task = Task(
            id=f"t{next(self._task_ids)}",
            step=name,
            code_key=bundle.key,
            code=bundle.code,
            kwargs=kwargs,
            run_id=run.id,
            timeout=node.step.timeout or PROBE_TIMEOUT_S,
            sys_path=(str(run.request.loaded.root),),
            entry=bundle.entry,
            modules=bundle.modules,
        )
        probe = Probe(kind, run, name, task, cache_only)
        if cache_only:
            probe.planning = next((p for p in self._plannings if p.run is run), None)
        run.states[name].status = ASKING
        self._probes[task.id] = probe
        self._probe_queue.append(probe)

    def _plain_items(self, run: Run, name: str) -> list[bytes] | None:
        """The `foreach` items of a step whose argument is a list or tuple of plain data (numbers,
        text, bytes, and lists, tuples and dicts of them) held inline: each pickled as the probe
        pickles it (`runner.probes.foreach_items`), so the same bytes and fingerprints. None when a
        probe must answer: anything else (an object, whose unpickling or iteration is user code; a
        set: `_holds_a_set`), a file (a big output), or an artifact that cannot be read (the probe
        then reports it).

        Read with `plain_loads`, which imports and calls nothing: no user code runs here. A probe is a
        task, so a new process's re-run of a fully cached fan-out waited for a worker to start for it
        (~50 ms at a 10,000-item fan-out's re-run, a third of it)."""
        arg = run.graph.nodes[name].step.foreach
        if arg is None:
            return None
        try:
            if arg not in run.graph.nodes:
                data: bytes | None = run.param_pickle(arg)
            else:
                output = run.states[arg].output
                if output is None or output.parts is not None:
                    return None
                data = input_ref(self.store, output).data  # None for a file: a probe reads it
            value = plain_loads(data) if data is not None else None
        except Exception:  # noqa: BLE001 - not plain, not readable: the probe answers (or says why not)
            return None
        if not isinstance(value, list | tuple) or _holds_a_set(value):  # no subclass: none is named
            return None
        return [dumps(item) for item in value]

    def _submit_probe(self, probe: Probe) -> None:
        probe.submitted = True
        timeout = probe.task.timeout or PROBE_TIMEOUT_S
        if getattr(self.executor, "reports_start", False):
            timeout += START_GRACE_S  # tightened to the timeout when the worker says it started
        probe.deadline = time.monotonic() + timeout
        self._busy += 1
        self.executor.submit(probe.task)

    def _drop_probe(self, probe: Probe) -> None:
        """Forget a probe whose run stopped (killing its task if it runs)."""
        self._probes.pop(probe.task.id, None)
        if probe.submitted:
            probe.submitted = False
            self.executor.cancel(probe.task.id)
            self._busy -= 1
        elif probe in self._probe_queue:
            self._probe_queue.remove(probe)

    def _probe_done(self, probe: Probe, result: TaskResult) -> None:
        if probe.submitted:
            probe.submitted = False
            self._busy -= 1
        run, name = probe.run, probe.name
        if run.states[name].status != ASKING:
            return  # the run stopped meanwhile
        run.states[name].status = READY
        planning = probe.planning
        if planning is None:
            self._answer(probe, result)
            return
        try:
            self._answer(probe, result)
        except BaseException as exc:  # noqa: BLE001 - handed to `start`, which raises it
            self._end_planning(planning, exc)
            return
        self._plan_external(planning)

    def _answer(self, probe: Probe, result: TaskResult) -> None:
        """Go on deciding the step with the probe's answer (or fail it with the probe's failure)."""
        run, name = probe.run, probe.name
        step = run.graph.nodes[name].step
        what = "the when= predicate" if probe.kind == "when" else f"foreach '{step.foreach}'"
        answer: Any = None
        error = result.error or "no answer"
        if result.ok:
            try:
                answer = plain_loads(result.data or b"")
            except Exception as exc:
                error = f"its answer could not be read: {exc}"
        valid = (
            isinstance(answer, bool)
            if probe.kind == "when"
            else isinstance(answer, list) and all(isinstance(i, bytes) for i in answer)
        )
        if not result.ok or not valid:
            error = error.replace("the step called", "it called").replace("the step's process", "its process")
            error = error.removeprefix("ForeachItemUnstorable: ")
            self._finish(
                run, name, StepStatus.FAILED, error=f"{what} failed: {error}", traceback=result.traceback
            )
        elif probe.kind == "when" and not answer:
            self._finish(run, name, StepStatus.SKIPPED, reason="condition (when=) is false")
        elif probe.kind == "when":
            self._advance(run, name, cache_only=probe.cache_only, when_checked=True)
        else:
            self._advance(run, name, cache_only=probe.cache_only, when_checked=True, items=answer)

    def _plan_external(self, planning: Planning) -> None:
        """Decide the steps upstream of a selection in order; a probe pauses this until its answer."""
        if planning not in self._plannings:
            self._plannings.append(planning)
        run = planning.run
        try:
            while planning.todo:
                name = planning.todo[0]
                if run.states[name].status == ASKING:
                    return
                if name not in planning.advanced:
                    planning.advanced.add(name)
                    self._advance(run, name, cache_only=True)
                    if run.states[name].status == ASKING:
                        return
                planning.todo.popleft()
        except BaseException as exc:  # noqa: BLE001 - handed to `start`, which raises it
            self._end_planning(planning, exc)
            return
        self._end_planning(planning, None)

    def _end_planning(self, planning: Planning, error: BaseException | None) -> None:
        if planning in self._plannings:
            self._plannings.remove(planning)
        if error is not None:
            for probe in [p for p in self._probes.values() if p.run is planning.run]:
                self._drop_probe(probe)
        planning.error = error
        self._release_held()
        planning.done.set()
