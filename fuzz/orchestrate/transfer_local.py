"""The file-system side of transfers: paths inside a volume, paths on the orchestrator host,
files and trees read from them and written to them.

A volume path is ``file://relative/path``; it may not name an absolute path, use
``..`` or pass through a symlink that leads out of the volume. A host path is
``file:///absolute/path`` inside one of the directories the admin lets workflows
use (``orchestrator.host_paths``): the orchestrator runs as root, so a Fuzzfile
must not read or overwrite any file it likes. Writes go to a temporary name (a file beside the
target, or a staging directory for a tree) and are renamed into place on commit,
so a failed transfer leaves no half-written file behind.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote

from fuzz.orchestrate.transfer_stream import (
    CHUNK,
    Item,
    Readable,
    Source,
    TransferError,
    reason_of,
)

FILE = "file://"
PARTIAL = ".fuzz-partial"
FILE_MODE = 0o644
DIR_MODE = 0o755


class Boundary(NamedTuple):
    """A directory nothing may be read from or written to outside of, even through symlinks."""

    root: Path  # its real path
    name: str  # how messages call it: "the volume", "/srv/data"

    @classmethod
    def of_volume(cls, volume_dir: Path) -> Boundary:
        """The boundary of a volume directory."""
        return cls(volume_dir.resolve(), "the volume")

    def holds(self, path: Path) -> bool:
        """Whether ``path`` (its real path) is inside."""
        return path.resolve().is_relative_to(self.root)


@contextmanager
def local_errors(uri: str) -> Iterator[None]:
    """Turn OSError into TransferError naming ``uri``."""
    try:
        yield
    except OSError as exc:
        raise TransferError(f"{uri}: {reason_of(exc)}") from exc


def path_in_volume(volume_dir: Path, uri: str) -> Path:
    """``file://relative/path`` as the real path inside ``volume_dir``.

    Raises TransferError for another scheme, an absolute path, ``..``, or a path
    whose symlinks lead outside the volume.
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
    try:
        root = volume_dir.resolve()
        path = (root / relative).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # symlink loops, NUL bytes
        raise TransferError(f"{uri}: {reason_of(exc)}") from exc
    if not path.is_relative_to(root):
        raise TransferError(f"{uri}: a symlink leads outside the volume")
    return path


def host_path(uri: str, roots: Sequence[Path]) -> tuple[Path, Boundary]:
    """``file:///absolute/path`` on the orchestrator host, and the allowed root it is in.

    Raises TransferError for another form, and for a path (symlinks followed) outside
    every directory of ``roots``.
    """
    path = unquote(uri[len(FILE):]) if uri.startswith(FILE) else ""
    if not path.startswith("/"):
        raise TransferError(
            f"{uri}: a file on the orchestrator host needs an absolute path (file:///path)"
        )
    try:
        real = Path(path).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # symlink loops, NUL bytes
        raise TransferError(f"{uri}: {reason_of(exc)}") from exc
    for root in roots:
        boundary = Boundary(root.resolve(), str(root))
        if real.is_relative_to(boundary.root):
            return Path(path), boundary
    allowed = ", ".join(str(root) for root in roots) or "none"
    raise TransferError(
        f"{uri}: outside the directories workflows may use on the orchestrator host "
        f"({allowed}; an admin lists them under orchestrator.host_paths)"
    )


def local_source(path: Path, confine: Boundary, uri: str) -> Source:
    """The file or directory tree at ``path``.

    A symlinked file must lead inside ``confine``.
    Symlinked directories and special files (fifos, sockets, devices) are refused.
    """
    errors = partial(local_errors, uri)
    with errors():
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            files = _walk(path, uri, confine)
            items = [Item(relative, _opener(file, size)) for relative, file, size in files]
            return Source(uri, True, items, sum(size for _, _, size in files), errors)
        if not stat.S_ISREG(info.st_mode):
            raise TransferError(f"{uri}: not a regular file or directory")
        return Source(uri, False, [Item(path.name, _opener(path, info.st_size))],
                      info.st_size, errors)


def _walk(root: Path, uri: str, confine: Boundary) -> list[tuple[str, Path, int]]:
    """Every file under ``root``: (relative path, path, size), sorted by relative path."""

    def fail(exc: OSError) -> None:
        raise exc

    found = []
    for directory, dirnames, filenames in os.walk(root, onerror=fail):
        base = Path(directory)
        for name in dirnames:
            if (base / name).is_symlink():
                relative = (base / name).relative_to(root).as_posix()
                raise TransferError(f"{uri}: {relative} is a symlink to a directory; "
                                    "only files and directories are copied")
        for name in filenames:
            path = base / name
            relative = path.relative_to(root).as_posix()
            if path.is_symlink() and not confine.holds(path):
                raise TransferError(f"{uri}: {relative} is a symlink that leads outside "
                                    f"{confine.name}")
            info = path.stat()
            if not stat.S_ISREG(info.st_mode):
                raise TransferError(f"{uri}: {relative} is not a regular file")
            found.append((relative, path, info.st_size))
    return sorted(found)


def _opener(
    path: Path, size: int
) -> Callable[[], AbstractContextManager[tuple[Readable, int | None]]]:
    @contextmanager
    def open_file() -> Iterator[tuple[Readable, int | None]]:
        with path.open("rb") as stream:
            yield stream, size

    return open_file


class LocalSink:
    """Writes a file or a tree to ``target`` on this machine.

    A file goes to ``target``, or into it when it is a directory or the URI ends
    with ``/``. A tree is staged in a hidden directory beside ``target`` and then
    renamed to it, or merged into it file by file when it exists. Nothing is
    written outside ``confine``, even through symlinks already there.
    """

    def __init__(self, target: Path, confine: Boundary, uri: str, tree: bool) -> None:
        self.uri = uri
        self._target = target
        self._tree = tree
        self._confine = confine
        self._staging: Path | None = None
        self._written: list[tuple[Path, Path]] = []  # (temporary path, final path)

    def put(self, relative: str, stream: Readable) -> None:
        """Write one file to its temporary path."""
        with local_errors(self.uri):
            if self._tree:
                final = self._target / relative
                temporary = self._staging_dir() / relative
                temporary.parent.mkdir(parents=True, exist_ok=True)
                handle = open(temporary, "xb")  # noqa: SIM115 (closed below)
            else:
                final = self._file_target(relative)
                self._check_inside(final.parent)
                final.parent.mkdir(parents=True, exist_ok=True)
                fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.",
                                            suffix=PARTIAL)
                temporary, handle = Path(name), os.fdopen(fd, "wb")
            self._written.append((temporary, final))
            with handle:
                shutil.copyfileobj(stream, handle, CHUNK)
            temporary.chmod(FILE_MODE)

    def commit(self) -> None:
        """Rename what was written into place."""
        with local_errors(self.uri):
            staging = self._staging
            if self._tree and staging is None:
                self._check_inside(self._target)
                self._target.mkdir(parents=True, exist_ok=True)  # an empty tree
            elif staging is not None and not self._target.exists():
                staging.rename(self._target)
                self._staging = None
            else:
                for _, final in self._written:
                    self._check_inside(final.parent)
                for temporary, final in self._written:
                    final.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(temporary, final)
            self._written.clear()
        self._remove_temporaries()

    def abort(self) -> None:
        """Remove what was written: nothing of a failed transfer reaches ``target``."""
        self._remove_temporaries()

    def _remove_temporaries(self) -> None:
        for temporary, _ in self._written:
            temporary.unlink(missing_ok=True)
        self._written.clear()
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None

    def _file_target(self, name: str) -> Path:
        if not (self.uri.endswith("/") or self._target.is_dir()):
            return self._target
        if not name:
            raise TransferError(f"{self.uri}: the source has no file name; name the "
                                "destination file")
        return self._target / name

    def _staging_dir(self) -> Path:
        if self._staging is None:
            if self._target.exists() and not self._target.is_dir():
                raise TransferError(f"{self.uri}: exists and is not a directory")
            self._check_inside(self._target.parent)
            self._target.parent.mkdir(parents=True, exist_ok=True)
            self._staging = Path(tempfile.mkdtemp(dir=self._target.parent,
                                                  prefix=f".{self._target.name}.",
                                                  suffix=PARTIAL))
            self._staging.chmod(DIR_MODE)
        return self._staging

    def _check_inside(self, directory: Path) -> None:
        if not self._confine.holds(directory):
            raise TransferError(f"{self.uri}: a symlink leads outside {self._confine.name}")
