"""Provides `redacting`: a step's secret values replaced by `***` before anything leaves the worker.

A step that receives a secret (a connection variable marked `secret`; see `dsl.connections`) carries
the values on its function as `flow_secrets`. Everything its execution sends back to the runner passes
through a `Redactor` first, inside the process that ran it: each log line as it is emitted, the
error and traceback, and the output itself (strings in it, however nested in lists, tuples, sets and
dicts, are redacted before it is pickled; an output that still holds a secret inside some other object
fails the step instead of being stored). So no secret reaches the run store, the cache, `flow logs`,
`flow show` or the TUI, which all read what the worker sent.

Known gap: bytes a step writes straight to file descriptors 1 and 2 (C code, or a child process that
inherited them, e.g. `os.system`) bypass Python's `sys.stdout`; command steps are safe because their
output is piped and re-emitted line by line.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Iterable
from typing import Any

from runner.executors.base import Task, TaskResult

MASK = "***"
_MAX_DEPTH = 50

Emit = Callable[[str, str, float], None]
Execute = Callable[..., TaskResult]


class Redactor:
    """Replaces each of `secrets` (longest first, so a secret containing another is masked whole)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = sorted({s for s in secrets if isinstance(s, str) and s}, key=len, reverse=True)
        self._encoded = [s.encode("utf-8", "surrogatepass") for s in self.secrets]

    def text(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def optional(self, text: str | None) -> str | None:
        return None if text is None else self.text(text)

    def value(self, value: Any, depth: int = 0) -> Any:
        """`value` with every secret in its strings and bytes masked (containers rebuilt, not mutated)."""
        if depth > _MAX_DEPTH:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, bytes):
            for secret in self._encoded:
                value = value.replace(secret, MASK.encode())
            return value
        if isinstance(value, dict) and type(value) is dict:
            return {self.value(k, depth + 1): self.value(v, depth + 1) for k, v in value.items()}
        if type(value) in (list, tuple, set, frozenset):
            return type(value)(self.value(v, depth + 1) for v in value)
        return value

    def holds_secret(self, data: bytes) -> bool:
        return any(secret in data for secret in self._encoded)

    def emit(self, emit: Emit) -> Emit:
        def redacted(stream: str, line: str, ts: float) -> None:
            emit(stream, self.text(line), ts)

        return redacted

    def result(self, result: TaskResult) -> TaskResult:
        """The result with its texts redacted; a failure if its stored output still holds a secret."""
        result = dataclasses.replace(
            result,
            error=self.optional(result.error),
            traceback=self.optional(result.traceback),
            preview=self.optional(result.preview),
        )
        if not result.ok:
            return result
        leaked = result.data is not None and self.holds_secret(result.data)
        if result.path is not None:
            try:
                with open(result.path, "rb") as handle:
                    leaked = self.holds_secret(handle.read())
            except OSError:
                leaked = True
            if leaked:
                try:
                    os.unlink(result.path)
                except OSError:
                    pass
        if leaked:
            return TaskResult(
                ok=False,
                error="the output holds a secret value inside an object flow cannot redact; "
                "return it without the secret (strings, lists and dicts are masked as ***)",
                metrics=result.metrics,
                duration_s=result.duration_s,
                where=result.where,
            )
        return result


def secrets_of(fn: Any) -> tuple[str, ...]:
    """The secret values a step function carries (`flow_secrets`), if any."""
    secrets = getattr(fn, "flow_secrets", ())
    return tuple(secrets) if isinstance(secrets, tuple | list) else ()


def redacting(execute: Execute) -> Execute:
    """Wrap `execute(task, fn, emit, ...)` so that a step with secrets sends none of them back."""

    @functools.wraps(execute)
    def wrapper(task: Task, fn: Callable[..., Any], emit: Emit, **options: Any) -> TaskResult:
        secrets = secrets_of(fn)
        if not secrets:
            return execute(task, fn, emit, **options)
        redactor = Redactor(secrets)

        def call(**kwargs: Any) -> Any:
            return redactor.value(fn(**kwargs))

        return redactor.result(execute(task, call, redactor.emit(emit), **options))

    return wrapper
