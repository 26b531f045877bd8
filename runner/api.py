"""Provides the read-only Python API over a store's run history: a flow's runs, a run's parameters,
metrics, statuses and reasons, its logs, and any step's output as the Python object.

Example:
    ```python
    from runner.api import latest, runs

    run = latest("train_and_eval")          # the flow's newest run (by flow name or file)
    run.params, run.metrics, run.status     # {'lr': 0.1}, {'accuracy': 0.9}, 'succeeded'
    run["train"].reason                     # 'parameter changed: lr'
    model = run["train"].output             # the object `train` returned, unpickled
    run["train"].logs()                     # its captured lines
    [r.id for r in runs("train_and_eval")]  # newest first
    ```

Reading never writes: the store is opened as it is (nothing created, migrated only if older, no run
marked), and SQLite's WAL mode lets it be read while runs write to it, from this process or another.
A run in progress is read as it stands; a step still running has no output yet.

Errors are `FlowError`s (`dsl.errors`) with one line saying what and where: no store, no such run or
step, an output collected by `flow gc`, or one that cannot be unpickled in this environment.
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dsl.errors import FlowError
from runner.artifacts import ArtifactError
from runner.records import FlowOutput, RunRecord, StepRecord
from runner.status import StepStatus
from runner.store import Store
from runner.store.discovery import find_store

__all__ = ["Run", "Step", "latest", "open_history", "run", "runs"]


def open_history(store: str | Path | Store | None = None) -> Store:
    """The store to read: given, or found as every `flow` command finds it (`$FLOW_STORE`, else the
    nearest `.flow/` upwards from the working directory).

    Raises:
        FlowError: there is no store there.
    """
    if isinstance(store, Store):
        return store
    root, _ = find_store(store)
    return Store(root, create=False)


def _flow_filter(flow: str | Path | None) -> str | None:
    if flow is None:
        return None
    path = Path(flow)
    return str(path.resolve()) if path.suffix in (".py", ".yaml", ".yml") else str(flow)


def runs(
    flow: str | Path | None = None, *, store: str | Path | Store | None = None, limit: int = 50
) -> list[Run]:
    """A flow's runs (by its name or its file; every flow's when None), newest first."""
    history = open_history(store)
    return [Run(history, record) for record in history.list_runs(_flow_filter(flow), limit=limit)]


def latest(flow: str | Path | None = None, *, store: str | Path | Store | None = None) -> Run:
    """The newest run of a flow (of any flow when None).

    Raises:
        FlowError: no run of it in the store.
    """
    found = runs(flow, store=store, limit=1)
    if not found:
        history = open_history(store)
        what = f"of {flow} " if flow is not None else ""
        raise FlowError(f"no run {what}in the store at {history.root}")
    return found[0]


def run(run_id: int, *, store: str | Path | Store | None = None) -> Run:
    """One run by its number.

    Raises:
        FlowError: no such run.
    """
    history = open_history(store)
    record = history.get_run(run_id)
    if record is None:
        raise FlowError(f"no run #{run_id} in the store at {history.root}")
    return Run(history, record)


class Run:
    """One run as stored when it was read (read it again, with `refresh`, to follow one in progress).

    Attributes:
        record: the run's public record (`runner.records.RunRecord`), what `flow show --json` prints.
    """

    def __init__(self, store: Store, record: RunRecord) -> None:
        self._store = store
        self.record = record

    def __repr__(self) -> str:
        return f"<Run #{self.id} of {self.flow}: {self.status}>"

    id = property(lambda self: self.record.id, doc="The run's number.")
    flow = property(lambda self: self.record.flow, doc="The flow's name.")
    file = property(lambda self: self.record.file, doc="The flow file it ran.")
    status = property(lambda self: self.record.status, doc="`running`, `succeeded`, `failed`, …")
    params = property(lambda self: dict(self.record.params), doc="Every parameter's value.")
    metrics = property(lambda self: self.record.metrics, doc="Metrics, as `flow show` names them.")
    started_at = property(lambda self: self.record.started_at, doc="Seconds since the epoch.")
    finished_at = property(lambda self: self.record.finished_at, doc="None while it runs.")
    duration_s = property(lambda self: self.record.duration_s, doc="None while it runs.")

    @property
    def steps(self) -> dict[str, Step]:
        """Every step of the run by name (fan-out instances as `name[i]`), in graph order."""
        return {s.name: Step(self, s) for s in self.record.steps}

    def __getitem__(self, name: str) -> Step:
        """The step `name`.

        Raises:
            FlowError: the run has no such step.
        """
        for record in self.record.steps:
            if record.name == name:
                return Step(self, record)
        known = ", ".join(s.name for s in self.record.steps)
        raise FlowError(f"run #{self.id} has no step '{name}' (steps: {known})")

    @property
    def outputs(self) -> dict[str, FlowOutput]:
        """The flow's declared outputs (name -> step, key, preview)."""
        return dict(self.record.outputs)

    def output(self, name: str) -> Any:
        """A declared flow output as the Python object."""
        with _project_importable(self.file):
            return self._store.flow_output(self.id, name)

    def logs(self, step: str | None = None) -> list[str]:
        """The run's captured lines (or one step's: a cached step's are those of the run that
        computed its result)."""
        if step is not None:
            return self[step].logs()
        return [line.line for line in self._store.get_logs(self.id)]

    def refresh(self) -> Run:
        """The same run read again (a run in progress moves on)."""
        return run(self.id, store=self._store)


class Step:
    """One step of one run.

    Attributes:
        record: its public record (`runner.records.StepRecord`).
    """

    def __init__(self, owner: Run, record: StepRecord) -> None:
        self._run = owner
        self.record = record

    def __repr__(self) -> str:
        return f"<Step {self.name} of run #{self._run.id}: {self.status}>"

    name = property(lambda self: self.record.name, doc="Its name (`name[i]` for a fan-out instance).")
    status = property(lambda self: self.record.status, doc="`succeeded`, `cached`, `failed`, …")
    reason = property(lambda self: self.record.reason, doc="Why it ran, was cached or skipped.")
    error = property(lambda self: self.record.error, doc="One line, when it failed or was skipped.")
    traceback = property(lambda self: self.record.traceback, doc="The failure's traceback, if any.")
    metrics = property(lambda self: dict(self.record.metrics), doc="Metrics it recorded.")
    attempts = property(lambda self: self.record.attempts, doc="Executions started.")
    duration_s = property(lambda self: self.record.duration_s, doc="Wall time of its last attempt.")
    preview = property(lambda self: self.record.preview, doc="A short repr of its output.")
    output_hash = property(lambda self: self.record.output_hash, doc="Its output's content hash.")

    @property
    def output(self) -> Any:
        """Its output as the Python object (unpickled anew on each read).

        Raises:
            FlowError: it has no output (it failed, was skipped or still runs), the output was
                collected by `flow gc`, or it cannot be unpickled here.
        """
        data = self.output_bytes()
        return load_output(data, self._run.file, f"the output of step '{self.name}' in run #{self._run.id}")

    def output_bytes(self) -> bytes:
        """Its output as stored: the pickle's bytes, checked against their content hash.

        Raises:
            FlowError: it has no output, or the output was collected by `flow gc` (or damaged).
        """
        where = f"step '{self.name}' in run #{self._run.id}"
        if self.record.output_hash is None or self.record.status not in (
            StepStatus.SUCCEEDED,
            StepStatus.CACHED,
        ):
            raise FlowError(f"{where} has no output (it is {self.record.status})")
        try:
            return self._run._store.read_artifact(self.record.output_hash)
        except ArtifactError as exc:
            raise FlowError(
                f"the output of {where} is no longer in the store ({exc}; flow gc frees old results)"
            ) from None

    def logs(self) -> list[str]:
        """Its captured lines (a cached step: those of the run that computed its result)."""
        store = self._run._store
        source = (self._run.id, self.name)
        if self.record.status == StepStatus.CACHED:
            source = store.computed_by(self.record.fingerprint, self._run.id) or source
        return [line.line for line in store.get_logs(source[0], source[1])]


@contextmanager
def _project_importable(flow_file: str) -> Iterator[None]:
    """The flow's directory importable while an output is unpickled: a value of a class from one of
    the project's modules is pickled by reference to that module."""
    root = str(Path(flow_file).parent)
    added = root not in sys.path
    if added:
        sys.path.insert(0, root)
    try:
        yield
    finally:
        if added and root in sys.path:
            sys.path.remove(root)


def load_output(data: bytes, flow_file: str, what: str) -> Any:
    """Unpickle a stored output (its bytes already checked against their hash).

    Raises:
        FlowError: it cannot be unpickled in this environment (a class or module it names is missing).
    """
    with _project_importable(flow_file):
        try:
            return pickle.loads(data)
        except Exception as exc:  # noqa: BLE001 - unpickling runs whatever the pickle names
            raise FlowError(f"{what} cannot be unpickled here: {type(exc).__name__}: {exc}") from None
