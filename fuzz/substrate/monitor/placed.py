"""The files a job is given in its container (a Fuzzfile job's ``files``), written to disk.

The monitor writes them into the container's own directory, as ``files/0``, ``files/1``,
... in the order of the spec, just before ``runc run``; the OCI config bind-mounts each
read-only at its path in the container (runc makes the mount point), so they are removed
with the container's directory and a restarted or retried task, a new container, gets
its own.

Every name is opened relative to a directory descriptor and never through a symlink:
the container directory with ``O_NOFOLLOW``, ``files`` made with ``mkdirat`` (which
fails on anything already there, a planted symlink included) and each file made with
``O_CREAT | O_EXCL | O_NOFOLLOW``. Nothing is ever written outside the directory.

Mode 0755, owned by root: readable by the job whatever its uid, and executable, so a
script placed at ``/usr/local/bin/entrypoint.sh`` runs both as ``bash
/usr/local/bin/entrypoint.sh`` (how Fuzzball's catalog runs them) and by its own path
with its ``#!`` line. The execute bit gives the job nothing it could not do already (it
may copy the text anywhere writable and run it); the mount is read-only either way.
"""

from __future__ import annotations

import os

from fuzz.substrate.monitor.files import FILES_DIR

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

FILE_MODE = 0o755
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class PlacementError(Exception):
    """The files could not be written; the message is one line."""


def write_placed_files(directory: str, contents: Sequence[bytes]) -> None:
    """Write ``contents`` as ``FILES_DIR/0``, ``/1``, ... in the container ``directory``.

    Raises :class:`PlacementError` when something is in the way (a symlink, a file left
    there) or the disk refuses; whatever was written stays for the container's removal.
    """
    try:
        top = os.open(directory, _DIRECTORY)
    except OSError as exc:
        raise PlacementError(f"cannot open the container directory {directory}:"
                             f" {exc.strerror}") from None
    try:
        try:
            os.mkdir(FILES_DIR, 0o700, dir_fd=top)
        except FileExistsError:
            raise PlacementError(f"cannot write the job's files: {FILES_DIR!r} is already in"
                                 f" {directory} (not made by fuzz; left as it is)") from None
        placed = os.open(FILES_DIR, _DIRECTORY, dir_fd=top)
        try:
            for index, content in enumerate(contents):
                _write(placed, str(index), content)
        finally:
            os.close(placed)
    except OSError as exc:
        raise PlacementError(f"cannot write the job's files in {directory}:"
                             f" {exc.strerror}") from None
    finally:
        os.close(top)


def _write(parent: int, name: str, content: bytes) -> None:
    """Make ``name`` in the directory ``parent`` (it must not exist) holding ``content``."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(name, flags, FILE_MODE, dir_fd=parent)
    try:
        os.fchmod(fd, FILE_MODE)  # whatever the monitor's umask
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
