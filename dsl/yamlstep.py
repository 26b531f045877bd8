"""Provides `compile_step`: one step of a YAML flow (a `steps:` entry) checked and turned into the same
kind of `Step` that `command(...)`, `container(...)` and a `uses:` function give in a Python flow.

`dsl.yamlflow` reads the document around it (inputs, outputs, the step list, `needs:`). Every problem
is a `FlowError` naming the file, the line of the offending key and the step.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from dsl import templates
from dsl.commands import external_step
from dsl.errors import FlowError
from dsl.params import Param
from dsl.step import Step
from dsl.yamldoc import Checker, Located, describe, plain

STEP_KEYS = (
    "name",
    "description",
    "command",
    "shell",
    "image",
    "uses",
    "inputs",
    "env",
    "outputs",
    "needs",
    "files",
    "connections",
    "retries",
    "retry_delay",
    "timeout",
    "cache",
)


def compile_step(check: Checker, params: dict[str, Param], root: Path) -> Step:
    """The step `check` reads, its `{{ inputs.X }}` naming the flow's `params`, run in `root`.

    Raises:
        FlowError: a missing or conflicting `command`/`image`/`uses`, or an option of the wrong kind.
    """
    kind = _kind(check)
    shell = check.get("shell", False)
    if not isinstance(shell, bool):
        raise check.error(f"'shell' must be true or false, got {describe(shell)}", "shell")
    argv = _argv(check, shell)
    if kind == "uses" and shell:
        raise check.error("`shell:` applies to commands, not to `uses:`", "shell")
    retries, retry_delay, timeout, cache = _options(check)
    image = check.get("image")
    if kind == "container" and not isinstance(image, str):
        raise check.error(
            f"'image' must be an image reference such as python:3.12-slim, got {describe(image)}", "image"
        )
    inputs = _inputs(check)
    env = _env(check)
    outputs = check.names("outputs", "output names")
    for output in outputs:
        if not output.replace("-", "_").isidentifier():
            raise check.error(f"output name {output!r} must be letters, digits, _ and -", "outputs")
    uses = check.get("uses")
    return external_step(
        str(check.step),
        kind=kind,
        file=check.file,
        line=check.line_of("name"),
        root=root,
        argv=argv,
        shell=shell,
        image=image,
        function=_import_function(check, uses) if kind == "uses" else None,
        uses=uses,
        inputs=inputs,
        env=env,
        outputs=outputs,
        params=params,
        files=check.names("files", "file patterns"),
        connections=check.names("connections", "connection names"),
        retries=retries,
        retry_delay=retry_delay,
        timeout=timeout,
        cache=cache,
        locate=check.line_of,
    )


def _kind(check: Checker) -> str:
    """`command`, `container` or `uses`: which one of `command:`, `image:`, `uses:` the step has."""
    present = [key for key in ("command", "image", "uses") if check.get(key) is not None]
    if "image" in present:
        if "uses" in present:
            raise check.error(
                "a step has either `image:` (with an optional command) or `uses:`, not both", "uses"
            )
        return "container"
    if present == ["command"]:
        return "command"
    if present == ["uses"]:
        return "uses"
    if not present:
        raise check.error("a step needs exactly one of `command:`, `image:` or `uses:`")
    raise check.error("a step has either `command:` or `uses:`, not both", "uses")


def _options(check: Checker) -> tuple[int, float, float | None, bool]:
    """The step's `retries`, `retry_delay`, `timeout` and `cache`, checked."""
    retries = check.get("retries", 0)
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise check.error(f"'retries' must be a whole number >= 0, got {describe(retries)}", "retries")
    retry_delay = check.get("retry_delay", 0)
    if not isinstance(retry_delay, int | float) or isinstance(retry_delay, bool) or retry_delay < 0:
        raise check.error(f"'retry_delay' must be seconds >= 0, got {describe(retry_delay)}", "retry_delay")
    timeout = check.get("timeout")
    if timeout is not None and (
        not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0
    ):
        raise check.error(f"'timeout' must be seconds > 0, got {describe(timeout)}", "timeout")
    cache = check.get("cache", True)
    if not isinstance(cache, bool):
        raise check.error(f"'cache' must be true or false, got {describe(cache)}", "cache")
    return retries, float(retry_delay), float(timeout) if timeout is not None else None, cache


def _inputs(check: Checker) -> dict[str, Any]:
    """The step's `inputs:`, name -> template or value."""
    inputs_node = check.mapping("inputs")
    inputs: dict[str, Any] = plain(inputs_node) if inputs_node is not None else {}
    for input_name in inputs:
        if not isinstance(input_name, str) or not input_name.isidentifier():
            raise check.error(f"step input name {input_name!r} must be letters, digits and _", "inputs")
    return inputs


def _env(check: Checker) -> dict[str, Any]:
    """The step's `env:`, variable -> template text."""
    env_node = check.mapping("env")
    env: dict[str, Any] = {}
    for key, value in (plain(env_node) if env_node is not None else {}).items():
        if isinstance(value, dict | list) or value is None:
            raise check.error(f"env {key}: a value must be text or a number, got {describe(value)}", "env")
        env[str(key)] = templates.as_text(value)
    return env


def _argv(check: Checker, shell: bool) -> list[str]:
    value = check.get("command")
    if value is None:
        return []
    if isinstance(value, str):
        if not shell:
            raise check.error(
                "'command' must be a list of words, e.g. [python3, train.py]; "
                "to run a string with /bin/sh, add `shell: true`",
                "command",
            )
        return [value]
    if not isinstance(value, Located) or not isinstance(value.value, list) or not value.value:
        raise check.error(f"'command' must be a non-empty list of words, got {describe(value)}", "command")
    words = []
    for index, item in enumerate(value.value):
        if isinstance(item, Located) or item is None:
            raise FlowError(
                f"each word of 'command' must be text or a number, got {describe(item)}",
                file=check.file,
                line=value.lines.get(index, value.line),
                step=check.step,
            )
        words.append(templates.as_text(item))
    if shell:
        return [" ".join(words)]
    return words


def _import_function(check: Checker, uses: Any) -> Callable[..., Any]:
    if not isinstance(uses, str) or uses.count(":") != 1:
        raise check.error(f"'uses' must be package.module:function, got {describe(uses)}", "uses")
    module_name, _, attribute = uses.partition(":")
    try:
        module = importlib.import_module(module_name)
    except FlowError:
        raise
    except Exception as exc:
        raise check.error(f"uses: cannot import {module_name}: {type(exc).__name__}: {exc}", "uses") from None
    target: Any = module
    for part in attribute.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise check.error(f"uses: {module_name} has no '{attribute}'", "uses")
    if isinstance(target, Step):
        target = target.fn
    if not callable(target) or inspect.isclass(target):
        raise check.error(f"uses: {uses} is not a function", "uses")
    return cast("Callable[..., Any]", target)  # a function: checked just above


def check_references(check: Checker, declared: dict[str | None, list[str]]) -> None:
    """Every `{{ steps.S.outputs.N }}` names a step and an output it declares."""
    for key in ("command", "env", "inputs"):
        for text, line in _strings(check.get(key), check.line_of(key)):

            def bad(message: str, line: int = line) -> FlowError:
                return FlowError(message, file=check.file, line=line, step=check.step)

            try:
                found = templates.references(text)
            except templates.TemplateError as exc:
                raise bad(str(exc)) from None
            for reference in found:
                if reference.step is None:
                    continue
                if reference.step not in declared:
                    raise bad(f"{reference.text} names an unknown step '{reference.step}'")
                outputs = declared[reference.step]
                if reference.output is not None and reference.output not in outputs:
                    have = ", ".join(outputs) if outputs else "none (add `outputs:` to it)"
                    raise bad(
                        f"{reference.text}: step '{reference.step}' declares no output "
                        f"'{reference.output}' (its outputs: {have})"
                    )


def _strings(value: Any, line: int) -> list[tuple[str, int]]:
    """Every text in a value, with the line it is written on."""
    if isinstance(value, str):
        return [(value, line)]
    if isinstance(value, Located):
        items = value.value.items() if isinstance(value.value, dict) else enumerate(value.value)
        return [found for key, item in items for found in _strings(item, value.lines.get(key, value.line))]
    return []
