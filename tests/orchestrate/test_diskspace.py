"""The database, the audit log and the floor on a real, small, full disk (a tmpfs)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from fuzz.orchestrate.diskspace import DiskFloor, DiskReserve, free_bytes
from fuzz.orchestrate.iam.audit import AuditLog, AuditWriteError
from fuzz.orchestrate.records import SettingRecord
from fuzz.orchestrate.store import DiskFullError, Store
from tests.support.disks import fill_up, tmpfs

MIB = 1024 * 1024


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB disk of its own."""
    with tmpfs(tmp_path / "disk", "8m") as path:
        yield path


def test_a_full_disk_gives_the_database_its_reserve_then_refuses_in_one_sentence(
        disk: Path) -> None:
    reserve = DiskReserve(disk, 2 * MIB)
    assert reserve.fill() and reserve.held() == 2 * MIB
    store = Store(disk / "server.db", on_full=reserve.release)
    try:
        store.save(SettingRecord("before", "x"))
        hog = fill_up(disk)
        store.save(*(SettingRecord(f"full-{n}", "y" * 4096) for n in range(64)))  # ~256 KiB
        assert reserve.held() == 0  # given to the database, which could write
        fill_up(disk, "hog2")
        with pytest.raises(DiskFullError) as refused:
            store.save(*(SettingRecord(f"late-{n}", "z" * 4096) for n in range(64)))
        assert str(refused.value) == (f"the orchestrator's disk is full: its database "
                                      f"{disk / 'server.db'} cannot be written; free space on "
                                      "that disk")
        assert store.load(SettingRecord, name="late-0") == []  # nothing half-written
        hog.unlink()
        (disk / "hog2").unlink()
        store.save(SettingRecord("after", "x"))  # writable again as soon as there is room
        assert {r.name for r in store.load(SettingRecord)} >= {"before", "full-63", "after"}
    finally:
        store.close()


def test_the_reserve_is_made_again_only_once_it_and_the_floor_fit(disk: Path) -> None:
    reserve = DiskReserve(disk, 2 * MIB, min_free=1 * MIB)
    assert reserve.fill()
    hog = fill_up(disk)
    assert reserve.release()
    assert not reserve.release()  # nothing left to give
    hog.unlink()
    (disk / "small").write_bytes(b"\0" * (free_bytes(disk) - 2 * MIB))  # room, not the floor
    assert not reserve.fill() and reserve.held() == 0
    (disk / "small").unlink()
    assert reserve.fill() and reserve.held() == 2 * MIB


def test_the_audit_log_takes_the_reserve_then_refuses_every_call_in_one_sentence(
        disk: Path) -> None:
    reserve = DiskReserve(disk, 1 * MIB)
    reserve.fill()
    audit = AuditLog(disk / "audit.log", on_full=reserve.release)
    try:
        fill_up(disk)
        written = 0
        with pytest.raises(AuditWriteError) as refused:
            while True:  # the page the log ends in fills, then the reserve is spent
                audit.record("alice", "secret:create", "secret/alice/x", True, "r" * 200)
                written += 1
        assert written > 1 * MIB // 400  # the reserve's space was used
        assert str(refused.value) == (f"the orchestrator cannot write its audit log "
                                      f"{disk / 'audit.log'} (No space left on device), so it "
                                      "allows no call; free space on that disk")
        whole = (disk / "audit.log").read_bytes().split(b"\n")[:-1]
        assert len(whole) == written  # each decision once; at most the refused one in part
    finally:
        audit.close()


def test_the_floor_names_the_disk_what_is_free_and_the_key(disk: Path) -> None:
    floor = DiskFloor(disk, 4 * MIB)
    assert floor.problem("ingress") is None
    (disk / "half").write_bytes(b"\0" * 5 * MIB)
    problem = floor.problem("ingress")
    assert problem is not None
    assert problem.startswith(f"ingress refused: the volume root's disk ({disk}) has ")
    assert problem.endswith(" free, under the floor of 4.0 MiB (orchestrator.disk.min_free); "
                            "free space there or raise the limit")


def test_sqlite_reports_a_full_disk_as_sqlite_full(disk: Path) -> None:
    """What Store relies on: SQLite's error code for ENOSPC is SQLITE_FULL."""
    db = sqlite3.connect(disk / "raw.db")
    fill_up(disk)
    with pytest.raises(sqlite3.OperationalError) as full:
        db.execute("CREATE TABLE t (x BLOB)")
        db.executemany("INSERT INTO t VALUES (?)", [(b"x" * 4096,) for _ in range(512)])
        db.commit()
    assert full.value.sqlite_errorcode == sqlite3.SQLITE_FULL
    db.close()
