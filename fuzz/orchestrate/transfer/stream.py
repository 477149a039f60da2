"""The copy loop every transfer shares: stream from a source to a sink, hashing as it goes.

A :class:`Source` is one file or a tree of files, each opened as a stream; a
:class:`Sink` writes each stream and makes the whole visible only on
:meth:`Sink.commit`. :func:`copy` runs one into the other, computes sha256 on the
fly, reports progress and checks that every stream delivered the size it
announced. Errors arrive here already as :class:`TransferError` naming the URI at
fault: each source and sink translates its own library's exceptions.
"""

from __future__ import annotations

import hashlib
import posixpath
import threading
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from fuzz.errors import FuzzError

CHUNK = 1024 * 1024
PROGRESS_EVERY = 4 * 1024 * 1024

ProgressCallback = Callable[[int, int | None], None]
"""Called with (bytes done, bytes in all or None when unknown), possibly from another thread."""


class TransferError(FuzzError):
    """A transfer failed; the message names the URI and the reason on one line."""


@dataclass(frozen=True)
class TransferResult:
    """What a finished transfer moved.

    ``size`` is the total bytes; ``sha256`` is the file's digest, or for a tree the
    digest of its listing (see :func:`tree_digest`); ``files`` counts the files.
    ``fetched`` is the bytes read from the source for it; ``cached`` says that the data
    came from the ingress cache (:mod:`fuzz.orchestrate.transfer.cache`), so none were.
    """

    source: str
    destination: str
    size: int
    sha256: str
    files: int
    fetched: int = 0
    cached: bool = False


class Readable(Protocol):
    """A binary stream: files, HTTP responses, S3 bodies."""

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes (all that is left when negative); b"" at the end."""
        ...


ErrorTranslator = Callable[[], AbstractContextManager[None]]
"""A context manager that turns a library's exceptions into TransferError for one URI."""


@dataclass(frozen=True)
class Item:
    """One file of a source: its path in the tree (or its name) and how to open it.

    ``open`` yields the stream and the size it announces (None when unknown).
    """

    relative: str
    open: Callable[[], AbstractContextManager[tuple[Readable, int | None]]]


@dataclass(frozen=True)
class Source:
    """A file (``tree`` False, one item) or a tree of files, with their total size if known."""

    uri: str
    tree: bool
    items: Sequence[Item]
    total: int | None
    errors: ErrorTranslator


class Sink(Protocol):
    """Where a transfer writes: nothing is visible before :meth:`commit`, nothing stays after
    :meth:`abort` (as far as the storage allows; see each sink)."""

    uri: str

    def put(self, relative: str, stream: Readable) -> None:
        """Write one file (``relative`` is its path in the tree, or its name) to the end."""
        ...

    def commit(self) -> None:
        """Make every file written visible at the destination."""
        ...

    def abort(self) -> None:
        """Remove what was written; called when the transfer fails."""
        ...


class Meter:
    """Counts bytes and calls ``progress`` at the start, every PROGRESS_EVERY bytes and at
    the end."""

    def __init__(self, progress: ProgressCallback | None, total: int | None) -> None:
        self.progress = progress
        self.total = total
        self.done = 0
        self._reported = 0
        self._report()

    def add(self, count: int) -> None:
        """Count ``count`` more bytes."""
        self.done += count
        if self.done - self._reported >= PROGRESS_EVERY:
            self._report()

    def finish(self) -> None:
        """Report the end: the total is now what was done."""
        self.total = self.done
        self._report()

    def _report(self) -> None:
        self._reported = self.done
        if self.progress is not None:
            self.progress(self.done, self.total)


class ByteBudget:
    """The bytes a destination may still take, shared by every transfer writing to it.

    Thread-safe. :meth:`take` is asked before each chunk read is handed on, so what
    is written never passes the limit: the chunk that would is refused, and the
    transfer fails there instead of after downloading everything.
    """

    def __init__(self, limit: int, used: int, refusal: str) -> None:
        """Allow ``limit`` bytes of which ``used`` are taken; ``refusal`` says why the
        one too many is refused (after the source's URI and a colon)."""
        self.limit = limit
        self._used = used
        self._refusal = refusal
        self._lock = threading.Lock()

    def take(self, count: int, uri: str) -> None:
        """Count ``count`` more bytes from ``uri``; TransferError if they would pass the limit."""
        with self._lock:
            if self._used + count > self.limit:
                raise TransferError(f"{uri}: {self._refusal}")
            self._used += count


class HashingReader:
    """Reads a stream for a sink, hashing and counting every byte on the way.

    It has no ``seek``, so boto3 streams it in order instead of seeking back. At
    the end it checks that the stream gave as many bytes as it announced. With a
    ``budget``, every chunk is counted against it before it is handed on.
    """

    def __init__(
        self, stream: Readable, meter: Meter, announced: int | None, source: Source,
        budget: ByteBudget | None = None,
    ) -> None:
        self._stream = stream
        self._budget = budget
        self._meter = meter
        self._announced = announced
        self._source = source
        self._hash = hashlib.sha256()
        self.count = 0

    def read(self, size: int | None = -1, /) -> bytes:
        """Up to ``size`` bytes (everything left when negative or None); b"" at the end."""
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(CHUNK), b""))
        with self._source.errors():
            data = self._stream.read(min(size, CHUNK)) if size else b""
        if data:
            if self._budget is not None:
                self._budget.take(len(data), self._source.uri)
            self._hash.update(data)
            self.count += len(data)
            self._meter.add(len(data))
        elif size and self._announced is not None and self.count != self._announced:
            raise TransferError(
                f"{self._source.uri}: the stream ended after {self.count} of "
                f"{self._announced} bytes"
            )
        return data

    def hexdigest(self) -> str:
        """sha256 of what was read so far."""
        return self._hash.hexdigest()


def tree_digest(files: Iterable[tuple[str, str]]) -> str:
    """The sha256 of a tree: over its ``sha256sum``-style listing, sorted by path.

    Each file contributes the line ``<file sha256>  <relative path>\\n`` (paths with
    ``/``), sorted by path, so the same tree always has the same digest and it can
    be checked with coreutils::

        cd DIR && find . -type f -printf '%P\\0' | LC_ALL=C sort -z \\
          | xargs -0 sha256sum | sha256sum
    """
    listing = "".join(f"{digest}  {path}\n" for path, digest in sorted(files))
    return hashlib.sha256(listing.encode()).hexdigest()


def reason_of(exc: BaseException) -> str:
    """An exception as a short reason: ``Connection refused``, ``No such file or directory: /x``."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__


def safe_relative(relative: str, uri: str) -> str:
    """``relative`` as a normalised path that stays inside its tree, or TransferError."""
    parts = relative.split("/")
    if relative.startswith("/") or ".." in parts:
        raise TransferError(f"{uri}: {relative!r} would leave the destination")
    clean = posixpath.normpath(relative)
    if clean in (".", ""):
        raise TransferError(f"{uri}: an entry has an empty name")
    return clean


def copy(source: Source, sink: Sink, progress: ProgressCallback | None,
         budget: ByteBudget | None = None) -> TransferResult:
    """Stream every item of ``source`` into ``sink`` and commit; abort the sink on failure.

    ``budget``: the bytes the destination may still take (see :class:`ByteBudget`).
    """
    meter = Meter(progress, source.total)
    digests: list[tuple[str, str]] = []
    try:
        for item in source.items:
            with source.errors(), item.open() as (stream, announced):
                if not source.tree and meter.total is None:
                    meter.total = announced
                reader = HashingReader(stream, meter, announced, source, budget)
                sink.put(item.relative, reader)
            digests.append((item.relative, reader.hexdigest()))
        sink.commit()
    except BaseException:
        sink.abort()
        raise
    meter.finish()
    digest = tree_digest(digests) if source.tree else digests[0][1]
    return TransferResult(source.uri, sink.uri, meter.done, digest, len(digests),
                          fetched=meter.done)
