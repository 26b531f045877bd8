"""Provides external steps: a command, a container, or a `uses:` function, as ordinary `Step`s.

`command(...)` and `container(...)` are the factories a Python flow uses beside `@step` functions; the
YAML loader builds its steps with the same `external_step`. Each becomes a `Step` whose function is an
`ExternalCall`: the engine ships it to a worker process like any step function, so isolation, timeouts,
stop, retries, logs and the cache apply unchanged. Its arguments are named after what its `{{ }}`
expressions reference (upstream steps, flow inputs), which makes every reference an edge of the graph.

A command runs in the flow file's directory with `FLOW_OUTPUTS` set to an empty directory; each declared
output NAME is the text of `$FLOW_OUTPUTS/NAME` when it exits 0, and the step's output is the dict of
them. stdout and stderr stream into the step's logs line by line. It stays in the worker's process group
(not one of its own): every way a step is stopped (stop, timeout, the runner dying) kills the worker's
whole group, and so the command and everything it started. A container's `docker run` client dies the
same way, but its container would not: a small guard process outside the group removes the container
when the worker goes away before the container is done.

`Step.spec` records what an external step runs (argv and environment templates, image and its digest,
declared outputs, the connections' variables with every secret's value replaced by `***`): the
fingerprint hashes it in place of a function's source.
"""

from __future__ import annotations

import inspect
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from dsl import connections as connection_files
from dsl import templates, wiring
from dsl.errors import FlowError
from dsl.params import Param
from dsl.step import Step

OUTPUTS_IN_CONTAINER = "/flow/outputs"
"""Where a container sees its outputs directory (mounted from the host's temporary one)."""
STDERR_TAIL = 10
"""Lines of a failed command's stderr quoted in the step's error (all of it is in the logs)."""
ENGINES = ("docker", "podman")
ENGINE_CHECK_TIMEOUT_S = 20.0
ENGINE_RECHECK_S = 30.0
"""A usable engine is trusted for this long; an unusable one is asked again on every load (a daemon
that is down fails in milliseconds)."""

_GUARD = (
    "import subprocess, sys\n"
    "if not sys.stdin.buffer.read():\n"
    "    subprocess.run([sys.argv[1], 'rm', '-f', sys.argv[2]], stdout=subprocess.DEVNULL,"
    " stderr=subprocess.DEVNULL, timeout=60)\n"
)
"""Runs outside the worker's process group; its stdin is a pipe only the worker holds. The worker writes
a byte when the container is done; end-of-file without one means the worker was killed: remove the
container."""


class CommandFailed(Exception):
    """A command or container exited with a non-zero code (the message quotes the end of its stderr)."""


class MissingOutput(Exception):
    """A declared output the step did not produce."""


class ExternalCall:
    """The function of an external step: called in the worker with the values its expressions reference.

    Attributes:
        kind: "command", "container" or "uses".
        step: the step's name.
        argv: the command's argv templates (one string with `shell`).
        shell: run `argv[0]` with `/bin/sh -c` (values filled in are shell-quoted).
        image: the container image, for containers.
        engine: the container CLI (docker or podman) found usable when the flow loaded.
        env: variable -> template, the step's own `env`.
        inputs: name -> template or value: `FLOW_INPUT_<NAME>` for commands, keyword arguments for `uses`.
        outputs: the declared output names.
        public_env: connection variables that are not secret.
        secret_env: connection variables that are secret (never fingerprinted; redacted by the runner).
        files: absolute paths of declared input files (mounted read-only into a container).
        workdir: where the command runs: the flow file's directory.
        function: the `uses:` function.
    """

    __slots__ = (
        "kind",
        "step",
        "argv",
        "shell",
        "image",
        "engine",
        "env",
        "inputs",
        "outputs",
        "public_env",
        "secret_env",
        "files",
        "workdir",
        "function",
        "__signature__",
    )

    def __init__(self, **fields: Any) -> None:
        for slot in self.__slots__:
            setattr(self, slot, fields.get(slot))

    def __getstate__(self) -> dict[str, Any]:
        return {slot: getattr(self, slot) for slot in self.__slots__}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for slot, value in state.items():
            setattr(self, slot, value)

    def __repr__(self) -> str:
        return f"<{self.kind} step {self.step}>"

    @property
    def flow_secrets(self) -> tuple[str, ...]:
        """The values the runner must replace by `***` in whatever this step's execution sends back."""
        return tuple(value for value in (self.secret_env or {}).values() if value)

    def __call__(self, **values: Any) -> Any:
        if self.kind == "uses":
            return self._call_function(values)
        return self._run_process(values)

    # ----- uses: a Python function ---------------------------------------------------------------

    def _call_function(self, values: Mapping[str, Any]) -> Any:
        kwargs = {name: templates.evaluate(template, values) for name, template in self.inputs.items()}
        env = {**self.public_env, **self.secret_env, **self._rendered_env(values)}
        saved = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        try:
            result = self.function(**kwargs)
        finally:
            for name, old in saved.items():
                if old is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = old
        if self.outputs:
            if not isinstance(result, Mapping):
                raise MissingOutput(
                    f"declares outputs {', '.join(self.outputs)} but returned a {type(result).__name__}; "
                    "return a dict with those keys"
                )
            missing = [name for name in self.outputs if name not in result]
            if missing:
                raise MissingOutput(f"returned no output {', '.join(map(repr, missing))}")
        return result

    # ----- command and container ----------------------------------------------------------------

    def _rendered_env(self, values: Mapping[str, Any]) -> dict[str, str]:
        return {name: templates.render(str(template), values) for name, template in self.env.items()}

    def _step_env(self, values: Mapping[str, Any]) -> dict[str, str]:
        """What a command sees besides the inherited environment: inputs, connections, its own env."""
        env = {
            input_variable(name): templates.as_text(templates.evaluate(template, values))
            for name, template in self.inputs.items()
        }
        env.update(self.public_env)
        env.update(self.secret_env)
        env.update(self._rendered_env(values))
        return env

    def command_line(self, values: Mapping[str, Any]) -> list[str]:
        """The command's argv with every expression filled in."""
        if self.shell:
            return ["/bin/sh", "-c", templates.render(self.argv[0], values, quote=True)]
        return [templates.render(part, values) for part in self.argv]

    def invocation(
        self, values: Mapping[str, Any], outputs_dir: str, name: str
    ) -> tuple[list[str], dict[str, str]]:
        """The argv to start and the environment variables it adds to the inherited ones.

        A container gets its variables as `-e NAME` (the value travels in the client's environment, never
        in an argv that `ps` shows), the outputs directory and each declared input file mounted.
        """
        step_env = self._step_env(values)
        command = self.command_line(values) if self.argv else []
        if self.kind == "command":
            return command, {**step_env, "FLOW_OUTPUTS": outputs_dir}
        argv = [self.engine, "run", "--rm", "--name", name, "--workdir", self.workdir]
        argv += ["--volume", f"{outputs_dir}:{OUTPUTS_IN_CONTAINER}", "--env", "FLOW_OUTPUTS"]
        for path in self.files:
            argv += ["--volume", f"{path}:{path}:ro"]
        for variable in sorted(step_env):
            argv += ["--env", variable]
        argv += [self.image, *command]
        return argv, {**step_env, "FLOW_OUTPUTS": OUTPUTS_IN_CONTAINER}

    def _run_process(self, values: Mapping[str, Any]) -> dict[str, str]:
        outputs_dir = tempfile.mkdtemp(prefix="flow-outputs-")
        name = f"flow-{self.step}-{os.urandom(6).hex()}"
        guard: tuple[subprocess.Popen[bytes], int] | None = None
        try:
            argv, env = self.invocation(values, outputs_dir, name)
            if self.kind == "container":
                guard = _start_guard(self.engine, name)
            shown = " ".join(argv if self.kind == "command" else argv[argv.index(self.image) :])
            try:
                process = subprocess.Popen(
                    argv,
                    cwd=self.workdir,
                    env={**os.environ, **env},
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
            except OSError as exc:
                raise CommandFailed(f"cannot start {argv[0]}: {exc.strerror or exc}") from None
            tail: deque[str] = deque(maxlen=STDERR_TAIL)
            pumps = [
                threading.Thread(target=_pump, args=(process.stdout, sys.stdout, None), daemon=True),
                threading.Thread(target=_pump, args=(process.stderr, sys.stderr, tail), daemon=True),
            ]
            for pump in pumps:
                pump.start()
            code = process.wait()
            for pump in pumps:
                pump.join()
            if code != 0:
                how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
                quoted = ("; its stderr ends:\n" + "\n".join(tail)) if tail else ""
                raise CommandFailed(f"`{shown}` {how}{quoted}")
            return _read_outputs(Path(outputs_dir), self.outputs)
        finally:
            if guard is not None:
                _stop_guard(*guard)
            shutil.rmtree(outputs_dir, ignore_errors=True)


def input_variable(name: str) -> str:
    """The environment variable a command reads step input NAME from."""
    return "FLOW_INPUT_" + name.upper().replace("-", "_")


def _pump(source: IO[bytes] | None, target: IO[str], tail: deque[str] | None) -> None:
    """Copy a child's output line by line into the step's captured stream (and keep stderr's tail)."""
    if source is None:
        return
    for raw in iter(source.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        target.write(line + "\n")
        if tail is not None:
            tail.append(line)
    source.close()


def _read_outputs(directory: Path, names: Sequence[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    missing = []
    for name in names:
        path = directory / name
        try:
            values[name] = path.read_text(encoding="utf-8", errors="replace").rstrip("\r\n")
        except OSError:
            missing.append(name)
    if missing:
        raise MissingOutput(
            f"exited 0 but wrote no output {', '.join(map(repr, missing))} (write each to $FLOW_OUTPUTS/NAME)"
        )
    return values


def _start_guard(engine: str, name: str) -> tuple[subprocess.Popen[bytes], int]:
    read_end, write_end = os.pipe()
    try:
        guard = subprocess.Popen(
            [sys.executable, "-c", _GUARD, engine, name],
            stdin=read_end,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        os.close(read_end)
    return guard, write_end


def _stop_guard(guard: subprocess.Popen[bytes], write_end: int) -> None:
    """The container is done (or never started): let the guard go without removing anything."""
    try:
        os.write(write_end, b"done")
    finally:
        os.close(write_end)
    guard.wait()


# ----- container engines ------------------------------------------------------------------------

_usable: dict[str, float] = {}


def container_engine() -> str:
    """The path of a usable container CLI: `$FLOW_CONTAINER_ENGINE`, else docker, else podman.

    Usable means its `info` succeeds: a docker CLI whose daemon is down is not.

    Raises:
        FlowError: none is usable; the message says why for each one tried.
    """
    wanted = os.environ.get("FLOW_CONTAINER_ENGINE")
    why: list[str] = []
    for name in [wanted] if wanted else ENGINES:
        path = shutil.which(name)
        if path is None:
            why.append(f"{name} is not installed")
            continue
        if time.monotonic() - _usable.get(path, -ENGINE_RECHECK_S) < ENGINE_RECHECK_S:
            return path
        try:
            probe = subprocess.run(
                [path, "info"],
                capture_output=True,
                text=True,
                timeout=ENGINE_CHECK_TIMEOUT_S,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            why.append(f"{name} cannot be run ({exc})")
            continue
        if probe.returncode == 0:
            _usable[path] = time.monotonic()
            return path
        detail = (probe.stderr.strip().splitlines() or ["no reason given"])[-1]
        why.append(f"{name} is installed but not usable ({detail[:200]})")
    raise FlowError("container steps need docker or podman, and none is usable: " + "; ".join(why))


def image_digest(engine: str, image: str) -> str | None:
    """The local image's content digest (its ID), or None if it is not pulled yet."""
    try:
        probe = subprocess.run(
            [engine, "image", "inspect", "--format", "{{.Id}}", image],
            capture_output=True,
            text=True,
            timeout=ENGINE_CHECK_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    digest = probe.stdout.strip()
    return digest if probe.returncode == 0 and digest else None


# ----- building external steps ------------------------------------------------------------------


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

    arguments: dict[str, inspect.Parameter] = {}
    texts = [("command", part) for part in argv] + [("env", v) for v in env.values()]
    texts += [("inputs", v) for v in inputs.values() if isinstance(v, str)]
    for field, text in texts:
        try:
            found = templates.references(str(text))
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
            else:
                step_name = str(reference.step)
                if step_name == name:
                    raise bad(f"{reference.text}: a step cannot use its own output", field)
                if step_name in params:
                    raise bad(f"'{step_name}' is both a flow input and a step; rename one", field)
                arguments[step_name] = inspect.Parameter(step_name, inspect.Parameter.KEYWORD_ONLY)

    workdir = str(root)
    engine = None
    image_id = None
    if kind == "command":
        _check_executable(argv, shell, root, bad)
    elif kind == "container":
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
        name: "{{ steps.%s.output }}" % value.name if isinstance(value, Step) else value
        for name, value in (inputs or {}).items()
    }


def _python_params(params: Mapping[str, Any] | None) -> dict[str, Param]:
    return {
        name: value if isinstance(value, Param) else Param(default=value)
        for name, value in (params or {}).items()
    }
