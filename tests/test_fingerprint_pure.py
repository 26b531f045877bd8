"""The fingerprint's pure parts on plain inputs: normalised source, combine and explain.

No flow is loaded and no process runs: `runner.fingerprint.source.normalised_text` takes a function's
text, `combine` and `explain` take fingerprint parts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
from typing import Any

import pytest

from runner.fingerprint import StaticPrint, Untrusted, combine, explain, value_hash
from runner.fingerprint.source import normalised_text

PLAIN = """
def train(data, lr=0.1):
    return [x * lr for x in data]
"""

RESTYLED = '''
@step(cache=True)
def train(data, lr = 0.1):
    """Scale the data."""
    # a comment
    return [x*lr
            for x in data]
'''


def test_comments_formatting_docstrings_and_decorators_do_not_count() -> None:
    assert normalised_text(PLAIN, drop_decorators=True) == normalised_text(RESTYLED, drop_decorators=True)


def test_a_change_of_code_counts() -> None:
    edited = PLAIN.replace("x * lr", "x + lr")
    assert normalised_text(PLAIN, drop_decorators=True) != normalised_text(edited, drop_decorators=True)


def test_a_decorator_counts_where_it_is_kept() -> None:
    assert normalised_text(PLAIN, drop_decorators=False) != normalised_text(RESTYLED, drop_decorators=False)


def test_a_value_that_cannot_be_pickled_is_untrusted() -> None:
    with pytest.raises(Untrusted, match="cannot be hashed"):
        value_hash(lambda: None)
    assert value_hash(0.1) != value_hash("0.1")


STATIC = StaticPrint(code="c1", helpers={"flow.clean": "h1"}, options="o1")


def parts(static: StaticPrint = STATIC, **changes: Any) -> tuple[str, dict[str, Any]]:
    values: dict[str, Any] = {"params": {"lr": "p1"}, "inputs": {"load": "i1"}}
    values.update(changes)
    return combine(static, values["params"], values["inputs"], declared=values.get("declared"))


def test_the_same_parts_give_the_same_fingerprint() -> None:
    assert parts()[0] == parts()[0]


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"static": StaticPrint(code="c2", helpers={"flow.clean": "h1"}, options="o1")}, "code changed"),
        (
            {"static": StaticPrint(code="c1", helpers={"flow.clean": "h2"}, options="o1")},
            "helper changed: clean",
        ),
        (
            {"static": StaticPrint(code="c1", helpers={"flow.clean": "h1"}, options="o2")},
            "options changed (when/foreach/version)",
        ),
        ({"params": {"lr": "p2"}}, "parameter changed: lr"),
        ({"inputs": {"load": "i2"}}, "upstream output changed: load"),
        ({"declared": {"file:data.csv": "d2"}}, "input file changed: data.csv"),
        ({"declared": {"env:TOKEN": "e2"}}, "environment changed: TOKEN"),
    ],
)
def test_each_part_changes_the_fingerprint_and_explain_names_it(change: dict[str, Any], why: str) -> None:
    before, old = parts()
    after, new = parts(**change)
    assert after != before
    assert explain(old, new) == why


def test_explain_without_an_earlier_result() -> None:
    assert explain(None, parts()[1]) == "no earlier result"
    assert explain(parts()[1], parts()[1]) == "no cached result (its last execution failed or was stopped)"


@pytest.mark.parametrize(
    ("static", "params", "inputs", "item", "declared", "expected"),
    [
        (StaticPrint(code="c1", options="o1"), {}, {}, None, None, "2612e13e17bfce26"),
        (
            StaticPrint(code="c1", options="o1", helpers={"flow.b": "h2", "flow.a": "h1"}),
            {"lr": "p1", "epochs": "p2"},
            {"load": "i1", "clean": "i2"},
            None,
            None,
            "38658ceec204ba1a",
        ),
        (
            StaticPrint(code="c1", options="o1", command="cmd"),
            {},
            {"up": "i1"},
            "item-hash",
            None,
            "bd7aa07b73bef3aa",
        ),
        (
            StaticPrint(code="c1", options="o1"),
            {},
            {"up": "i1"},
            None,
            {"file:data.csv": "f1", "env:HOME": "e"},
            "c8dd8ea011a824d0",
        ),
        (StaticPrint(code="c1", options="o1"), {}, {"up": "ünï\udcff"}, None, None, "fe0eabfc36e44617"),
    ],
)
def test_a_fingerprint_is_the_hash_of_its_parts_in_their_fixed_order(
    static: StaticPrint,
    params: dict[str, str],
    inputs: dict[str, str],
    item: str | None,
    declared: dict[str, str] | None,
    expected: str,
) -> None:
    """The text hashed is fixed (a cache written by an earlier flow stays valid; `expected`: what flow
    computed before `combine` joined the static parts once per print): code, options, the fan-out
    item, the command, then helpers, parameters, inputs and declared inputs each sorted, every part
    followed by a NUL."""
    parts = [static.code, static.options, item or ""]
    parts += [f"c:{static.command}"] if static.command else []
    parts += [f"h:{k}={v}" for k, v in sorted(static.helpers.items())]
    parts += [f"p:{k}={v}" for k, v in sorted(params.items())]
    parts += [f"i:{k}={v}" for k, v in sorted(inputs.items())]
    parts += [f"d:{k}={v}" for k, v in sorted((declared or {}).items())]
    text = "".join(f"{part}\0" for part in parts)
    reference = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    fingerprint, _ = combine(static, params, inputs, item=item, declared=declared)
    again, _ = combine(static, params, inputs, item=item, declared=declared)  # the joined parts reused
    assert fingerprint == again == reference
    assert fingerprint.startswith(expected)


def test_a_hand_built_static_print_is_the_dataclass_its_fields_declare() -> None:
    fields = [f for f in dataclasses.fields(StaticPrint) if f.init]
    assert list(inspect.signature(StaticPrint).parameters) == [f.name for f in fields]  # same order
    values: dict[str, Any] = {
        "code": "c1",
        "helpers": {"flow.a": "h1"},
        "options": "o1",
        "untrusted": None,
        "command": "cmd",
        "files": {"/x/helpers.py": "f1"},
        "texts": {"c1": "def a(): ..."},
    }
    by_position = StaticPrint(*values.values())
    by_name = StaticPrint(**values)
    assert by_position == by_name == dataclasses.replace(by_name)
    assert {f.name: getattr(by_name, f.name) for f in fields} == values
    bare = StaticPrint("c1")
    assert (bare.helpers, bare.options, bare.untrusted, bare.command, bare.files, bare.texts) == (
        {},
        "",
        None,
        "",
        {},
        {},
    )
    assert bare.helpers is not StaticPrint("c2").helpers  # no default shared between prints
    assert bare == StaticPrint("c1", texts={"c1": "other"})  # texts are not compared
    with pytest.raises(dataclasses.FrozenInstanceError):
        bare.code = "c2"  # type: ignore[misc]
