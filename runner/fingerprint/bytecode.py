"""Provides the bytecode scans the reference closure needs: which globals a code object reads, and a
hash of code whose source is unknown."""

from __future__ import annotations

import dis
import inspect
import sys
import types
from collections import OrderedDict
from collections.abc import Iterator

from runner.fingerprint.values import sha

_LOAD_GLOBAL = dis.opmap["LOAD_GLOBAL"]
_GLOBAL_OPS = frozenset(dis.opmap[name] for name in ("LOAD_GLOBAL", "STORE_GLOBAL", "DELETE_GLOBAL"))
_NAME_OPS = frozenset(
    dis.opmap[name] for name in ("LOAD_NAME", "LOAD_FROM_DICT_OR_GLOBALS") if name in dis.opmap
)
"""A class body (unoptimised code) reads globals by name."""
_EXTENDED_ARG = dis.opmap["EXTENDED_ARG"]
_GLOBAL_SHIFT = 1 if sys.version_info >= (3, 11) else 0


def code_names(code: types.CodeType) -> set[str]:
    """Every name in `co_names` of the code and the code nested in it: globals and attribute names
    alike (a cheap superset of `global_names`)."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= code_names(const)
    return names


def global_reads(code: types.CodeType) -> frozenset[str]:
    """Every name the code (or code nested in it) reads, writes or deletes as a global: `global_names`
    of all its names, memoised by the code object (equal code objects have equal instructions and
    names; a reload keeps the code of every part of the flow file it did not recompile)."""
    found = _READS.get(code)
    if found is None:
        found = _READS[code] = frozenset(global_names(code, code_names(code)))
        if len(_READS) > _READS_SIZE:
            _READS.popitem(last=False)
    return found


_READS: OrderedDict[types.CodeType, frozenset[str]] = OrderedDict()
_READS_SIZE = 20_000


def global_names(code: types.CodeType, candidates: set[str]) -> set[str]:
    """Those of `candidates` the code (or code nested in it) reads, writes or deletes as a global.

    Read from the bytecode's global instructions, not `co_names` (which also lists every attribute
    name: `text.split` would count a global named `split`). A global that shadows a builtin (a user's
    own `filter`) is a global like any other. Each candidate's instructions are searched for as bytes
    (a reload re-checks every step of a big flow); code with too many names for one-byte arguments
    is scanned instruction by instruction.
    """
    names = code.co_names
    by_name = not code.co_flags & inspect.CO_OPTIMIZED
    found: set[str] = set()
    if len(names) >= 128:
        found = _scan_globals(code, by_name) & candidates
    else:
        raw = code.co_code
        for name in candidates:
            if name not in names:
                continue
            index = names.index(name)
            if any(_at_instruction(raw, bytes(pattern)) for pattern in _instructions(index, by_name)):
                found.add(name)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found |= global_names(const, candidates)
    return found


def _instructions(index: int, by_name: bool) -> Iterator[tuple[int, int]]:
    """(opcode, argument) of each instruction that uses name `index` as a global, commonest first."""
    yield _LOAD_GLOBAL, index << _GLOBAL_SHIFT
    yield _LOAD_GLOBAL, index << _GLOBAL_SHIFT | 1
    for op in _GLOBAL_OPS - {_LOAD_GLOBAL}:
        yield op, index
    if by_name:
        for op in _NAME_OPS:
            yield op, index


def _at_instruction(raw: bytes, pattern: bytes) -> bool:
    """Whether `pattern` (an opcode and its argument) occurs at an instruction boundary of `raw`."""
    start = raw.find(pattern)
    while start != -1:
        if start % 2 == 0:
            return True
        start = raw.find(pattern, start + 1)
    return False


def _scan_globals(code: types.CodeType, by_name: bool) -> set[str]:
    """Every name one code object's instructions use as a global (arguments of any size)."""
    names = code.co_names
    raw = code.co_code
    found = set()
    extended = 0
    for offset in range(0, len(raw), 2):
        op = raw[offset]
        if op == _EXTENDED_ARG:
            extended = (extended | raw[offset + 1]) << 8
            continue
        arg = extended | raw[offset + 1]
        extended = 0
        if op in _GLOBAL_OPS:
            found.add(names[arg >> _GLOBAL_SHIFT if op == _LOAD_GLOBAL else arg])
        elif by_name and op in _NAME_OPS:
            found.add(names[arg])
    return found


def code_hash(code: types.CodeType) -> str:
    """Fallback when no source is known: the bytecode, constants and names, recursively."""
    consts = [code_hash(c) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts]
    return sha(code.co_code.hex(), *consts, *code.co_names, *code.co_varnames)
