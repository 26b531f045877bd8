"""What the load and the static fingerprints keep between loads (`dsl.flowcode`'s parts, the line
spans, texts, global reads and module attributes read, memoised by code object and text) never hides
an edit."""

from __future__ import annotations

import ast
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dsl import load_flow
from runner.fingerprint import StaticPrint, static_prints
from runner.fingerprint import hasher as hasher_module
from runner.fingerprint import prints as prints_module
from runner.fingerprint.source import SourceIndex, normalised_text
from tests.helpers_core import calls_to

FLOW = """\
from dsl import step

VALUE = {value}


@step
def a():
    return VALUE{body}


@step
def b(a):
    return a + 1  # {comment}
"""


def _prints(path: Path) -> dict[str, StaticPrint]:
    return static_prints(load_flow(path))


def _write(path: Path, value: int = 1, body: str = "", comment: str = "c") -> Path:
    path.write_text(FLOW.format(value=value, body=body, comment=comment), encoding="utf-8")
    return path


def test_the_same_text_in_two_files_with_other_globals(write_flow: Callable[..., Path]) -> None:
    first = _write(write_flow("", name="first.py"), value=1)
    second = _write(write_flow("", name="second.py"), value=2)
    for _ in range(2):  # a first load of each file, then one compiled in parts
        one, two = load_flow(first), load_flow(second)
        assert one.graph.nodes["a"].step.fn() == 1 and two.graph.nodes["a"].step.fn() == 2
        p1, p2 = static_prints(one), static_prints(two)
        assert p1["a"].code == p2["a"].code  # the same function text
        assert p1["a"].helpers != p2["a"].helpers  # reading another VALUE
        assert p1["b"] == p2["b"]


def test_edits_saved_one_right_after_the_other_are_each_seen(write_flow: Callable[..., Path]) -> None:
    """Saves of the same size within the same instant: a global, the body, back again, a comment."""
    path = _write(write_flow("", name="edits.py"))
    base = _prints(path)
    seen = [base]
    for value, body, comment in (
        (2, "", "c"),
        (1, " + 1", "c"),
        (1, " + 2", "c"),
        (1, "", "c"),
        (1, "", "d"),
    ):
        _write(path, value, body, comment)
        loaded = load_flow(path)
        expected = value + (int(body[3:]) if body else 0)
        assert loaded.graph.nodes["a"].step.fn() == expected
        seen.append(static_prints(loaded))
    assert seen[1]["a"].helpers != base["a"].helpers and seen[1]["a"].code == base["a"].code
    assert seen[2]["a"].code != base["a"].code
    assert seen[3]["a"].code not in (base["a"].code, seen[2]["a"].code)
    assert seen[4] == base  # back as it was
    assert seen[5] == base  # a comment does not count
    assert seen[5]["b"].texts == base["b"].texts


def test_a_step_moved_down_the_file_keeps_its_fingerprint(write_flow: Callable[..., Path]) -> None:
    path = _write(write_flow("", name="moved.py"))
    base = _prints(path)
    assert load_flow(path).graph.nodes["b"].step.fn.__code__.co_firstlineno == 11
    path.write_text(FLOW.format(value=1, body="", comment="c").replace("VALUE = 1\n", "\n\nVALUE = 1\n"))
    moved = load_flow(path)
    assert moved.graph.nodes["b"].step.fn.__code__.co_firstlineno == 13  # its `@step`, two lines down
    assert static_prints(moved) == base


HELPED = """\
from dsl import step

import tools


@step
def a():
    return tools.{used}(1)


@step
def b(a):
    return tools.double(a)
"""

TOOLS = "def double(x):\n    return 2 * x\n\n\ndef triple(x):\n    return {k} * x\n"


def test_a_step_using_a_local_module_is_walked_once_per_text_and_every_edit_seen(
    write_flow: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Which attributes of a module a step reads is read from its text once (`attributes_used`):
    a new load of the same text asks again, and a changed text or module is seen."""
    tools = write_flow(TOOLS.format(k=3), name="tools.py")
    path = write_flow(HELPED.format(used="double"), name="helped.py")
    # the functions whose tree was asked for
    walked = calls_to(monkeypatch, hasher_module.Hasher, "function_node", lambda hasher, fn: fn.__name__)
    first = _prints(path)
    assert sorted(walked) == ["a", "b"]
    assert "tools.double" in first["a"].helpers and "tools.triple" not in first["a"].helpers
    walked.clear()
    assert _prints(path) == first and walked == []  # new functions, the same texts

    path.write_text(HELPED.format(used="triple"), encoding="utf-8")
    edited = _prints(path)
    assert walked == ["a"] and edited["b"] == first["b"]
    assert "tools.triple" in edited["a"].helpers and "tools.double" not in edited["a"].helpers
    walked.clear()

    tools.write_text(TOOLS.format(k=4), encoding="utf-8")  # what `a` reads of the module changes
    changed = _prints(path)
    assert walked == [] and changed["b"] == first["b"]
    assert changed["a"].helpers["tools.triple"] != edited["a"].helpers["tools.triple"]


GATED = """\
from dsl import step


class Scale:
    \"\"\"How much.\"\"\"

    factor = {factor}

    def apply(self, x):
        return x * self.factor


@step
def a():
    return 1


@step(when=lambda a: a {gate} 0)
def b(a):
    return Scale().apply(a)


@step
def c(a):
    return a + {c}
"""


def test_a_flow_with_a_lambda_and_a_class_parses_only_its_edited_part(
    write_flow: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lambda or a class is found in the file's tree, parsed in parts: a save parses the part it
    edited, not the whole file, and every edit is seen."""
    path = write_flow(GATED.format(factor=2, gate=">", c=1), name="gated.py")
    first = _prints(path)
    parsed = calls_to(monkeypatch, ast, "parse")
    text = GATED.format(factor=2, gate=">", c=2)
    path.write_text(text, encoding="utf-8")
    unrelated = _prints(path)
    assert text not in parsed and all("def c(a)" in p for p in parsed), parsed
    assert unrelated["b"] == first["b"] and unrelated["c"] != first["c"]

    path.write_text(GATED.format(factor=2, gate=">=", c=2), encoding="utf-8")
    gate = _prints(path)
    assert gate["b"].options != first["b"].options and gate["b"].helpers == first["b"].helpers
    path.write_text(GATED.format(factor=3, gate=">=", c=2), encoding="utf-8")
    scaled = _prints(path)
    assert scaled["b"].helpers != gate["b"].helpers and scaled["b"].options == gate["b"].options
    assert scaled["a"] == first["a"] and scaled["c"] == unrelated["c"]

    elsewhere = write_flow(GATED.format(factor=3, gate=">=", c=2), name="gated_copy.py")
    assert static_prints(load_flow(elsewhere))["b"].options == scaled["b"].options


def test_normalising_a_definition_from_the_file_tree_leaves_that_tree_as_it_was() -> None:
    """Where a definition's text does not parse alone, its node from the file's tree is normalised
    (docstring and decorators dropped) on a copy: the tree is read again by later loads."""
    text = '@step(retries=1)\ndef a():\n    """Doc."""\n    return 1\n'
    node = SourceIndex(text, f"/nowhere/{uuid.uuid4().hex}.py").functions[1]
    assert isinstance(node, ast.FunctionDef)
    assert normalised_text('@step("\n', drop_decorators=True, node=node) == "def a():\n    return 1"
    assert len(node.decorator_list) == 1 and len(node.body) == 2


PLAIN = """\
from dsl import step


def make(n):
    def captured():
        return n

    return captured


@step
def a():
    return LIMIT


@step
def b(a):
    import {module}

    return {module}.f(a)


scaled = step(make({n}))
{tail}
"""


def _plain(path: Path, n: int = 2, tail: str = "", module: str = "late_helper") -> Path:
    path.write_text(PLAIN.format(n=n, tail=tail, module=module), encoding="utf-8")
    return path


def _from_scratch(loaded: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, StaticPrint]:
    """The prints worked out in full: nothing kept by code object."""
    with monkeypatch.context() as patched:
        patched.setattr(prints_module, "_BY_CODE", {})
        return static_prints(loaded)


def test_a_steps_print_is_made_from_its_kept_code_to_the_full_print(
    write_flow: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """From the third load on, the parts are the last load's code objects: no step's source is looked
    at again, a step's helpers are (`b`'s import, `captured`'s value), and a step whose print is its
    source and options alone (`a`) is printed at once, without even scanning its code for globals.
    Each print is the full one."""
    path = _plain(write_flow("", name="plain.py"))
    loads = [load_flow(path) for _ in range(3)]
    assert loads[1].graph.nodes["a"].step.fn.__code__ is loads[2].graph.nodes["a"].step.fn.__code__
    static_prints(loads[1])
    looked_at = calls_to(monkeypatch, hasher_module.Hasher, "function_text", lambda _, fn: fn.__name__)
    referenced = calls_to(monkeypatch, hasher_module.Hasher, "references", lambda _, fn, *__: fn.__name__)
    imports = calls_to(monkeypatch, hasher_module.Hasher, "add_inner_imports", lambda _, fn, *__: fn.__name__)
    scanned = calls_to(monkeypatch, prints_module, "global_reads", lambda code: code.co_name)
    kept = static_prints(loads[2])
    assert looked_at == []
    assert sorted(referenced) == ["b", "captured"]
    assert imports == ["b"]
    assert "a" not in scanned  # its code's globals are kept with it: the code object is not hashed again
    full = _from_scratch(loads[2], monkeypatch)
    assert kept == full
    assert [p.texts for p in kept.values()] == [p.texts for p in full.values()]


def test_a_global_defined_since_is_read_by_a_kept_step(
    write_flow: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`a` reads `LIMIT`, undefined at first: once it is defined (below `a`, so `a`'s part and code stay
    the same), `a`'s print hashes it, as a full print does."""
    path = _plain(write_flow("", name="limit.py"))
    for _ in range(3):
        before = static_prints(load_flow(path))
    assert before["a"].helpers == {}
    _plain(path, tail="\nLIMIT = 5\n")
    loaded = load_flow(path)
    after = static_prints(loaded)
    assert after["a"].helpers and after["a"].helpers == _from_scratch(loaded, monkeypatch)["a"].helpers
    assert after["a"].code == before["a"].code


def test_a_step_that_imports_sees_the_module_created_since(
    write_flow: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`b` imports a module of the project that does not exist yet: once it is written, `b`'s print
    hashes it (its part and code unchanged)."""
    path = _plain(write_flow("", name="importing.py"))
    for _ in range(3):
        before = static_prints(load_flow(path))
    (path.parent / "late_helper.py").write_text("def f(x):\n    return x\n", encoding="utf-8")
    loaded = load_flow(path)
    after = static_prints(loaded)
    assert after["b"].helpers != before["b"].helpers
    assert after["b"] == _from_scratch(loaded, monkeypatch)["b"]


def test_a_captured_value_changed_since_changes_the_print(write_flow: Callable[..., Path]) -> None:
    """`captured` is the same code object in every load; what it captured is not."""
    path = _plain(write_flow("", name="captured.py"))
    for _ in range(3):
        two = static_prints(load_flow(path))
    _plain(path, n=3)
    three = static_prints(load_flow(path))
    assert two["captured"].code == three["captured"].code
    assert two["captured"].helpers != three["captured"].helpers


WHEN = """\
from dsl import step


def plain():
    return 1


def unrelated():
    return 2
chosen = step({options})(plain)
"""


def test_a_when_given_since_elsewhere_in_the_file_changes_a_kept_steps_print(
    write_flow: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`step(...)` is called in another part than `plain`'s: a `when=` added there leaves `plain`'s
    code object as it was, and its print takes the predicate in, as a full print does."""
    path = write_flow(WHEN.format(options=""), name="when_flow.py")
    for _ in range(3):
        loaded = load_flow(path)
        before = static_prints(loaded)
    code = loaded.graph.nodes["plain"].step.fn.__code__
    path.write_text(WHEN.format(options="when=lambda: False"), encoding="utf-8")
    loaded = load_flow(path)
    assert loaded.graph.nodes["plain"].step.fn.__code__ is code
    after = static_prints(loaded)
    assert after["plain"].options != before["plain"].options
    assert after["plain"] == _from_scratch(loaded, monkeypatch)["plain"]


def test_a_version_given_since_elsewhere_in_the_file_changes_a_kept_steps_print(
    write_flow: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A print made at once from a kept code object is the same object at the next load (`made`)
    only while the options are the same: a `version=` given by a `step(...)` call in another part
    changes them, and taking it away changes them back."""
    path = write_flow(WHEN.format(options=""), name="version_flow.py")
    for _ in range(3):
        loaded = load_flow(path)
        before = static_prints(loaded)
    assert static_prints(load_flow(path))["plain"] is before["plain"]
    code = loaded.graph.nodes["plain"].step.fn.__code__
    for options in ("version=2", ""):
        path.write_text(WHEN.format(options=options), encoding="utf-8")
        loaded = load_flow(path)
        assert loaded.graph.nodes["plain"].step.fn.__code__ is code
        after = static_prints(loaded)
        assert after["plain"] == _from_scratch(loaded, monkeypatch)["plain"]
        assert (after["plain"].options != before["plain"].options) == bool(options)


MODULES = """\
{binding}

import json
import math

from dsl import step


@step
def a():
    return json.dumps([math.pi, str(codec)])


@step
def b(a):
    return json.loads(a)
{tail}
"""


def _modules(path: Path, binding: str = "import pickle as codec", tail: str = "") -> Path:
    path.write_text(MODULES.format(binding=binding, tail=tail), encoding="utf-8")
    return path


def test_a_step_reading_only_installed_modules_is_printed_from_its_kept_code(
    write_flow: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Steps whose only globals are modules of the standard library (or installed packages: hashed by
    name and version) are printed at once from the third load on, with those modules as helpers, as
    a full print has them."""
    path = _modules(write_flow("", name="modules.py"))
    loads = [load_flow(path) for _ in range(3)]
    static_prints(loads[1])
    referenced = calls_to(monkeypatch, hasher_module.Hasher, "references", lambda _, fn, *__: fn.__name__)
    kept = static_prints(loads[2])
    assert referenced == []
    assert set(kept["a"].helpers) == {"flow.codec", "flow.json", "flow.math"}
    assert set(kept["b"].helpers) == {"flow.json"}
    full = _from_scratch(loads[2], monkeypatch)
    assert kept == full
    assert [p.texts for p in kept.values()] == [p.texts for p in full.values()]


@pytest.mark.parametrize(
    ("binding", "tail"),
    [
        ("import marshal as codec", ""),  # another module under the same name
        ("codec = 'text'", "\njson = None\n"),  # names bound to values that are not modules
        ("import codec_local as codec", ""),  # a module of the project's own
        ("import pickle as codec", "\ndumps = 1\n"),  # a global `a` does not read, defined since
        ("import pickle as codec", "\nmath = 2\n"),  # a global `a` reads, bound again below it
    ],
    ids=["other-module", "not-a-module", "local-module", "unread-global", "rebound-global"],
)
def test_a_kept_steps_print_sees_its_modules_change(
    write_flow: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, binding: str, tail: str
) -> None:
    """Editing only the parts around `a` (its code object stays the same) changes its print exactly
    as a full print does: another module or another value under a name it reads, a module of the
    project's own (and then every edit of that module)."""
    path = _modules(write_flow("", name="rebinding.py"))
    (path.parent / "codec_local.py").write_text("VALUE = 1\n", encoding="utf-8")
    for _ in range(3):
        loaded = load_flow(path)
        before = static_prints(loaded)
    code = loaded.graph.nodes["a"].step.fn.__code__
    _modules(path, binding=binding, tail=tail)
    loaded = load_flow(path)
    assert loaded.graph.nodes["a"].step.fn.__code__ is code
    after = static_prints(loaded)
    assert after["a"] == _from_scratch(loaded, monkeypatch)["a"]
    if tail != "\ndumps = 1\n":
        assert after["a"].helpers != before["a"].helpers
    else:
        assert after["a"] == before["a"]
    if binding.startswith("import codec_local"):
        for value in (2, 3):
            (path.parent / "codec_local.py").write_text(f"VALUE = {value}\n", encoding="utf-8")
            edited = static_prints(load_flow(path))
            assert edited["a"].helpers != after["a"].helpers
            after = edited


DEFAULT = """\
from dsl import step


@step
def a(n={n}):
    return n


@step
def b(a):
    return a + 1
"""


def test_a_default_value_edited_at_the_first_save_after_a_whole_load_changes_the_print(
    write_flow: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first save after a load that compiled the file whole takes the unchanged parts' code of
    that load (`dsl.flowcode.adopting`), so their prints are found by code object; the edited part
    keeps its own code although its function's code is equal (a default value is compiled into the
    part), and its print is made anew."""
    path = write_flow(DEFAULT.format(n=1), name=f"default_{uuid.uuid4().hex}.py")
    first = load_flow(path)
    before = static_prints(first)
    path.write_text(DEFAULT.format(n=2), encoding="utf-8")
    second = load_flow(path)
    old_a, new_a = (loaded.graph.nodes["a"].step.fn for loaded in (first, second))
    assert new_a.__code__ == old_a.__code__ and new_a.__code__ is not old_a.__code__
    assert second.graph.nodes["b"].step.fn.__code__ is first.graph.nodes["b"].step.fn.__code__
    made = calls_to(monkeypatch, hasher_module.Hasher, "function_text", lambda _, fn, **__: fn.__name__)
    after = static_prints(second)
    assert new_a() == 2
    assert after["a"].code != before["a"].code
    assert after["b"] == before["b"]
    assert made == ["a"]  # b's print: from its kept code
