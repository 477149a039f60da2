"""The local file state backend: fuzz's zero-config default.

State lives in one JSON file (``.fuzz/state.json`` next to the cluster spec unless
``path`` says otherwise). Files kept beside it:

* ``<path>.backup`` -- the previous version, hard-linked (or copied) before each write;
* ``<path>.lock`` -- an empty file guarded with ``flock``; never deleted;
* ``<path>.lock.info`` -- the holder's :class:`~fuzz.plugin.state.LockInfo` plus its pid.

Writes are atomic (:func:`fuzz.fsutil.write_atomic`): a temporary file in the same
directory is written and fsynced, then renamed over the state file, so a crash at
any moment leaves either the old or the new document complete. The lock is a kernel
``flock`` held through an open file descriptor, so it disappears with its process:
``kill -9`` never leaves a lock behind, only a stale info file that the next holder
overwrites.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import threading
import time
import weakref
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from pydantic import Field, field_validator

from fuzz.fsutil import fsync_directory, temp_path, write_atomic
from fuzz.plugin import (
    BackendConfig,
    LockError,
    LockInfo,
    RegisterStateBackend,
    StateBackendPlugin,
    StateError,
    StateVersion,
    hookimpl,
    lock_mismatch,
    parse_config,
)

NAME = "local"
DEFAULT_PATH = ".fuzz/state.json"
FILE_MODE = 0o600
_INFO_RETRIES = 5  # a new holder writes its info just after taking the flock
_INFO_RETRY_DELAY = 0.01


class LocalConfig(BackendConfig):
    """The ``state:`` block of the local backend."""

    path: str = Field(default=DEFAULT_PATH, description="the state file, relative to the spec")

    @field_validator("path", mode="before")
    @classmethod
    def _a_path(cls, value: Any) -> Any:
        if not isinstance(value, str | os.PathLike) or not str(value):
            raise ValueError(f"must be a file path, not {value!r}")
        return str(value)


def open_local(config: Mapping[str, Any], base_dir: Path) -> LocalFileBackend:
    """Build the local backend from a ``state:`` block (without backend and encryption)."""
    path = Path(parse_config(LocalConfig, config, NAME).path).expanduser()
    return LocalFileBackend(path if path.is_absolute() else Path(base_dir) / path)


@hookimpl
def fuzz_register_state_backends(register: RegisterStateBackend) -> None:
    """Register the ``local`` backend."""
    register(StateBackendPlugin(NAME, LocalConfig, open_local))


class LocalFileBackend:
    """A :class:`~fuzz.plugin.state.StateBackend` keeping state in one local JSON file.

    The lock belongs to this object: it holds the ``flock``-ed descriptor from
    :meth:`try_lock` until :meth:`unlock`. A second object (in this process or any
    other) sees the lock as taken. Safe to share between threads. Its history is
    the current file and the backup (versions ``current`` and ``backup``).
    """

    shared = False

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.backup_path = self._sibling(".backup")
        self.lock_path = self._sibling(".lock")
        self.info_path = self._sibling(".lock.info")
        self._mutex = threading.Lock()
        self._lock_fd: int | None = None
        self._held: LockInfo | None = None
        _LIVE_BACKENDS.add(self)

    def _sibling(self, suffix: str) -> Path:
        return self.path.with_name(self.path.name + suffix)

    def describe(self) -> str:
        """``local file /abs/path/state.json``."""
        return f"local file {self.path}"

    # --- the document --------------------------------------------------------------

    def read(self) -> bytes | None:
        """Return the state file's bytes, or None when it does not exist yet."""
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    def write(self, data: bytes) -> None:
        """Atomically replace the state file, keeping the previous one as ``<path>.backup``.

        Order: temp file written and fsynced; the current file hard-linked (or copied)
        to the backup via its own temp name and rename; temp renamed over the state
        file; directory fsynced.
        """
        directory = self.path.parent
        if not directory.is_dir():
            directory.mkdir(parents=True, exist_ok=True)
            fsync_directory(directory.parent)  # make the new directory's entry durable too
        write_atomic(self.path, data, mode=FILE_MODE, temp_prefix=self._temp_prefix(),
                     sync_directory=True, before_replace=self._keep_backup)

    def _temp_prefix(self) -> str:
        return f".{self.path.name}.tmp-{_HOST}-"

    def _keep_backup(self) -> None:
        """Make ``<path>.backup`` the current state file (files are never changed in place).

        A hard link to it under a temp name, renamed over the backup; where the file
        system has no hard links, a copy written with :func:`fuzz.fsutil.write_atomic`.
        """
        tmp = temp_path(self.backup_path, self._temp_prefix())
        try:
            os.link(self.path, tmp)
        except FileNotFoundError:
            return  # first write: nothing to keep
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EMLINK):
                raise
            write_atomic(self.backup_path, self.path.read_bytes(), mode=FILE_MODE,
                         temp_prefix=self._temp_prefix())
            return
        try:
            os.replace(tmp, self.backup_path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    # --- versions ------------------------------------------------------------------

    def history(self, limit: int) -> list[StateVersion]:
        """The state file and its backup, as far as they exist."""
        versions = []
        for version_id, path in (("current", self.path), ("backup", self.backup_path)):
            with contextlib.suppress(FileNotFoundError):
                info = path.stat()
                created = datetime.fromtimestamp(info.st_mtime, UTC)
                versions.append(StateVersion(version_id, created.isoformat(timespec="seconds"),
                                             info.st_size, current=version_id == "current"))
        return versions[:limit]

    def read_version(self, version_id: str) -> bytes:
        """The bytes of version ``current`` or ``backup``."""
        paths = {"current": self.path, "backup": self.backup_path}
        if version_id not in paths:
            raise StateError(f"{self.describe()} keeps only versions current and backup, "
                             f"not {version_id!r}")
        try:
            return paths[version_id].read_bytes()
        except FileNotFoundError as exc:
            raise StateError(f"{self.describe()} has no {version_id} version yet") from exc

    # --- the lock ------------------------------------------------------------------

    def try_lock(self, info: LockInfo) -> LockInfo | None:
        """Take the lock for ``info`` without waiting: None on success, else the holder.

        Taking it again with the id this object already holds succeeds.
        """
        with self._mutex:
            if self._held is not None:
                return None if self._held.id == info.id else self._held
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return self._holder_from_file()
            except BaseException:
                os.close(fd)
                raise
            try:
                held = self._record(info)
            except BaseException:
                os.close(fd)  # closing the only descriptor releases the flock
                raise
            self._lock_fd, self._held = fd, held
        self._remove_stale_temps()
        return None

    def _record(self, info: LockInfo) -> LockInfo:
        """Write the holder's info file (atomically) and return the info as recorded."""
        pid = os.getpid()
        held = LockInfo(
            id=info.id,
            operation=info.operation,
            who=f"{info.who} (pid {pid})",
            created=info.created,
            path=info.path or str(self.path),
        )
        body = json.dumps({**held.to_json(), "pid": pid}, indent=2) + "\n"
        write_atomic(self.info_path, body.encode(), mode=FILE_MODE, durable=False,
                     temp_prefix=self._temp_prefix())
        return held

    def unlock(self, lock_id: str) -> None:
        """Release the lock if this object holds it with ``lock_id``; otherwise do nothing."""
        with self._mutex:
            if self._held is None or self._held.id != lock_id:
                return
            self._release()

    def _release(self) -> None:
        """Remove the info file, then drop the flock. Caller holds ``_mutex``."""
        fd = self._lock_fd
        self._lock_fd, self._held = None, None
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.info_path)
        finally:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    def lock_holder(self) -> LockInfo | None:
        """Return who holds the lock now, or None when it is free.

        A stale info file left by a killed holder is ignored: only a held flock counts.
        """
        with self._mutex:
            if self._held is not None:
                return self._held
        try:
            fd = os.open(self.lock_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return self._holder_from_file()
            return None
        finally:
            os.close(fd)  # also drops the probing shared flock

    def force_unlock(self, lock_id: str) -> None:
        """Clear a lock left by a dead process (its stale info file).

        A local lock held by a live process cannot be broken: raises LockError naming
        that process. Raises LockError when ``lock_id`` is not the recorded lock's id.
        Does nothing when there is no lock at all.
        """
        with self._mutex:
            if self._held is not None:
                if self._held.id != lock_id:
                    raise lock_mismatch(lock_id, self._held.id)
                self._release()
                return
        if not self.path.parent.is_dir():
            return
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._refuse_live_holder(lock_id)
            raw = self._read_info()
            if raw is None and not self.info_path.exists():
                return
            if raw is not None and raw.id != lock_id:
                raise lock_mismatch(lock_id, raw.id)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.info_path)  # stale or garbled; we hold the flock meanwhile
        finally:
            os.close(fd)

    def _refuse_live_holder(self, lock_id: str) -> NoReturn:
        holder = self._holder_from_file()
        if holder.id != _UNKNOWN and holder.id != lock_id:
            raise lock_mismatch(lock_id, holder.id)
        pid = self._read_pid()
        process = f"pid {pid}" if pid is not None else "its process"
        raise LockError(
            f"the local state lock {self.lock_path} is held by a running process "
            f"({holder.describe()}) and cannot be broken; stop that process ({process}) "
            "instead, and the lock goes away with it"
        )

    # --- the info file -------------------------------------------------------------

    def _load_info_json(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.info_path.read_bytes())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and data.get("id") else None

    def _read_info(self) -> LockInfo | None:
        data = self._load_info_json()
        return LockInfo.from_json(data) if data is not None else None

    def _read_pid(self) -> int | None:
        data = self._load_info_json()
        pid = data.get("pid") if data else None
        return pid if isinstance(pid, int) else None

    def _holder_from_file(self) -> LockInfo:
        """The holder's info while the flock is held by someone else; never raises."""
        for attempt in range(_INFO_RETRIES):
            info = self._read_info()
            if info is not None:
                return info
            if attempt + 1 < _INFO_RETRIES:
                time.sleep(_INFO_RETRY_DELAY)
        return LockInfo(
            id=_UNKNOWN,
            operation=_UNKNOWN,
            who=f"an unknown holder (lock info {self.info_path} is missing or unreadable)",
            created=_UNKNOWN,
            path=str(self.path),
        )

    # --- housekeeping --------------------------------------------------------------

    def _remove_stale_temps(self) -> None:
        """Delete temp files of dead processes on this host (left by kill -9)."""
        prefix = self._temp_prefix()
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.path.parent):
                if not entry.name.startswith(prefix):
                    continue
                pid_text = entry.name[len(prefix):].split("-", 1)[0]
                if pid_text.isdigit() and not _alive(int(pid_text)):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)

    def _forget_after_fork(self) -> None:
        """In a forked child: drop the inherited lock descriptor without unlocking.

        Closing (not ``LOCK_UN``) leaves the parent's lock intact, and the child no
        longer keeps the lock alive after the parent dies.
        """
        self._mutex = threading.Lock()
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
        self._lock_fd, self._held = None, None


_UNKNOWN = "unknown"
_HOST = socket.gethostname().replace("/", "_") or "localhost"
_LIVE_BACKENDS: weakref.WeakSet[LocalFileBackend] = weakref.WeakSet()


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _after_fork_in_child() -> None:
    for backend in list(_LIVE_BACKENDS):
        backend._forget_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
