"""The few Linux system calls the container monitor needs that ``os`` lacks (through libc).

A child subreaper (so that container inits become the monitor's children once
runc exits), a mount namespace of its own, and overlay mounts in it.
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

_libc = ctypes.CDLL(None, use_errno=True)


class SysError(Exception):
    """A system call failed; the message is one line naming what was attempted."""


def _check(what: str, result: int) -> None:
    if result != 0:
        raise SysError(f"{what}: {os.strerror(ctypes.get_errno())}")


def become_subreaper() -> None:
    """Adopt orphaned descendants (the container inits that runc leaves behind)."""
    _check("prctl(PR_SET_CHILD_SUBREAPER)", _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))


def private_mount_namespace() -> None:
    """Enter a mount namespace of our own that still receives the host's new mounts.

    ``rslave``: volumes mounted on the host later (NFS, scratch) show up here and
    in the containers, while the overlays mounted here never reach the host, and
    vanish with this process and its containers however they end.
    """
    _check("unshare(CLONE_NEWNS)", _libc.unshare(CLONE_NEWNS))
    _check("making mounts slaves", _libc.mount(b"none", b"/", None, MS_REC | MS_SLAVE, None))


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
