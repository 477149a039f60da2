"""fuzz.fsutil: the one atomic file write, JSON files, and pid lock files, on a real file system."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from fuzz.fsutil import (
    LockHeldError,
    acquire_lock,
    flock_held,
    read_json,
    release_lock,
    write_atomic,
    write_json_atomic,
    write_private_file,
)


def test_write_atomic_makes_and_replaces_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "doc"
    write_atomic(path, b"first")
    write_atomic(path, b"second")
    assert path.read_bytes() == b"second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["doc"]  # no temp left behind


def test_an_exact_mode_holds_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_atomic(tmp_path / "private", b"x", mode=0o600)
        write_atomic(tmp_path / "usual", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "private").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "usual").stat().st_mode & 0o777 == 0o666  # like open(): the umask's


def test_write_private_file_is_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("old")
    path.chmod(0o644)
    write_private_file(path, b"secret\n")
    assert path.read_bytes() == b"secret\n"
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_failure_before_the_rename_keeps_the_old_file_and_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "doc"
    path.write_bytes(b"old")
    seen: list[str] = []

    def fail() -> None:
        seen.extend(p.name for p in tmp_path.iterdir() if p.name != "doc")
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        write_atomic(path, b"new", before_replace=fail)
    assert path.read_bytes() == b"old"
    assert len(seen) == 1 and seen[0].startswith(".doc.")  # the temp existed, beside the file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["doc"]


def test_the_temp_name_carries_the_prefix_and_pid(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    temps: list[str] = []
    write_atomic(path, b"{}", temp_prefix=".state.json.tmp-host-", sync_directory=True,
                 before_replace=lambda: temps.extend(
                     p.name for p in tmp_path.iterdir() if p.name != "state.json"))
    assert len(temps) == 1
    assert temps[0].startswith(f".state.json.tmp-host-{os.getpid()}-")
    assert path.read_bytes() == b"{}"


def test_a_temp_made_in_advance_is_used_and_renamed(tmp_path: Path) -> None:
    temp = tmp_path / ".status.1.tmp"
    temp.write_bytes(b"leftover longer than the new content")
    path = tmp_path / "status.json"
    write_atomic(path, b"{}\n", durable=False, temp=temp)
    assert path.read_bytes() == b"{}\n"
    assert not temp.exists()


def test_json_round_trip_and_what_read_json_refuses(tmp_path: Path) -> None:
    path = tmp_path / "info.json"
    write_json_atomic(path, {"b": 1, "a": [2]})
    assert path.read_text() == '{\n  "a": [\n    2\n  ],\n  "b": 1\n}\n'
    assert read_json(path) == {"a": [2], "b": 1}
    assert read_json(str(path)) == {"a": [2], "b": 1}
    assert read_json(tmp_path / "missing") is None
    (tmp_path / "list").write_text("[1]")
    assert read_json(tmp_path / "list") is None
    (tmp_path / "torn").write_text('{"a": ')
    assert read_json(tmp_path / "torn") is None


def _hold_lock(directory: str, ready: multiprocessing.synchronize.Event,
               done: multiprocessing.synchronize.Event) -> None:
    fd = acquire_lock(Path(directory), lock_file="server.lock", owner="server")
    ready.set()
    done.wait(10)
    release_lock(fd)


def test_a_lock_names_its_holder_and_is_free_once_released(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    ready, done = context.Event(), context.Event()
    holder = context.Process(target=_hold_lock, args=(str(tmp_path), ready, done))
    holder.start()
    try:
        assert ready.wait(10)
        assert flock_held(tmp_path / "server.lock")
        with pytest.raises(LockHeldError, match=rf"another server \(pid {holder.pid}\) is "
                                                 rf"already running on state dir {tmp_path}"):
            acquire_lock(tmp_path, wait=0.05, lock_file="server.lock", owner="server")
    finally:
        done.set()
        holder.join(10)
    assert not flock_held(tmp_path / "server.lock")
    fd = acquire_lock(tmp_path, lock_file="server.lock", owner="server")
    assert (tmp_path / "server.lock").read_text() == f"{os.getpid()}\n"
    release_lock(fd)
    assert (tmp_path / "server.lock").read_text() == ""
    assert not flock_held(tmp_path / "absent.lock")
