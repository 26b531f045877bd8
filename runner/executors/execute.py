"""Provides `execute`: call one step function on its inputs and describe the outcome as data.

Shared by every executor: worker processes, the inline executor and Dask workers all run tasks
through this one function, so capture, metrics and output storage behave the same everywhere.
"""

from __future__ import annotations

import builtins
import functools
import io
import logging
import pickle
import sys
import threading
import time
import traceback
import types
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any, TypeVar

import cloudpickle.cloudpickle as cloudpickle_internals

from dsl.context import StepContext, step_context
from dsl.loader import install_local_imports
from dsl.locality import is_user_file
from runner import freshness
from runner.artifacts import (
    ArtifactError,
    UnstorableOutput,
    dump_output,
    preview,
    trusted_stamp,
    verify_file,
)
from runner.executors.base import InputRef, Task, TaskResult
from runner.redaction import redacting
from runner.testing import fault_point

_V = TypeVar("_V")

Emit = Callable[[str, str, float], None]
"""Receives (stream, line, timestamp) for each captured line."""


def printable(line: str) -> str:
    """A line that encodes as UTF-8 (a lone surrogate would fail the store's write of the whole batch)."""
    if line.isascii():
        return line
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return line.encode("utf-8", "replace").decode("utf-8")
    return line


class LineCapture(io.TextIOBase):
    """A text stream that hands each complete line to its `target` (partial lines wait for their end).

    One pair lives for the whole process (`_captures`) and is re-targeted per task, never replaced:
    `print` holds a *borrowed* reference to `sys.stdout` while it writes, so a capture freed when a
    step ends (swapped out of `sys.stdout`) while a thread the step left behind is printing into it
    was a use-after-free: `AttributeError: 'LineCapture' object has no attribute '_lock'`, then a
    segfault of the worker. Between tasks the target is None and lines are dropped: they belong to
    no step.
    """

    def __init__(self, stream: str) -> None:
        super().__init__()
        self._stream = stream
        self.target: Emit | None = None
        self._partial = ""
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        with self._lock:
            data = self._partial + text
            *lines, self._partial = data.split("\n")
            target = self.target
        if target is not None:
            now = time.time()
            for line in lines:
                target(self._stream, printable(line.rstrip("\r")), now)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            rest, self._partial = self._partial, ""
            target = self.target
        if rest and target is not None:
            target(self._stream, printable(rest), time.time())

    def close(self) -> None:
        """Flush only: the capture outlives every step, so a step's `sys.stdout.close()` must not end it."""
        self.flush()

    def retarget(self, target: Emit | None) -> None:
        """Send later lines to `target`; a partial line of the previous target is flushed to it first."""
        self.flush()
        with self._lock:
            self.target = target


_captures = (LineCapture("stdout"), LineCapture("stderr"))
"""The process's two captures (see `LineCapture`): module globals, so never freed."""


class _LogHandler(logging.Handler):
    """Hands `logging` records to the current task's `emit`.

    One handler per process, re-targeted per task: building a `logging.Handler` takes logging's
    module lock and registers a weak reference, which is a noticeable part of a trivial step's cost.
    """

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.target: Emit | None = None
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        target = self.target
        if target is None:
            return
        try:
            text = self.format(record)
        except Exception:
            text = str(record.msg)
        for line in text.splitlines() or [""]:
            target("log", printable(line), record.created)


_handler: _LogHandler | None = None
_installed_roots: set[str] = set()


def _log_handler() -> _LogHandler:
    global _handler
    if _handler is None:
        _handler = _LogHandler()
    return _handler


def install_roots(task: Task) -> bool:
    """Put the task's project roots on `sys.path` (once per root per process), so its local modules import.

    Called by `execute`; a worker calls it earlier, before it takes the snapshot a step is checked
    against (`runner.executors.isolation`), so the roots count as the worker's state, not the step's.
    Returns whether it changed anything.
    """
    changed = False
    for entry in task.sys_path:
        if entry not in _installed_roots:
            install_local_imports(Path(entry))
            _installed_roots.add(entry)
            changed = True
    return changed


KEPT_CODES = 256
"""Bundles of step code a worker keeps unpickled (`keep_code`). A watch session makes new ones at
every save, and each holds its load's copy of the user's modules (~0.6 MB for a 1,750-line one):
4,096 of them grew a long session's workers by gigabytes. A 10,000-step flow's cold run makes ~160."""
SHIPPED_MODULES_KEPT = 64
"""Shipped modules a process keeps: a watch session ships new ones at every save. The least
recently used go first, by `admit_modules`, which the runner's `LocalExecutor` applies to the same
keys in the same order (those sent with code) to know which modules a worker still has."""


def keep_code(kept: dict[str, Any], key: str) -> None:
    """Mark `key` most recently used in `kept` (adding it, with None, if missing) and drop the least
    recently used beyond `KEPT_CODES`: a worker's code cache, and the runner's copy of which keys the
    worker holds. Both apply it to the same keys in the same order, so the runner sends code again
    exactly when the worker dropped it. (When the worker fails to unpickle a bundle it keeps nothing
    and the runner's copy has one key more: the runner then drops keys earlier, never later.)"""
    kept[key] = kept.pop(key, None)
    while len(kept) > KEPT_CODES:
        del kept[next(iter(kept))]


_shipped: dict[str, types.ModuleType] = {}
_unloadable: dict[str, str] = {}
"""Key -> why a shipped module's namespace could not be unpickled here."""


def shipped_module(key: str) -> types.ModuleType:
    """The local module shipped under `key`: how step code pickled by `runner.shipping.pickle_shipped`
    refers to it.

    Raises:
        ImportError: the module's namespace could not be unpickled in this process.
        KeyError: no module was shipped under `key` to this process.
    """
    error = _unloadable.get(key)
    if error is not None:
        raise ImportError(error)
    return _shipped[key]


def install_modules(modules: tuple[tuple[str, str, bytes], ...]) -> None:
    """Rebuild the shipped modules (key, name, pickled namespace) this process does not have yet.

    Every module exists, empty, before any namespace is unpickled: two modules may refer to each
    other. A namespace that fails to unpickle leaves its module empty and the error kept, so each
    step that uses it fails with that error.
    """
    fresh = admit_modules(_shipped, modules, types.ModuleType)
    for key, name, data in fresh:
        try:
            state = pickle.loads(data)
        except Exception as exc:
            _unloadable[key] = f"module {name} cannot be loaded: {type(exc).__name__}: {exc}"
            continue
        namespace = vars(_shipped[key])
        namespace.update(state)
        namespace["__builtins__"] = builtins.__dict__
    for key in list(_unloadable):
        if key not in _shipped:
            del _unloadable[key]


def admit_modules(
    kept: dict[str, _V], modules: tuple[tuple[str, str, bytes], ...], value: Callable[[str], _V]
) -> tuple[tuple[str, str, bytes], ...]:
    """Make `kept` hold `modules` (key -> `value(name)` for those it lacks) as the most recently
    used, drop the least recently used beyond `SHIPPED_MODULES_KEPT` (never one of `modules`), and
    return the modules added."""
    fresh = tuple(module for module in modules if module[0] not in kept)
    for key, name, _ in modules:
        kept[key] = kept.pop(key) if key in kept else value(name)
    while len(kept) > max(SHIPPED_MODULES_KEPT, len(modules)):
        del kept[next(iter(kept))]
    return fresh


_FORGOTTEN_FOR = [""]
"""The load (`code_key`'s first part) whose first code made this process forget the user's modules."""


def resolve_code(task: Task, cache: MutableMapping[str, Any]) -> Callable[..., Any]:
    """The task's function: unpickled from `task.code` once per `code_key`, then taken from `cache`.

    The user's modules imported by earlier tasks are forgotten when code of another load arrives, not
    at every chunk of one load's code: a walk of `sys.modules` took 120-350 µs, a 5,000-step chain's
    code comes in 84 chunks, and the worker is on a chain's critical path. Within one load, a module
    imported from a text other than its fingerprint's is dropped anyway (`runner.freshness`).

    Raises:
        KeyError: the executor sent no code for a key this process has not seen.
    """
    code = cache.get(task.code_key)
    if code is None:
        if not task.code:
            raise KeyError(f"no code for {task.code_key}")
        load = task.code_key.partition(":")[0]
        if load != _FORGOTTEN_FOR[0]:
            _forget_project_modules(task.sys_path)
            _FORGOTTEN_FOR[0] = load
        install_modules(task.modules)
        code = cache[task.code_key] = pickle.loads(task.code)
    fn: Callable[..., Any] = code[task.entry] if task.entry else code
    return fn


def rebuild_lru_cache(function: Callable[..., Any], maxsize: int | None, typed: bool) -> Callable[..., Any]:
    """Unpickle a flow's `lru_cache`-wrapped helper as a fresh cache around its function."""
    return functools.lru_cache(maxsize=maxsize, typed=typed)(function)


def rebuild_function(
    code: types.CodeType,
    namespace: dict[str, Any],
    name: str,
    qualname: str,
    module: str,
    defaults: tuple[Any, ...] | None,
    kwdefaults: dict[str, Any] | None,
    annotations: dict[str, Any],
    doc: str | None,
) -> types.FunctionType:
    """Unpickle a function that reads nothing of its module's namespace (`runner.shipping`): made as
    cloudpickle makes one (`_make_function`: the namespace shared with the functions of the same
    module in the same pickle, given the builtins), with the attributes its state would set."""
    function: types.FunctionType = cloudpickle_internals._make_function(code, namespace, name, defaults, None)
    function.__qualname__ = qualname
    function.__module__ = module
    function.__kwdefaults__ = kwdefaults
    function.__annotations__ = annotations
    function.__doc__ = doc
    return function


def _forget_project_modules(roots: tuple[str, ...]) -> None:
    """Drop the user's own modules imported by earlier tasks, so new code imports their current source.

    A warm worker outlives edits: without this, `import helpers` inside a step would keep the version
    imported before the save.
    """
    prefixes = tuple(str(Path(root).resolve()) + "/" for root in roots)
    if not prefixes:
        return
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and file.startswith(prefixes) and is_user_file(file):
            del sys.modules[name]


def load_input(ref: InputRef) -> Any:
    """Unpickle one input, verifying file artifacts against their hash."""
    if ref.none:
        return None
    if ref.parts is not None:
        return [load_input(part) for part in ref.parts]
    if ref.data is not None:
        return pickle.loads(ref.data)
    if ref.path is not None:
        verify_file(ref.path, ref.hash, stamp=ref.stamp)
        with open(ref.path, "rb") as handle:
            return pickle.load(handle)
    raise ArtifactError(f"input {ref.hash[:12]} carries no data")


def store_output(value: Any, artifact_dir: str) -> tuple[str, bytes | None, str | None, int]:
    """Pickle an output: (hash, inline bytes or None, file path or None, size).

    A large output is streamed to its artifact file as it is pickled (never held twice in memory).
    """
    return dump_output(value, artifact_dir or None)


@redacting
def execute(
    task: Task,
    fn: Callable[..., Any],
    emit: Emit,
    *,
    on_exception: Callable[[BaseException], None] | None = None,
    keep_log_level: bool = False,
) -> TaskResult:
    """Run `fn(**inputs)` for `task` with output capture, metrics and output storage.

    Never raises for the step's own failure: an exception becomes `TaskResult(ok=False, ...)`.
    `on_exception` (the inline executor's `--pdb`) is called with the exception while its frames are
    alive, after the real stdout and stderr are back. `keep_log_level` (a worker): leave the root
    logger at INFO for the next step, since each `setLevel` clears every logger's cache.
    """
    install_roots(task)
    ctx = StepContext(step=task.step, run_id=task.run_id, attempt=task.attempt)
    out, err = _captures
    out.retarget(emit)
    err.retarget(emit)
    handler = _log_handler()
    previous_target, handler.target = handler.target, emit
    root = logging.getLogger()
    saved = sys.stdout, sys.stderr, root.level
    sys.stdout, sys.stderr = out, err
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)

    def restore() -> None:
        out.retarget(None)
        err.retarget(None)
        sys.stdout, sys.stderr = saved[0], saved[1]
        root.removeHandler(handler)
        handler.target = previous_target
        if not keep_log_level and root.level != saved[2]:
            root.setLevel(saved[2])

    started = time.perf_counter()
    try:
        try:
            kwargs = {name: load_input(ref) for name, ref in task.kwargs.items()}
        except ArtifactError as exc:
            return TaskResult(ok=False, error=f"an input could not be read: {exc}")
        fault_point("step-start")
        freshness.forget_stale(task.expect)
        with step_context(ctx):
            value = fn(**kwargs)
        duration = time.perf_counter() - started
        fault_point("step-finish")
    except BaseException as exc:
        duration = time.perf_counter() - started
        if isinstance(exc, KeyboardInterrupt):
            raise
        if on_exception is not None:
            restore()
            on_exception(exc)
        if isinstance(exc, SystemExit):
            error = f"the step called sys.exit({exc.code!r})"
        elif isinstance(exc, MemoryError) and task.resources.get("memory"):
            error = f"the step exceeded its memory limit (resources memory={task.resources['memory']!r})"
        else:
            error = f"{type(exc).__name__}: {exc}"
        return TaskResult(
            ok=False,
            error=error,
            traceback=_user_traceback(exc),
            metrics=dict(ctx.metrics),
            duration_s=duration,
        )
    finally:
        restore()
    try:
        digest, data, path, size = store_output(value, task.artifact_dir)
    except UnstorableOutput as exc:
        return TaskResult(
            ok=False,
            error=f"the output cannot be stored ({type(value).__name__} is not picklable: {exc})",
            metrics=dict(ctx.metrics),
            duration_s=duration,
        )
    except MemoryError:
        return TaskResult(
            ok=False,
            error="the output could not be pickled: out of memory"
            + (f" (resources memory={task.resources['memory']!r})" if task.resources.get("memory") else ""),
            metrics=dict(ctx.metrics),
            duration_s=duration,
        )
    except OSError as exc:
        return TaskResult(
            ok=False,
            error=f"the output cannot be written to the artifact store: {exc}",
            metrics=dict(ctx.metrics),
            duration_s=duration,
        )
    return TaskResult(
        ok=True,
        hash=digest,
        data=data,
        path=path,
        size=size,
        preview=preview(value),
        metrics=dict(ctx.metrics),
        duration_s=duration,
        stale_code=freshness.stale(task.expect),
        stamp=None if path is None else trusted_stamp(path, digest),
    )


def _user_traceback(exc: BaseException) -> str:
    """The traceback without the runner's own frames."""
    frames = traceback.extract_tb(exc.__traceback__)
    own = str(Path(__file__).parent.parent)
    kept = [f for f in frames if not f.filename.startswith(own)]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(kept or frames)]
    lines.extend(traceback.format_exception_only(type(exc), exc))
    return "".join(lines)
