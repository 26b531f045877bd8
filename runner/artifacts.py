"""Provides content hashing and the on-disk artifact layout, shared by the store and the workers.

An artifact is a step's pickled output, named by the SHA-256 of its bytes. Small artifacts live in
SQLite (one transaction with the step's record); large ones are files `artifacts/ab/<hash>` written
atomically: temp file, fsync, rename. A reader checks the hash, so a corrupt or truncated artifact is
detected and its step re-run, never used.

A file is hashed once per process, not once per read: a process that wrote a file artifact, or
hashed one it found, keeps the file's `Stamp` (device, inode, size, modification and change times),
and a file whose `stat` still shows that stamp is the file that was checked. Any write to it, a
rename over it, `touch` or a copy changes its change time (which no call can set back) or its inode,
so only bytes that changed without the kernel seeing a write (a failing disk) go unnoticed until
`flow doctor` re-hashes every file. A reader's stamp counts only for a file last changed
`RACY_NS` before the read began (as git treats a file changed in the second of its index): a write
in the same tick of a coarse file-system clock could leave the times as they were. The stamp of a
file a worker wrote travels with its result and with the inputs made of it (`trusted_stamp`), so
the worker that reads it next needs only a `stat` too, and the store keeps it with the artifact's row
for any later process (as git's index, DVC's state and Bazel's digest cache keep a file's stat beside
its hash). For a 200 MB DataFrame: 0.12 s of hashing on every read (a cache hit, each downstream
step's input) becomes one `stat`.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import reprlib
import threading
import time
from pathlib import Path
from typing import Any

from runner.testing import fault_point, trace

INLINE_MAX = 1 << 20
"""Outputs up to this many pickled bytes travel inline and are stored in SQLite; larger go to files."""

Stamp = tuple[int, int, int, int, int]
"""A file's (device, inode, size, mtime_ns, ctime_ns): what `os.stat` shows of it."""

RACY_NS = 2_000_000_000
"""A file hashed by a reader is trusted by its stamp only if it was last changed this long before the
read began: coarser file-system clocks (FAT's 2 s, ext3's 1 s, a kernel tick) could give a write made
meanwhile the same times."""

TRUSTED_MAX = 10_000
"""Stamps a process remembers (the oldest are forgotten first)."""

_trusted: dict[str, tuple[str, Stamp]] = {}
"""Path -> (hash, stamp) of the file artifacts this process wrote or hashed (see the module's doc)."""
_trusted_lock = threading.Lock()


class ArtifactError(Exception):
    """An artifact is missing or its content does not match its hash."""


class UnstorableOutput(Exception):
    """A step's output cannot be pickled."""


def content_hash(data: bytes | memoryview) -> str:
    """The content address of an artifact."""
    return hashlib.sha256(data).hexdigest()


def intact_inline(data: bytes | None, digest: str) -> bool:
    """Whether an artifact's inline bytes are there and match its hash (a file artifact has none)."""
    return data is not None and content_hash(data) == digest


def artifact_path(artifact_dir: str | Path, digest: str) -> Path:
    """Where a file artifact with hash `digest` lives."""
    return Path(artifact_dir) / digest[:2] / digest


def dumps(value: Any) -> bytes:
    """Pickle a step's output; fall back to cloudpickle (with stable class ids: equal values, equal
    bytes) for functions and classes defined in a flow.

    Raises:
        UnstorableOutput: naming the type that could not be pickled.
    """
    try:
        return pickle.dumps(value, protocol=5)
    except Exception as first:
        try:
            from runner.stable_pickle import dumps as stable_dumps

            return stable_dumps(value)
        except Exception:
            raise UnstorableOutput(f"{type(first).__name__}: {first}") from None


class _PreviewRepr(reprlib.Repr):
    """reprlib without its fallback to the full `repr` for bytes (a 1 GB output is a 4 GB repr)."""

    def repr_bytes(self, value: bytes, level: int) -> str:
        head = repr(value[: self.maxstring])
        return head if len(value) <= self.maxstring else f"{head[:-1]}...{head[-1]} ({len(value)} bytes)"

    def repr_bytearray(self, value: bytearray, level: int) -> str:
        return f"bytearray({self.repr_bytes(bytes(value[: self.maxstring + 1]), level)})"

    def repr_memoryview(self, value: memoryview, level: int) -> str:
        return f"<memoryview of {value.nbytes} bytes>"


def preview(value: Any) -> str:
    """A bounded one-line repr of an output (never expensive, even for huge values)."""
    short = _PreviewRepr()
    short.maxstring = 120
    short.maxother = 120
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = 8
    try:
        return short.repr(value)[:300]
    except Exception as exc:
        return f"<unrepresentable {type(value).__name__}: {exc}>"


def file_stamp(status: os.stat_result) -> Stamp:
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)


def format_stamp(stamp: Stamp) -> str:
    """A stamp as the store keeps it."""
    return ":".join(map(str, stamp))


def parse_stamp(text: str | None) -> Stamp | None:
    """A stamp the store kept (None for none, or for a text this version cannot read)."""
    parts = (text or "").split(":")
    if len(parts) != 5 or not all(part.isdigit() for part in parts):
        return None
    dev, ino, size, mtime, ctime = map(int, parts)
    return dev, ino, size, mtime, ctime


def trust(path: str | Path, digest: str, stamp: Stamp) -> None:
    """This process knows the file at `path` held the bytes hashing to `digest` while `os.stat`
    showed `stamp` (it wrote them, or a process that did says so)."""
    key = str(path)
    with _trusted_lock:  # the scheduler, the store's writer and a TUI may all check files
        _trusted.pop(key, None)
        _trusted[key] = (digest, stamp)
        if len(_trusted) > TRUSTED_MAX:
            del _trusted[next(iter(_trusted))]


def trusted_stamp(path: str | Path, digest: str) -> Stamp | None:
    """The stamp this process trusts for the file `path` holding `digest`, if any."""
    known = _trusted.get(str(path))
    return known[1] if known is not None and known[0] == digest else None


def write_file_atomic(path: Path, data: bytes | memoryview) -> None:
    """Write `data` to `path` so that `path` either does not exist or holds all of it."""
    import tempfile  # here: with shutil below it, ~4 ms that a run whose outputs all fit inline never pays

    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
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


class _Spool:
    """A binary sink for a pickler: hashes what it is given, keeps up to `limit` bytes in memory and
    spills the rest to a temporary file in `directory`, so a huge output is never held twice."""

    def __init__(self, directory: str | Path | None, limit: int) -> None:
        self._hash = hashlib.sha256()
        self._buffer = bytearray()
        self._directory = directory or None
        self._limit = limit
        self._file: Any = None
        self.tmp: Path | None = None
        self.size = 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._hash.update(view)
        self.size += len(view)
        if self._file is None and (self._directory is None or self.size <= self._limit):
            self._buffer += view
            return len(view)
        if self._file is None:
            assert self._directory is not None
            import tempfile

            Path(self._directory).mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self._directory, prefix=".tmp-")
            self.tmp = Path(tmp)
            self._file = os.fdopen(fd, "wb")
            self._file.write(self._buffer)
            self._buffer = bytearray()
        self._file.write(view)
        fault_point("artifact-write")
        return len(view)

    def finish(self) -> tuple[str, bytes | None, str | None, int]:
        """(hash, inline bytes or None, file path or None, size); a spilled file is fsynced and renamed."""
        digest = self._hash.hexdigest()
        if self._file is None:
            return digest, bytes(self._buffer), None, self.size
        assert self._directory is not None and self.tmp is not None
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            fault_point("artifact-rename")
            final = artifact_path(self._directory, digest)
            final.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.replace(self.tmp, final)
            _fsync_dir(final.parent)
            trust(final, digest, file_stamp(os.stat(final)))
        except BaseException:
            self.abort()
            raise
        return digest, None, str(final), self.size

    def abort(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable (power loss); best effort where unsupported."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def dump_output(
    value: Any, artifact_dir: str | Path | None, inline_max: int = INLINE_MAX
) -> tuple[str, bytes | None, str | None, int]:
    """Pickle a step's output straight to its destination: (hash, inline bytes, file path, size).

    Up to `inline_max` bytes come back inline; a larger output is streamed into
    `artifact_dir/ab/<hash>` (temp file, fsync, rename) without ever holding the pickled bytes in
    memory. With no `artifact_dir` everything is inline.

    Raises:
        UnstorableOutput: neither pickle nor cloudpickle can serialise the value.
        OSError: the artifact store cannot be written (full disk, read-only).
    """
    first: Exception | None = None
    for module in ("pickle", "cloudpickle"):
        spool = _Spool(artifact_dir, inline_max)
        try:
            if module == "pickle":
                pickle.Pickler(spool, protocol=5).dump(value)
            else:
                from runner.stable_pickle import StablePickler

                StablePickler(spool, protocol=5).dump(value)
        except OSError:
            spool.abort()
            raise
        except Exception as exc:
            spool.abort()
            first = first or exc
            continue
        return spool.finish()
    assert first is not None
    raise UnstorableOutput(f"{type(first).__name__}: {first}")


def verify_file(
    path: str | Path,
    digest: str,
    size: int | None = None,
    *,
    stamp: Stamp | None = None,
    recheck: bool = False,
) -> None:
    """Check a file artifact against its hash, reading it in chunks (constant memory), unless the file
    is unchanged since this process, or the process whose `stamp` is given, knew its content (see the
    module's doc). `recheck` hashes it whatever is known (`flow doctor`).

    Raises:
        ArtifactError: the file is missing, unreadable, truncated or does not match `digest`.
    """
    began = time.time_ns()
    try:
        status = os.stat(path)
    except OSError as exc:
        raise ArtifactError(f"artifact {digest[:12]} is missing: {exc.strerror}") from None
    if size is not None and status.st_size != size:
        raise ArtifactError(f"artifact {digest[:12]} is truncated ({status.st_size} of {size} bytes)")
    now = file_stamp(status)
    if not recheck and now == trusted_stamp(path, digest):
        return
    if not recheck and now == stamp:
        trust(path, digest, now)  # for the inputs this process hands on (`trusted_stamp`)
        return
    trace("hash-file", digest)
    hasher = hashlib.sha256()
    total = 0
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                hasher.update(chunk)
                total += len(chunk)
    except OSError as exc:
        raise ArtifactError(f"artifact {digest[:12]} is missing: {exc.strerror}") from None
    if size is not None and total != size:
        raise ArtifactError(f"artifact {digest[:12]} is truncated ({total} of {size} bytes)")
    if hasher.hexdigest() != digest:
        raise ArtifactError(f"artifact {digest[:12]} is corrupt (content hash mismatch)")
    if status.st_ctime_ns < began - RACY_NS:
        trust(path, digest, now)


def read_file_checked(path: str | Path, digest: str) -> bytes:
    """Read a file artifact and verify its hash (unless this process trusts the file: `verify_file`).

    Raises:
        ArtifactError: the file is missing, unreadable or does not match `digest`.
    """
    try:
        before = file_stamp(os.stat(path))
        data = Path(path).read_bytes()
        known = before == trusted_stamp(path, digest) and file_stamp(os.stat(path)) == before
    except OSError as exc:
        raise ArtifactError(f"artifact {digest[:12]} is missing: {exc.strerror}") from None
    if not known:
        trace("hash-file", digest)
        if content_hash(data) != digest:
            raise ArtifactError(f"artifact {digest[:12]} is corrupt (content hash mismatch)")
    return data
