"""Provides `install` and `save`: the methods `dataclasses` writes for each class (`__init__`, `__eq__`,
`__hash__`, `__repr__`, a frozen class's `__setattr__`, ...), compiled once and kept in a file beside
flow's own bytecode, as Python keeps a module's.

Why: `@dataclass` writes those methods as source text and compiles it at import, and Python caches a
module's bytecode but never these. A plain `flow run` creates ~64 dataclasses (events, records, the
engine's model, the wire format): compiling their ~330 methods was about a fifth of its imports, paid
at every start of the CLI and of every worker.

How: `dataclasses` runs that text with `exec(text, globals, ns)`, a name it looks up in its own
module's globals before the builtins. `install` puts an `exec` there that takes the compiled code of a
text it has seen from the cache (by the exact text), compiles any other text as `exec` would
(`dataclasses` has no `__future__` imports to inherit), and then executes it as `exec` would. What runs
is the same code; only its compilation is skipped.

`save` writes the cache where a process is done importing (the CLI as it exits, a worker once ready),
only if a text was new, under Python's rules for bytecode: nothing when `sys.dont_write_bytecode`,
under `sys.pycache_prefix` when set; to a temporary file renamed into place, merged with what another
process wrote meanwhile. A file that cannot be read, is corrupt, or is another interpreter's is
ignored (and replaced at the next `save`).
"""

from __future__ import annotations

import builtins
import dataclasses
import marshal
import os
import sys
import types
from importlib.util import MAGIC_NUMBER, cache_from_source
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

_HEADER = MAGIC_NUMBER + b"flow dataclass code 1\n"
_LIMIT = 4096
"""More texts than this (flows' own dataclasses add to flow's): `save` keeps only this process's."""

_codes: dict[str, types.CodeType] | None = None
_used: set[str] = set()
compiled = 0
"""Texts this process compiled itself (not found in the cache): what `save` would write."""


def cache_path() -> str | None:
    """Where the cache lives: beside this module's bytecode (None if this Python keeps no bytecode)."""
    try:
        return os.path.splitext(cache_from_source(__file__))[0] + ".dataclasses"
    except (NotImplementedError, ValueError):
        return None


def _read(path: str | None) -> dict[str, types.CodeType]:
    if path is None:
        return {}
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError:
        return {}
    if not data.startswith(_HEADER):
        return {}
    try:
        codes = marshal.loads(data[len(_HEADER) :])
    except (EOFError, ValueError, TypeError):
        return {}
    if not isinstance(codes, dict):
        return {}
    return {k: v for k, v in codes.items() if isinstance(k, str) and isinstance(v, types.CodeType)}


def _exec(
    source: Any, globals: dict[str, Any] | None = None, locals: Mapping[str, Any] | None = None, /
) -> None:
    """`exec` for `dataclasses`: a text's compiled code comes from the cache."""
    global _codes, compiled
    if isinstance(source, str):
        if _codes is None:
            _codes = _read(cache_path())
        code = _codes.get(source)
        if code is None:
            code = _codes[source] = compile(source, "<string>", "exec", dont_inherit=True)
            compiled += 1
        _used.add(source)
        source = code
    builtins.exec(source, vars(dataclasses) if globals is None else globals, locals)


def install() -> None:
    """Serve `dataclasses` its generated methods from the cache (for the rest of this process)."""
    dataclasses.exec = _exec  # type: ignore[attr-defined]


def save() -> None:
    """Write the cache if this process compiled a text it did not find there; errors are ignored (the
    cache only saves time)."""
    global compiled
    path = cache_path()
    if not compiled or _codes is None or path is None or sys.dont_write_bytecode:
        return
    # Imported here, not above: importing `dsl` creates its dataclasses, which `install` must precede.
    # By now every caller has imported it (the CLI's exit path and the worker's loop both use it).
    from dsl.codecache import write_atomically

    codes = {**_read(path), **_codes}
    if len(codes) > _LIMIT:
        codes = {text: _codes[text] for text in _used}
    if write_atomically(path, _HEADER + marshal.dumps(codes)):
        compiled = 0
