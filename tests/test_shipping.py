"""`code_globals` must name exactly the globals cloudpickle's own (slower) walk finds: a name it
missed would be a NameError on the worker; an extra one could ship an unpicklable object."""

from __future__ import annotations

import collections
import email.message
import inspect
import json
import marshal
import pickle
import sys
import textwrap
import types

import cloudpickle
import cloudpickle.cloudpickle as cloudpickle_internals
import pytest

from runner.shipping import code_globals, pickle_code
from tests.helpers_core import calls_to


def _functions(*modules: types.ModuleType) -> list[types.FunctionType]:
    found = []
    for module in modules:
        for _, value in inspect.getmembers(module):
            if isinstance(value, types.FunctionType):
                found.append(value)
            elif isinstance(value, type):
                found += [v for v in vars(value).values() if isinstance(v, types.FunctionType)]
    return found


def _reference(code: types.CodeType) -> dict[str, None]:
    names = {name: None for name in cloudpickle_internals._walk_global_ops(code)}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.update(_reference(const))
    return names


def test_same_globals_as_cloudpickle_for_real_code():
    functions = _functions(json, collections, email.message, inspect, textwrap)
    assert len(functions) > 200
    for fn in functions:
        assert list(code_globals(fn.__code__)) == list(_reference(fn.__code__)), fn.__qualname__


def test_same_globals_for_tricky_code():
    names = [f"g{i}" for i in range(300)]  # more than 256 names: EXTENDED_ARG on the name index
    source = "\n".join(
        [
            *(f"{name} = {i}" for i, name in enumerate(names)),
            "def wide():",
            "    return " + " + ".join(names),
            "def writes():",
            "    global g299, fresh",
            "    g299 = 1",
            "    fresh = [g1 for _ in range(g2)]",
            "    del fresh",
            "    def inner():",
            "        return lambda: (g3, len)",
            "    return inner",
        ]
    )
    namespace: dict[str, object] = {}
    exec(compile(source, "<tricky>", "exec"), namespace)
    for fn_name in ("wide", "writes"):
        code = namespace[fn_name].__code__  # type: ignore[attr-defined]
        assert list(code_globals(code)) == list(_reference(code)), fn_name
    assert list(code_globals(namespace["wide"].__code__)) == names  # type: ignore[attr-defined]
    writes = namespace["writes"].__code__  # type: ignore[attr-defined]
    assert set(code_globals(writes)) == {"g299", "fresh", "g1", "g2", "g3", "len", "range"}


def test_shipped_functions_run_with_their_globals(tmp_path):
    module = types.ModuleType("shipped_flow")
    source = "SCALE = 3\ndef helper(x):\n    return x * SCALE\ndef step(x):\n    return helper(x) + 1\n"
    exec(compile(source, str(tmp_path / "f.py"), "exec"), module.__dict__)
    sys.modules["shipped_flow"] = module
    try:
        cloudpickle.register_pickle_by_value(module)
        data = pickle_code({"step": module.step})
    finally:
        cloudpickle.unregister_pickle_by_value(module)
        del sys.modules["shipped_flow"]
    assert pickle.loads(data)["step"](2) == 7


@pytest.mark.parametrize("fn", [lambda: undefined_name, lambda: print])  # noqa: F821
def test_lambdas(fn):
    assert list(code_globals(fn.__code__)) == list(_reference(fn.__code__))


def test_a_code_object_is_reduced_once_and_keeps_its_own_file_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reload pickles the very code objects the last load did: their reduction is kept. Code that
    differs only by its file name compares equal, so it is kept by identity: each keeps its file."""
    source = "def f(x):\n    return [x * k for k in range(3)]\n"
    one: dict[str, object] = {}
    two: dict[str, object] = {}
    exec(compile(source, "/project/one.py", "exec"), one)
    exec(compile(source, "/project/two.py", "exec"), two)
    first, second = one["f"], two["f"]
    assert isinstance(first, types.FunctionType) and isinstance(second, types.FunctionType)
    assert first.__code__ == second.__code__ and first.__code__ is not second.__code__
    reduced = calls_to(monkeypatch, marshal, "dumps", lambda code: code.co_filename)
    shipped = [pickle.loads(pickle_code({"f": fn}))["f"] for fn in (first, second, first, second)]
    assert reduced == ["/project/one.py", "/project/two.py"]  # each with its comprehension inside
    assert [fn.__code__.co_filename for fn in shipped] == ["/project/one.py", "/project/two.py"] * 2
    assert [fn(2) for fn in shipped] == [[0, 2, 4]] * 4


def test_code_that_marshal_cannot_write_travels_as_cloudpickle_reduces_it() -> None:
    """A code object given a constant `marshal` has no format for (`replace` allows any): it still
    ships, with its own file name, through cloudpickle's reduction."""
    namespace: dict[str, object] = {}
    exec(compile("def f(x):\n    return x + 1\n", "/project/odd.py", "exec"), namespace)
    fn = namespace["f"]
    assert isinstance(fn, types.FunctionType)
    fn.__code__ = fn.__code__.replace(co_consts=(*fn.__code__.co_consts, range(3)))
    with pytest.raises(ValueError):
        marshal.dumps(fn.__code__)
    shipped = pickle.loads(pickle_code({"f": fn}))["f"]
    assert shipped(1) == 2
    assert shipped.__code__.co_filename == "/project/odd.py"
    assert shipped.__code__.co_consts[-1] == range(3)


PLAIN_MODULE = """
LIMIT = 10


def plain(x: int, y: int = 2, *, z: int = 3) -> int:
    "Adds."
    return sum([x, y, z])


def remember(value):
    global memory
    memory = value


def recall():
    return memory


def capped(x):
    return min(x, LIMIT)
"""


def test_a_function_that_reads_nothing_of_its_module_travels_as_its_code_and_attributes(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step of plain Python on its arguments and builtins is pickled as its code and attributes, not
    through cloudpickle's reduction (~6 against 8.5 µs a step function of a cold run, on the
    scheduler). Unpickled, it is what cloudpickle makes of it: name, qualified name, module, defaults,
    annotations, docstring, builtins at hand, and its module's namespace shared with the module's other
    functions in the same pickle (a global one writes, another reads). A function that reads a global
    of its module still goes through cloudpickle, with the value."""
    from runner.executors import execute

    module = types.ModuleType("plain_flow")
    exec(compile(PLAIN_MODULE, str(tmp_path / "plain_flow.py"), "exec"), module.__dict__)
    sys.modules["plain_flow"] = module
    functions = {name: getattr(module, name) for name in ("plain", "remember", "recall", "capped")}
    try:
        cloudpickle.register_pickle_by_value(module)
        data = pickle_code(functions)
        reference = pickle.loads(cloudpickle.dumps(functions))
    finally:
        cloudpickle.unregister_pickle_by_value(module)
        del sys.modules["plain_flow"]
    rebuilt = calls_to(monkeypatch, execute, "rebuild_function", lambda code, namespace, name, *rest: name)
    shipped = pickle.loads(data)
    assert rebuilt == ["plain", "remember", "recall"]
    for name, fn in shipped.items():
        twin = reference[name]
        for attribute in ("__name__", "__qualname__", "__module__", "__defaults__", "__kwdefaults__"):
            assert getattr(fn, attribute) == getattr(twin, attribute), (name, attribute)
        assert fn.__doc__ == twin.__doc__, name
        assert fn.__annotations__ == twin.__annotations__, name
        assert fn.__code__.co_filename == str(tmp_path / "plain_flow.py")
        assert fn.__globals__ is shipped["plain"].__globals__, name
    assert shipped["plain"].__globals__.keys() == reference["plain"].__globals__.keys()
    assert shipped["plain"](1) == reference["plain"](1) == 6
    assert shipped["capped"](50) == 10
    for side in (shipped, reference):
        side["remember"](5)
        assert side["recall"]() == 5


def test_a_plain_function_of_a_module_registered_by_value_is_reduced_before_clouds_lookups(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flow's module is registered to pickle by value, so a function of it never travels by
    reference: its plain functions are reduced as soon as `CodePickler.reducer_override` sees them,
    without the lookups cloudpickle's overrides make first (~1.2 µs a step function). The pickle is
    the one the same functions make through cloudpickle's path (a module it cannot import), and a
    function that reads a global still goes that way."""
    from runner.stable_pickle import StablePickler

    module = types.ModuleType("plain_flow")
    exec(compile(PLAIN_MODULE, str(tmp_path / "plain_flow.py"), "exec"), module.__dict__)
    functions = {name: getattr(module, name) for name in ("plain", "remember", "recall", "capped")}
    passed = calls_to(
        monkeypatch, StablePickler, "reducer_override", lambda pickler, obj: getattr(obj, "__name__", None)
    )
    sys.modules["plain_flow"] = module
    try:
        cloudpickle.register_pickle_by_value(module)
        registered = pickle_code(functions)
    finally:
        cloudpickle.unregister_pickle_by_value(module)
        del sys.modules["plain_flow"]
    assert [name for name in passed if name in functions] == ["capped"]
    passed.clear()
    unimportable = pickle_code(functions)  # not in sys.modules: cloudpickle's own lookups say by value
    assert [name for name in passed if name in functions] == list(functions)
    assert registered == unimportable
    assert pickle.loads(registered)["plain"](1) == 6
