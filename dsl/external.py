"""Provides `ExternalCall`: what a command, container or `uses:` step runs in its worker process.

`dsl.commands` builds these steps (the `command(...)` and `container(...)` factories of Python flows,
and the YAML loader's steps). Each is a `Step` whose function is an `ExternalCall`: the engine ships it
to a worker process like any step function, so isolation, timeouts, stop, retries, logs and the cache
apply unchanged. Its arguments are named after what its `{{ }}` expressions reference (upstream steps,
flow inputs), which makes every reference an edge of the graph.

A command runs in the flow file's directory with `FLOW_OUTPUTS` set to an empty directory; each declared
output NAME is the text of `$FLOW_OUTPUTS/NAME` when it exits 0, and the step's output is the dict of
them. stdout and stderr stream into the step's logs line by line. It stays in the worker's process group
(not one of its own): every way a step is stopped (stop, timeout, the runner dying) kills the worker's
whole group, and so the command and everything it started. A container's `docker run` client dies the
same way, but its container would not: a small guard process outside the group removes the container
when the worker goes away before the container is done.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from dsl import templates

OUTPUTS_IN_CONTAINER = "/flow/outputs"
"""Where a container sees its outputs directory (mounted from the host's temporary one)."""
STDERR_TAIL = 10
"""Lines of a failed command's stderr quoted in the step's error (all of it is in the logs)."""

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
    kind: str
    step: str
    argv: list[str]
    shell: bool
    image: str | None
    engine: str | None
    env: dict[str, Any]
    inputs: dict[str, Any]
    outputs: tuple[str, ...]
    public_env: dict[str, str]
    secret_env: dict[str, str]
    files: tuple[str, ...]
    workdir: str
    function: Callable[..., Any] | None

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
        assert self.function is not None  # a `uses:` step is built with its function
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
        assert self.engine is not None and self.image is not None  # a container step is built with both
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
                assert self.engine is not None  # a container step is built with its engine
                guard = _start_guard(self.engine, name)
            shown = " ".join(argv[0 if self.kind == "command" else argv.index(str(self.image)) :])
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
            env={**os.environ, "FLOW_OUTLIVES_STEP": "1"},  # a stop kills the step's tree, not its guard
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
