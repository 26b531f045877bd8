"""A store other users can write to is refused on open (every command) and reported by `flow doctor`.

Artifacts are unpickled: anyone who can write to the store's directories or its database can plant a
pickle that runs as the next user. Each case below was accepted before (only the root's world bit was
checked, and `flow doctor` called such a store healthy).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runner.store import Store

PLAIN_FLOW = "from dsl import step\n\n@step\ndef a():\n    return b'x' * (2 << 20)\n"
"""One step whose output (2 MiB) is a file artifact, so `artifacts/ab/` exists."""

LOOSE = {
    "group-writable root": (".", 0o770, "the store is writable by its group (mode 770)"),
    "world-writable artifacts": ("artifacts", 0o777, "artifacts is writable by every user (mode 777)"),
    "world-writable database": ("flow.db", 0o666, "flow.db is writable by every user (mode 666)"),
    "group-writable shard": ("shard", 0o770, "is writable by its group (mode 770)"),
}


def shard(store_dir: Path) -> Path:
    return next(p for p in (store_dir / "artifacts").iterdir() if p.is_dir())


@pytest.mark.parametrize("case", sorted(LOOSE))
def test_a_store_others_can_write_to_is_refused_with_the_fix_and_doctor_reports_it(
    flow_cli, write_flow, store_dir, case
) -> None:
    path = write_flow(PLAIN_FLOW)
    assert flow_cli("run", str(path)).code == 0
    where, mode, message = LOOSE[case]
    target = shard(store_dir) if where == "shard" else store_dir / where
    old = target.stat().st_mode & 0o777
    target.chmod(mode)
    try:
        refused = flow_cli("run", str(path))
        runs = flow_cli("runs")
        doctor = flow_cli("doctor")
    finally:
        target.chmod(old)
    assert refused.code == 2, refused
    assert message in refused.stderr and f"chmod -R go-w {store_dir}" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    assert runs.code == 2 and message in runs.stderr
    assert doctor.code == 1, doctor
    assert message in doctor.stdout and f"chmod -R go-w {store_dir}" in doctor.stdout, doctor.stdout
    assert flow_cli("run", str(path)).code == 0
    assert flow_cli("doctor").code == 0


def test_a_store_created_under_a_group_friendly_umask_is_private(flow_cli, write_flow, store_dir) -> None:
    """umask 002 (the default for many users) must not make the database or shards group-writable."""
    path = write_flow(PLAIN_FLOW)
    old = os.umask(0o002)
    try:
        assert flow_cli("run", str(path)).code == 0
        again = flow_cli("run", str(path))
    finally:
        os.umask(old)
    assert again.code == 0, again
    for entry in [store_dir, store_dir / "flow.db", store_dir / "artifacts", shard(store_dir)]:
        assert entry.stat().st_mode & 0o022 == 0, (entry, oct(entry.stat().st_mode))
    store = Store(store_dir)
    try:
        assert store.permission_problems() == []
    finally:
        store.close()


def test_doctor_also_checks_every_artifact_file(flow_cli, write_flow, store_dir) -> None:
    """Files are not visited on open (their bytes are hash-checked before use), but doctor lists them."""
    path = write_flow(PLAIN_FLOW)
    assert flow_cli("run", str(path)).code == 0
    artifact = next(p for p in shard(store_dir).iterdir() if p.is_file())
    artifact.chmod(0o666)
    doctor = flow_cli("doctor")
    assert doctor.code == 1, doctor
    assert f"{artifact.relative_to(store_dir)} is writable by every user (mode 666)" in doctor.stdout
    artifact.chmod(0o600)
    assert flow_cli("doctor").code == 0
