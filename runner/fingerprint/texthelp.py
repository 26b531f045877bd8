"""Provides `work_ahead`: a large flow's function texts worked out on two cores, a share of them by
another interpreter while this one works out the rest.

Why: a step's fingerprint hashes its source with comments, formatting and docstrings removed, which
cuts, parses and unparses every function on its own (`runner.fingerprint.source`): ~60 µs a step,
0.5-0.7 s of a 10,000-step flow's first load and plan, all of it on one core while the other waits.
Later loads take these texts from the memos or from the file `runner.fingerprint.textcache` keeps
beside the flow; this is for the first, and for a flow edited all over (a generated one).

The helper (`dsl.interpreters.start_helper`) imports `runner.fingerprint.source` alone, with `dsl`,
`runner` and `runner.fingerprint` as empty packages (their `__init__` modules would import most of
flow: ~60 ms), and runs `source.work_out` on the spans it is sent. Never stale: each answer is a
function of the text it is keyed by, worked out by the same code as here (the helper checks it loaded
the very files whose digest names this process's code, `textcache`'s version); the answers are
memoised as `textcache`'s are (`source.remember`). Anything unusual (too few functions, one core, no
version, a helper that cannot start, fails or answers garbage) leaves the work to this process, as
before.
"""

from __future__ import annotations

import marshal
import os
import types
from collections.abc import Sequence

import dsl
import runner
from dsl.interpreters import start_helper, usable_cores
from runner import fingerprint
from runner.fingerprint.hasher import Hasher
from runner.fingerprint.source import is_memoised, normalised_text, remember
from runner.fingerprint.textcache import version

THRESHOLD = 2000
"""Functions to work out below which this process does it alone: ~0.12 s of work, of which the
helper's start and imports (~25 ms) would eat much of what it saves."""

SHARE = 0.5
"""Part of the functions the helper works out: half, as this process cuts the spans it is sent
(~5 µs a function) before it starts, and works out its own share while the helper starts."""

_CHILD = (
    "import hashlib, marshal, sys, types\n"
    "version = sys.argv[1]\n"
    "for name, path in zip(('dsl', 'runner', 'runner.fingerprint'), sys.argv[2:5]):\n"
    "    package = sys.modules[name] = types.ModuleType(name)\n"
    "    package.__path__ = [path]\n"
    "from runner.fingerprint import source, unparse\n"
    "digest = hashlib.sha256()\n"
    "for module in (source, unparse):\n"
    "    with open(module.__file__, 'rb') as file:\n"
    "        digest.update(file.read())\n"
    "if digest.hexdigest() != version:\n"
    "    sys.exit(3)\n"
    "spans = marshal.loads(sys.stdin.buffer.read())\n"
    "sys.stdout.buffer.write(marshal.dumps(source.work_out(spans)))\n"
)


def work_ahead(hasher: Hasher, functions: Sequence[types.FunctionType]) -> int:
    """Memoise the texts of `functions` (those not known yet), the last `SHARE` of them worked out by
    a helper meanwhile when they are `THRESHOLD` or more and its share is mostly unknown; how many
    the helper worked out (0: no helper)."""
    if len(functions) < THRESHOLD or usable_cores() < 2:
        return 0
    cut = round(len(functions) * (1 - SHARE))
    spans = []
    for fn in functions[cut:]:
        code = fn.__code__
        index = hasher.source_of(code.co_filename) if code.co_name != "<lambda>" else None
        if index is not None:
            span = (code.co_name, index.span_text(code))
            if not is_memoised(*span):
                spans.append(span)
    digest = version()
    if len(spans) < THRESHOLD * SHARE or digest is None:  # mostly known already
        return 0
    packages = [os.path.dirname(str(module.__file__)) for module in (dsl, runner, fingerprint)]
    # Warnings ignored: whether a span parses must not depend on them (an invalid escape is an error
    # under `-W error`), as it does not here under Python's default filters.
    child = start_helper(_CHILD, [digest.hex(), *packages], marshal.dumps(spans), warnings="ignore")
    if child is None:
        return 0
    with child:
        try:
            for fn in functions[:cut]:
                segment = hasher.segment(fn)
                if segment is not None:
                    normalised_text(segment, drop_decorators=True)
        except BaseException:
            child.kill()
            raise
        assert child.stdout is not None
        data = child.stdout.read()
        if child.wait() != 0:
            return 0
    try:
        segments, texts = marshal.loads(data)
    except (EOFError, ValueError, TypeError):
        return 0
    remember(segments, texts, worked_out=True)
    return len(segments)
