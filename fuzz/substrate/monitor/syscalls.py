"""The few Linux system calls the container monitor needs that ``os`` lacks (through libc).

A child subreaper (so that container inits become the monitor's children once
runc exits), a mount namespace of its own, overlay mounts in it, and copies of the
host's mount trees brought into it (:mod:`~fuzz.substrate.monitor.hostview`).
Imported by the monitor process only.
"""

from __future__ import annotations

import ctypes
import errno
import os

PR_SET_CHILD_SUBREAPER = 36
CLONE_NEWNS = 0x00020000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SLAVE = 1 << 19
MNT_DETACH = 2
# The new mount API (Linux 5.2+); these numbers are the same on every architecture.
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
OPEN_TREE_CLONE = 1
AT_RECURSIVE = 0x8000
AT_FDCWD = -100
MOVE_MOUNT_F_EMPTY_PATH = 0x4

_libc = ctypes.CDLL(None, use_errno=True)


class SysError(Exception):
    """A system call failed; the message is one line naming what was attempted."""


def _check(what: str, result: int) -> None:
    if result != 0:
        raise SysError(f"{what}: {os.strerror(ctypes.get_errno())}")


def become_subreaper() -> None:
    """Adopt orphaned descendants (the container inits that runc leaves behind)."""
    _check("prctl(PR_SET_CHILD_SUBREAPER)", _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))


def private_mount_namespace() -> tuple[int, int]:
    """Enter a mount namespace of our own; the descriptors of the host's and of ours.

    ``rslave``: the overlays mounted here never reach the host, and vanish with this
    process and its containers however they end; where the host's mounts are
    shared, what the host mounts later shows up here too (where they are private,
    :mod:`~fuzz.substrate.monitor.hostview` brings it in through the host's namespace).
    """
    host = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    _check("unshare(CLONE_NEWNS)", _libc.unshare(CLONE_NEWNS))
    _check("making mounts slaves", _libc.mount(b"none", b"/", None, MS_REC | MS_SLAVE, None))
    return host, os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)


def enter_mount_namespace(fd: int) -> None:
    """Move to the mount namespace ``fd`` refers to (a process without threads only)."""
    _check("setns(mount namespace)", _libc.setns(fd, CLONE_NEWNS))


def mount_api_available() -> bool:
    """Whether the kernel has ``open_tree`` and ``move_mount`` (Linux 5.2+)."""
    if _libc.syscall(SYS_OPEN_TREE, -1, b"", 0) >= 0:  # no: -1 is no descriptor
        return True
    return ctypes.get_errno() != errno.ENOSYS


def clone_mount_tree(path: str) -> int:
    """A descriptor of a detached copy of the mount tree at ``path`` (submounts included)."""
    fd = _libc.syscall(SYS_OPEN_TREE, AT_FDCWD, path.encode(),
                       OPEN_TREE_CLONE | AT_RECURSIVE | os.O_CLOEXEC)
    _check(f"copying the mounts at {path}", 0 if fd >= 0 else -1)
    return int(fd)


def attach_mount_tree(fd: int, target: str) -> None:
    """Mount the detached tree ``fd`` (from :func:`clone_mount_tree`) on ``target``."""
    _check(f"attaching the copy on {target}",
           _libc.syscall(SYS_MOVE_MOUNT, fd, b"", AT_FDCWD, target.encode(),
                         MOVE_MOUNT_F_EMPTY_PATH))


def mount_overlay(lower: str, upper: str, work: str, merged: str) -> None:
    """Mount an overlay of ``lower`` (read-only) and ``upper`` (the writes) on ``merged``.

    ``volatile`` (Linux 5.10+, retried without it on older kernels) skips the
    syncs of the upper dir: it is scratch space, used once and never remounted.
    """
    if any(ch in lower + upper + work for ch in ",:\\"):
        raise SysError(f"overlay paths {lower} and {upper} must not contain ',', ':' or '\\'")
    options = f"lowerdir={lower},upperdir={upper},workdir={work}"
    target = merged.encode()
    if _libc.mount(b"overlay", target, b"overlay", 0, f"{options},volatile".encode()) == 0:
        return
    if ctypes.get_errno() != errno.EINVAL:
        _check(f"mounting the overlay on {merged}", -1)
    _check(
        f"mounting the overlay on {merged}",
        _libc.mount(b"overlay", target, b"overlay", 0, options.encode()),
    )


def bind_mount(source: str, target: str) -> None:
    """Bind-mount ``source`` on ``target`` (a file on a file: a namespace on its file)."""
    _check(
        f"bind-mounting {source} on {target}",
        _libc.mount(source.encode(), target.encode(), None, MS_BIND, None),
    )


def mount_tmpfs(target: str, options: str) -> None:
    """Mount a tmpfs on ``target`` (in our mount namespace)."""
    _check(
        f"mounting a tmpfs on {target}",
        _libc.mount(b"tmpfs", target.encode(), b"tmpfs", 0, options.encode()),
    )


def unmount(target: str) -> str | None:
    """Unmount ``target`` (lazily if it is busy); the error in one line, None when done."""
    path = target.encode()
    if _libc.umount2(path, 0) == 0:
        return None
    code = ctypes.get_errno()
    if code == errno.EINVAL:  # not mounted
        return None
    if _libc.umount2(path, MNT_DETACH) == 0:
        return None
    return f"unmounting {target}: {os.strerror(code)}"
