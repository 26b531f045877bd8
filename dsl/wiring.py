"""Provides the per-load record of `>>` edges and `Flow` declarations.

Edges are not stored on the `Step` objects: two flow files that import the same shared step must get
two independent graphs. The loader pushes a fresh `Wiring` while it executes a flow file, and `>>`
records into whichever `Wiring` is current.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dsl.step import Step


@dataclass(frozen=True)
class Edge:
    """One declared ordering `upstream >> downstream`, with where it was written."""

    upstream: Step
    downstream: Step
    file: str
    line: int


@dataclass
class Wiring:
    """The edges and flow declarations recorded while one flow file loads."""

    edges: list[Edge] = field(default_factory=list)
    flows: list[Any] = field(default_factory=list)


_stack: list[Wiring] = [Wiring()]


def current() -> Wiring:
    """The wiring that `>>` records into right now."""
    return _stack[-1]


def push() -> Wiring:
    """Start recording into a fresh wiring (the loader calls this before executing a flow file)."""
    wiring = Wiring()
    _stack.append(wiring)
    return wiring


def pop(wiring: Wiring) -> None:
    """Stop recording into `wiring`."""
    if _stack and _stack[-1] is wiring:
        _stack.pop()


def caller_location(depth: int = 2) -> tuple[str, int]:
    """The file and line of the user code `depth` frames up (for error messages)."""
    frame: FrameType | None = sys._getframe(depth)
    while frame is not None and frame.f_code.co_filename.endswith(("dsl/step.py", "dsl/wiring.py")):
        frame = frame.f_back
    if frame is None:
        return "<unknown>", 0
    return frame.f_code.co_filename, frame.f_lineno
