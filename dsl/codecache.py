"""Provides `cached_code` and `keep_code`: a flow file's compiled code, kept beside it as Python keeps an
imported module's bytecode.

Why: a flow file is executed, not imported, so Python never caches its bytecode, and every `flow run`
and every TUI start compiled it whole again: ~13 ms for a 500-step flow, ~0.26 s for 10,000 steps
(then most of the TUI's first paint).

Never stale: the code is keyed by a SHA-256 of the exact text compiled and the file name it is
compiled under, behind the interpreter's magic number. A text that differs in one byte is compiled
again, however close in time the edits were and whatever the file's size and modification time say
(what an import's timestamp check trusts). The file lives in the flow file's `__pycache__` under a
name of its own (`<stem>.<tag>.flow`), never the `.pyc` an import reads, and follows Python's rules
for bytecode: nothing is written when `sys.dont_write_bytecode`, it goes under `sys.pycache_prefix`
when set, and it is written to a temporary file renamed into place. A file that cannot be read, is
corrupt or is another interpreter's is ignored (and replaced); one that cannot be written costs
nothing but the time.
"""

from __future__ import annotations

import hashlib
import marshal
import os
import sys
import types
from importlib.util import MAGIC_NUMBER, cache_from_source

_HEADER = MAGIC_NUMBER + b"flow file code 1\n"


def code_path(filename: str) -> str | None:
    """Where the code of the flow file `filename` is kept (None: this Python keeps no bytecode)."""
    try:
        return os.path.splitext(cache_from_source(filename))[0] + ".flow"
    except (NotImplementedError, ValueError):
        return None


def _key(source: str, filename: str) -> bytes:
    digest = hashlib.sha256(filename.encode("utf-8", "surrogatepass") + b"\0")
    digest.update(source.encode("utf-8", "surrogatepass"))
    return _HEADER + digest.digest()


def cached_code(source: str, filename: str) -> types.CodeType | None:
    """The code `compile(source, filename, "exec", dont_inherit=True)` gave when it was kept, or None."""
    path = code_path(filename)
    if path is None:
        return None
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    key = _key(source, filename)
    if not data.startswith(key):
        return None
    try:
        code = marshal.loads(data[len(key) :])
    except (EOFError, ValueError, TypeError):
        return None
    return code if isinstance(code, types.CodeType) else None


def keep_code(source: str, filename: str, code: types.CodeType) -> None:
    """Keep the code compiled from `source` for the next process that loads the file (errors ignored)."""
    path = code_path(filename)
    if path is None or sys.dont_write_bytecode or not os.path.isdir(os.path.dirname(filename)):
        return  # (a file name that is no file's: nothing to keep it beside)
    write_atomically(path, _key(source, filename) + marshal.dumps(code))


def write_atomically(path: str, data: bytes) -> bool:
    """Write a cache file as Python writes bytecode: its directory made if need be, `data` written to a
    temporary file renamed into place (no reader sees half of it). False if that failed (a cache
    only saves time); flow's cache of generated dataclass methods is written here too."""
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(temporary, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    except OSError:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        return False
    return True
