"""The file-system side of transfers: files and trees read from and written to a volume or
the workflow owner's directory on the orchestrator host.

A volume path is ``file://relative/path``: never absolute, never ``..``. Host paths
(``file:///absolute/path`` in the owner's subtree of a root of ``orchestrator.host_paths``)
are located by :mod:`fuzz.orchestrate.transfer.host_roots`. Either way the work happens relative to
an open directory (:class:`~fuzz.orchestrate.transfer.confined.Directory`) through calls that
refuse every symlink, as the workflow owner's uid and gid: a job that swaps a file or a
directory for a symlink while a transfer runs gets an error, never a file from outside.
Symlinks inside a volume are refused, not followed, not copied.

Writes go to a new file under a temporary name (``O_EXCL``; or a staging directory for a
tree) and are renamed into place on commit, so a failed transfer leaves no half-written
file behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from typing import NamedTuple
from urllib.parse import unquote

from fuzz.orchestrate.transfer.confined import Directory, EscapeError, split, temporary_name
from fuzz.orchestrate.transfer.stream import (
    CHUNK,
    Item,
    Readable,
    Source,
    TransferError,
    reason_of,
)

FILE = "file://"


class Modes(NamedTuple):
    """The modes of the files and directories a sink writes."""

    file: int
    directory: int


VOLUME_MODES = Modes(0o644, 0o755)  # the jobs of the volume's owner read them
HOST_MODES = Modes(0o640, 0o750)  # the owner's files on the host: not for everyone
CACHE_MODES = Modes(0o444, 0o755)  # the ingress cache's: linked into volumes, read-only


@contextmanager
def local_errors(uri: str, where: str) -> Iterator[None]:
    """Turn OSError into TransferError naming ``uri`` (``where`` names the directory)."""
    try:
        yield
    except EscapeError as exc:
        raise TransferError(f"{uri}: {exc.filename} is or passes through a symlink; transfers "
                            f"follow no symlinks in {where}") from None
    except OSError as exc:
        raise TransferError(f"{uri}: {reason_of(exc)}") from exc


def volume_relative(uri: str) -> str:
    """``file://relative/path`` as the path relative to the volume ('' for the volume).

    Raises TransferError for another scheme, an absolute path or ``..``.
    """
    if not uri.startswith(FILE):
        raise TransferError(f"{uri}: a volume path must be file://relative/path")
    relative = unquote(uri[len(FILE):])
    if relative.startswith("/"):
        raise TransferError(
            f"{uri}: absolute paths are not allowed in a volume; use file://relative/path"
        )
    if ".." in relative.split("/"):
        raise TransferError(f"{uri}: '..' would leave the volume")
    if "\0" in relative:
        raise TransferError(f"{uri}: a path may not hold a NUL byte")
    return relative.strip("/")


def local_source(base: Directory, relative: str, uri: str) -> Source:
    """The file or directory tree at ``relative`` in ``base``.

    Symlinks and special files (fifos, sockets, devices) are refused.
    """
    errors = partial(local_errors, uri, base.label)
    with errors():
        fd = base.open_fd(relative, os.O_RDONLY | os.O_NONBLOCK)
        try:
            info = os.fstat(fd)
        finally:
            os.close(fd)
        if stat.S_ISDIR(info.st_mode):
            try:
                files = base.files(relative)
            except EscapeError as exc:
                raise TransferError(f"{uri}: {exc.filename} is a symlink; transfers follow "
                                    f"no symlinks in {base.label}") from None
            except OSError as exc:
                raise TransferError(f"{uri}: {exc.filename} {exc.strerror}") from exc
            items = [Item(inside, _opener(base, f"{relative}/{inside}".lstrip("/")))
                     for inside, _ in files]
            return Source(uri, True, items, sum(size for _, size in files), errors)
        if not stat.S_ISREG(info.st_mode):
            raise TransferError(f"{uri}: not a regular file or directory")
        return Source(uri, False, [Item(split(relative)[1], _opener(base, relative))],
                      info.st_size, errors)


def _opener(
    base: Directory, relative: str
) -> Callable[[], AbstractContextManager[tuple[Readable, int | None]]]:
    @contextmanager
    def open_file() -> Iterator[tuple[Readable, int | None]]:
        fd = base.open_fd(relative, os.O_RDONLY | os.O_NONBLOCK)
        info = os.fstat(fd)  # what was opened, whatever the name means by now
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise OSError(0, "not a regular file", relative)
        with os.fdopen(fd, "rb") as stream:
            yield stream, info.st_size

    return open_file


class _Staging(NamedTuple):
    """A tree's staging directory: open, its name, and the open directory it is in."""

    directory: Directory
    name: str
    parent: Directory


class LocalSink:
    """Writes a file or a tree to ``target`` (relative to ``base``; '' is ``base``).

    A file goes to ``target``, or into it when it is a directory or the URI ends with
    ``/``. A tree is staged in a hidden directory beside ``target`` and then renamed to
    it, or merged into it file by file when it exists. Nothing is written outside
    ``base``: no symlink is followed, even one already there.
    """

    def __init__(self, base: Directory, target: str, uri: str, tree: bool,
                 modes: Modes) -> None:
        self.uri = uri
        self._base = base
        self._target = target
        self._tree = tree
        self._modes = modes
        self._staging: _Staging | None = None
        self._written: list[tuple[Directory, str, str]] = []  # file: (dir, temporary, name)
        self._staged: list[str] = []  # tree: paths written in the staging directory

    def _errors(self) -> AbstractContextManager[None]:
        return local_errors(self.uri, self._base.label)

    def put(self, relative: str, stream: Readable) -> None:
        """Write one file to its temporary place."""
        with self._errors():
            parent, name = self._slot(relative)
            with parent:
                fd = parent.create_exclusive(name, self._modes.file)
            with os.fdopen(fd, "wb") as handle:
                shutil.copyfileobj(stream, handle, CHUNK)

    def link(self, relative: str, origin: Directory, name: str, *, hard: bool = True) -> None:
        """Place file ``name`` of ``origin`` (the ingress cache) as ``relative``, like
        :meth:`put`: with ``hard``, as a hard link to it (not one byte copied; the file
        stays the cache's, read-only), else, or where ``origin`` is on another file
        system (or its file has all the links it may), as a copy of its bytes that is
        the owner's own."""
        with self._errors():
            parent, slot = self._slot(relative)
            with parent:
                if hard:
                    try:  # as the server: the cache's file is not the owner's to link
                        os.link(name, slot, src_dir_fd=origin.fd, dst_dir_fd=parent.fd,
                                follow_symlinks=False)
                        return
                    except OSError as exc:  # another file system; too many links already
                        if exc.errno not in (errno.EXDEV, errno.EMLINK):
                            raise
                fd = parent.create_exclusive(slot, self._modes.file)
            with os.fdopen(fd, "wb") as handle, \
                    os.fdopen(origin.open_fd(name, os.O_RDONLY), "rb") as stream:
                shutil.copyfileobj(stream, handle, CHUNK)

    def _slot(self, relative: str) -> tuple[Directory, str]:
        """Where file ``relative`` is written before commit: its directory (open, for the
        caller to close) and a name there that does not exist yet."""
        if self._tree:
            staging = self._staging_dir()
            parent_path, name = split(relative)
            parent = staging.directory.make_directories(parent_path, self._modes.directory)
            self._staged.append(relative)
            return parent, name
        parent_path, name = split(self._file_target(relative))
        parent = self._base.make_directories(parent_path, self._modes.directory)
        temporary = temporary_name(f".{name}.")
        self._written.append((parent, temporary, name))
        return Directory(os.dup(parent.fd), parent.identity, parent.label), temporary

    def commit(self) -> None:
        """Rename what was written into place."""
        with self._errors():
            staging = self._staging
            if self._tree and staging is None:  # an empty tree
                self._base.make_directories(self._target, self._modes.directory).close()
            elif staging is not None:
                self._commit_tree(staging)
            for parent, temporary, name in self._written:
                parent.rename(temporary, parent, name)
        self._remove_temporaries()

    def _commit_tree(self, staging: _Staging) -> None:
        name = split(self._target)[1]
        if name and staging.parent.kind(name) is None:
            staging.parent.rename(staging.name, staging.parent, name)
            staging.directory.close()
            staging.parent.close()
            self._staging = None
            return
        with self._base.make_directories(self._target, self._modes.directory) as target:
            parents = sorted({split(relative)[0] for relative in self._staged})
            for inner in parents:  # every directory first: a symlink fails before any rename
                target.make_directories(inner, self._modes.directory).close()
            for relative in self._staged:
                inner, file_name = split(relative)
                with staging.directory.subdirectory(inner) as source, \
                        target.subdirectory(inner) as into:
                    source.rename(file_name, into, file_name)

    def abort(self) -> None:
        """Remove what was written: nothing of a failed transfer reaches ``target``."""
        self._remove_temporaries()

    def _remove_temporaries(self) -> None:
        for parent, temporary, _ in self._written:
            with contextlib.suppress(FileNotFoundError):  # renamed into place
                parent.remove(temporary)
            parent.close()
        self._written.clear()
        if self._staging is not None:
            staging, self._staging = self._staging, None
            staging.directory.close()
            with contextlib.suppress(OSError):  # the job removed it, or it is in place
                staging.parent.remove(staging.name)
            staging.parent.close()

    def _file_target(self, name: str) -> str:
        into = not self._target or self.uri.endswith("/")
        if not into and self._base.kind(self._target) != stat.S_IFDIR:
            return self._target
        if not name:
            raise TransferError(f"{self.uri}: the source has no file name; name the "
                                "destination file")
        return f"{self._target}/{name}".lstrip("/")

    def _staging_dir(self) -> _Staging:
        if self._staging is None:
            parent_path, name = split(self._target)
            kind = self._base.kind(self._target)
            if kind is not None and kind != stat.S_IFDIR:
                raise TransferError(f"{self.uri}: exists and is not a directory")
            parent = self._base.make_directories(parent_path, self._modes.directory)
            try:
                directory, staged_name = parent.make_temporary_directory(
                    f".{name or 'tree'}.", self._modes.directory)
            except BaseException:
                parent.close()
                raise
            self._staging = _Staging(directory, staged_name, parent)
        return self._staging
