"""A declared input file's hash (`runner.fingerprint.declared`): memoised by the file's signature only
once the file is older than its file system's clock can tell apart, so no edit hides behind it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from runner.fingerprint import declared
from tests.helpers_core import calls_to


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files `declared` opens from now on."""
    return calls_to(monkeypatch, declared, "open")


def _edit_keeping_size_and_modification_time(path: Path, text: str) -> None:
    """What two saves within one tick of the file system's clock leave (or `touch -r` after a save)."""
    before = path.stat()
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    )


def test_an_edit_that_leaves_size_and_modification_time_as_they_were_is_seen(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    data.write_text("a,b\n1,2\n", encoding="utf-8")
    assert declared._file_hash(str(data)) == _sha("a,b\n1,2\n")
    _edit_keeping_size_and_modification_time(data, "a,b\n1,3\n")
    assert declared._file_hash(str(data)) == _sha("a,b\n1,3\n")


def test_a_file_modified_moments_ago_is_read_again_at_every_look(tmp_path: Path, reads: list[str]) -> None:
    data = tmp_path / "fresh.csv"
    data.write_text("x\n", encoding="utf-8")
    for _ in range(2):
        assert declared._file_hash(str(data)) == _sha("x\n")
    assert reads == [str(data), str(data)]


def test_a_settled_file_is_read_once_until_it_changes(
    tmp_path: Path, reads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(declared, "RACY_NS", -(10**18))  # as if every file were long settled
    data = tmp_path / "settled.csv"
    data.write_text("a\n1\n", encoding="utf-8")
    for _ in range(3):
        assert declared._file_hash(str(data)) == _sha("a\n1\n")
    assert reads == [str(data)]
    _edit_keeping_size_and_modification_time(data, "a\n2\n")  # its change time moves all the same
    assert declared._file_hash(str(data)) == _sha("a\n2\n")
    assert reads == [str(data), str(data)]
