"""Provides `find_connections`: the named connections a project declares in `flow.toml` or `pyproject.toml`.

A connection is a named set of environment variables handed to the steps that list it (an MLflow
server's URI and token, an S3 endpoint and its keys). A value is written in the file, or read from the
user's environment when the flow loads, and may be marked secret:

    [connections.mlflow]          # in flow.toml; in pyproject.toml: [tool.flow.connections.mlflow]
    MLFLOW_TRACKING_URI = "http://localhost:5000"
    MLFLOW_TRACKING_TOKEN = { env = "MLFLOW_TOKEN", secret = true }
    MLFLOW_EXPERIMENT_NAME = { env = "EXPERIMENT", default = "dev" }

A secret's value never enters a step's fingerprint or the store; it is replaced by `***` in whatever a
step's execution sends back (logs, errors, outputs). A secret can only come from the environment: a
secret written in a file that is usually committed would not be one.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsl.errors import FlowError

PROJECT_FILES = ("flow.toml", "pyproject.toml")
"""Looked for in the flow file's directory, then each parent; in one directory flow.toml wins."""


@dataclass(frozen=True)
class Variable:
    """One environment variable of a connection.

    Attributes:
        name: the variable's name as the step sees it.
        value: the literal value, or the default for `env`; None when it has none.
        env: the user's environment variable the value is read from, if any.
        secret: never fingerprinted, stored or shown.
    """

    name: str
    value: str | None = None
    env: str | None = None
    secret: bool = False


@dataclass(frozen=True)
class Connection:
    """A named set of environment variables (`variables` by name) declared in `file`."""

    name: str
    file: str
    variables: dict[str, Variable] = field(default_factory=dict)


@dataclass(frozen=True)
class Resolved:
    """A step's connections with their values read: what it receives and what may be fingerprinted.

    Attributes:
        public: variable -> value, for the values that are not secret (these are fingerprinted).
        secret: variable -> value, for the secret ones (never fingerprinted, never stored).
    """

    public: dict[str, str] = field(default_factory=dict)
    secret: dict[str, str] = field(default_factory=dict)


def project_file(start: Path) -> Path | None:
    """The nearest flow.toml, or pyproject.toml with a `[tool.flow]` table, from `start` upwards."""
    for directory in (start, *start.parents):
        candidate = directory / "flow.toml"
        if candidate.is_file():
            return candidate
        candidate = directory / "pyproject.toml"
        if candidate.is_file() and "[tool.flow" in _read(candidate):
            return candidate
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FlowError(f"cannot read the project file: {exc}", file=str(path)) from None


def find_connections(start: Path) -> tuple[dict[str, Connection], Path | None]:
    """The connections declared for a flow in directory `start`, and the file they came from.

    Raises:
        FlowError: the project file is not valid TOML or a connection is malformed.
    """
    path = project_file(start)
    if path is None:
        return {}, None
    text = _read(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FlowError(f"invalid TOML: {exc}", file=str(path)) from None
    if path.name == "pyproject.toml":
        data = data.get("tool", {}).get("flow", {})
    table = data.get("connections", {})
    prefix = "tool.flow.connections" if path.name == "pyproject.toml" else "connections"
    if not isinstance(table, Mapping):
        raise FlowError(f"[{prefix}] must be a table of named connections", file=str(path))
    connections: dict[str, Connection] = {}
    for name, variables in table.items():
        if not isinstance(variables, Mapping):
            raise FlowError(f"[{prefix}.{name}] must be a table of environment variables", file=str(path))
        connections[name] = Connection(
            name,
            str(path),
            {key: _variable(f"{prefix}.{name}", key, raw, path) for key, raw in variables.items()},
        )
    return connections, path


def _variable(table: str, key: str, raw: Any, path: Path) -> Variable:
    def bad(message: str) -> FlowError:
        return FlowError(f"[{table}] {key}: {message}", file=str(path))

    if not key.replace("_", "a").isalnum() or key[0].isdigit():
        raise bad("an environment variable name is letters, digits and _ (not starting with a digit)")
    if isinstance(raw, str | int | float | bool) and not isinstance(raw, Mapping):
        return Variable(key, value=_text(raw))
    if not isinstance(raw, Mapping):
        raise bad(f'expected a value or {{ env = "NAME", secret = true }}, got {raw!r}')
    unknown = set(raw) - {"env", "secret", "default", "value"}
    if unknown:
        raise bad(f"unknown key(s) {', '.join(sorted(unknown))}; use env, default, secret")
    secret = raw.get("secret", False)
    if not isinstance(secret, bool):
        raise bad(f"secret must be true or false, got {secret!r}")
    env = raw.get("env")
    if env is not None and not isinstance(env, str):
        raise bad(f"env must name an environment variable, got {env!r}")
    if "value" in raw:
        if secret:
            raise bad(
                'a secret must come from the environment ({ env = "NAME", secret = true }), '
                "never be written in a file"
            )
        if env is not None:
            raise bad("give either value or env, not both")
        return Variable(key, value=_text(raw["value"]))
    if env is None:
        raise bad('give env = "NAME" (read from your environment) or a value')
    default = raw.get("default")
    if default is not None and secret:
        raise bad("a secret cannot have a default written in the file")
    return Variable(key, value=None if default is None else _text(default), env=env, secret=secret)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def resolve(
    names: tuple[str, ...],
    connections: Mapping[str, Connection],
    source: Path | None,
    *,
    environ: Mapping[str, str] | None = None,
    file: str,
    line: int,
    step: str,
) -> Resolved:
    """Read the variables of the connections a step lists (later connections win on a shared name).

    Raises:
        FlowError: an unknown connection, or a variable read from an environment variable that is not
            set and has no default. Named at the step's file and line.
    """
    environ = os.environ if environ is None else environ
    public: dict[str, str] = {}
    secret: dict[str, str] = {}
    for name in names:
        connection = connections.get(name)
        if connection is None:
            where = (
                f"in {source}" if source is not None else "(no flow.toml or [tool.flow] in pyproject.toml)"
            )
            known = ", ".join(sorted(connections)) or "none"
            raise FlowError(
                f"unknown connection '{name}' {where}; declared: {known}", file=file, line=line, step=step
            )
        for variable in connection.variables.values():
            value = variable.value
            if variable.env is not None:
                value = environ.get(variable.env, variable.value)
            if value is None:
                raise FlowError(
                    f"connection '{name}': {variable.name} is read from ${variable.env}, which is not set "
                    f"(declared in {connection.file})",
                    file=file,
                    line=line,
                    step=step,
                )
            public.pop(variable.name, None)
            secret.pop(variable.name, None)
            (secret if variable.secret else public)[variable.name] = value
    return Resolved(public, secret)
