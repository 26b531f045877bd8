"""Provides `command`, `container` and `external_step`: the builders of external steps.

`command(...)` and `container(...)` are what a Python flow uses beside `@step` functions; the YAML loader
builds its steps with `external_step`. Everything a step needs that can be checked before a run is
checked here, with the file and line: its `{{ }}` expressions, that the program is on PATH, that a
container engine is usable, that its connections exist and their variables are set, that a `uses:`
function takes the inputs given.

`Step.spec` records what an external step runs (argv and environment templates, image and its digest,
declared outputs, the connections' variables with every secret's value replaced by `***`): the
fingerprint hashes it in place of a function's source. Secret values travel only inside the
`ExternalCall` shipped to the worker.
"""

from __future__ import annotations

import inspect
import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dsl import connections as connection_files
from dsl import templates, wiring
from dsl.engines import container_engine, image_digest
from dsl.errors import FlowError
from dsl.external import ExternalCall
from dsl.params import Param
from dsl.step import Step


def external_step(
    name: str,
    *,
    kind: str,
    file: str,
    line: int,
    root: Path,
    argv: Sequence[str] = (),
    shell: bool = False,
    image: str | None = None,
    function: Callable[..., Any] | None = None,
    uses: str | None = None,
    inputs: Mapping[str, Any] | None = None,
    env: Mapping[str, Any] | None = None,
    outputs: Sequence[str] = (),
    params: Mapping[str, Param] | None = None,
    files: Sequence[str] = (),
    connections: Sequence[str] = (),
    retries: int = 0,
    retry_delay: float = 0.0,
    timeout: float | None = None,
    cache: bool = True,
    locate: Callable[[str], int] | None = None,
) -> Step:
    """Build a command, container or `uses:` step (see the module docstring).

    `params` are the flow inputs `{{ inputs.NAME }}` may name; `locate` gives the line of a field
    (for errors), defaulting to the step's line.

    Raises:
        FlowError: a malformed expression, an unknown input, a command not found on PATH, no usable
            container engine, an unknown connection or unset variable, a `uses:` function whose arguments
            do not match. Named at `file` and the line.
    """
    params = dict(params or {})
    inputs = dict(inputs or {})
    env = {str(k): v for k, v in (env or {}).items()}

    def bad(message: str, field: str | None = None) -> FlowError:
        where = locate(field) if locate is not None and field else line
        return FlowError(message, file=file, line=where, step=name)

    written = [("command", str(part)) for part in argv] + [("env", str(v)) for v in env.values()]
    written += [("inputs", str(text)) for text in templates.texts(list(inputs.values()))]
    arguments = _arguments(written, name, params, bad)

    workdir = str(root)
    engine = None
    image_id = None
    if kind == "command":
        _check_executable(argv, shell, root, bad)
    elif kind == "container":
        text = str(image or "")
        if not text or text.startswith("-") or any(c.isspace() for c in text):
            raise bad(f"image must be an image reference such as python:3.12-slim, got {image!r}", "image")
        try:
            engine = container_engine()
        except FlowError as exc:
            raise bad(exc.message, "image") from None
        image_id = image_digest(engine, str(image))
    elif kind == "uses":
        _check_arguments(function, inputs, bad)

    found_connections, source = connection_files.find_connections(root)
    resolved = connection_files.resolve(
        tuple(connections),
        found_connections,
        source,
        file=file,
        line=locate("connections") if locate is not None else line,
        step=name,
    )
    declared_files = list(files) + [p for p in _files_named(argv, shell, root) if p not in files]
    absolute = sorted({str(path) for pattern in declared_files for path in _glob(root, pattern)})

    call = ExternalCall(
        kind=kind,
        step=name,
        argv=list(argv),
        shell=shell,
        image=image,
        engine=engine,
        env=env,
        inputs=inputs,
        outputs=tuple(outputs),
        public_env=resolved.public,
        secret_env=resolved.secret,
        files=tuple(absolute),
        workdir=workdir,
        function=function,
        __signature__=inspect.Signature(list(arguments.values())),
    )
    try:
        item = Step(
            call,
            name=name,
            retries=retries,
            retry_delay=retry_delay,
            timeout=timeout,
            cache=cache,
            inputs=declared_files,
        )
    except FlowError as exc:
        raise bad(exc.message) from None
    item.file, item.line = file, line
    item.spec = {
        "kind": kind,
        "argv": list(argv),
        "shell": shell,
        "image": image,
        "image_id": image_id,
        "uses": uses,
        "inputs": inputs,
        "env": env,
        "outputs": list(outputs),
        "connections": {
            **resolved.public,
            **{variable: "***" for variable in resolved.secret},
        },
    }
    return item


def _arguments(
    written: list[tuple[str, str]], name: str, params: Mapping[str, Param], bad: Callable[..., FlowError]
) -> dict[str, inspect.Parameter]:
    """The keyword arguments of the step's function: one per flow input (with its default) and per
    upstream step its `{{ }}` expressions reference, so each reference is an edge of the graph.

    `written` holds each expression's text with the field it is written in (for the error's line).
    """
    arguments: dict[str, inspect.Parameter] = {}
    for field, text in written:
        try:
            found = templates.references(text)
        except templates.TemplateError as exc:
            raise bad(str(exc), field) from None
        for reference in found:
            if reference.input is not None:
                if reference.input not in params:
                    known = ", ".join(sorted(params)) or "none"
                    raise bad(f"{reference.text} names no input of the flow (inputs: {known})", field)
                arguments[reference.input] = inspect.Parameter(
                    reference.input, inspect.Parameter.KEYWORD_ONLY, default=params[reference.input]
                )
                continue
            step_name = str(reference.step)
            if step_name == name:
                raise bad(f"{reference.text}: a step cannot use its own output", field)
            if step_name in params:
                raise bad(f"'{step_name}' is both a flow input and a step; rename one", field)
            arguments[step_name] = inspect.Parameter(step_name, inspect.Parameter.KEYWORD_ONLY)
    return arguments


def _check_executable(argv: Sequence[str], shell: bool, root: Path, bad: Callable[..., FlowError]) -> None:
    if not argv or not str(argv[0]).strip():
        raise bad("command is empty", "command")
    program = "/bin/sh" if shell else str(argv[0])
    if "{{" in program:
        return
    if "/" in program:
        path = (root / program).resolve()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise bad(f"command '{program}' not found or not executable (looked at {path})", "command")
    elif shutil.which(program) is None:
        raise bad(f"command '{program}' not found on PATH", "command")


def _check_arguments(
    function: Callable[..., Any] | None, inputs: Mapping[str, Any], bad: Callable[..., FlowError]
) -> None:
    if function is None or not callable(function):
        raise bad("uses: does not name a function", "uses")
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    for input_name in inputs:
        if input_name not in signature.parameters and not accepts_any:
            raise bad(f"input '{input_name}' is not an argument of the uses: function", "inputs")
    for parameter in signature.parameters.values():
        required = parameter.default is parameter.empty and parameter.kind in (
            parameter.POSITIONAL_OR_KEYWORD,
            parameter.KEYWORD_ONLY,
        )
        if required and parameter.name not in inputs:
            raise bad(f"the uses: function needs argument '{parameter.name}'; give it under inputs", "uses")


def _files_named(argv: Sequence[str], shell: bool, root: Path) -> list[str]:
    """The literal argv words that name a file in the project: declared inputs without being told
    (editing `train.py` re-runs `python train.py`)."""
    import shlex

    words: list[str] = []
    for part in argv:
        if "{{" in part:
            continue
        try:
            words += shlex.split(part) if shell else [part]
        except ValueError:
            continue
    named = []
    for word in words[1:] if not shell else words:
        if word.startswith("-") or "\0" in word:
            continue
        path = (root / word).resolve()
        try:
            if path.is_file() and path.is_relative_to(root.resolve()):
                named.append(word)
        except OSError:
            continue
    return named


def _glob(root: Path, pattern: str) -> list[Path]:
    base = Path(pattern)
    if base.is_absolute():
        return [base] if base.is_file() else [p for p in Path(base.anchor).glob(str(base)[1:]) if p.is_file()]
    return sorted(p.resolve() for p in root.glob(pattern) if p.is_file())


def _caller() -> tuple[str, int]:
    file, line = wiring.caller_location(3)
    return file, line


def command(
    name: str,
    argv: Sequence[str] | str,
    *,
    shell: bool = False,
    outputs: Iterable[str] = (),
    inputs: Mapping[str, Any] | None = None,
    env: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    files: Iterable[str] = (),
    connections: Iterable[str] = (),
    retries: int = 0,
    retry_delay: float = 0.0,
    timeout: float | None = None,
    cache: bool = True,
) -> Step:
    """A step that runs a command (an argv list; one string run by `/bin/sh -c` with `shell=True`).

    Example:
        ```python
        train = command(
            "train",
            ["python3", "train.py", "--data", "{{ steps.prepare.outputs.path }}", "--lr", "{{ inputs.lr }}"],
            outputs=["model"],
            params={"lr": param(0.1, help="learning rate")},
        )
        ```

    Args:
        name: the step's name; a `@step` function's argument of this name receives its output (the dict
            of its declared outputs).
        argv: the command; `{{ inputs.NAME }}` names a flow parameter (declared in `params`),
            `{{ steps.STEP.outputs.NAME }}` a key of an upstream step's output and
            `{{ steps.STEP.output }}` its whole output.
        outputs: names the command writes to `$FLOW_OUTPUTS/NAME`.
        inputs: more values for the command, as `FLOW_INPUT_<NAME>` environment variables.
        env: environment variables (values may hold expressions).
        params: flow parameters the expressions name: a default, or `param(...)`.
        files: declared input files (glob patterns relative to the flow file): part of the fingerprint.
        connections: named connections from flow.toml / `[tool.flow]` whose variables the command gets.
    """
    file, line = _caller()
    parts = [argv] if isinstance(argv, str) else list(argv)
    if isinstance(argv, str) and not shell:
        raise FlowError(
            "give the command as a list of words, or a string with shell=True",
            file=file,
            line=line,
            step=name,
        )
    return external_step(
        name,
        kind="command",
        file=file,
        line=line,
        root=Path(file).resolve().parent,
        argv=[str(p) for p in parts],
        shell=shell,
        inputs=_python_inputs(inputs),
        env=env,
        outputs=list(outputs),
        params=_python_params(params),
        files=list(files),
        connections=list(connections),
        retries=retries,
        retry_delay=retry_delay,
        timeout=timeout,
        cache=cache,
    )


def container(
    name: str,
    image: str,
    argv: Sequence[str] = (),
    *,
    outputs: Iterable[str] = (),
    inputs: Mapping[str, Any] | None = None,
    env: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    files: Iterable[str] = (),
    connections: Iterable[str] = (),
    retries: int = 0,
    retry_delay: float = 0.0,
    timeout: float | None = None,
    cache: bool = True,
) -> Step:
    """A step that runs `argv` (or the image's default command) in a container, with docker or podman.

    Options as `command`; the outputs directory appears in the container at `/flow/outputs` (also in
    `$FLOW_OUTPUTS`) and each declared input file at its own path, read-only.
    """
    file, line = _caller()
    return external_step(
        name,
        kind="container",
        file=file,
        line=line,
        root=Path(file).resolve().parent,
        argv=[str(p) for p in argv],
        image=image,
        inputs=_python_inputs(inputs),
        env=env,
        outputs=list(outputs),
        params=_python_params(params),
        files=list(files),
        connections=list(connections),
        retries=retries,
        retry_delay=retry_delay,
        timeout=timeout,
        cache=cache,
    )


def _python_inputs(inputs: Mapping[str, Any] | None) -> dict[str, Any]:
    """A Step given as an input value stands for its whole output."""
    return {
        name: f"{{{{ steps.{value.name}.output }}}}" if isinstance(value, Step) else value
        for name, value in (inputs or {}).items()
    }


def _python_params(params: Mapping[str, Any] | None) -> dict[str, Param]:
    return {
        name: value if isinstance(value, Param) else Param(default=value)
        for name, value in (params or {}).items()
    }
