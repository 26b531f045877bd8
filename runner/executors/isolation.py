"""Provides `Isolation`: what a warm worker puts back after each step, and when it must be replaced.

A warm worker runs many steps, one after another. Whatever a step changes in the process must not
be seen by the next step that lands on the same worker, or a result would depend on scheduling
(`--workers 1` versus `--only b --force` giving two answers for one fingerprint). After each step
the worker therefore

- restores what is cheap to compare and to restore: the working directory, `os.environ`,
  `sys.path`, finders removed from `sys.meta_path`, `sys.stdin`, the recursion limit, a
  trace or profile function, `warnings` filters that raise, the root logger's handlers and level,
  and fds 0/1/2 (re-pointed at the worker's own copies: a step that closed fd 1 leaves later steps a
  working stdout); and it forgets the user's own modules the step imported (files under the flow's
  project root), so the next step imports them afresh;
- asks to be replaced by a fresh process (`Isolation.end` returns the reasons) when a step leaves
  state that cannot be put back cheaply: a thread still running (daemon or not), a changed signal
  handler, or a rebound attribute of a namespace the step's code can reach
  (the flow's globals, a module it references or imports — `json.dumps = ...`, `helpers.SCALE = 10`),
  or anything above that could not be restored.

Everything is compared by identity or by one syscall; in a worker that costs ~8 µs per step (on
the 2-core machine of MEASUREMENTS.md), against ~90 µs of worker CPU per trivial step. Not seen:
in-place mutation of a mutable object (`CACHE.append(x)`), attributes of a module first imported in
this worker by the step itself (its clean state is unknown), `builtins`, state kept by C code
(`np.random.seed`), `os.putenv` without `os.environ`, the umask, a blocked signal, a pending alarm
whose handler was not changed, a real-time signal's handler, fd 1 or 2 replaced by another pipe;
import hooks and "ignore" warning filters are kept on purpose (libraries add them when first
imported). docs/guarantees.md says so too.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # CPython's C module behind `signal`: no stub
import dis
import fcntl
import logging
import os
import select
import site
import sys
import sysconfig
import threading
import types
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from runner.executors.execute import KEPT_CODES, SHIPPED_MODULES_KEPT

_SIGNALS = tuple(sorted(int(s) for s in _signal.valid_signals() if int(s) < 32 and int(s) not in (9, 19)))
"""The standard signals, whose handler a step could change (not SIGKILL, SIGSTOP; real-time signals are
left to C libraries). `_signal.getsignal` is the C function: `signal.getsignal` wraps each answer in an
enum, ten times the cost."""

_IMPORT_NAME = dis.opmap["IMPORT_NAME"]
_IMPORT_NAME_BYTE = bytes([_IMPORT_NAME])
_EXTENDED_ARG = dis.opmap["EXTENDED_ARG"]
_MISSING = object()
WORKER_LOG_LEVEL = logging.INFO
"""The root logger's level in a worker, as `execute` leaves it (kept between steps: each `setLevel`
clears every logger's cache). A step that changes it has it set back."""
_WATCH_CACHE = KEPT_CODES
"""Functions whose reachable namespaces are remembered. Each holds its load's code and modules alive,
so this is bounded as the worker's code cache is: at 1,024 a worker still grew by ~0.54 MB per save
of a flow calling a 1,750-line module."""


def import_names(code: types.CodeType) -> list[str]:
    """The module names `code` (and the code nested in it) imports: `import x.y` gives "x.y"."""
    names: list[str] = []
    raw = code.co_code
    extended = 0
    # Most functions import nothing: one C scan of the bytes says so (a match may be an argument).
    for index in range(0, len(raw) if _IMPORT_NAME_BYTE in raw else 0, 2):
        op = raw[index]
        if op == _EXTENDED_ARG:
            extended = (extended | raw[index + 1]) << 8
            continue
        if op == _IMPORT_NAME:
            names.append(code.co_names[extended | raw[index + 1]])
        extended = 0
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.extend(import_names(const))
    return names


class _Namespace:
    """One dict a step can rebind names in, with its state when first seen.

    The user's code (the flow's own globals, rebuilt by cloudpickle in the worker, modules shipped
    by value, and importable modules outside the standard library and site-packages) is watched
    whole but for dunder names (`__warningregistry__`). A library module is watched for what a
    monkeypatch replaces: a public function or class (`json.dumps = ...`). Libraries rebind their
    private globals in normal use (`warnings._filters_version` on every `catch_warnings`) and
    initialise public data lazily (`tempfile.tempdir` on the first temporary file, `mimetypes.inited`):
    counting those would replace a worker after every step that uses them.
    """

    __slots__ = ("label", "live", "snapshot", "library")

    def __init__(self, label: str, live: dict[str, Any], library: bool) -> None:
        self.label = label
        """A module's name, or the file of the flow's functions (made readable only when reported)."""
        self.live = live
        self.snapshot = dict(live)
        self.library = library

    def changed(self) -> list[str]:
        """The names rebound, added or deleted since the snapshot that count as a monkeypatch."""
        try:
            if self.live == self.snapshot:  # C speed; values compared by identity first
                return []
        except Exception:  # noqa: S110 - a value whose __eq__ raises (an array): look name by name
            pass
        found = []
        for name in self.live.keys() | self.snapshot.keys():
            old, new = self.snapshot.get(name, _MISSING), self.live.get(name, _MISSING)
            if old is new or name[:2] == "__" or isinstance(new, types.ModuleType):
                continue  # a submodule imported (and bound on its package) is not a patch either
            if self.library and (name[:1] == "_" or not (callable(old) or callable(new))):
                continue
            label = self.label
            if label.endswith(".py"):  # the flow's globals: its module name is generated
                label = os.path.splitext(os.path.basename(label))[0]
            found.append(f"{label}.{name}")
        if not found:
            self.snapshot = dict(self.live)
        return sorted(found)


_modules: dict[int, tuple[types.ModuleType, _Namespace]] = {}
"""Importable modules watched so far (by id; the module is held, so the id stays its own)."""

_LIBRARY_PATHS = tuple(
    {
        os.path.join(os.path.realpath(path), "")
        for path in (
            *(sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")),
            *site.getsitepackages(),
            site.getusersitepackages(),
        )
    }
)
"""Where library modules live: the standard library and every site-packages directory."""
_OWN_ROOT = os.path.join(str(Path(__file__).resolve().parents[2]), "")
"""flow's own packages count as a library too (`dsl.context` keeps the current step in a global)."""


def _is_library(module: types.ModuleType) -> bool:
    file = getattr(module, "__file__", None)
    if not file:
        return True  # built in (`sys`, `builtins`) or a namespace package
    return os.path.realpath(file).startswith(_LIBRARY_PATHS) or (
        module.__name__.partition(".")[0] in ("dsl", "runner", "tui") and file.startswith(_OWN_ROOT)
    )


def _module_namespace(module: types.ModuleType) -> _Namespace:
    entry = _modules.get(id(module))
    if entry is None:
        namespace = _Namespace(module.__name__, vars(module), library=_is_library(module))
        entry = _modules[id(module)] = (module, namespace)
    return entry[1]


def _importable(module: types.ModuleType) -> bool:
    return sys.modules.get(module.__name__) is module


def reachable_namespaces(fn: Callable[..., Any]) -> list[_Namespace]:
    """The namespaces a step function can rebind names in directly, each with its state now.

    Its globals and those of the shipped (by-value) helpers it reaches through them, the modules
    bound in those globals, and the modules its code imports that are already imported.
    The code of importable libraries is not followed: their own references are theirs.
    """
    found: dict[int, _Namespace] = {}
    if isinstance(fn, types.FunctionType):
        _walk(found, function=fn)
    return list(found.values())


_SHIPPED_WALKS = SHIPPED_MODULES_KEPT
"""Shipped modules whose walk is remembered: as many as a worker keeps."""
_shipped_walks: dict[int, tuple[types.ModuleType, list[_Namespace]]] = {}
"""The namespaces reachable from each shipped module walked so far, by the id of the module's
namespace (the module is held, so the id stays its own).

A worker keeps the modules shipped to it (`runner.executors.execute.install_modules`), and every step
that uses one reaches it: walking its functions again for each new step function cost ~5 ms per step
with a 250-function module. What the walk finds changes only when a name of a watched namespace is
rebound, added or deleted, and a step that does so retires its worker."""


def _shipped_namespaces(module: types.ModuleType) -> list[_Namespace]:
    entry = _shipped_walks.get(id(vars(module)))
    if entry is None:
        if len(_shipped_walks) >= _SHIPPED_WALKS:
            _shipped_walks.clear()
        found: dict[int, _Namespace] = {}
        _walk(found, module=module)
        entry = _shipped_walks[id(vars(module))] = (module, list(found.values()))
    return entry[1]


def _walk(
    found: dict[int, _Namespace],
    *,
    function: types.FunctionType | None = None,
    module: types.ModuleType | None = None,
) -> None:
    """Add to `found` what is reachable from `function` (its shipped modules as remembered), or
    from the shipped `module` (walked through)."""
    pending: list[tuple[str, dict[str, Any], types.CodeType | None]] = []

    def add_module(module: types.ModuleType) -> None:
        if id(vars(module)) in found:
            return
        if _importable(module):
            found[id(vars(module))] = _module_namespace(module)
        elif function is not None:
            for namespace in _shipped_namespaces(module):
                found.setdefault(id(namespace.live), namespace)
        else:
            pending.append((module.__name__, vars(module), None))

    def add_function(function: types.FunctionType) -> None:
        owner = sys.modules.get(function.__module__ or "")
        if owner is not None and vars(owner) is function.__globals__:
            add_module(owner)
        else:
            pending.append((function.__code__.co_filename, function.__globals__, function.__code__))

    if function is not None:
        add_function(function)
    if module is not None:
        pending.append((module.__name__, vars(module), None))
    while pending:
        label, namespace, code = pending.pop()
        if code is not None:
            for name in import_names(code):
                parts = name.split(".")
                for end in range(1, len(parts) + 1):  # `import a.b` binds `a`: a.X is reachable too
                    imported = sys.modules.get(".".join(parts[:end]))
                    if imported is not None:
                        add_module(imported)
        if id(namespace) in found:
            continue
        found[id(namespace)] = _Namespace(label, namespace, library=False)
        for value in list(namespace.values()):
            if isinstance(value, types.ModuleType):
                add_module(value)
            elif isinstance(value, types.FunctionType) and id(value.__globals__) not in found:
                add_function(value)


def _dup_high(fd: int) -> int:
    """A close-on-exec copy of `fd` above the low numbers a step is likely to close or reuse."""
    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 64)


class StepState:
    """What `Isolation.begin` saw just before a step, for `Isolation.end` to compare against."""

    __slots__ = ("last_module", "threads", "namespaces", "roots")

    def __init__(
        self, last_module: str | None, threads: int, namespaces: list[_Namespace], roots: tuple[str, ...]
    ) -> None:
        self.last_module = last_module
        self.threads = threads
        self.namespaces = namespaces
        self.roots = roots


class Isolation:
    """The worker's clean state, taken once at start-up; `begin`/`end` bracket each step.

    Create it after the worker's own set-up (its threads, its signal handlers), so that what it
    records is what every step must find; call `rebase` when the worker itself changes `sys.path`
    (a new project root). A step's own snapshot is as small as can be (two lookups): copying
    `sys.path` and the rest before every step cost more than comparing them after it.
    """

    def __init__(self) -> None:
        try:
            self._cwd: str | None = os.getcwd()
        except OSError:
            self._cwd = None  # started in a deleted directory (a step removed it): nothing to go back to
        self._environ = os.environ
        self._env = dict(os.environ._data)  # type: ignore[attr-defined]  # the bytes behind os.environ
        self._fds = tuple((fd, _dup_high(fd)) for fd in (0, 1, 2))
        self._poll = select.poll()
        for fd in (0, 1, 2):
            self._poll.register(fd, select.POLLIN | select.POLLOUT)
        self._fd_events = self._poll.poll(0)
        self._stdin = sys.stdin
        self._signals = list(map(_signal.getsignal, _SIGNALS))
        self._recursion = sys.getrecursionlimit()
        self._trace = sys.gettrace(), sys.getprofile()  # a coverage tracer of the worker's own stays
        self._root = logging.getLogger()
        self._handlers = list(self._root.handlers)
        self._watched: dict[int, tuple[Callable[..., Any], list[_Namespace]]] = {}
        self._prefixes: dict[tuple[str, ...], tuple[str, ...]] = {}
        self.rebase()

    def rebase(self) -> None:
        """Take the current `sys.path`, `sys.meta_path` and `warnings` filters as the clean ones."""
        self._path = sys.path, list(sys.path)
        self._meta_path = sys.meta_path, list(sys.meta_path)
        self._filters = _warning_filters(), list(_warning_filters())

    def begin(self, fn: Callable[..., Any], roots: tuple[str, ...]) -> StepState:
        """Record what a step may change, just before it runs (after its project roots are installed)."""
        entry = self._watched.get(id(fn))
        if entry is None:
            if len(self._watched) >= _WATCH_CACHE:
                self._watched.clear()
            entry = self._watched[id(fn)] = (fn, reachable_namespaces(fn))
        # Threads counted per step: one an import started while the step's code was loaded is the
        # worker's (it would start again in any fresh worker), not the step's.
        return StepState(next(reversed(sys.modules), None), len(sys._current_frames()), entry[1], roots)

    def end(self, state: StepState) -> list[str]:
        """Put back what the step changed; return why the worker must be replaced (empty: it need not)."""
        reasons: list[str] = []
        self._restore_files(reasons)
        self._restore_interpreter(state, reasons)
        self._forget_user_modules(state)
        threads = len(sys._current_frames()) - state.threads
        if threads > 0:
            names = [t.name for t in threading.enumerate() if t.ident != threading.get_ident()]
            left = ", ".join(names[-threads:]) or "started with _thread"
            reasons.append(f"the step left {threads} thread(s) running ({left})")
        if list(map(_signal.getsignal, _SIGNALS)) != self._signals:
            reasons.append("the step changed a signal handler")
        patched = [name for namespace in state.namespaces for name in namespace.changed()]
        if patched:
            shown = ", ".join(patched[:5]) + (f" and {len(patched) - 5} more" if len(patched) > 5 else "")
            reasons.append(f"the step rebound {shown}")
        return reasons

    def _restore_files(self, reasons: list[str]) -> None:
        """The working directory, and fds 0/1/2 when one syscall says they changed.

        `poll` tells a closed fd (POLLNVAL) and one replaced by a file or a terminal (readable as well
        as writable, where the worker's are a pipe's write end and /dev/null) from the worker's own;
        only another pipe's write end put in their place goes unseen. Three `dup2` every step cost
        three syscalls where this costs one.
        """
        if self._poll.poll(0) != self._fd_events:
            try:
                for fd, saved in self._fds:
                    os.dup2(saved, fd)
            except OSError as exc:
                reasons.append(f"the worker's standard streams could not be restored ({exc.strerror})")
        if self._cwd is not None:
            try:
                current: str | None = os.getcwd()
            except OSError:
                current = None  # the step's directory was deleted under it
            if current != self._cwd:
                try:
                    os.chdir(self._cwd)
                except OSError as exc:
                    reasons.append(f"the working directory could not be restored ({exc.strerror})")

    def _restore_interpreter(self, state: StepState, reasons: list[str]) -> None:
        """`os.environ`, `sys.path`, `sys.meta_path`, `sys.stdin`, recursion limit, root log handlers."""
        if os.environ is not self._environ:
            os.environ = self._environ  # noqa: B003 - the object comes back; its contents just below
        data: dict[bytes, bytes] = self._environ._data  # type: ignore[attr-defined]  # see `begin`
        if data != self._env:
            try:
                for key in data.keys() - self._env.keys():
                    os.unsetenv(key)
                for key, value in self._env.items():
                    if data.get(key) != value:
                        os.putenv(key, value)
            except OSError as exc:
                reasons.append(f"the environment could not be restored ({exc.strerror})")
            data.clear()
            data.update(self._env)
        path, path_copy = self._path
        if sys.path is not path or path != path_copy:
            sys.path = path
            path[:] = path_copy
        clean, copy = self._meta_path
        if sys.meta_path is not clean or clean != copy:
            # A finder added is kept (libraries install import hooks when first imported: `six`);
            # one removed (flow's own, or the standard ones) comes back.
            current = sys.meta_path
            if all(finder in current for finder in copy):
                self._meta_path = current, list(current)
            else:
                sys.meta_path = clean
                clean[:] = copy
        if sys.stdin is not self._stdin:
            sys.stdin = self._stdin
        if sys.getrecursionlimit() != self._recursion:
            sys.setrecursionlimit(self._recursion)
        if (sys.gettrace(), sys.getprofile()) != self._trace:
            sys.settrace(self._trace[0])
            sys.setprofile(self._trace[1])
        if self._root.handlers != self._handlers:
            self._root.handlers[:] = self._handlers
        if self._root.level != WORKER_LOG_LEVEL:
            self._root.setLevel(WORKER_LOG_LEVEL)
        filters, filters_copy = self._filters
        if _warning_filters() is not filters or filters != filters_copy:
            self._restore_warnings()

    def _restore_warnings(self) -> None:
        """Undo what the step did to the `warnings` filters that can change a result: a filter that
        turns a warning into an error, added or removed. Other changes are kept: libraries add
        "ignore" filters when they are first imported (often inside a step), and taking those away
        while the library stays imported would only bring back the warnings it meant to silence.
        """
        filters, copy = self._filters
        current = _warning_filters()
        if [f for f in current if f[0] == "error"] == [f for f in copy if f[0] == "error"]:
            self._filters = current, list(current)
            return
        warnings.filters = filters
        filters[:] = copy
        warnings._filters_mutated()  # type: ignore[attr-defined]  # private: the filters' cache version

    def _forget_user_modules(self, state: StepState) -> None:
        """Drop the user's own modules the step imported: the next step imports them from their file.

        Modules are found from the end of `sys.modules` back to the last one present before the step
        (a dict keeps insertion order), so a step that imported nothing costs one lookup.
        """
        if not state.roots or next(reversed(sys.modules), None) == state.last_module:
            return
        prefixes = self._prefixes.get(state.roots)
        if prefixes is None:
            given_and_resolved = (path for root in state.roots for path in (root, str(Path(root).resolve())))
            prefixes = self._prefixes[state.roots] = tuple({os.path.join(p, "") for p in given_and_resolved})
        added = []
        for name in reversed(sys.modules):
            if name == state.last_module:
                break
            added.append(name)
        for name in added:
            file = getattr(sys.modules.get(name), "__file__", None)
            if file and file.startswith(prefixes) and "site-packages" not in file:
                del sys.modules[name]


def _warning_filters() -> list[Any]:
    """`warnings.filters`, the list itself (typeshed calls it a `Sequence`; it is a list)."""
    return cast(list[Any], warnings.filters)
