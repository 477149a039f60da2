"""File operations that stay inside one open directory and never follow a symlink.

A transfer reads and writes volumes that jobs can change while it runs, and host
directories shared with the host's users. Checking a path and then opening it by name
loses to anyone who swaps a component for a symlink in between. So every operation here
starts from an open directory descriptor (a :class:`Directory`) and resolves its
relative path with ``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)``: the kernel refuses
any symlink and any step out, in the same call that opens. On a kernel without openat2
(before 5.6) each component is opened in turn with ``O_NOFOLLOW`` (``O_DIRECTORY`` for
the parents), which refuses symlinks just as well. What an open descriptor is, ``fstat``
says; files are created with ``O_EXCL`` under a temporary name and renamed into place
(``renameat``), directories with ``mkdirat``, owners set with ``fchown`` on the open
descriptor.

Every path-resolving call runs as the :class:`Identity` its directory carries (the
workflow owner's uid and gid), so the kernel's own permission checks apply as they would
to that user: the thread switches its file-system uid and gid (``setfsuid``,
``setfsgid``, and drops supplementary groups) around the call and back. Reads and writes
of descriptors already open need no switch, so the rest of the server (its database, its
logs) never runs under the owner's identity.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import platform
import secrets
import shutil
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

# Python has no binding for openat2(2), setfsuid(2), setfsgid(2) or a per-thread
# setgroups(2) (glibc's wrappers of setgroups and of the set*id calls change every
# thread), so they are called by number through ctypes. Numbers per architecture:
# x86_64 and aarch64 (openat2 is 437 on both).
_SYSCALLS = {
    "x86_64": {"openat2": 437, "setfsuid": 122, "setfsgid": 123, "setgroups": 116},
    "aarch64": {"openat2": 437, "setfsuid": 151, "setfsgid": 152, "setgroups": 159},
}.get(platform.machine(), {})
_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long

RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
_OPENAT2 = {"usable": "openat2" in _SYSCALLS}  # False once the kernel said ENOSYS

TEMPORARY = ".fuzz-partial"


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


class Identity(NamedTuple):
    """Whose file-system rights an operation has: a uid and a gid."""

    uid: int
    gid: int


class EscapeError(OSError):
    """A path named a symlink, or led out of its directory."""


def _check(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result


def _switch_fs_identity(uid: int, gid: int, groups: list[int]) -> None:
    """Set this thread's supplementary groups, fs gid and fs uid (in that order)."""
    array = (ctypes.c_uint32 * max(len(groups), 1))(*groups)
    _check(_syscall(_SYSCALLS["setgroups"], len(groups), array), "setgroups")
    for name, value in (("setfsgid", gid), ("setfsuid", uid)):
        _syscall(_SYSCALLS[name], value)
        # setfsuid/setfsgid return the previous id whether or not they succeeded: an
        # invalid id (-1) changes nothing and returns the current one, to check with
        if _syscall(_SYSCALLS[name], -1) != value:
            raise OSError(errno.EPERM, f"{name}({value}) was refused")


_state = threading.local()


@contextlib.contextmanager
def acting_as(identity: Identity | None) -> Iterator[None]:
    """Run the block with this thread's file-system identity ``identity``.

    None, a process that is not root, or an architecture without the calls: the block
    runs as the process is (only root may take another identity; a non-root server
    already has no more rights than its own user). Nested uses keep the outer identity.
    """
    if identity is None or os.geteuid() != 0 or not _SYSCALLS or getattr(_state, "identity", None):
        yield
        return
    groups = os.getgroups()
    _switch_fs_identity(identity.uid, identity.gid, [])
    _state.identity = identity
    try:
        yield
    finally:
        _state.identity = None
        _switch_fs_identity(0, os.getegid(), groups)


def _openat2(dir_fd: int, relative: str, flags: int, mode: int) -> int | None:
    """openat2 beneath ``dir_fd`` without symlinks; None when the kernel lacks it."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)
    fd = _syscall(_SYSCALLS["openat2"], dir_fd, relative.encode(), ctypes.byref(how),
                  ctypes.sizeof(how))
    if fd >= 0:
        return int(fd)
    code = ctypes.get_errno()
    if code == errno.ENOSYS:
        _OPENAT2["usable"] = False
        return None
    if code in (errno.ELOOP, errno.EXDEV):  # a symlink; a step out of dir_fd
        raise EscapeError(code, "a symlink is in the way", relative)
    raise OSError(code, os.strerror(code), relative)


def _components(relative: str) -> list[str]:
    parts = [part for part in relative.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise EscapeError(errno.EXDEV, "'..' leads out", relative)
    return parts


def _open_walking(dir_fd: int, relative: str, flags: int, mode: int) -> int:
    """Open ``relative`` one component at a time, refusing symlinks (O_NOFOLLOW)."""
    parts = _components(relative)
    current = os.dup(dir_fd)
    try:
        for part in parts[:-1]:
            following = _open_one(current, part, os.O_RDONLY | os.O_DIRECTORY, 0, relative)
            os.close(current)
            current = following
        return _open_one(current, parts[-1] if parts else ".", flags, mode, relative)
    finally:
        os.close(current)


def _open_one(dir_fd: int, name: str, flags: int, mode: int, relative: str) -> int:
    try:
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP or (exc.errno == errno.ENOTDIR
                                        and stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode)):
            raise EscapeError(errno.ELOOP, "a symlink is in the way", relative) from exc
        raise OSError(exc.errno, exc.strerror, relative) from exc


def open_beneath(dir_fd: int, relative: str, flags: int, mode: int = 0) -> int:
    """Open ``relative`` inside ``dir_fd``, refusing symlinks and ``..``: a descriptor.

    Raises EscapeError for a symlink anywhere on the way (the last component too) or a
    path that leads out; OSError (with ``relative`` as its file name) otherwise.
    """
    _components(relative)
    if _OPENAT2["usable"]:
        fd = _openat2(dir_fd, relative or ".", flags, mode)
        if fd is not None:
            return fd
    return _open_walking(dir_fd, relative, flags, mode)


@dataclass
class Directory:
    """An open directory, acted on as ``identity``, named ``label`` in messages."""

    fd: int
    identity: Identity | None
    label: str

    @classmethod
    def open(cls, path: str | os.PathLike[str], identity: Identity | None,
             label: str) -> Directory:
        """Open the directory at ``path`` (as the server: an admin's path, symlinks as
        they are); what is below it is then reached as ``identity``."""
        return cls(os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), identity, label)

    def close(self) -> None:
        """Close the descriptor."""
        os.close(self.fd)

    def __enter__(self) -> Directory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open_fd(self, relative: str, flags: int, mode: int = 0) -> int:
        """``relative`` opened beneath this directory (see :func:`open_beneath`)."""
        with acting_as(self.identity):
            return open_beneath(self.fd, relative, flags, mode)

    def subdirectory(self, relative: str) -> Directory:
        """The directory ``relative`` below this one, open."""
        return Directory(self.open_fd(relative, os.O_RDONLY | os.O_DIRECTORY),
                         self.identity, self.label)

    def make_directories(self, relative: str, mode: int) -> Directory:
        """The directory ``relative`` below this one, made (``mkdirat``, ``mode``) where
        missing, component by component, open."""
        current = Directory(os.dup(self.fd), self.identity, self.label)
        for part in _components(relative):
            with current:
                with acting_as(self.identity), contextlib.suppress(FileExistsError):
                    os.mkdir(part, mode, dir_fd=current.fd)
                following = current.subdirectory(part)
            current = following
        return current

    def kind(self, relative: str) -> int | None:
        """``relative``'s ``S_IFMT`` bits (from ``fstat`` of it opened with O_PATH), or
        None when it does not exist."""
        try:
            fd = self.open_fd(relative, os.O_PATH)
        except FileNotFoundError:
            return None
        try:
            return stat.S_IFMT(os.fstat(fd).st_mode)
        finally:
            os.close(fd)

    def create_exclusive(self, name: str, mode: int) -> int:
        """A new file ``name`` here, open for writing (``O_EXCL``: never an existing file
        or symlink), with exactly ``mode``."""
        with acting_as(self.identity):
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, mode, dir_fd=self.fd)
        os.fchmod(fd, mode)  # the umask may have taken bits away
        return fd

    def make_temporary_directory(self, prefix: str, mode: int) -> tuple[Directory, str]:
        """A new, empty directory here (``mkdirat`` fails on any existing name), open."""
        for _ in range(100):
            name = temporary_name(prefix)
            try:
                with acting_as(self.identity):
                    os.mkdir(name, mode, dir_fd=self.fd)
            except FileExistsError:
                continue
            made = self.subdirectory(name)
            os.fchmod(made.fd, mode)
            return made, name
        raise FileExistsError(errno.EEXIST, "no free temporary name", prefix)

    def rename(self, name: str, into: Directory, new_name: str) -> None:
        """``renameat``: entry ``name`` here becomes ``new_name`` in ``into`` (replacing a
        file, or a symlink itself, that was there)."""
        with acting_as(self.identity):
            os.rename(name, new_name, src_dir_fd=self.fd, dst_dir_fd=into.fd)

    def remove(self, name: str) -> None:
        """Remove entry ``name`` (a file, or a tree; symlinks in it are not followed)."""
        with acting_as(self.identity):
            if self.kind(name) == stat.S_IFDIR:
                shutil.rmtree(name, dir_fd=self.fd)
            else:
                os.unlink(name, dir_fd=self.fd)

    def files(self, relative: str) -> list[tuple[str, int]]:
        """Every regular file of the tree at ``relative``: (path in the tree, size),
        sorted. EscapeError for a symlink in it, OSError for a special file."""
        found: list[tuple[str, int]] = []
        pending = [""]
        while pending:
            below = pending.pop()
            with self.subdirectory(f"{relative}/{below}".strip("/")) as directory, \
                    acting_as(self.identity), os.scandir(directory.fd) as entries:
                for entry in entries:
                    inside = f"{below}/{entry.name}".lstrip("/")
                    if entry.is_symlink():
                        raise EscapeError(errno.ELOOP, "is a symlink", inside)
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(inside)
                    elif entry.is_file(follow_symlinks=False):
                        found.append((inside, entry.stat(follow_symlinks=False).st_size))
                    else:
                        raise OSError(errno.EINVAL, "is not a regular file", inside)
        return sorted(found)

    def give_to(self, owner: Identity, mode: int) -> None:
        """``fchown`` and ``fchmod`` this directory (as the server, which may)."""
        os.fchown(self.fd, owner.uid, owner.gid)
        os.fchmod(self.fd, mode)


def temporary_name(prefix: str) -> str:
    """A fresh name for a file being written: ``prefix``, random hex, ``.fuzz-partial``."""
    return f"{prefix}{secrets.token_hex(8)}{TEMPORARY}"


def split(relative: str) -> tuple[str, str]:
    """``relative`` as (its parent's path, its name); the name is '' for the top."""
    parts = _components(relative)
    if not parts:
        return "", ""
    return "/".join(parts[:-1]), parts[-1]
