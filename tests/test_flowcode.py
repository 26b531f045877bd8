"""A flow file compiled in parts (`dsl.loader.compile_flow`, `dsl.flowcode`): the same code as the
whole file, reused only where its text, line and flags are unchanged, and every edit seen."""

from __future__ import annotations

import ast
import dis
import sys
import types
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.common import chain_source, fanout_source, foreach_source
from benchmarks.reload import flow_source, step_names
from dsl import FlowError, flowcode, load_flow
from dsl.flowcode import split
from dsl.loader import compile_flow
from runner.fingerprint.source import SourceIndex
from tests.helpers_core import flowcode_compiles

REPO = Path(__file__).resolve().parent.parent


def _nested(code: types.CodeType) -> Iterator[types.CodeType]:
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield const
            yield from _nested(const)


def _functions(codes: tuple[types.CodeType, ...]) -> dict[tuple[int, str], types.CodeType]:
    return {(c.co_firstlineno, c.co_qualname): c for code in codes for c in _nested(code)}


_SAME_FIELDS = (
    "co_argcount co_posonlyargcount co_kwonlyargcount co_flags co_firstlineno co_name co_qualname "
    "co_filename co_names co_varnames co_freevars co_cellvars co_stacksize"
).split()


def _instructions(code: types.CodeType) -> list[tuple[object, ...]]:
    """The code's instructions with their source positions, jumps by instruction, in one form for
    both ways Python 3.11 compiles `x.f(...)`: as a method call (`LOAD_METHOD f`), or, where the
    name `x` is bound by an import at the top of the same compile (even if `x` is a local variable,
    as `annotations` with `from __future__ import annotations`), as an attribute load and a call
    (`PUSH_NULL` or `LOAD_GLOBAL NULL + x`, then `LOAD_ATTR f`). The two do the same; a part of the
    file (`dsl.flowcode`) does not see the imports of the other parts. (`EXTENDED_ARG` only encodes
    a longer jump.)"""
    kept = [i for i in dis.get_instructions(code) if i.opname not in ("PUSH_NULL", "EXTENDED_ARG")]
    at: dict[int, int] = {}
    for index, instruction in enumerate(kept):
        at[instruction.offset] = index
    targets = sorted(at)

    def target(offset: int) -> int:
        return at[next(o for o in targets if o >= offset)]

    return [
        (
            i.opname.replace("LOAD_METHOD", "LOAD_ATTR"),
            _argument(i, target),
            None if i.opname == "KW_NAMES" else i.positions,  # placed by the call's form; never raises
        )
        for i in kept
    ]


def _argument(instruction: dis.Instruction, target: Callable[[int], int]) -> object:
    if instruction.opcode in dis.hasjrel + dis.hasjabs:
        return target(instruction.argval)
    if isinstance(instruction.argval, types.CodeType):
        return ("code", instruction.argval.co_qualname, instruction.argval.co_firstlineno)
    if instruction.opcode in dis.hasconst:
        # By value: a frozenset's repr follows its table, which two equal sets need not share.
        return ("const", type(instruction.argval), instruction.argval)
    return instruction.argrepr.removeprefix("NULL + ")


def _assert_same_code(whole: types.CodeType, parts: tuple[types.CodeType, ...]) -> None:
    expected, found = _functions((whole,)), _functions(parts)
    assert expected.keys() == found.keys()
    for key, code in expected.items():
        other = found[key]
        assert [getattr(other, f) for f in _SAME_FIELDS] == [getattr(code, f) for f in _SAME_FIELDS], key
        assert [c for c in other.co_consts if not isinstance(c, types.CodeType)] == [
            c for c in code.co_consts if not isinstance(c, types.CodeType)
        ], key
        assert _instructions(other) == _instructions(code), key
    whole_names = [c for c in whole.co_consts if isinstance(c, str)]
    assert set(whole_names) <= {c for code in parts for c in code.co_consts if isinstance(c, str)}


def _corpus() -> list[tuple[str, str]]:
    files = sorted(REPO.glob("sample_flows/**/*.py")) + sorted(REPO.glob("tests/flows/**/*.py"))
    files += sorted(Path(sys.modules["dsl"].__file__ or "").parent.glob("*.py"))
    stdlib = Path(types.__file__).parent
    files += [
        stdlib / name for name in ("ast.py", "dataclasses.py", "functools.py", "inspect.py", "typing.py")
    ]
    found = [(str(f.relative_to(f.parents[1])), f.read_text(encoding="utf-8")) for f in files]
    chains = step_names(40)
    found += [
        ("chain", chain_source(50)),
        ("fanout", fanout_source(50)),
        ("foreach", foreach_source(50)),
        ("reload", flow_source(chains, {chains[0][3]: 7})),
        ("late-future", "import os\n\n\ndef f():\n    pass\n\n\nfrom __future__ import annotations\n"),
        ("future-in-a-part", "import os\n\n\ndef f():\n    pass\nfrom __future__ import annotations\n"),
        ("string-statement", '"""Doc."""\n\n\ndef f():\n    pass\n\n\n"""Not the docstring."""\n'),
    ]
    return found


@pytest.mark.parametrize(("name", "source"), _corpus(), ids=[name for name, _ in _corpus()])
def test_the_parts_compile_to_the_code_of_the_whole_file(name: str, source: str) -> None:
    filename = f"/nowhere/{name}-{uuid.uuid4().hex}.py"  # a file this process never loaded
    try:
        whole = compile(source, filename, "exec", dont_inherit=True)
    except SyntaxError:
        with pytest.raises(SyntaxError):
            compile_flow(source, filename)
        with pytest.raises(SyntaxError):
            compile_flow(source, filename)
        return
    assert compile_flow(source, filename) == (whole,)  # a first load: the whole file
    parts = compile_flow(source, filename)
    _assert_same_code(whole, parts)
    again = compile_flow(source, filename)
    assert all(a is b for a, b in zip(again, parts, strict=True))  # unchanged: every part reused


def test_a_part_is_reused_only_for_the_same_text_at_the_same_line() -> None:
    chains = step_names(8)
    target, below = chains[0][0], chains[1][0]
    filename = "/nowhere/reuse.py"
    compile_flow(flow_source(chains, {}), filename)
    before = dict(
        zip(split(flow_source(chains, {})), compile_flow(flow_source(chains, {}), filename), strict=True)
    )

    edited = flow_source(chains, {target: 1})
    after = dict(zip(split(edited), compile_flow(edited, filename), strict=True))
    changed = [part for part in after if part not in before]
    assert len(changed) == 1 and f"def {target}(" in changed[0][1] and "edit = 1" in changed[0][1]
    assert all(after[part] is before[part] for part in after if part in before)
    _assert_same_code(compile(edited, filename, "exec", dont_inherit=True), tuple(after.values()))

    # A line added above moves every part below: none of them is reused at its old line.
    longer = edited.replace(f"def {target}(", f"def {target}(\n", 1)
    moved = compile_flow(longer, filename)
    _assert_same_code(compile(longer, filename, "exec", dont_inherit=True), moved)
    at = next(c for c in _functions(moved).values() if c.co_name == below)
    assert at.co_firstlineno == longer.splitlines().index(f"def {below}():")  # its `@step`, one line up


def test_future_annotations_reach_every_part(write_flow: Callable[..., Path]) -> None:
    text = (
        '"""A flow."""\n\nfrom __future__ import annotations\n\nfrom dsl import step\n\n\n'
        "@step\ndef a(n: int = 1) -> int:\n    return n\n\n\n"
        "@step\ndef b(a: list[int]) -> int:\n    return a\n"
    )
    path = write_flow(text, name="future_flow.py")
    for _ in range(2):
        loaded = load_flow(path)
        assert loaded.module.__doc__ == "A flow."
        b = loaded.graph.nodes["b"].step.fn
        assert b.__annotations__ == {"a": "list[int]", "return": "int"}


def test_every_edit_is_seen_and_a_wrong_cut_or_an_error_falls_back_to_the_whole_file(
    write_flow: Callable[..., Path],
) -> None:
    """Two saves of equal length in a row, the first save back again, a string whose text looks like
    a definition (cut there, the part before it is unterminated), and a syntax error on a later load."""
    header = "from dsl import step\n\nNOTE = '''\n\ndef fake():\n    pass\n'''\n\n\n"
    body = "@step\ndef a():\n    return {value}\n\n\n@step\ndef b(a):\n    return a + len(NOTE)\n"
    path = write_flow(header + body.format(value=1), name="edits.py")
    for value in (1, 2, 3, 2, 1):
        path.write_text(header + body.format(value=value), encoding="utf-8")
        loaded = load_flow(path)
        assert loaded.graph.nodes["a"].step.fn() == value
        assert "fake" not in vars(loaded.module)
        assert loaded.graph.nodes["b"].step.fn(0) == len("\n\ndef fake():\n    pass\n")
    path.write_text(header + body.format(value="(1") + "\n", encoding="utf-8")
    with pytest.raises(FlowError, match="syntax error") as error:
        load_flow(path)
    assert error.value.line == 12  # the `(` never closed
    path.write_text(header + body.format(value=4), encoding="utf-8")
    assert load_flow(path).graph.nodes["a"].step.fn() == 4


def test_warm_cuts_a_file_compiled_whole_into_the_parts_its_next_load_reuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chains = step_names(8)
    source = flow_source(chains, {})
    filename = f"/nowhere/warm-{uuid.uuid4().hex}.py"
    assert not flowcode.warm(filename, source)  # never loaded: nothing to cut
    whole = compile_flow(source, filename)
    assert len(whole) == 1 and flowcode.parts_of(filename) == {}

    assert flowcode.warm(filename, source)
    parts = flowcode.parts_of(filename)
    assert parts is not None and len(parts) == len(split(source))
    _assert_same_code(whole[0], tuple(parts.values()))
    loaded = _functions(whole)
    assert all(code is loaded[key] for key, code in _functions(tuple(parts.values())).items())
    assert not flowcode.warm(filename, source)  # cut already: once is enough

    # The first save after the load compiles only the part it changed, as every later save does.
    compiled = flowcode_compiles(monkeypatch)
    target = chains[2][1]
    edited = flow_source(chains, {target: 1})
    codes = compile_flow(edited, filename)
    assert len(compiled) == 1 and f"def {target}(" in compiled[0] and "edit = 1" in compiled[0]
    _assert_same_code(compile(edited, filename, "exec", dont_inherit=True), codes)


def test_the_first_cut_keeps_the_functions_code_of_the_whole_load_only_where_the_text_is_the_same() -> None:
    """A part of the same text at the same line executes the very function code the whole file's load
    made (what is memoised by code object holds); a part edited or moved keeps its own, even where a
    function's code is equal (a default value is compiled into the part, not the function)."""
    chains = step_names(8)
    target, default = chains[2][1], chains[0][0]
    filename = f"/nowhere/adopt-{uuid.uuid4().hex}.py"
    source = flow_source(chains, {}).replace(f"def {default}():", f"def {default}(x=1):")
    loaded = _functions(compile_flow(source, filename))
    edited = flow_source(chains, {target: 1}).replace(f"def {default}():", f"def {default}(x=2):")
    codes = compile_flow(edited, filename)
    _assert_same_code(compile(edited, filename, "exec", dont_inherit=True), codes)
    found = _functions(codes)
    own = {key for key, code in found.items() if code is not loaded.get(key)}
    assert {qualname for _, qualname in own} == {target, default}
    assert len(found) - len(own) == len(loaded) - 2 > 0
    assert flowcode.parts_of(filename) and not flowcode.adopting(filename)  # once: parts from now on

    # A line added above moves every part: none is the whole load's.
    moved = f"/nowhere/adopt-moved-{uuid.uuid4().hex}.py"
    loaded = _functions(compile_flow(source, moved))
    found = _functions(compile_flow("\n" + source, moved))
    assert found and all(code is not loaded.get(key) and key not in loaded for key, code in found.items())


def test_without_warm_the_first_save_compiles_every_part(monkeypatch: pytest.MonkeyPatch) -> None:
    """What `warm` saves (and the test above would see without it)."""
    chains = step_names(8)
    filename = f"/nowhere/cold-{uuid.uuid4().hex}.py"
    compile_flow(flow_source(chains, {}), filename)
    compiled = flowcode_compiles(monkeypatch)
    edited = flow_source(chains, {chains[2][1]: 1})
    compile_flow(edited, filename)
    assert len(compiled) == len(split(edited))


def test_warm_keeps_nothing_over_a_newer_load_or_for_a_file_that_does_not_cut(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chains = step_names(8)
    source, edited = flow_source(chains, {}), flow_source(chains, {chains[0][0]: 1})
    filename = f"/nowhere/race-{uuid.uuid4().hex}.py"
    compile_flow(source, filename)
    real = flowcode.compile_parts
    newer: dict[tuple[int, int, str], types.CodeType] = {}

    def load_meanwhile(*args: Any) -> Any:
        """Another thread's load of the file, finishing while the watcher cuts the parts."""
        cut = real(*args)
        newer.update(real(edited, filename, {})[1])
        flowcode.keep(filename, newer)
        return cut

    monkeypatch.setattr(flowcode, "compile_parts", load_meanwhile)
    assert not flowcode.warm(filename, source)
    assert flowcode.parts_of(filename) is newer
    monkeypatch.undo()

    # A cut inside a string leaves a part that does not compile: the next load compiles it whole.
    text = "from dsl import step\n\nNOTE = '''\n\ndef fake():\n    pass\n'''\n\n\n"
    text += "@step\ndef a():\n    return 1\n"
    odd = f"/nowhere/odd-{uuid.uuid4().hex}.py"
    assert compile_flow(text, odd) == (compile(text, odd, "exec", dont_inherit=True),)
    assert not flowcode.warm(odd, text)
    assert flowcode.parts_of(odd) == {}


@pytest.mark.parametrize(("name", "source"), _corpus(), ids=[name for name, _ in _corpus()])
def test_the_parts_parse_to_the_tree_of_the_whole_file(name: str, source: str) -> None:
    """The fingerprint's tree of a file, parsed in the same parts (`runner.fingerprint.source`),
    is the whole file's, node for node and position for position; unchanged parts are reused."""
    try:
        whole = ast.parse(source)
    except SyntaxError:
        return
    path = f"/nowhere/{name}-{uuid.uuid4().hex}.py"
    expected = [ast.dump(s, include_attributes=True) for s in whole.body]
    first = SourceIndex(source, path).tree.body
    assert [ast.dump(s, include_attributes=True) for s in first] == expected
    again = SourceIndex(source, path).tree.body
    assert len(again) == len(first) and all(a is b for a, b in zip(again, first, strict=True))
