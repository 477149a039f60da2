"""The orchestrator host's directories that workflows may use (``orchestrator.host_paths``).

Each root is checked and opened once, when the server starts, and stays open for the
server's life: every later use works relative to that descriptor, so nothing done to the
path afterwards (a rename, a symlink) changes what a transfer reaches. A root must be a
real directory owned by root, and neither it nor any of its parents may be writable by
group or others (``/tmp`` is not: anyone could have made ``/tmp/x`` a symlink to ``/``
before the cluster started).

Each workflow owner has a subtree of their own: a workflow of ``alice`` reads and writes
only ``<root>/alice/``, which fuzz makes (mode 0700, owned by alice's uid) at first use.
A Fuzzfile names the real path, ``file:///srv/data/alice/results/``; a path elsewhere in
the root (another owner's subtree, the root itself) is refused.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from fuzz.errors import FuzzError
from fuzz.orchestrate.transfer.confined import Directory, Identity, open_beneath
from fuzz.orchestrate.transfer.stream import TransferError

FILE = "file://"
OWNER_MODE = 0o700


class HostRootError(FuzzError):
    """A host path the server will not use; the message names it and why, on one line."""


@dataclass(frozen=True)
class HostRoot:
    """One of the admin's host directories: its path as written, and its open descriptor."""

    path: str
    fd: int


def _unsafe(component: str, info: os.stat_result) -> str | None:
    """Why the directory ``component`` (a host path or one of its parents) is unsafe."""
    if info.st_uid != 0:
        return f"{component} is owned by uid {info.st_uid}, not root"
    writers = [who for who, bit in (("group", stat.S_IWGRP), ("others", stat.S_IWOTH))
               if info.st_mode & bit]
    if writers:
        return (f"{component} is writable by {' and '.join(writers)} "
                f"(mode {stat.S_IMODE(info.st_mode):o})")
    return None


def open_root(path: str) -> HostRoot:
    """Open the host path ``path``, walking from ``/`` without following symlinks and
    checking each directory on the way; HostRootError says what is wrong."""

    def refuse(why: str) -> HostRootError:
        return HostRootError(f"orchestrator.host_paths: {path}: {why}; a host path must be a "
                             "directory owned by root that only root can change, up to /")

    if not path.startswith("/"):
        raise refuse("not an absolute path")
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    walked = "/"
    try:
        for part in [p for p in path.split("/") if p not in ("", ".")]:
            problem = _unsafe(walked, os.fstat(fd))
            if problem is not None:
                raise refuse(problem)
            if part == "..":
                raise refuse("'..' is not allowed")
            walked = posixpath.join(walked, part)
            try:
                following = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                                    | os.O_CLOEXEC, dir_fd=fd)
            except OSError as exc:
                raise refuse(_why_not_opened(fd, part, walked, exc)) from exc
            os.close(fd)
            fd = following
        problem = _unsafe(walked, os.fstat(fd))
        if problem is not None:
            raise refuse(problem)
    except BaseException:
        os.close(fd)
        raise
    return HostRoot(path.rstrip("/") or "/", fd)


def _why_not_opened(parent_fd: int, name: str, walked: str, exc: OSError) -> str:
    with contextlib.suppress(OSError):
        if stat.S_ISLNK(os.lstat(name, dir_fd=parent_fd).st_mode):
            return f"{walked} is a symlink"
    if exc.errno == errno.ENOENT:
        return f"{walked} does not exist (fuzz init makes the spec's host paths)"
    if exc.errno == errno.ENOTDIR:
        return f"{walked} is not a directory"
    return f"{walked}: {exc.strerror}"


def make_host_paths(paths: Sequence[Path]) -> list[Path]:
    """Make those of ``paths`` that do not exist (parents too), mode 0755, owned by whoever
    runs this (root, for the server to accept them); the ones made."""
    made = []
    for path in paths:
        if os.path.lexists(path):
            continue
        path.mkdir(mode=0o755, parents=True)
        path.chmod(0o755)  # whatever the umask
        made.append(path)
    return made


def _owner_component(owner: str) -> str:
    if not owner or "/" in owner or owner in (".", "..") or "\0" in owner:
        raise TransferError(f"{owner!r} cannot name a directory on the orchestrator host")
    return owner


@dataclass
class HostRoots:
    """The admin's host directories, open; empty when workflows may use none."""

    roots: Sequence[HostRoot] = field(default_factory=tuple)

    @classmethod
    def open(cls, paths: Sequence[str | Path]) -> HostRoots:
        """Check and open every path (see :func:`open_root`); HostRootError for the first
        that is refused (those opened before it are closed)."""
        opened: list[HostRoot] = []
        try:
            for path in paths:
                opened.append(open_root(str(path)))
        except BaseException:
            for root in opened:
                os.close(root.fd)
            raise
        return cls(tuple(opened))

    def close(self) -> None:
        """Close every root's descriptor."""
        for root in self.roots:
            os.close(root.fd)
        self.roots = ()

    def locate(self, uri: str, owner: str) -> tuple[HostRoot, str]:
        """The root ``uri`` (``file:///absolute/path``) lies in, and its path relative to
        ``<root>/<owner>``; TransferError when it is not in ``owner``'s subtree of a root."""
        path = unquote(uri[len(FILE):]) if uri.startswith(FILE) else ""
        if not path.startswith("/"):
            raise TransferError(
                f"{uri}: a file on the orchestrator host needs an absolute path (file:///path)")
        if ".." in path.split("/"):
            raise TransferError(f"{uri}: '..' is not allowed in a path on the orchestrator host")
        mine = _owner_component(owner)
        for root in self.roots:
            base = root.path.rstrip("/")
            inside = path[len(base):] if path.startswith(base + "/") else None
            if inside is None:
                continue
            parts = [part for part in inside.split("/") if part not in ("", ".")]
            if parts[:1] == [mine]:
                return root, "/".join(parts[1:])
        allowed = ", ".join(f"{root.path.rstrip('/')}/{mine}/" for root in self.roots) or "none"
        raise TransferError(
            f"{uri}: outside the directories workflows of {owner} may use on the orchestrator "
            f"host ({allowed}; an admin lists the roots under orchestrator.host_paths)")

    def owner_directory(self, root: HostRoot, owner: str, identity: Identity | None) -> Directory:
        """``<root>/<owner>``, open, acted on as ``identity``: made (0700, given to
        ``identity``) at first use; refused when it belongs to another uid or is a symlink."""
        name = _owner_component(owner)
        label = f"{root.path.rstrip('/')}/{name}"
        try:
            os.mkdir(name, OWNER_MODE, dir_fd=root.fd)
            made = True
        except FileExistsError:
            made = False
        directory = Directory(open_beneath(root.fd, name, os.O_RDONLY | os.O_DIRECTORY),
                              identity, label)
        if identity is None or os.geteuid() != 0:
            return directory
        info = os.fstat(directory.fd)
        if made:
            directory.give_to(identity, OWNER_MODE)
        elif info.st_uid != identity.uid:
            directory.close()
            raise TransferError(f"{label} belongs to uid {info.st_uid}, not to {owner} "
                                f"(uid {identity.uid}); an admin must change its owner")
        return directory


@dataclass(frozen=True)
class HostAccess:
    """What one workflow may use on the orchestrator host: its owner's subtree of each root."""

    roots: HostRoots
    owner: str

    def problem(self, uri: str) -> str | None:
        """Why ``uri`` is refused, or None."""
        try:
            self.roots.locate(uri, self.owner)
        except TransferError as exc:
            return str(exc)
        return None

    def open(self, uri: str, identity: Identity | None) -> tuple[Directory, str]:
        """The owner's directory ``uri`` lies in, open, and ``uri``'s path relative to it."""
        root, relative = self.roots.locate(uri, self.owner)
        return self.roots.owner_directory(root, self.owner, identity), relative
