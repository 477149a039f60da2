"""The fd-relative file operations of transfers (:mod:`fuzz.orchestrate.transfer.confined`) and the
host paths' roots (:mod:`fuzz.orchestrate.transfer.host_roots`), on real files, as root.

Symlink swaps race real transfers from a second thread; both ways of resolving a path
(openat2 and the component walk of older kernels) are run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fuzz.orchestrate.transfer import confined
from fuzz.orchestrate.transfer.confined import (
    Directory,
    EscapeError,
    Identity,
    open_beneath,
    temporary_name,
)
from fuzz.orchestrate.transfer.host_roots import HostAccess, HostRootError, HostRoots, open_root
from fuzz.orchestrate.transfer.ingress_egress import TransferError, egress, ingress
from tests.support.workflowutil import planted_roots, safe_host_root

NOBODY = Identity(65534, 65534)
SECRET = b"the orchestrator's secret\n"
ATTEMPTS = 400


@pytest.fixture(params=["openat2", "component walk"])
def resolution(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test runs with openat2 and with the walk kernels before 5.6 get."""
    if request.param == "component walk":
        monkeypatch.setitem(confined._OPENAT2, "usable", False)
    else:
        assert confined._OPENAT2["usable"], "this kernel has no openat2"
    return str(request.param)


@pytest.fixture
def host_root() -> Iterator[Path]:
    with safe_host_root() as root:
        yield root


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    """A volume directory owned by nobody, as the volume manager makes them; its parent
    holds a secret (mode 0600, root's) and an empty directory ``outside``."""
    os.chmod(tmp_path, 0o755)
    (tmp_path / "secret").write_bytes(SECRET)
    os.chmod(tmp_path / "secret", 0o600)
    (tmp_path / "outside").mkdir()
    path = tmp_path / "volume"
    path.mkdir()
    os.chown(path, *NOBODY)
    return path


def test_a_symlink_anywhere_on_the_path_is_refused(tmp_path: Path, resolution: str) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "file").write_bytes(b"inside")
    (tmp_path / "up").symlink_to(tmp_path.parent)
    (tmp_path / "real" / "link").symlink_to("file")  # even one that stays inside
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for relative in ("up/x", "real/link", "up", "../x", "real/../../x"):
            with pytest.raises(EscapeError):
                os.close(open_beneath(fd, relative, os.O_RDONLY))
        opened = open_beneath(fd, "real/file", os.O_RDONLY)
        assert os.read(opened, 100) == b"inside"
        os.close(opened)
    finally:
        os.close(fd)


def test_new_files_never_replace_or_follow_what_is_there(tmp_path: Path) -> None:
    (tmp_path / "target").write_bytes(b"keep")
    (tmp_path / "planted").symlink_to(tmp_path / "target")
    with Directory.open(tmp_path, None, "the test") as directory:
        for name in ("planted", "target"):
            with pytest.raises(FileExistsError):
                directory.create_exclusive(name, 0o600)
        name = temporary_name(".x.")
        os.close(directory.create_exclusive(name, 0o640))
    assert (tmp_path / "target").read_bytes() == b"keep"
    assert oct((tmp_path / name).stat().st_mode & 0o777) == "0o640"


def test_files_are_made_and_read_as_the_owner_not_as_root(volume: Path, host_root: Path,
                                                          resolution: str) -> None:
    host = HostAccess(HostRoots.open([host_root]), "alice")
    try:
        os.symlink("../secret", volume / "escape")
        (volume / "private").write_bytes(b"root's")
        os.chmod(volume / "private", 0o600)
        (volume / "out").mkdir()
        (volume / "out" / "result").write_bytes(b"42\n")
        os.chown(volume / "out", *NOBODY)
        os.chown(volume / "out" / "result", *NOBODY)
        egress("file://out", f"file://{host_root}/alice/results/", volume, host=host,
               identity=NOBODY)
        mine = host_root / "alice"
        assert (mine.stat().st_uid, oct(mine.stat().st_mode & 0o777)) == (65534, "0o700")
        written = mine / "results" / "result"
        assert written.read_bytes() == b"42\n"
        for path, mode in ((written, "0o640"), (written.parent, "0o750")):
            info = path.stat()
            assert (info.st_uid, info.st_gid, oct(info.st_mode & 0o777)) == (65534, 65534, mode)
        with pytest.raises(TransferError, match=r"^file://private: Permission denied"):
            egress("file://private", f"file://{host_root}/alice/p", volume, host=host,
                   identity=NOBODY)
        with pytest.raises(TransferError, match="follow no symlinks in the volume"):
            egress("file://escape", f"file://{host_root}/alice/e", volume, host=host,
                   identity=NOBODY)
        ingress(f"file://{host_root}/alice/results/result", "file://in/copy", volume,
                host=host, identity=NOBODY)
        assert (volume / "in" / "copy").stat().st_uid == 65534
        assert not (mine / "p").exists() and not (mine / "e").exists()
    finally:
        host.roots.close()


def swapping(volume: Path, name: str, to: str) -> tuple[threading.Event, threading.Thread]:
    """A thread that swaps ``volume/name`` between a real directory (holding a harmless
    ``secret``) and a relative symlink to ``to``, until the event is set."""
    stop = threading.Event()

    def clear(path: Path) -> None:
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.exists():
            shutil.rmtree(path)

    def swap() -> None:
        path, spare, gone = volume / name, volume / f".{name}.spare", volume / ".gone"
        while not stop.is_set():
            try:
                spare.mkdir()
                (spare / "secret").write_bytes(b"harmless\n")
                os.rename(spare, path)  # a real directory
                time.sleep(0.0002)
                os.symlink(to, spare)
                os.rename(path, gone)
                os.rename(spare, path)  # a symlink
                time.sleep(0.0002)
            except OSError:  # a transfer made the directory in between: start again
                pass
            for each in (path, spare, gone):
                with contextlib.suppress(OSError):  # a transfer is writing in it: next time
                    clear(each)

    thread = threading.Thread(target=swap, daemon=True)
    thread.start()
    return stop, thread


def test_a_parent_swapped_for_a_symlink_never_leaks_a_file_out(
        volume: Path, host_root: Path, resolution: str) -> None:
    host = HostAccess(HostRoots.open([host_root]), "alice")
    (host_root / "alice").mkdir(mode=0o700)
    stop, thread = swapping(volume, "dir", "..")
    copied = refused = n = 0
    try:
        # at least ATTEMPTS, and on until the race went both ways (a loaded machine may
        # refuse every one of the first ATTEMPTS), at most ten times as many
        while n < ATTEMPTS or (not (copied and refused) and n < 10 * ATTEMPTS):
            try:
                egress("file://dir/secret", f"file://{host_root}/alice/{n}", volume, host=host)
                copied += 1
            except TransferError:
                refused += 1
            n += 1
    finally:
        swapped_throughout = thread.is_alive()
        stop.set()
        thread.join()
        host.roots.close()
    assert swapped_throughout
    leaked = [p for p in (host_root / "alice").iterdir() if p.read_bytes() == SECRET]
    assert leaked == []
    assert copied and refused, (copied, refused)  # the race really ran both ways


def test_ingress_into_a_directory_swapped_for_a_symlink_never_writes_outside(
        volume: Path, host_root: Path, resolution: str) -> None:
    host = HostAccess(HostRoots.open([host_root]), "alice")
    source = host_root / "alice" / "input"
    source.parent.mkdir(mode=0o700)
    source.write_bytes(b"input\n")
    stop, thread = swapping(volume, "drop", "../outside")
    copied = 0
    try:
        for n in range(ATTEMPTS):
            try:
                ingress(f"file://{source}", f"file://drop/x{n}", volume, host=host)
                copied += 1
            except TransferError:
                pass
    finally:
        swapped_throughout = thread.is_alive()
        stop.set()
        thread.join()
        host.roots.close()
    assert swapped_throughout
    assert os.listdir(volume.parent / "outside") == []
    assert copied, "no ingress got through while the directory was real"


def test_bob_cannot_reach_alices_subtree(host_root: Path, volume: Path) -> None:
    (host_root / "alice").mkdir(mode=0o700)
    (host_root / "alice" / "data").write_bytes(b"alice's\n")
    os.chown(host_root / "alice", *NOBODY)
    roots = HostRoots.open([host_root])
    bob = HostAccess(roots, "bob")
    try:
        (volume / "out.txt").write_bytes(b"bob's\n")
        for uri in (f"file://{host_root}/alice/data", f"file://{host_root}/data",
                    f"file://{host_root}/bob/../alice/data", f"file://{host_root}/"):
            with pytest.raises(TransferError, match=r"outside the directories workflows of bob "
                               r"may use|'\.\.' is not allowed"):
                ingress(uri, "file://x", volume, host=bob, identity=NOBODY)
            with pytest.raises(TransferError):
                egress("file://out.txt", uri, volume, host=bob, identity=NOBODY)
        egress("file://out.txt", f"file://{host_root}/bob/out.txt", volume, host=bob,
               identity=NOBODY)
    finally:
        roots.close()
    assert sorted(os.listdir(host_root / "alice")) == ["data"]
    assert (host_root / "bob" / "out.txt").read_bytes() == b"bob's\n"


def test_unsafe_roots_are_refused_with_one_line(tmp_path: Path) -> None:
    with planted_roots(tmp_path) as planted:
        for path, reason in planted.items():
            with pytest.raises(HostRootError) as caught:
                open_root(path)
            message = str(caught.value)
            assert message.startswith(f"orchestrator.host_paths: {path}: {reason}"), message
            assert "\n" not in message
