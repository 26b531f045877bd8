"""Provides `FlowError`, the one exception type for a user's mistake.

A `FlowError` carries the exit code the CLI uses (2: the flow or the command line is invalid) and,
where known, the file, line and step it is about, so every front end renders one clear line.
"""

from __future__ import annotations


class FlowError(Exception):
    """An invalid flow, parameter, command or store state: shown as one line, never a traceback.

    Attributes:
        message: what is wrong and, where possible, how to fix it.
        file: the flow (or module) file the error is in.
        line: the 1-based line in `file`.
        step: the step the error is about.
    """

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        step: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.step = step

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        who = f"step '{self.step}': " if self.step else ""
        return f"{where}{who}{self.message}"
