"""A file artifact is hashed once per process, not on every read (`runner.artifacts`' stamps): a
process that wrote or hashed a file trusts it while `os.stat` shows the same device, inode, size and
times, and passes that stamp to the worker that reads it next; the store keeps the stamp the writing
worker saw, for the processes that read the file later. Every change a process can make to the file
is still caught. `FLOW_TEST_TRACE` (`runner.testing.trace`) counts the hashes, in the runner and
in its real worker processes."""

from __future__ import annotations

import os
import pickle
import shutil
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from runner import artifacts
from runner.artifacts import ArtifactError, dump_output, file_stamp, read_file_checked, verify_file
from runner.store import SCHEMA_VERSION
from tests.conftest import CLIResult, EngineHarness
from tests.helpers_core import db_rows, set_schema, steps_of, wait_for

BIG = 3_000_000
"""Bytes of the outputs here: more than `INLINE_MAX`, so each is a file artifact."""


@pytest.fixture
def hashes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[tuple[int, str]]]:
    """(pid, digest) of each whole-file hash from now on, by this process or any process it starts."""
    log = tmp_path / "trace"
    monkeypatch.setenv("FLOW_TEST_TRACE", str(log))

    def read() -> list[tuple[int, str]]:
        if not log.exists():
            return []
        lines = [line.split() for line in log.read_text(encoding="utf-8").splitlines()]
        return [(int(pid), detail) for pid, point, detail in lines if point == "hash-file"]

    return read


def written(tmp_path: Path, value: object = b"x" * BIG) -> tuple[str, str, int]:
    digest, data, path, size = dump_output(value, tmp_path / "artifacts")
    assert data is None and path is not None
    return digest, path, size


# ----- one process --------------------------------------------------------------------------------


def test_a_file_this_process_wrote_is_not_hashed_to_be_read(tmp_path: Path, hashes: Callable) -> None:
    digest, path, size = written(tmp_path)
    verify_file(path, digest, size)
    assert pickle.loads(read_file_checked(path, digest)) == b"x" * BIG
    assert hashes() == []
    verify_file(path, digest, size, recheck=True)  # `flow doctor` hashes whatever is known
    assert hashes() == [(os.getpid(), digest)]


def _a_tick_later(path: str) -> None:
    """Wait until the clock is past the tick the file was last changed in: on a kernel without
    fine-grained file times (before Linux 6.13) a write in that tick keeps the file's times, which is
    the window `docs/guarantees.md` names, not what these tests are about."""
    changed = os.stat(path).st_ctime_ns
    wait_for(lambda: time.time_ns() > changed + 20_000_000, interval=0.005)


def _in_place(path: str) -> None:
    with open(path, "r+b") as handle:
        handle.seek(BIG // 2)
        handle.write(b"y")


def _in_place_times_restored(path: str) -> None:
    before = os.stat(path)
    _in_place(path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # the change time cannot be set back


def _replaced(path: str) -> None:
    other = path + ".other"
    with open(other, "wb") as handle:
        handle.write(Path(path).read_bytes()[:-1] + b"?")
    os.replace(other, path)


def _truncated(path: str) -> None:
    os.truncate(path, 1000)


@pytest.mark.parametrize("change", [_in_place, _in_place_times_restored, _replaced, _truncated])
def test_any_change_to_a_trusted_file_is_caught(tmp_path: Path, change: Callable[[str], None]) -> None:
    digest, path, size = written(tmp_path)
    verify_file(path, digest, size)
    _a_tick_later(path)
    change(path)
    with pytest.raises(ArtifactError, match="corrupt|truncated"):
        verify_file(path, digest, size)
    with pytest.raises(ArtifactError, match="corrupt"):
        read_file_checked(path, digest)


def test_a_file_found_is_trusted_once_hashed_unless_it_changed_just_before(
    tmp_path: Path, hashes: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest, path, size = written(tmp_path)
    copy = tmp_path / "copied"
    shutil.copyfile(path, copy)  # the same bytes in a file no process here wrote (a restored backup)
    verify_file(copy, digest, size)
    verify_file(copy, digest, size)
    # Changed within `RACY_NS` of the read: a write in the same tick of a coarse file-system clock could
    # keep its times, so the file is hashed on every read.
    assert hashes() == [(os.getpid(), digest)] * 2
    monkeypatch.setattr(artifacts, "RACY_NS", 0)
    wait_for(lambda: time.time_ns() > os.stat(copy).st_ctime_ns)
    verify_file(copy, digest, size)
    verify_file(copy, digest, size)
    read_file_checked(copy, digest)
    assert hashes() == [(os.getpid(), digest)] * 3


def test_a_stamp_given_spares_the_hash_only_for_its_file(tmp_path: Path, hashes: Callable) -> None:
    digest, path, size = written(tmp_path)
    copy = tmp_path / "copied"
    shutil.copyfile(path, copy)
    verify_file(copy, digest, size, stamp=file_stamp(os.stat(path)))  # another file's stamp
    assert hashes() == [(os.getpid(), digest)]
    verify_file(copy, digest, size, stamp=file_stamp(os.stat(copy)))
    verify_file(copy, digest, size)  # the stamp given is remembered, for the inputs handed on
    assert hashes() == [(os.getpid(), digest)]
    assert artifacts.trusted_stamp(copy, digest) == file_stamp(os.stat(copy))


def test_a_process_keeps_a_bounded_number_of_stamps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(artifacts, "TRUSTED_MAX", 2)
    monkeypatch.setattr(artifacts, "_trusted", {})
    files = [written(tmp_path, bytes([index]) * BIG) for index in range(3)]
    known = [artifacts.trusted_stamp(path, digest) is not None for digest, path, _ in files]
    assert known == [False, True, True]  # the oldest forgotten


# ----- a runner and its workers --------------------------------------------------------------------

FLOW = f"""
from dsl import step


@step
def make():
    return b"x" * {BIG}


@step
def use(make):
    return len(make) + 1
"""


def _edited(path: Path, version: int) -> None:
    path.write_text(textwrap.dedent(FLOW).replace("+ 1", f"+ {version}"), encoding="utf-8")


def _statuses(result: CLIResult) -> dict[str, str]:
    assert result.code == 0, result
    return {e["step"]: e["status"] for e in result.events() if e.get("event") == "step_finished"}


def _artifact(store_dir: Path) -> Path:
    (artifact,) = (p for p in (store_dir / "artifacts").rglob("*") if p.is_file())
    return artifact


def test_a_large_output_is_hashed_by_its_writer_only_in_the_edit_loop(
    tmp_path: Path, write_flow: Callable[..., Path], hashes: Callable, store_dir: Path
) -> None:
    """A cold run, then two edits of the step that reads the 3 MB output, in one engine (what `--watch`
    and the TUI do): no process hashes the file after the worker that wrote it (before: the worker
    reading it on each run, and the runner for the cached one's input on each edit)."""
    path = write_flow(FLOW)
    harness = EngineHarness(store_dir)  # its workers start with FLOW_TEST_TRACE set
    try:
        record = harness.run(path)
        assert {s.name: s.status for s in record.steps} == {"make": "succeeded", "use": "succeeded"}
        for version in (2, 3):
            _edited(path, version)
            record = harness.run(path)
            assert {s.name: s.status for s in record.steps} == {"make": "cached", "use": "succeeded"}
            assert steps_of(record)["use"].preview == str(BIG + version)
        assert hashes() == []
    finally:
        harness.close()


def test_a_new_flow_run_reads_a_cached_input_without_hashing_it(
    write_flow: Callable[..., Path], hashes: Callable, flow_cli: Callable[..., CLIResult], store_dir: Path
) -> None:
    """`flow run` after an edit of the step reading a cached 3 MB output: the store kept the stamp
    the writing worker saw, so neither the runner (checking the cache hit) nor the worker reading it
    hashes it (before: three hashes, two in the runner and one in the worker)."""
    path = write_flow(FLOW)
    assert _statuses(flow_cli("run", str(path), "--json")) == {"make": "succeeded", "use": "succeeded"}
    for version in (2, 3):
        _edited(path, version)
        mark = len(hashes())
        assert _statuses(flow_cli("run", str(path), "--json")) == {"make": "cached", "use": "succeeded"}
        assert hashes()[mark:] == []


def test_an_output_written_again_leaves_its_stamp_in_the_store(
    write_flow: Callable[..., Path], hashes: Callable, flow_cli: Callable[..., CLIResult], store_dir: Path
) -> None:
    """A step whose output has the bytes of one already stored writes the file again (a new inode):
    the store takes the new stamp, so the next `flow run` still reads it without hashing it."""
    path = write_flow(
        FLOW.replace(
            "def use(make):\n    return len(make)",
            "def again(make):\n    return bytes(make)\n\n\n@step\ndef use(again):\n    return len(again)",
        )
    )
    first = {"make": "succeeded", "again": "succeeded", "use": "succeeded"}
    assert _statuses(flow_cli("run", str(path), "--json")) == first
    path.write_text(path.read_text().replace("+ 1", "+ 2"), encoding="utf-8")
    mark = len(hashes())
    second = {"make": "cached", "again": "cached", "use": "succeeded"}
    assert _statuses(flow_cli("run", str(path), "--json")) == second
    assert hashes()[mark:] == []


def test_a_new_flow_run_hashes_a_file_copied_over_and_reruns_one_written_to(
    write_flow: Callable[..., Path], hashes: Callable, flow_cli: Callable[..., CLIResult], store_dir: Path
) -> None:
    """Between two `flow run`s: the file replaced by a copy of itself (a restore from a backup: a new
    inode) is hashed again and used; the file written to in place makes its step run again."""
    path = write_flow(FLOW)
    assert _statuses(flow_cli("run", str(path), "--json")) == {"make": "succeeded", "use": "succeeded"}
    artifact = _artifact(store_dir)
    copy = artifact.with_name("copy")
    shutil.copyfile(artifact, copy)
    os.replace(copy, artifact)
    _edited(path, 2)
    mark = len(hashes())
    second = flow_cli("run", str(path), "--json")
    assert _statuses(second) == {"make": "cached", "use": "succeeded"}
    assert artifact.name in {digest for _, digest in hashes()[mark:]}
    _a_tick_later(str(artifact))
    _in_place(str(artifact))
    _edited(path, 3)
    third = flow_cli("run", str(path), "--json")
    assert _statuses(third) == {"make": "succeeded", "use": "succeeded"}
    finished = [e for e in third.events() if e.get("event") == "step_finished"]
    assert [e["preview"] for e in finished if e["step"] == "use"] == [str(BIG + 3)]


def test_a_store_of_schema_9_gains_the_stamps_and_its_files_theirs_once_hashed(
    write_flow: Callable[..., Path], hashes: Callable, flow_cli: Callable[..., CLIResult], store_dir: Path
) -> None:
    """Schema 10 adds the artifacts' stamps: an older store is migrated when opened; a file without a
    stamp is hashed by the next run, which records its stamp (the file changed more than `RACY_NS`
    before), so the run after that does not hash it."""
    path = write_flow(FLOW)
    assert _statuses(flow_cli("run", str(path), "--json")) == {"make": "succeeded", "use": "succeeded"}
    set_schema(store_dir, 9, "ALTER TABLE artifacts DROP COLUMN stamp")
    artifact = _artifact(store_dir)
    wait_for(lambda: time.time_ns() - os.stat(artifact).st_ctime_ns > artifacts.RACY_NS, timeout=10)
    _edited(path, 2)
    mark = len(hashes())
    assert _statuses(flow_cli("run", str(path), "--json")) == {"make": "cached", "use": "succeeded"}
    assert {digest for _, digest in hashes()[mark:]} == {artifact.name}
    assert len({pid for pid, _ in hashes()[mark:]}) == 1  # the runner's check; its worker got the stamp
    assert db_rows(store_dir, "SELECT value FROM meta WHERE key='schema_version'") == [(str(SCHEMA_VERSION),)]
    assert db_rows(store_dir, "SELECT COUNT(*) FROM artifacts WHERE data IS NULL AND stamp IS NULL") == [(0,)]
    _edited(path, 3)
    mark = len(hashes())
    assert _statuses(flow_cli("run", str(path), "--json")) == {"make": "cached", "use": "succeeded"}
    assert hashes()[mark:] == []


@pytest.mark.parametrize("change", [_in_place, _in_place_times_restored])
def test_a_trusted_file_written_to_is_not_used_by_the_next_run(
    tmp_path: Path, write_flow: Callable[..., Path], store_dir: Path, change: Callable[[str], None]
) -> None:
    """In one engine, after runs that trusted the file: a write to it (its modification time set back
    too) makes its step run again, and the step reading it gets the fresh bytes."""
    path = write_flow(FLOW)
    harness = EngineHarness(store_dir)
    try:
        harness.run(path)
        _a_tick_later(str(_artifact(store_dir)))
        change(str(_artifact(store_dir)))
        _edited(path, 2)
        record = harness.run(path)
        assert {s.name: s.status for s in record.steps} == {"make": "succeeded", "use": "succeeded"}
        assert steps_of(record)["use"].preview == str(BIG + 2)
    finally:
        harness.close()


def test_flow_doctor_hashes_every_file_whatever_its_stamp(
    write_flow: Callable[..., Path], hashes: Callable, flow_cli: Callable[..., CLIResult], store_dir: Path
) -> None:
    """What a stamp cannot see (bytes a failing disk changed) only a hash finds: `flow doctor` hashes
    each file, its stamp in the store notwithstanding."""
    path = write_flow(FLOW)
    assert _statuses(flow_cli("run", str(path), "--json")) == {"make": "succeeded", "use": "succeeded"}
    mark = len(hashes())
    doctor = flow_cli("doctor")
    assert doctor.code == 0, doctor
    assert [digest for _, digest in hashes()[mark:]] == [_artifact(store_dir).name]


def test_a_file_touched_but_unchanged_is_hashed_and_reused_in_one_engine(
    write_flow: Callable[..., Path], hashes: Callable, store_dir: Path
) -> None:
    """`touch` (a backup tool, an editor's project scan) changes a file's stamp but not its bytes: the
    engine hashes it once and reuses it, instead of running its step again."""
    path = write_flow(FLOW)
    harness = EngineHarness(store_dir)
    try:
        harness.run(path)
        artifact = _artifact(store_dir)
        _a_tick_later(str(artifact))
        os.utime(artifact)
        _edited(path, 2)
        record = harness.run(path)
        assert {s.name: s.status for s in record.steps} == {"make": "cached", "use": "succeeded"}
        assert steps_of(record)["use"].preview == str(BIG + 2)
        assert artifact.name in {digest for _, digest in hashes()}
    finally:
        harness.close()
