"""Provides `connect_steps` and `ConnectedCall`: a plain Python step's connections
(`@step(connections=["mlflow"])`), read when the flow loads and set in the environment for its call.

Command, container and `uses:` steps get their connections' variables through `dsl.external`; a
function step gets the same variables, from the same project file (`flow.toml`, or `[tool.flow]` in
pyproject.toml, found from the flow file's directory upwards), in `os.environ` while its function runs
in the worker, and restored right after (a warm worker's next step must not see them; the worker's
isolation would put them back too). The values are read when the flow loads, so an unknown connection
or an unset variable is a `FlowError` naming the step before anything runs.

What the runner ships to the worker is a `ConnectedCall` around the step's function: it carries the
values (secret ones only there, never in the fingerprint or the store) and names its secrets as
`flow_secrets`, which makes the runner mask them as `***` in everything the step sends back
(`runner.redaction`). A direct call of the step (a unit test) calls the plain function with the
environment as it is.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dsl.graph import Graph


class ConnectedCall:
    """A step function called with its connections' variables set in `os.environ` for the call only.

    Attributes:
        fn: the step's function.
        public_env: the variables that are not secret (part of the step's fingerprint).
        secret_env: the secret ones (never fingerprinted, masked in what the step sends back).
    """

    __slots__ = ("fn", "public_env", "secret_env")

    def __init__(
        self, fn: Callable[..., Any], public_env: dict[str, str], secret_env: dict[str, str]
    ) -> None:
        self.fn = fn
        self.public_env = public_env
        self.secret_env = secret_env

    def __getstate__(self) -> dict[str, Any]:
        return {slot: getattr(self, slot) for slot in self.__slots__}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for slot, value in state.items():
            setattr(self, slot, value)

    @property
    def flow_secrets(self) -> tuple[str, ...]:
        """The values the runner must replace by `***` in whatever the step's execution sends back."""
        return tuple(value for value in self.secret_env.values() if value)

    def __call__(self, **kwargs: Any) -> Any:
        env = {**self.public_env, **self.secret_env}
        saved = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        try:
            return self.fn(**kwargs)
        finally:
            for name, old in saved.items():
                if old is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = old

    def __repr__(self) -> str:
        return f"<connected {getattr(self.fn, '__name__', self.fn)!r}>"


def connect_steps(graph: Graph, root: Path) -> bool:
    """Read the connections of every function step that lists some (`Step.connections`) into
    `Step.connection_env`; return whether any step has connections.

    Raises:
        FlowError: an unknown connection, an unset variable, a malformed project file; named at the
            step's file and line.
    """
    from dsl import connections as connection_files  # tomllib: only for a flow with connections

    listed = [node.step for node in graph.nodes.values() if node.step.connections and node.step.spec is None]
    if not listed:
        return False
    found, source = connection_files.find_connections(root)
    for item in listed:
        item.connection_env = connection_files.resolve(
            item.connections, found, source, file=item.file, line=item.line, step=item.name
        )
    return True


def shipped_function(item: Any) -> Callable[..., Any]:
    """What a worker calls for step `item`: its function, wrapped in a `ConnectedCall` when it has
    connections."""
    resolved = getattr(item, "connection_env", None)
    fn: Callable[..., Any] = item.fn
    if resolved is None or item.spec is not None:
        return fn
    return ConnectedCall(fn, dict(resolved.public), dict(resolved.secret))
