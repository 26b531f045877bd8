"""Provides `compile_split`: a large flow file's first compile on two cores, its second half compiled by
another interpreter while this one compiles the first.

Why: `compile` holds the interpreter for all of its run, and a flow file is compiled whole the first
time a process meets its text (`dsl.loader.compile_flow`; later loads reuse `dsl.flowcode`'s parts or
`dsl.codecache`'s kept code). A 10,000-step flow file (40,000 lines) took 0.2–0.4 s to compile: about
half of the TUI's first paint of it, and of `flow run`'s load. Compiling the second half in a fresh
interpreter (`python -I -S`, started in ~11 ms) while this one compiles the first takes ~60% of that
(0.21–0.24 s against 0.37–0.40 whole); the code comes back marshalled (a few milliseconds).

The file is cut where `dsl.flowcode` cuts it (a top-level `def`, `class` or `@` after a blank line),
so the halves are two runs of its parts: executed in order in one namespace they do what the whole
file does, with the same code (`tests/test_splitcompile.py` compares them). The second half is compiled
below as many empty lines as the first half has, so its line numbers are the file's, and under the
`from __future__` flags of the file's first part.

Anything unusual gives None and the caller compiles the whole file as before: a file under
`THRESHOLD` characters, a process allowed one CPU, no cut near its middle, a syntax error in either
half (the whole file then reports the real one), a warning in the other interpreter (it runs with
`-W error`, so the whole file's compile shows the warning here), or an interpreter that cannot be
started.
"""

from __future__ import annotations

import types

from dsl import flowcode
from dsl.interpreters import meanwhile, start_helper, usable_cores

THRESHOLD = 150_000
"""Characters below which a file is compiled whole (~50-80 ms of compiling here: starting another
interpreter would eat most of what it saves)."""

SECOND_SHARE = 0.45
"""Part of the text the other interpreter compiles: less than half, as it starts ~11 ms later."""

_CHILD = (
    "import marshal, sys\n"
    "flags, offset, filename = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]\n"
    "text = sys.stdin.buffer.read().decode('utf-8', 'surrogatepass')\n"
    "code = compile('\\n' * offset + text, filename, 'exec', flags=flags, dont_inherit=True)\n"
    "sys.stdout.buffer.write(marshal.dumps(code))\n"
)


def compile_split(source: str, filename: str) -> tuple[types.CodeType, ...] | None:
    """The file's code as (first half, second half), compiled at once on two cores; None when the
    caller should compile the whole file (see the module's docstring for when)."""
    if len(source) < THRESHOLD or usable_cores() < 2:
        return None
    cut = _cut(source)
    if cut is None:
        return None
    head, tail = source[:cut], source[cut:]
    flags = _future_flags(head)
    if flags is None:
        return None
    args = [str(flags), str(head.count("\n")), filename]
    child = start_helper(_CHILD, args, tail.encode("utf-8", "surrogatepass"), warnings="error")
    if child is None:
        return None
    try:
        first, second = meanwhile(child, lambda: compile(head, filename, "exec", dont_inherit=True))
    except (SyntaxError, ValueError):
        return None
    if not isinstance(second, types.CodeType) or flowcode.future_flags(first) != flags:
        return None
    return first, second


def _cut(source: str) -> int | None:
    """Where the second half starts: the first `dsl.flowcode` cut past `SECOND_SHARE` of the text from
    its end (`flowcode.first_part` of what follows that line's start); None if none."""
    line = source.rfind("\n", 0, int(len(source) * (1 - SECOND_SHARE))) + 1
    before = flowcode.first_part(source[line:])
    return line + len(before) if len(before) < len(source) - line else None


def _future_flags(head: str) -> int | None:
    """The `from __future__` flags of the file's first part (they hold for all of it), or None if
    that part does not compile (the whole file reports why)."""
    first = flowcode.first_part(head)
    try:
        return flowcode.future_flags(compile(first, "<flow header>", "exec", dont_inherit=True))
    except (SyntaxError, ValueError):
        return None
