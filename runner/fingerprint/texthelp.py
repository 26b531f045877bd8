"""Provides `work_ahead`: a large flow's function texts worked out on two cores, a share of them by
another interpreter while this one works out the rest.

Why: a step's fingerprint hashes its source with comments, formatting and docstrings removed, which
cuts, parses and unparses every function on its own (`runner.fingerprint.source`): ~30 µs a step
here, 0.3 s of a 10,000-step flow's first load and plan, all of it on one core while the other
waits. Later loads take these texts from the memos or from the file `runner.fingerprint.textcache`
keeps beside the flow; this is for the first, and for a flow edited all over (a generated one).

The helper (`dsl.interpreters.start_helper`) imports `runner.fingerprint.normalise` alone (and the
`unparse` it uses), with `runner` and `runner.fingerprint` as empty packages (their `__init__` modules
would import most of flow), and runs `normalise.work_out` on the spans it is sent. Never stale: each
answer is a function of the text it is keyed by, worked out by the same code as here (the helper checks
that the files it loaded are those whose digest is this process's `textcache.version`); the answers are
memoised as `textcache`'s are (`source.remember`). Anything unusual (too few functions, one core, no
version, a helper that cannot start, fails or answers garbage) leaves the work to this process, as
before.
"""

from __future__ import annotations

import marshal
import os
import types
from collections.abc import Sequence

import runner
from dsl.interpreters import meanwhile, start_helper, usable_cores
from runner import fingerprint
from runner.fingerprint.hasher import Hasher
from runner.fingerprint.source import is_memoised, normalised_text, remember
from runner.fingerprint.textcache import CODE, version

THRESHOLD = 4000
"""New step functions below which this process works them all out alone: the helper's start and
imports (~35 ms here) would eat most of what it saves."""

HEAD_START = 1500
"""Functions this process works out while the helper starts and imports, on top of its half of the
rest (~30 µs each: ~45 ms), so that both finish at about the same time."""

_CHILD = (
    "import hashlib, marshal, sys, types\n"
    "version, files = sys.argv[1], sys.argv[4:]\n"
    "for name, path in zip(('runner', 'runner.fingerprint'), sys.argv[2:4]):\n"
    "    package = sys.modules[name] = types.ModuleType(name)\n"
    "    package.__path__ = [path]\n"
    "from runner.fingerprint import normalise, unparse\n"
    "digest = hashlib.sha256()\n"
    "for file in files:\n"
    "    with open(file, 'rb') as text:\n"
    "        digest.update(text.read())\n"
    "if digest.hexdigest() != version or not {normalise.__file__, unparse.__file__} <= set(files):\n"
    "    sys.exit(3)\n"
    "spans = marshal.loads(sys.stdin.buffer.read())\n"
    "sys.stdout.buffer.write(marshal.dumps(normalise.work_out(spans)))\n"
)


def work_ahead(hasher: Hasher, functions: Sequence[types.FunctionType]) -> int:
    """Memoise the texts of `functions` (those not known yet), the last of them worked out by a
    helper meanwhile when they are `THRESHOLD` or more and its share is mostly unknown; how many
    the helper worked out (0: no helper)."""
    if len(functions) < THRESHOLD or usable_cores() < 2:
        return 0
    cut = len(functions) - (len(functions) - HEAD_START) // 2
    spans = []
    for fn in functions[cut:]:
        code = fn.__code__
        index = hasher.source_of(code.co_filename) if code.co_name != "<lambda>" else None
        if index is not None:
            span = (code.co_name, index.span_text(code))
            if not is_memoised(*span):
                spans.append(span)
    digest = version()
    if len(spans) < (len(functions) - cut) // 2 or digest is None:  # mostly known already
        return 0
    packages = [os.path.dirname(str(module.__file__)) for module in (runner, fingerprint)]
    files = [str(module.__file__) for module in CODE]
    # Warnings ignored: whether a span parses must not depend on them (an invalid escape is an error
    # under `-W error`), as it does not here under Python's default filters.
    child = start_helper(_CHILD, [digest.hex(), *packages, *files], marshal.dumps(spans), warnings="ignore")
    if child is None:
        return 0

    def own_share() -> None:
        for fn in functions[:cut]:
            segment = hasher.segment(fn)
            if segment is not None:
                normalised_text(segment, drop_decorators=True)

    _, answer = meanwhile(child, own_share)
    if not isinstance(answer, tuple) or len(answer) != 2:
        return 0
    segments, texts = answer
    remember(segments, texts, worked_out=True)
    return len(segments)
