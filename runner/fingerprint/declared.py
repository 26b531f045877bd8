"""Provides `declared_inputs`: the fingerprint of what a step declares it reads besides its code.

Python code cannot reveal which data files a step opens or which environment variables it reads,
so a step declares them: `@step(inputs=["data/*.csv"], env=["MODE"])`. Each matching file's content
and each variable's value become part of the step's fingerprint:

- `file:<path>`: SHA-256 of the file's bytes (paths shown relative to the flow's directory when
  below it); a directory that matches stands for every file under it;
- `pattern:<pattern>`: `nothing matches` when a pattern matches no file (so creating the first one
  invalidates the step);
- `env:<NAME>`: SHA-256 of the value, or `unset` (a variable set to "" is not an unset one).

A file's hash is memoised by its size, modification and change times and inode, once the file is
older than `RACY_NS`: a long-lived session re-reads only files that changed, and an edit never hides
behind a signature that did not move (see `RACY_NS`).
"""

from __future__ import annotations

import glob
import hashlib
import os
import time
from pathlib import Path

from dsl.step import Step

_HASHES: dict[str, tuple[tuple[int, int, int, int], str]] = {}
"""Absolute path -> (stat signature, content hash)."""
RACY_NS = 2_000_000_000
"""How old (modified and changed) a file must be when it is hashed for its hash to be memoised. A file
system stamps times at the resolution of its clock (ext4 before Linux 6.13: one tick, 1-10 ms; FAT:
2 s), so a second edit of the same size within that tick leaves size, times and inode as they were:
a hash memoised from the first edit would hide the second. As git does with a 'racily clean' entry,
a file that recent is hashed again at every look until it is older. The change time is in the
signature too: a tool that puts the modification time back (`touch -r`, `cp -p`) cannot put it back."""
_HASHES_MAX = 100_000
MISSING = "missing"
NO_MATCH = "nothing matches"
UNSET = "unset"


def _file_hash(path: str) -> str:
    try:
        status = os.stat(path)
    except OSError:
        return MISSING
    signature = (status.st_size, status.st_mtime_ns, status.st_ctime_ns, status.st_ino)
    known = _HASHES.get(path)
    if known is not None and known[0] == signature:
        return known[1]
    settled = time.time_ns() - max(status.st_mtime_ns, status.st_ctime_ns) > RACY_NS
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return MISSING
    if settled:
        if len(_HASHES) >= _HASHES_MAX:
            _HASHES.clear()
        _HASHES[path] = (signature, digest.hexdigest())
    return digest.hexdigest()


def matching_files(pattern: str, root: Path) -> list[Path]:
    """The files a declared pattern names (relative patterns from `root`; `**` spans directories)."""
    base = Path(os.path.expanduser(pattern))
    absolute = base if base.is_absolute() else root / base
    matches = sorted(glob.glob(str(absolute), recursive=True))
    files: list[Path] = []
    for match in matches:
        path = Path(match)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file()))
        else:
            files.append(path)
    return files


def _shown(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def declared_inputs(step: Step, root: Path) -> dict[str, str]:
    """The fingerprint parts of a step's declared input files and environment variables."""
    parts: dict[str, str] = {}
    for pattern in step.inputs:
        files = matching_files(pattern, root)
        if not files:
            parts[f"pattern:{pattern}"] = NO_MATCH
        for path in files:
            parts[f"file:{_shown(path, root)}"] = _file_hash(str(path))
    for name in step.env:
        value = os.environ.get(name)
        parts[f"env:{name}"] = (
            UNSET if value is None else hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
        )
    return parts


def watched_paths(step: Step, root: Path) -> set[Path]:
    """What `--watch` watches for a step's declared files: every matching file, and the directory a
    new matching file would appear in (the pattern's deepest directory without a wildcard)."""
    found: set[Path] = set()
    for pattern in step.inputs:
        base = Path(os.path.expanduser(pattern))
        absolute = base if base.is_absolute() else root / base
        fixed = Path(absolute.anchor)
        for part in absolute.parts[1:]:
            if glob.has_magic(part):
                break
            fixed = fixed / part
        found.add(fixed if fixed.is_dir() or fixed == absolute else fixed.parent)
        found.update(matching_files(pattern, root))
    return found


def describe_declared(keys: list[str]) -> str:
    """`data/a.csv, data/b.csv (no file matches raw/*.json), env MODE` for `flow show`."""
    parts = []
    for key in keys:
        kind, _, what = key.partition(":")
        if kind == "env":
            parts.append(f"env {what}")
        elif kind == "pattern":
            parts.append(f"{what} (no file matches)")
        else:
            parts.append(what)
    return ", ".join(parts)
