"""Provides `prepare_debug` and `debug_step`: a step of a past run re-executed in the foreground, under
pdb, with the inputs it received in that run and the code that run ran (`flow debug RUN STEP`).

The inputs come from the store: each upstream output by the hash the step's fingerprint detail holds
(what the step really received), each parameter from the run's values. The code comes from the store
too: every run keeps the files it loaded (`runner.store.sources`). If they still read the same, the
flow is loaded from its own files (a traceback points at them); if not, the run's files are laid out
in a temporary directory and loaded from there, as a release is (`runner.operate.releases`), and the
user is told which files differ.

This runs the user's code in this process, on purpose: it is a debugger session the user asked for,
in their terminal. Nothing is written to the store.
"""

from __future__ import annotations

import bdb
import pdb
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsl.errors import FlowError
from dsl.loader import LoadedFlow, install_local_imports, load_flow
from runner.api import load_output
from runner.artifacts import ArtifactError, preview
from runner.engine.model import NONE_OUTPUT_HASH
from runner.fingerprint import Untrusted, value_hash
from runner.params import resolve_flow_params
from runner.records import RunRecord
from runner.status import StepStatus
from runner.store import Store


@dataclass
class Prepared:
    """A step ready to re-execute: its function, its arguments, and what the user should know.

    Attributes:
        function: the step's function as the run's code defines it.
        kwargs: its arguments, as it received them in the run.
        notes: what differs from a plain re-run (the code laid out from the store, an input that
            could not be restored exactly).
        workdir: the temporary directory the run's files were laid out in (removed by `close`).
    """

    run_id: int
    step: str
    function: Callable[..., Any]
    kwargs: dict[str, Any]
    loaded: LoadedFlow
    notes: list[str] = field(default_factory=list)
    workdir: Path | None = None

    def close(self) -> None:
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _load_code(store: Store, record: RunRecord, notes: list[str]) -> tuple[LoadedFlow, Path | None]:
    """The flow as run `record` loaded it: from its own files when they read the same as then, else
    from the run's files laid out in a temporary directory."""
    files = store.run_files(record.id)
    flow_file = Path(record.file)
    if files is None:
        notes.append(
            f"run #{record.id} kept no source (it ran before this store kept sources, or flow gc "
            "collected them): debugging the flow's files as they are now"
        )
        return load_flow(flow_file), None
    changed = [path for path, text in files.items() if _read(Path(path)) != text]
    if not changed:
        return load_flow(flow_file), None
    root = flow_file.parent
    workdir = Path(tempfile.mkdtemp(prefix=f"flow-debug-{record.id}-"))
    outside = []
    for path, text in files.items():
        try:
            relative = Path(path).relative_to(root)
        except ValueError:
            outside.append(path)
            continue
        target = workdir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    shown = ", ".join(_shown(Path(p), root) for p in changed)
    notes.append(
        f"the code has changed since run #{record.id} ({shown}): debugging the code run #{record.id} "
        f"ran, laid out in {workdir}"
    )
    if outside:
        notes.append(f"read as they are now (outside the flow's directory): {', '.join(outside)}")
    try:
        return load_flow(workdir / flow_file.name), workdir
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise


def _shown(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def prepare_debug(store: Store, record: RunRecord, step: str) -> Prepared:
    """Load the run's code and the step's inputs from the store.

    Raises:
        FlowError: the run has no such step; the step never got its inputs in that run; it is not a
            Python step, or a fan-out instance; an input was collected by `flow gc` or cannot be
            unpickled here; the run's code does not load.
    """
    found = next((s for s in record.steps if s.name == step), None)
    if found is None:
        known = ", ".join(s.name for s in record.steps if s.parent is None)
        raise FlowError(f"run #{record.id} has no step '{step}' (steps: {known})")
    if found.parent is not None:
        raise FlowError(
            f"'{step}' is one instance of the fan-out step '{found.parent}': flow debug re-executes whole "
            "steps; debug its function with the item as an argument instead"
        )
    detail = store.run_details(record.id).get(step)
    if found.status not in (StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.CACHED) or detail is None:
        raise FlowError(
            f"step '{step}' never got its inputs in run #{record.id} (it is {found.status}); "
            "debug a run in which it ran"
        )
    notes: list[str] = []
    loaded, workdir = _load_code(store, record, notes)
    try:
        return _prepare(store, record, step, detail, loaded, notes, workdir)
    except BaseException:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
        raise


def _prepare(
    store: Store,
    record: RunRecord,
    step: str,
    detail: dict[str, Any],
    loaded: LoadedFlow,
    notes: list[str],
    workdir: Path | None,
) -> Prepared:
    node = loaded.graph.nodes.get(step)
    if node is None:
        raise FlowError(f"step '{step}' is not in the code run #{record.id} ran")
    item = node.step
    if item.spec is not None:
        raise FlowError(f"'{step}' is a command or container step: flow debug re-executes Python steps")
    if item.foreach is not None:
        raise FlowError(
            f"'{step}' is a fan-out step: flow debug re-executes one function call, not a fan-out"
        )
    kwargs: dict[str, Any] = {}
    inputs: dict[str, str] = dict(detail.get("inputs", {}))
    for arg, upstream in node.inputs.items():
        digest = inputs.get(upstream)
        if digest is None:
            raise FlowError(f"run #{record.id} recorded no input '{arg}' for step '{step}'")
        if digest == NONE_OUTPUT_HASH:
            kwargs[arg] = None
            continue
        what = f"input '{arg}' of step '{step}' in run #{record.id} (the output of {upstream})"
        try:
            data = store.read_artifact(digest)
        except ArtifactError as exc:
            raise FlowError(
                f"the {what} is no longer in the store ({exc}; flow gc frees old results)"
            ) from None
        kwargs[arg] = load_output(data, str(loaded.path), f"the {what}")
    values = resolve_flow_params(loaded, record.params)
    recorded: dict[str, str] = dict(detail.get("params", {}))
    for name in node.params:
        kwargs[name] = values[name]
        try:
            same = value_hash(values[name]) == recorded.get(name)
        except Untrusted:
            same = False
        if not same:
            notes.append(f"parameter {name}={values[name]!r} may differ from the value run #{record.id} used")
    install_local_imports(loaded.root)
    for entry in loaded.search_paths:
        if entry not in sys.path:
            sys.path.append(entry)
    return Prepared(record.id, step, item.fn, kwargs, loaded, notes, workdir)


def debug_step(prepared: Prepared, *, break_first: bool, say: Callable[[str], None]) -> int:
    """Run the step under pdb: post-mortem at the failing line, or (`break_first`) from its first line.

    Returns 0 when the step returned, 1 when it raised.
    """
    shown = ", ".join(f"{k}={preview(v)}" for k, v in prepared.kwargs.items()) or "no arguments"
    say(f"debugging {prepared.step} of run #{prepared.run_id} with {shown}")
    for text in prepared.notes:
        say(text)
    try:
        if break_first:
            say("stopped at the step's first line (n: next line, s: step in, c: continue, q: quit)")
            result = pdb.Pdb().runcall(prepared.function, **prepared.kwargs)
        else:
            result = prepared.function(**prepared.kwargs)
    except (bdb.BdbQuit, KeyboardInterrupt):
        say("left the debugger")
        return 1
    except Exception as exc:  # noqa: BLE001 - the step's own failure: this is what the user debugs
        inner = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
        traceback.print_exception(type(exc), exc, inner)  # from the step's own frame down
        say(f"{prepared.step} raised {type(exc).__name__}: post-mortem at the failing line (q to quit)")
        pdb.post_mortem(exc.__traceback__)
        return 1
    say(f"{prepared.step} returned {preview(result)}")
    return 0
