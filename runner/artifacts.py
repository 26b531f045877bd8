"""Provides content hashing and the on-disk artifact layout, shared by the store and the workers.

An artifact is a step's pickled output, named by the SHA-256 of its bytes. Small artifacts live in
SQLite (one transaction with the step's record); large ones are files `artifacts/ab/<hash>` written
atomically: temp file, fsync, rename. A reader always checks the hash, so a corrupt or truncated
artifact is detected and its step re-run, never used.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import reprlib
import tempfile
from pathlib import Path
from typing import Any

INLINE_MAX = 1 << 20
"""Outputs up to this many pickled bytes travel inline and are stored in SQLite; larger go to files."""


class ArtifactError(Exception):
    """An artifact is missing or its content does not match its hash."""


class UnstorableOutput(Exception):
    """A step's output cannot be pickled."""


def content_hash(data: bytes | memoryview) -> str:
    """The content address of an artifact."""
    return hashlib.sha256(data).hexdigest()


def artifact_path(artifact_dir: str | Path, digest: str) -> Path:
    """Where a file artifact with hash `digest` lives."""
    return Path(artifact_dir) / digest[:2] / digest


def dumps(value: Any) -> bytes:
    """Pickle a step's output; fall back to cloudpickle for functions and classes defined in a flow.

    Raises:
        UnstorableOutput: naming the type that could not be pickled.
    """
    try:
        return pickle.dumps(value, protocol=5)
    except Exception as first:
        try:
            import cloudpickle

            return cloudpickle.dumps(value, protocol=5)
        except Exception:
            raise UnstorableOutput(f"{type(first).__name__}: {first}") from None


def preview(value: Any) -> str:
    """A bounded one-line repr of an output (never expensive, even for huge values)."""
    short = reprlib.Repr()
    short.maxstring = 120
    short.maxother = 120
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = 8
    try:
        return short.repr(value)[:300]
    except Exception as exc:
        return f"<unrepresentable {type(value).__name__}: {exc}>"


def write_file_atomic(path: Path, data: bytes | memoryview) -> None:
    """Write `data` to `path` so that `path` either does not exist or holds all of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_file_checked(path: str | Path, digest: str) -> bytes:
    """Read a file artifact and verify its hash.

    Raises:
        ArtifactError: the file is missing, unreadable or does not match `digest`.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ArtifactError(f"artifact {digest[:12]} is missing: {exc.strerror}") from None
    if content_hash(data) != digest:
        raise ArtifactError(f"artifact {digest[:12]} is corrupt (content hash mismatch)")
    return data
