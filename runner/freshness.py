"""Provides the worker's half of "the code that runs is the code that was hashed".

A step's fingerprint hashes, at planning, the text of every one of the user's modules the step
imports inside its body (`StaticPrint.files`, shipped as `Task.expect`). The worker imports them
only when the step runs, so a save in between would run new code under the old fingerprint, and a
warm worker may still hold a module it imported for an earlier step. Around each step the worker:

- forgets every such module it holds compiled from another text, so the step imports the file as it
  is now (`forget_stale`);
- afterwards compares the text each such module was compiled from with the expected one (`stale`):
  a difference means the file was saved during the run, and the runner does not cache the result.
"""

from __future__ import annotations

import sys
from pathlib import Path

from dsl import loader


def _origin(module: object) -> str | None:
    """The resolved source path of a module the loader compiled fresh, else None."""
    spec = getattr(module, "__spec__", None)
    fresh = getattr(spec, "loader", None)
    if not isinstance(fresh, loader._FreshSourceLoader):
        return None
    return str(Path(fresh.path).resolve())


def forget_stale(expect: dict[str, str]) -> None:
    """Drop from `sys.modules` every expected module this process compiled from another text."""
    if not expect:
        return
    for name, module in list(sys.modules.items()):
        path = _origin(module)
        if path is not None and path in expect and loader.compiled.get(path) != expect[path]:
            del sys.modules[name]
            loader.compiled.pop(path, None)


def stale(expect: dict[str, str]) -> tuple[str, ...]:
    """The expected modules the step imported with a text other than the fingerprinted one."""
    return tuple(sorted(path for path, sha in expect.items() if loader.compiled.get(path, sha) != sha))
