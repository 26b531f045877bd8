"""Provides `cached_code` and `keep_code`: a flow file's compiled code, kept beside it as Python keeps an
imported module's bytecode; and `module_code`, the same for the user's modules a flow imports, also
kept in memory for the next load in this process.

Why: a flow file is executed, not imported, so Python never caches its bytecode, and every `flow run`
and every TUI start compiled it whole again: ~13 ms for a 500-step flow, ~0.26 s for 10,000 steps
(then most of the TUI's first paint). The user's modules are imported from their source at every load
(`dsl.loader`: never from a `.pyc`, whose freshness check trusts modification times), so every save of
a flow file compiled each module it imports again: a 2,100-line helper module was ~29 ms of a 20-step
flow's 32-40 ms reload.

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
import threading
import types
from collections import OrderedDict
from importlib.util import MAGIC_NUMBER, cache_from_source

_HEADER = MAGIC_NUMBER + b"flow file code 1\n"

_LATEST: OrderedDict[str, tuple[bytes, types.CodeType]] = OrderedDict()
"""File name -> (the key of its latest text, its code), for the modules `module_code` compiled or read:
only the latest text of each (a long session saves a module many times), of the files used last."""
_LATEST_FILES = 256
_latest_lock = threading.Lock()


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


def module_code(source: str, filename: str) -> types.CodeType:
    """`compile(source, filename, "exec", dont_inherit=True)` for a module of the user's: the code this
    process compiled or read for exactly this text of this file last time, else the code kept for it
    on disk (`cached_code`), else compiled (and kept)."""
    key = _key(source, filename)
    with _latest_lock:
        latest = _LATEST.get(filename)
        if latest is not None and latest[0] == key:
            _LATEST.move_to_end(filename)
            return latest[1]
    code = _cached(filename, key)
    if code is None:
        code = compile(source, filename, "exec", dont_inherit=True)
        keep_code(source, filename, code)
    with _latest_lock:
        _LATEST[filename] = (key, code)
        _LATEST.move_to_end(filename)
        if len(_LATEST) > _LATEST_FILES:
            _LATEST.popitem(last=False)
    return code


def cached_code(source: str, filename: str) -> tuple[types.CodeType, ...] | None:
    """The flow file's code kept for exactly this text (`keep_code`): the whole file's, or its parts
    to execute in order (`dsl.splitcompile`); None if none is kept."""
    found = _load(filename, _key(source, filename))
    if isinstance(found, types.CodeType):
        return (found,)
    if isinstance(found, tuple) and found and all(isinstance(c, types.CodeType) for c in found):
        return found
    return None


def _cached(filename: str, key: bytes) -> types.CodeType | None:
    code = _load(filename, key)
    return code if isinstance(code, types.CodeType) else None


def _load(filename: str, key: bytes) -> object:
    path = code_path(filename)
    if path is None:
        return None
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    if not data.startswith(key):
        return None
    try:
        return marshal.loads(data[len(key) :])
    except (EOFError, ValueError, TypeError):
        return None


def keep_code(source: str, filename: str, code: types.CodeType | tuple[types.CodeType, ...]) -> None:
    """Keep the code compiled from `source` (or its parts, in order) for the next process that loads
    the file (errors ignored)."""
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
