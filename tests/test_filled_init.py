"""`runner.filled_init`: a frozen dataclass's `__init__` that fills the instance dict behaves as the one
`dataclasses` writes, and a class it cannot stand in for is refused."""

from __future__ import annotations

import dataclasses
import pickle
from dataclasses import InitVar, field
from typing import Any

import pytest

from runner.events import StepFinished, StepLog, StepStarted
from runner.executors.base import InputRef, Task, TaskResult
from runner.filled_init import filled_init


def _fields() -> list[Any]:
    """The twins' fields (each class gets its own `Field` objects)."""
    return [
        ("name", str),
        ("count", int, field(default=3)),
        ("tags", list[str], field(default_factory=list)),
        ("kind", str, field(init=False, default="plain")),
    ]


Plain = dataclasses.make_dataclass("Plain", _fields(), frozen=True)
Filled = filled_init(dataclasses.make_dataclass("Filled", _fields(), frozen=True))
Plain.__module__ = Filled.__module__ = __name__  # pickled by reference, as a class of this module


def test_a_filled_instance_has_what_the_generated_init_gives_and_stays_frozen() -> None:
    for args, kwargs in [
        (("a",), {}),
        (("a", 5), {}),
        (("a",), {"tags": ["x"]}),
        ((), {"name": "b", "count": 0}),
    ]:
        plain, filled = Plain(*args, **kwargs), Filled(*args, **kwargs)
        assert dataclasses.astuple(filled) == dataclasses.astuple(plain)
        assert filled.kind == "plain"
        assert repr(filled) == repr(plain).replace("Plain(", "Filled(")
    assert Filled("a") == Filled("a") and hash(Filled("a", 1, ())) == hash(Filled("a", 1, ()))  # type: ignore[arg-type]
    assert Filled("a") != Filled("b")
    first, second = Filled("a"), Filled("a")
    assert first.tags == [] and first.tags is not second.tags  # a factory's value is made for each
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.name = "b"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Filled()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Filled("a", 1, [], "extra")  # type: ignore[call-arg]
    assert pickle.loads(pickle.dumps(Filled("a", 2, ["t"]))) == Filled("a", 2, ["t"])


def test_the_runners_per_step_objects_are_filled_and_equal_to_what_they_were() -> None:
    task = Task(id="t1", step="s", code_key="k", code=b"", kwargs={"x": InputRef(hash="h", data=b"1")})
    assert Task.__init__.__module__ == "runner.executors.base"
    assert "_filled" in Task.__init__.__code__.co_varnames  # the filled one, not the generated one
    assert (task.run_id, task.attempt, task.resources, task.expect, task.modules) == (0, 1, {}, {}, ())
    assert task.resources is not Task(id="t2", step="s", code_key="k", code=b"", kwargs={}).resources
    assert TaskResult(ok=True).metrics == {} and TaskResult(ok=True).where == ""
    finished = StepFinished(1, "s", "cached", 0, 0.0, "r", None, None, "f", "h", "p", {}, 2.0)
    assert finished.kind == "step_finished" and finished.as_dict()["event"] == "step_finished"
    assert finished.as_dict()["step"] == "s" and finished.ts == 2.0
    assert StepLog(1, "s", "stdout", "line", 1.0).kind == "step_log"
    assert StepStarted(1, "s", 1, "why", "f", 1.0) == StepStarted(1, "s", 1, "why", "f", 1.0)


@pytest.mark.parametrize(
    ("options", "fields", "namespace", "refused"),
    [
        ({}, [("name", str)], {}, "not a frozen dataclass"),
        ({"frozen": True}, [("name", str)], {"__post_init__": lambda self: None}, "__post_init__"),
        ({"frozen": True, "slots": True}, [("name", str)], {}, "slots"),
        ({"frozen": True}, [("name", str), ("seed", InitVar[int], field(default=0))], {}, "InitVar"),
        ({"frozen": True, "kw_only": True}, [("name", str)], {}, "keyword-only"),
    ],
)
def test_a_class_whose_init_does_more_than_fill_its_fields_is_refused(
    options: dict[str, bool], fields: list[Any], namespace: dict[str, Any], refused: str
) -> None:
    cls = dataclasses.make_dataclass("Refused", fields, namespace=namespace, **options)
    with pytest.raises(TypeError, match=refused):
        filled_init(cls)
