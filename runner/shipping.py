"""Provides `pickle_code`: step functions pickled by value for the processes that run them.

Steps and the helpers they use from the flow file or the user's local modules travel by value
(cloudpickle), since a worker may not be able to import the flow file — or would import a stale
copy of it. Two things differ from plain cloudpickle:

- a code object travels as `marshal` writes it (as Python keeps bytecode), not as cloudpickle's
  reduction (its ~18 constructor arguments, each pickled in Python): 7.5 against 17 µs a step
  function on a cold run, on the scheduler's critical path. Tracebacks on the worker name the flow
  file, not `<dynamic-code>`;
- the globals a function uses are read straight from its bytecode (`code_globals`). cloudpickle
  finds them with `dis`, which is most of the cost of shipping a one-line step; on a 1,000-step
  cold run that was ~25 µs per step on the scheduler's critical path;
- with `pickle_shipped`, a local module the code refers to as a module (`import helpers` then
  `helpers.f(x)`) travels apart from it: the pickle names the module by a key, and the module's
  namespace is pickled once under that key (`module_state`), to be installed once per worker
  process (`runner.executors.execute.install_modules`). cloudpickle would pickle the whole module
  into every bundle of steps that uses it: a step calling into a 1,750-line module made every
  chunk of a cold run pickle (and its worker unpickle) all 250 of its functions again.
"""

from __future__ import annotations

import dis
import functools
import io
import marshal
import re
import sys
import types
from collections import ChainMap
from collections.abc import Collection
from typing import Any

import cloudpickle
import cloudpickle.cloudpickle as cloudpickle_internals

from runner.executors.execute import rebuild_function, rebuild_lru_cache, shipped_module
from runner.stable_pickle import StablePickler

_GLOBAL_OPS = frozenset(cloudpickle_internals.GLOBAL_OPS)
_LOAD_GLOBAL = dis.opmap["LOAD_GLOBAL"]
_EXTENDED_ARG = dis.opmap["EXTENDED_ARG"]
_NAME_SHIFT = 1 if sys.version_info >= (3, 11) else 0
"""Since 3.11, LOAD_GLOBAL's argument is the name index shifted left by one (the low bit says
whether a NULL is pushed too)."""


def code_globals(code: types.CodeType) -> dict[str, None]:
    """The global names `code` (and the code nested in it) reads, writes or deletes, in order.

    The same answer as cloudpickle's `_extract_code_globals`, without building `dis` instructions.
    """
    names = code.co_names
    raw = code.co_code
    found: dict[str, None] = {}
    extended = 0
    for index in range(0, len(raw), 2):
        op = raw[index]
        if op == _EXTENDED_ARG:
            extended = (extended | raw[index + 1]) << 8
            continue
        if op in _GLOBAL_OPS:
            arg = extended | raw[index + 1]
            found[names[arg >> _NAME_SHIFT if op == _LOAD_GLOBAL else arg]] = None
        extended = 0
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found.update(code_globals(const))
    return found


_REDUCED_CODES: dict[int, tuple[types.CodeType, tuple[Any, tuple[Any, ...]]]] = {}
"""id -> (code object, its reduction), for code pickled before (the object is held: the id stays its).

Keyed by identity, not equality: code objects that differ only by file name compare equal. A
reload executes the very code objects the last load compiled for every unchanged part of the flow
file and every unchanged module (`dsl.flowcode`, `dsl.codecache`): each is marshalled once."""
_REDUCED_CODES_KEPT = 50_000


def _code_reduce(code: types.CodeType) -> tuple[Any, tuple[Any, ...]]:
    """A code object's reduction: its `marshal` bytes, which keep its real file name for tracebacks.
    A code object `marshal` cannot write (one given a constant of another kind by `replace`) gets
    cloudpickle's reduction, with the real file name put back. Nothing hashes these bytes: a code
    bundle is keyed by its load (`runner.engine.bundles`), and the ids of classes shipped by value are
    worked out by `StablePickler` itself (`runner.stable_pickle`)."""
    kept = _REDUCED_CODES.get(id(code))
    if kept is not None and kept[0] is code:
        return kept[1]
    try:
        reduced: tuple[Any, tuple[Any, ...]] = marshal.loads, (marshal.dumps(code),)
    except ValueError:
        constructor, args = cloudpickle_internals._code_reduce(code)
        reduced = constructor, tuple(code.co_filename if a == "<dynamic-code>" else a for a in args)
    if len(_REDUCED_CODES) >= _REDUCED_CODES_KEPT:
        _REDUCED_CODES.clear()
    _REDUCED_CODES[id(code)] = (code, reduced)
    return reduced


def _module_pickled_by_value(obj: Any) -> bool:
    """Whether `obj`'s module is registered to pickle by value (a flow's file, its local modules)."""
    module = sys.modules.get(getattr(obj, "__module__", "") or "")
    return module is not None and cloudpickle_internals._is_registered_pickle_by_value(module)


class CodePickler(StablePickler):
    """cloudpickle for step code: code as `marshal` writes it, fast globals, `lru_cache` helpers
    rebuilt, classes with stable ids (`runner.stable_pickle`).

    A `functools.lru_cache`/`cache` wrapper defined in the flow file (or a local module) would be
    pickled by reference to a module workers cannot import; it is rebuilt from its wrapped function.
    """

    dispatch_table = ChainMap({types.CodeType: _code_reduce}, cloudpickle.Pickler.dispatch_table)

    def __init__(self, file: io.BytesIO, load_id: str = "", local_modules: Collection[str] = ()) -> None:
        super().__init__(file, protocol=5)
        self._load_id = load_id
        self._local_modules = local_modules
        self.modules: dict[str, types.ModuleType] = {}
        """Key -> module, for each local module this pickle names instead of holding (see the module)."""

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is types.CodeType:
            return _code_reduce(obj)  # what `dispatch_table` gives it, without the overrides below
        if type(obj) is types.ModuleType and obj.__name__ in self._local_modules:
            # The key holds the object's id: a module the user swapped in `sys.modules` during the
            # load is another module, shipped apart, under the same name.
            key = f"{self._load_id}:module:{obj.__name__}:{id(obj)}"
            self.modules[key] = obj
            return shipped_module, (key,)
        if type(obj) is types.FunctionType:
            cache = cloudpickle_internals._extract_code_globals_cache
            if obj.__code__ not in cache:
                cache[obj.__code__] = code_globals(obj.__code__)
            if _module_pickled_by_value(obj):
                # By value whatever cloudpickle would look up (a function of a module registered so
                # is never pickled by reference): a plain one is reduced here, without the ~2 µs of
                # lookups the overrides below make to come to `_dynamic_function_reduce`.
                plain = self._plain_reduce(obj)
                if plain is not None:
                    return plain
        elif isinstance(obj, functools._lru_cache_wrapper):
            if _module_pickled_by_value(obj):
                options = obj.cache_parameters()
                return rebuild_lru_cache, (obj.__wrapped__, options["maxsize"], options["typed"])
        return super().reducer_override(obj)

    def _dynamic_function_reduce(self, func: types.FunctionType) -> Any:
        """A function pickled by value: as `_plain_reduce` says if it can, else as cloudpickle does."""
        plain = self._plain_reduce(func)
        return super()._dynamic_function_reduce(func) if plain is None else plain

    def _plain_reduce(self, func: types.FunctionType) -> tuple[Any, tuple[Any, ...]] | None:
        """A function pickled by value that reads nothing of its module's namespace, with no closure
        or attributes (a step of plain Python on its arguments and builtins), travels as its code and
        the few attributes cloudpickle would set: cloudpickle's state for it holds nothing more (no
        globals, no submodules), and its namespace is cloudpickle's own, shared by the module's
        functions in this pickle (`rebuild_function`). None for any other function. With code
        objects reduced at once (`reducer_override`), a chunk of one-line steps pickled in 5.7-6.3 µs
        a step against 8.6-12 (3.4-3.9 against 6.1-9.3 once their code was marshalled), on the
        scheduler of a cold run."""
        reads = cloudpickle_internals._extract_code_globals(func.__code__)  # `code_globals`, kept above
        namespace = func.__globals__
        if (
            func.__closure__ is not None
            or func.__dict__
            or getattr(func, "__type_params__", None)
            or any(name in namespace for name in reads)
        ):
            return None
        shared = self._function_getnewargs(func)[1]
        return rebuild_function, (
            func.__code__,
            shared,
            func.__name__,
            func.__qualname__,
            func.__module__,
            func.__defaults__,
            func.__kwdefaults__,
            func.__annotations__,
            func.__doc__,
        )


def pickle_code(functions: dict[str, Any]) -> bytes:
    """Pickle step functions (by name) for a worker: see `runner.executors.execute.resolve_code`."""
    buffer = io.BytesIO()
    CodePickler(buffer).dump(functions)
    return buffer.getvalue()


def pickle_shipped(
    obj: Any, load_id: str, local_modules: Collection[str]
) -> tuple[bytes, dict[str, types.ModuleType]]:
    """Pickle `obj` for a worker with each of `local_modules` it refers to named by a key, not held.

    Returns the bytes and key -> module for each module named: the worker must have installed
    those before it unpickles the bytes (`runner.executors.execute.install_modules`)."""
    buffer = io.BytesIO()
    pickler = CodePickler(buffer, load_id, local_modules)
    pickler.dump(obj)
    return buffer.getvalue(), pickler.modules


def module_state(module: types.ModuleType) -> dict[str, Any]:
    """What a shipped module's namespace is rebuilt from: as cloudpickle pickles a module by value."""
    return {name: value for name, value in vars(module).items() if name != "__builtins__"}


_PLAIN = frozenset({int, float, complex, str, bytes, bool, type(None), re.Pattern})
"""Immutable types whose `==` says two values behave alike."""
_BOOKKEEPING = frozenset({"__loader__", "__spec__", "__cached__", "__builtins__", "__warningregistry__"})
"""Not compared: a module's import records (new objects at each import, describing the same file,
`__file__`), its builtins (not pickled) and the `warnings` module's notes of what it showed."""


def same_namespace(old: types.ModuleType, new: types.ModuleType) -> bool:
    """Whether `new`, a module imported again from the same text as `old`, holds exactly what `old`
    does, so that `old`'s pickled namespace rebuilds `new` too.

    Only for namespaces of the module's own functions with the very same code objects (a text
    compiled once: `dsl.codecache`), values that are the very same objects (the libraries they
    import), and plain values (numbers, strings, patterns, and tuples, lists and dicts of them) equal
    by value. Anything else — an object, a class, another local module or its function, a closure, a
    function attribute — answers False, as does any value that differs (one read from a file or the
    clock at import). Equal lists and dicts count as the same: the pickle is rebuilt afresh in every
    worker, so a step's change to one never reaches another load's steps.
    """
    old_items, new_items = vars(old), vars(new)
    if old_items.keys() != new_items.keys():
        return False
    same = _Same(old_items, new_items)
    return all(name in _BOOKKEEPING or same(old_items[name], value) for name, value in new_items.items())


class _Same:
    """Compares values of two namespaces (`same_namespace`): functions must belong to their own."""

    def __init__(self, old_home: dict[str, Any], new_home: dict[str, Any]) -> None:
        self.homes = old_home, new_home

    def __call__(self, old: Any, new: Any) -> bool:
        if old is new:
            return True
        kind = type(new)
        if kind is not type(old):
            return False
        if kind in _PLAIN:
            return bool(old == new)
        if kind is tuple or kind is list:
            return len(old) == len(new) and all(map(self, old, new))
        if kind is dict:
            return self.items(old, new)
        if kind is types.FunctionType:
            return (
                old.__code__ is new.__code__
                and old.__globals__ is self.homes[0]
                and new.__globals__ is self.homes[1]
                and old.__closure__ is None
                and new.__closure__ is None
                and not old.__dict__
                and not new.__dict__
                and (old.__name__, old.__qualname__, old.__module__)
                == (new.__name__, new.__qualname__, new.__module__)
                and self(old.__doc__, new.__doc__)
                and self(old.__defaults__, new.__defaults__)
                and self.items(old.__kwdefaults__ or {}, new.__kwdefaults__ or {})
                and self.items(old.__annotations__, new.__annotations__)
            )
        return False

    def items(self, old: dict[Any, Any], new: dict[Any, Any]) -> bool:
        return len(old) == len(new) and all(
            self(old_key, key) and self(old[old_key], new[key]) for old_key, key in zip(old, new, strict=True)
        )
