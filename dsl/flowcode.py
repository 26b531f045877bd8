"""Provides the parts a flow file is compiled in (`dsl.loader.compile_flow`): a reload of the same file
reuses the code of those whose text is unchanged.

Compiling the whole file is most of a reload (a 1,400-line flow: ~5 ms of ~12). A save usually
edits one function, so the file is cut into parts at its top-level definitions: a line starting
`def `, `async def `, `class ` or `@` after a blank line. Each part is compiled on its own (with the
`from __future__` flags of the first part) and its code's line numbers moved to where the part
starts: the same code as the whole file's, instruction for instruction and position for position
(`tests/test_flowcode.py` compares them), but for one form: Python 3.11 compiles `x.f(...)` as an
attribute load and a call where `x` is a name some import at the file's top level binds, and as a
method call (`LOAD_METHOD`) where, as in a part without that import, it is not; both do the same.
Executed one after the other in one namespace, the parts do what the whole file does: each starts
with a statement (a cut inside a string, brackets or a continued line leaves the part before it
unterminated, a syntax error), and no part but the first starts with a string (no second module
docstring).

A part's code is reused only for exactly the same text at exactly the same line of the same file with
the same flags: what `compile` would give for it again. Any part that does not compile sends the
whole file to `compile`, which reports the real error (or compiles a file whose cut was wrong).
The first load of a file compiles it whole (a 10,000-step flow's first load is not slowed by the
parts); the parts are cut from its second load on, or before it by `warm`: a watcher calls it while
it waits, so the first save after opening a flow compiles only what it changed, as every later save
does (a 200-step flow's first reload took 24 ms against 6 for the next, a 2,000-step flow's 355
against 100).
"""

from __future__ import annotations
import __future__

import threading
import types
from collections import OrderedDict
from collections.abc import Callable, Iterable

STARTS = ("def ", "async def ", "class ", "@")
"""How a line the file is cut before starts (after a blank line)."""
_FUTURE_FLAGS = 0
for _feature in __future__.all_feature_names:
    _FUTURE_FLAGS |= getattr(__future__, _feature).compiler_flag

_parts: OrderedDict[str, dict[tuple[int, int, str], types.CodeType]] = OrderedDict()
"""File -> (first line - 1, future flags, text) -> code, for the parts of its latest load (of the
files loaded last: a test suite loads thousands)."""
_wholes: dict[str, tuple[str, tuple[types.CodeType, ...]]] = {}
"""File -> (its text, its code) while its latest load compiled it whole (see `adopting`)."""
_FILES_KEPT = 64
_lock = threading.Lock()


def parts_of(filename: str) -> dict[tuple[int, int, str], types.CodeType] | None:
    """The parts of the file's latest load: (first line - 1, future flags, text) -> code; empty after
    a load that compiled it whole, None before its first load."""
    return _parts.get(filename)


def future_flags(code: types.CodeType) -> int:
    """The `from __future__` flags the first part's code was compiled under, for the other parts."""
    return code.co_flags & _FUTURE_FLAGS


def keep(filename: str, parts: dict[tuple[int, int, str], types.CodeType]) -> None:
    """Remember the parts of the file's latest load (nothing: it was compiled whole)."""
    with _lock:  # two threads may load flows at once (the TUI and its watcher)
        _parts[filename] = parts
        _parts.move_to_end(filename)
        if len(_parts) > _FILES_KEPT:
            _wholes.pop(_parts.popitem(last=False)[0], None)
        _wholes.pop(filename, None)


def keep_whole(filename: str, source: str, codes: tuple[types.CodeType, ...]) -> None:
    """Remember the code of a load that compiled the file whole (after `keep(filename, {})`), for the
    first cut of the file into parts (`adopting`)."""
    with _lock:
        if _parts.get(filename) == {}:
            _wholes[filename] = (source, codes)


def compile_parts(
    source: str, filename: str, previous: dict[tuple[int, int, str], types.CodeType]
) -> tuple[tuple[types.CodeType, ...], dict[tuple[int, int, str], types.CodeType]]:
    """The file's code in parts, each taken from `previous` when its text, line and flags are there:
    (the parts' code in order, every part by key, to `keep`).

    Raises:
        SyntaxError, ValueError: a part does not compile (a cut inside a string, or an error in the
            file: compiling the whole file tells which).
    """
    codes: list[types.CodeType] = []
    latest: dict[tuple[int, int, str], types.CodeType] = {}
    flags = 0
    adopt = None if previous else adopting(filename)
    for offset, text in split(source):
        key = (offset, flags, text)
        code = previous.get(key)
        if code is None:
            code = moved(compile(text, filename, "exec", flags=flags, dont_inherit=True), offset)
            if adopt is not None:
                code = adopt(key, code)
        latest[key] = code
        codes.append(code)
        if offset == 0:
            flags = future_flags(code)
    return tuple(codes), latest


def adopting(filename: str) -> Callable[[tuple[int, int, str], types.CodeType], types.CodeType] | None:
    """For the first cut of a file its latest load compiled whole: a function that gives a part of
    the same text at the same line, with the same flags, the code that load made of the functions
    and classes the part defines in place of its own; None when that load is not known.

    The functions of an unchanged part are then the very code objects the last load executed, and
    what is memoised by code object holds for them (`runner.fingerprint.prints`: a step's print; a
    10,000-step flow's first save made all 10,000 again, ~100 ms). Taken by text, never by equal
    code: equal function code may come from another text (a default value, a decorator), and the
    same text may compile to code that differs only in the form of a call (`x.f(...)`, see above).
    A definition is matched by name, line and qualified name, where only one has them."""
    whole = _wholes.get(filename)
    if whole is None:
        return None
    source, old = whole
    flags = future_flags(old[0])
    unchanged = {(offset, flags if offset else 0, text) for offset, text in split(source)}
    defined = _definitions(const for code in old for const in code.co_consts)

    def adopt(key: tuple[int, int, str], code: types.CodeType) -> types.CodeType:
        if key not in unchanged:
            return code
        own = _definitions(code.co_consts)
        consts = tuple(
            defined.get(_name(const)) or const
            if isinstance(const, types.CodeType) and own.get(_name(const)) is const
            else const
            for const in code.co_consts
        )
        if all(new is const for new, const in zip(consts, code.co_consts, strict=True)):
            return code
        return code.replace(co_consts=consts)

    return adopt


def _name(code: types.CodeType) -> tuple[str, int, str, str]:
    return (code.co_name, code.co_firstlineno, code.co_qualname, code.co_filename)


def _definitions(consts: Iterable[object]) -> dict[tuple[str, int, str, str], types.CodeType | None]:
    """The code constants by `_name`; None for a name two of them share (lambdas on one line)."""
    found: dict[tuple[str, int, str, str], types.CodeType | None] = {}
    for const in consts:
        if isinstance(const, types.CodeType):
            name = _name(const)
            found[name] = None if name in found else const
    return found


def warm(filename: str, source: str) -> dict[tuple[int, int, str], types.CodeType] | None:
    """Compile the parts of a file whose latest load (of `source`) compiled it whole, and keep them
    for its next load; the parts kept, or None. Nothing is kept if another load of the file came
    meanwhile (its parts are newer) or a part does not compile (the next load compiles it whole)."""
    before = _parts.get(filename)
    if before is None or before:
        return None
    try:
        _, latest = compile_parts(source, filename, {})
    except (SyntaxError, ValueError):
        return None
    with _lock:
        if _parts.get(filename) is not before:
            return None
        _parts[filename] = latest
        _wholes.pop(filename, None)
    return latest


def split(source: str) -> list[tuple[int, str]]:
    """The file's parts: (index of the part's first line, its text)."""
    lines = source.splitlines(keepends=True)
    parts: list[tuple[int, str]] = []
    start = 0
    for index in range(1, len(lines)):
        if lines[index].startswith(STARTS) and not lines[index - 1].strip():
            parts.append((start, "".join(lines[start:index])))
            start = index
    parts.append((start, "".join(lines[start:])))
    return parts


def first_part(source: str) -> str:
    """The file's text before its first cut (what `split(source)[0]` holds, unless a line break
    other than `\\n` comes first), found without cutting the rest."""
    at = 0
    blank = False
    while True:
        end = source.find("\n", at)
        if at and blank and source.startswith(STARTS, at):
            return source[:at]
        if end < 0:
            return source
        blank = not source[at:end].strip()
        at = end + 1


def moved(code: types.CodeType, offset: int) -> types.CodeType:
    """`code` (and the code nested in it) as if compiled `offset` lines further down its file."""
    if not offset:
        return code
    consts = tuple(moved(c, offset) if isinstance(c, types.CodeType) else c for c in code.co_consts)
    return code.replace(co_firstlineno=code.co_firstlineno + offset, co_consts=consts)
