"""Provides `param`, the marker for a typed flow parameter with help text and choices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class _Required:
    """Sentinel default of a parameter that must be given on the command line."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Param:
    """The declaration behind `param(...)`: a default plus what the CLI and the TUI show.

    Attributes:
        default: the value used when the user gives none; `REQUIRED` if one must be given.
        help: one line shown by `flow check`, `flow graph` and the TUI's parameter editor.
        choices: the allowed values, if limited.
        type: the type a `-p name=value` string converts to (default: the default's type).
    """

    default: Any = REQUIRED
    help: str = ""
    choices: tuple[Any, ...] | None = None
    type: type | None = None


def param(
    default: Any = REQUIRED,
    *,
    help: str = "",
    choices: tuple[Any, ...] | list[Any] | None = None,
    type: type | None = None,
) -> Any:
    """Declare a flow parameter as a step argument's default.

    Example:
        `def train(data, lr: float = param(0.1, help="learning rate")): ...`

    A parameter without a default (`param(help=...)`) is required: `flow run` fails with exit code 2
    unless it is given with `-p` or `--params`.
    """
    return Param(
        default=default,
        help=help,
        choices=tuple(choices) if choices is not None else None,
        type=type,
    )
