"""Provides `kept_texts`: the normalised sources of a flow's functions, kept beside the flow file for the
next process, as `dsl.codecache` keeps its code.

Why: a step's fingerprint hashes its source with comments, formatting and docstrings removed
(`runner.fingerprint.source`), which parses every function on its own. Memoised in the process, that is
paid once per session of `flow tui` or `--watch`, but every `flow run` paid it again for every step:
~60 µs a step, against ~15 with the memos warm (a 200-step chain: 12-18 ms of each run; 10,000 steps:
0.7-0.9 s).

Never stale: each answer kept is a function of exactly what it is keyed by (a function's name and the
text of its lines; a segment of source), so an answer read back is the one this process would work out.
The file is written only by a process that worked something out, at its first computation of the
flow's fingerprints (a reload in `--watch` or the TUI leaves it alone), and holds what that
computation used (so it does not grow with every edit), and is read only if its header names this
Python (the magic number) and the very text of the modules that work the answers out, and if its body
has the SHA-256 the header gives. Anything else (unreadable, another version, corrupt) is ignored, and
the answers are worked out as before. Python's rules for bytecode apply: nothing is written when
`sys.dont_write_bytecode`, the file goes under `sys.pycache_prefix` when set, and it is written to a
temporary file renamed into place.
"""

from __future__ import annotations

import functools
import hashlib
import marshal
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.util import MAGIC_NUMBER
from pathlib import Path

from dsl.codecache import code_path, write_atomically
from runner.fingerprint import normalise, source, unparse
from runner.fingerprint.source import Recording, recording, remember

_HEADER = MAGIC_NUMBER + b"flow texts 1\n"

_done: set[str] = set()
"""Texts files this process has read and written as need be: a later computation of the same
flow's fingerprints (a reload in `--watch` or the TUI) leaves the file alone. Its memos are warm,
and writing the file again at every save cost a reload ~1 ms for 200 steps; the next process works
out only what was edited since this one's first load."""


def texts_path(filename: str) -> str | None:
    """Where the texts of the flow file `filename` are kept (None: this Python keeps no bytecode)."""
    path = code_path(filename)
    return None if path is None else os.path.splitext(path)[0] + ".texts"


CODE = (source, normalise, unparse)
"""The modules whose code works the answers out."""


@functools.cache
def version() -> bytes | None:
    """The header's second part: a digest of the code that works the answers out (None: unreadable)."""
    digest = hashlib.sha256()
    for module in CODE:
        try:
            digest.update(Path(str(module.__file__)).read_bytes())
        except OSError:
            return None
    return digest.digest()


@contextmanager
def kept_texts(filename: str) -> Iterator[None]:
    """Memoise the answers kept for `filename`, then record those used meanwhile (on this thread) and
    keep them if any had to be worked out; once per flow file and process (`_done`)."""
    path = texts_path(filename)
    digest = version()
    if path is None or digest is None or path in _done:
        yield
        return
    _restore(path, digest)
    with recording() as used:
        yield
    _done.add(path)
    if used.computed and not sys.dont_write_bytecode and os.path.isdir(os.path.dirname(filename)):
        _keep(path, digest, used)


def _restore(path: str, digest: bytes) -> None:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError:
        return
    head = _HEADER + digest
    body = data[len(head) + 32 :]
    if not data.startswith(head) or hashlib.sha256(body).digest() != data[len(head) : len(head) + 32]:
        return
    try:
        segments, texts = marshal.loads(body)
        remember(segments, texts)
    except (EOFError, ValueError, TypeError):
        return


def _keep(path: str, digest: bytes, used: Recording) -> None:
    segments = [
        (name, text, None if segment == text else segment, ok)
        for (name, text), (segment, ok) in used.segments.items()
    ]
    # One object per text: marshal writes an object it has written already as a reference, and a
    # segment is most often the very text of its span, which the lines were joined into again.
    same = {text: text for _, text in used.segments}
    texts = [(drop, same.get(segment, segment), normal) for (drop, segment), normal in used.texts.items()]
    body = marshal.dumps((segments, texts))
    write_atomically(path, _HEADER + digest + hashlib.sha256(body).digest() + body)
