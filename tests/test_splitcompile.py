"""A large flow file's first compile on two cores (`dsl.splitcompile`): the two halves are the code
of the whole file, line for line, executed as the whole file is; anything unusual (an error, a
warning, no cut, no interpreter to start) falls back to compiling the whole file, which reports it."""

from __future__ import annotations

import sys
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks.common import chain_source
from dsl import FlowError, load_flow, splitcompile
from dsl.loader import compile_flow
from tests.test_flowcode import _assert_same_code, _corpus


def _fresh_name(name: str) -> str:
    return f"/nowhere/{name}-{uuid.uuid4().hex}.py"  # a file this process never loaded


def test_a_large_file_is_compiled_in_two_halves_to_the_code_of_the_whole_file(
    write_flow: Callable[..., Path],
) -> None:
    source = chain_source(4000)
    assert len(source) >= splitcompile.THRESHOLD
    filename = _fresh_name("chain")
    halves = compile_flow(source, filename)  # a first load of this text: no parts, no kept code
    assert len(halves) == 2
    _assert_same_code(compile(source, filename, "exec", dont_inherit=True), halves)
    second = halves[1]
    assert second.co_filename == filename
    assert min(line for _, _, line in second.co_lines() if line) > source[: len(source) // 2].count("\n")

    path = write_flow(source, name="big_chain.py")
    loaded = load_flow(path)
    assert len(loaded.graph.nodes) == 4000
    last = loaded.graph.nodes["s3999"].step.fn
    assert last.__code__.co_firstlineno == source.splitlines().index("def s3999(s3998):")  # its `@step`
    assert last(41) == 42


@pytest.mark.parametrize(("name", "source"), _corpus(), ids=[name for name, _ in _corpus()])
def test_any_file_cut_in_two_compiles_to_the_code_of_the_whole_file(
    name: str, source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(splitcompile, "THRESHOLD", 0)
    filename = _fresh_name(name)
    try:
        whole = compile(source, filename, "exec", dont_inherit=True)
    except SyntaxError:
        assert splitcompile.compile_split(source, filename) is None
        return
    halves = splitcompile.compile_split(source, filename)
    if halves is None:  # nowhere to cut past its first part
        assert splitcompile._cut(source) is None
        return
    _assert_same_code(whole, halves)


def test_future_annotations_reach_the_second_half(
    write_flow: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(splitcompile, "THRESHOLD", 0)
    steps = "".join(f"@step\ndef s{i}(n: int = 1) -> list[int]:\n    return [n]\n\n\n" for i in range(20))
    path = write_flow(
        '"""A flow."""\n\nfrom __future__ import annotations\n\nfrom dsl import step\n\n\n' + steps,
        name="future_split.py",
    )
    assert len(compile_flow(path.read_text(encoding="utf-8"), _fresh_name("future"))) == 2
    loaded = load_flow(path)
    assert loaded.module.__doc__ == "A flow."
    assert loaded.graph.nodes["s19"].step.fn.__annotations__ == {"n": "int", "return": "list[int]"}


def test_a_syntax_error_in_either_half_is_the_whole_files_error(
    write_flow: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(splitcompile, "THRESHOLD", 0)
    lines = chain_source(40).splitlines(keepends=True)
    for broken in (len(lines) // 4, len(lines) * 3 // 4):
        at = next(i for i in range(broken, len(lines)) if lines[i].startswith("    return"))
        text = "".join(lines[:at]) + "    return (\n" + "".join(lines[at + 1 :])
        assert splitcompile.compile_split(text, _fresh_name("broken")) is None
        path = write_flow(text, name=f"broken_{broken}.py")
        with pytest.raises(FlowError, match="syntax error") as error:
            load_flow(path)
        with pytest.raises(SyntaxError) as expected:
            compile(text, str(path), "exec", dont_inherit=True)
        assert error.value.line == expected.value.lineno


def test_a_warning_in_the_second_half_is_shown_by_compiling_the_whole_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(splitcompile, "THRESHOLD", 0)
    source = chain_source(40) + '\n\n@step\ndef pattern():\n    return "\\d+"\n'
    filename = _fresh_name("warning")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert splitcompile.compile_split(source, filename) is None  # the other interpreter raised it
        assert not seen
        codes = compile_flow(source, filename)
    assert len(codes) == 1
    assert [str(w.message) for w in seen] == ["invalid escape sequence '\\d'"]


def test_a_small_file_one_without_a_cut_or_one_cpu_is_compiled_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    small = chain_source(20)
    assert splitcompile.compile_split(small, _fresh_name("small")) is None
    monkeypatch.setattr(splitcompile, "THRESHOLD", 0)
    with monkeypatch.context() as one_cpu:
        one_cpu.setattr(splitcompile, "usable_cores", lambda: 1)
        assert splitcompile.compile_split(small, _fresh_name("one-cpu")) is None
    one_function = "from dsl import step\n\n\n@step\ndef a():\n" + "    x = 1\n" * 200 + "    return x\n"
    assert splitcompile.compile_split(one_function, _fresh_name("uncut")) is None
    assert len(splitcompile.compile_split(small, _fresh_name("small")) or ()) == 2


def test_without_another_interpreter_the_whole_file_is_compiled(
    write_flow: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(splitcompile, "THRESHOLD", 0)
    monkeypatch.setattr(sys, "executable", str(Path(__file__).parent / "no-such-python"))
    source = chain_source(40)
    assert splitcompile.compile_split(source, _fresh_name("alone")) is None
    assert len(compile_flow(source, _fresh_name("alone"))) == 1
    assert load_flow(write_flow(source, name="alone.py")).graph.nodes["s39"].step.fn(1) == 2
