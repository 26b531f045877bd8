"""The engine's events: the ones built by a hand-written `__init__` (the most frequent: `StepLog`,
`StepStarted`, `StepFinished`) are the dataclasses their fields declare, frozen, as the others."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest

from runner.events import Event, StepFinished, StepLog, StepStarted
from runner.status import StepStatus

VALUES: dict[type[Event], dict[str, Any]] = {
    StepLog: {"run_id": 3, "step": "a", "stream": "stdout", "line": "hi", "ts": 1.5},
    StepStarted: {
        "run_id": 3,
        "step": "a",
        "attempt": 1,
        "reason": "no earlier result",
        "fingerprint": "f",
        "ts": 2.0,
    },
    StepFinished: {
        "run_id": 3,
        "step": "a[1]",
        "status": StepStatus.CACHED,
        "attempts": 0,
        "duration_s": 0.0,
        "reason": "cached",
        "error": None,
        "traceback": None,
        "fingerprint": "f",
        "output_hash": "o",
        "preview": "1",
        "metrics": {"loss": 0.5},
        "ts": 3.0,
    },
}


@pytest.mark.parametrize("cls", list(VALUES), ids=lambda cls: cls.__name__)
def test_a_hand_built_event_is_the_dataclass_its_fields_declare(cls: type[Event]) -> None:
    fields = [f for f in dataclasses.fields(cls) if f.init]
    assert list(inspect.signature(cls).parameters) == [f.name for f in fields]  # same order, no more
    values = VALUES[cls]
    by_position = cls(*values.values())  # type: ignore[call-arg]
    by_name = cls(**values)
    assert by_position == by_name == dataclasses.replace(by_name)
    assert {f.name: getattr(by_name, f.name) for f in fields} == values
    kind = next(f.default for f in dataclasses.fields(cls) if f.name == "kind")
    assert by_name.kind == kind
    assert by_name.as_dict() == {**values, "event": kind}
    with pytest.raises(dataclasses.FrozenInstanceError):
        by_name.step = "b"  # type: ignore[misc]
