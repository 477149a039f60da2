"""Files written whole or not at all, JSON files, and pid lock files: the one place for each.

:func:`write_atomic` is the only atomic file write in fuzz: a temporary file beside
the target, written (and with ``durable``, flushed to disk), then renamed over the
target, so that a reader sees the old file or the new one, never a torn one, and a
crash leaves one of the two. Everything else here is built on it or reads what it
writes. Hand-written because the standard library has no atomic replace of a file's
content, and each caller needs a different mix of permissions, durability and temp
naming.

The container monitor (a ``python -S`` helper started for speed) imports this
module, so it imports only cheap standard modules: no typing, no pathlib.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time

from fuzz.errors import FuzzError

TYPE_CHECKING = False  # typing itself is too slow to import in the monitor
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    StrPath = str | os.PathLike[str]

LOCK_WAIT = 0.5  # rides over another process's momentary probe of a lock


class LockHeldError(FuzzError):
    """Another process holds the lock file (a second agent or server on the same directory)."""


def temp_path(path: StrPath, prefix: str | None = None) -> str:
    """A new temporary file name beside ``path``: ``PREFIX<pid>-<random>.tmp``.

    ``prefix`` defaults to ``.<name>.``; the pid lets a sweeper tell a dead writer's
    leftovers from a live one's.
    """
    directory, name = os.path.split(os.fspath(path))
    start = prefix if prefix is not None else f".{name}."
    return os.path.join(directory, f"{start}{os.getpid()}-{os.urandom(6).hex()}.tmp")


def write_atomic(path: StrPath, data: bytes, *, mode: int | None = None, durable: bool = True,
                 temp: StrPath | None = None, temp_prefix: str | None = None,
                 sync_directory: bool = False,
                 before_replace: Callable[[], None] | None = None) -> None:
    """Replace ``path``'s content with ``data`` atomically: readers see the old file or the new.

    ``mode``: None gives a new file's usual permissions (0o666 less the umask); a
    number gives exactly those, whatever the umask. ``durable`` flushes the data to
    disk before the rename (about 1 ms): needed where a crash of the machine must not
    lose the write; bookkeeping that only matters while the node's processes live can
    skip it. ``temp``: a temporary file made in advance (opening one is faster than
    creating one), else a new one named by :func:`temp_path` with ``temp_prefix``.
    ``sync_directory`` also flushes the directory entry after the rename.
    ``before_replace`` runs once the data is written, just before the rename (the
    local state backend keeps its backup there). On any failure the temporary file
    is removed and ``path`` is left as it was.
    """
    tmp = os.fspath(temp) if temp is not None else temp_path(path, temp_prefix)
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
    flags |= os.O_TRUNC if temp is not None else os.O_EXCL
    try:
        fd = os.open(tmp, flags, 0o666 if mode is None else mode)
        try:
            if mode is not None:
                os.fchmod(fd, mode)  # the umask may have taken bits away
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync_directory:
        fsync_directory(os.path.dirname(os.path.abspath(path)))


def write_json_atomic(path: StrPath, data: Mapping[str, Any], durable: bool = True) -> None:
    """Write ``data`` as indented, key-sorted JSON to ``path`` with :func:`write_atomic`."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    write_atomic(path, text.encode(), durable=durable)


def write_private_file(path: StrPath, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably, readable by its owner only (0600)."""
    write_atomic(path, data, mode=0o600)


def read_json(path: StrPath) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when it is missing, unreadable or not an object."""
    try:
        with open(path, "rb") as handle:
            data = json.loads(handle.read())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def fsync_directory(directory: StrPath) -> None:
    """Flush ``directory``'s entries to disk (a rename or a new file in it survives a crash)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def acquire_lock(directory: StrPath, lock_file: str, owner: str, wait: float = LOCK_WAIT) -> int:
    """Lock ``directory/lock_file`` exclusively, write our pid into it, return its fd.

    Retries for ``wait`` seconds (a probe by :func:`flock_held` holds the lock for
    an instant), then raises LockHeldError naming the holder (an ``owner``) and its
    pid. The kernel drops the lock when we die, however we die.
    """
    fd = os.open(os.path.join(directory, lock_file), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                 0o600)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() < deadline:
                time.sleep(0.02)
                continue
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            who = f"pid {holder}" if holder.isdigit() else "another process"
            raise LockHeldError(
                f"another {owner} ({who}) is already running on state dir {os.fspath(directory)}"
            ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def release_lock(fd: int) -> None:
    """Clear the pid and release the lock taken by :func:`acquire_lock`."""
    try:
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def flock_held(path: StrPath) -> bool:
    """True while some process holds an exclusive ``flock`` on ``path``.

    Probes with a non-blocking shared ``flock`` on a fresh descriptor, which fails
    exactly while the holder keeps its exclusive lock; the kernel drops that lock
    when the holder dies, however it dies.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        raise
    finally:
        os.close(fd)  # also releases the probe's own lock
    return False
