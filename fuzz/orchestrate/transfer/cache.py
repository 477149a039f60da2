"""The ingress cache: each version of an ingress source fetched once per cluster.

An entry is keyed by its source's identity and version
(:class:`~fuzz.orchestrate.transfer.versions.SourceVersion`: S3 bucket, key, ETag or
VersionId and size; HTTP ETag or Last-Modified and size; a host file's sha256), never by
who fetched it: whether a user may have it is asked of the source again for every
ingress, before the cache is looked at. Layout, under the orchestrator's data dir
(``DATA_DIR/cache``, root's only, 0700)::

    entries/<key>/data        the file, or the tree (files 0444, owned by the server)
    entries/<key>/meta.json   source, version, size, sha256, created, last used, uses
    staging/                  entries being filled, and evicted ones being removed
    locks/<key>.lock          flock(2): one filler (or evicter) of a key at a time

An entry is filled in ``staging/``, its files and ``meta.json`` synced, and then renamed
into ``entries/`` whole: a crash (or SIGKILL) leaves at most a staging directory, which
the next start removes, so a partial download never enters the cache. A second ingress
of a key being filled waits on its lock and then finds the entry. Past the quota, the
least recently used entries not in use are evicted (renamed out, then removed).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from fuzz.orchestrate.transfer.confined import Directory
from fuzz.orchestrate.transfer.stream import TransferResult
from fuzz.orchestrate.transfer.versions import SourceVersion

ENTRIES, STAGING, LOCKS = "entries", "staging", "locks"
DATA, META = "data", "meta.json"


@dataclass(frozen=True)
class CacheEntry:
    """One cached version of a source: what it is, how big, when last used."""

    key: str
    source: str
    version: str
    name: str  # the file's own name (a single file placed into a directory takes it)
    tree: bool
    size: int
    files: int
    sha256: str
    created: float
    last_used: float
    uses: int


Fill = Callable[[Directory, str], TransferResult]
"""Fetches the source into the open staging directory under the name given."""


class IngressCache:
    """The cluster's ingress cache in ``root``, held to ``quota`` bytes (LRU eviction).

    Thread- and process-safe: every fill, use and eviction of a key holds its lock.
    """

    def __init__(self, root: Path, quota: int, clock: Callable[[], float] = time.time) -> None:
        """Open (make) the cache at ``root``; what a crash left in staging is removed."""
        self.root = root
        self.quota = quota
        self._clock = clock
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        root.chmod(0o700)
        for part in (ENTRIES, STAGING, LOCKS):
            (root / part).mkdir(mode=0o700, exist_ok=True)
        for leftover in (root / STAGING).iterdir():
            shutil.rmtree(leftover, ignore_errors=True)

    def entries(self) -> list[CacheEntry]:
        """Every complete entry, least recently used first."""
        found = []
        for directory in (self.root / ENTRIES).iterdir():
            entry = self._read(directory.name)
            if entry is not None:
                found.append(entry)
        return sorted(found, key=lambda e: (e.last_used, e.key))

    @contextlib.contextmanager
    def holding(self, version: SourceVersion, fill: Fill
                ) -> Iterator[tuple[CacheEntry, Directory, int]]:
        """The entry of ``version`` (filled with ``fill`` first when missing), its open
        directory, and the bytes fetched for it now (0: it was there). The entry cannot be
        evicted while held; entries past the quota are evicted after."""
        key = version.key
        with self._locked(key, wait=True):
            entry = self._read(key)
            fetched = 0
            if entry is None:
                entry, fetched = self._fill(version, fill)
            entry = replace(entry, last_used=self._clock(), uses=entry.uses + 1)
            self._write_meta(self.root / ENTRIES / key, entry)
            with Directory.open(self.root / ENTRIES / key, None, "the ingress cache") as held:
                yield entry, held, fetched
        self.evict(keep=key)

    def evict(self, keep: str = "") -> list[CacheEntry]:
        """Remove the least recently used entries (never ``keep``, nor one in use) until
        the cache holds at most its quota; returns what was removed."""
        entries = self.entries()
        total = sum(entry.size for entry in entries)
        removed = []
        for entry in entries:
            if total <= self.quota:
                break
            if entry.key != keep and self._remove(entry.key):
                removed.append(entry)
                total -= entry.size
        return removed

    def prune(self) -> list[CacheEntry]:
        """Remove every entry not in use; returns what was removed."""
        return [entry for entry in self.entries() if self._remove(entry.key)]

    @contextlib.contextmanager
    def _locked(self, key: str, wait: bool) -> Iterator[bool]:
        """Hold ``key``'s lock (False, not held, when ``wait`` is off and another has it)."""
        fd = os.open(self.root / LOCKS / f"{key}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                     0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # and with it the lock

    def _remove(self, key: str) -> bool:
        with self._locked(key, wait=False) as held:
            if not held:
                return False
            gone = tempfile.mkdtemp(prefix=f"evicted.{key}.", dir=self.root / STAGING)
            try:  # out of entries/ at once, then deleted at leisure
                with contextlib.suppress(FileNotFoundError):
                    os.rename(self.root / ENTRIES / key, Path(gone, key))
            finally:
                shutil.rmtree(gone, ignore_errors=True)
            return True

    def _read(self, key: str) -> CacheEntry | None:
        try:
            data = json.loads((self.root / ENTRIES / key / META).read_text())
            return CacheEntry(**data)
        except (OSError, ValueError, TypeError):
            return None

    def _fill(self, version: SourceVersion, fill: Fill) -> tuple[CacheEntry, int]:
        staging = Path(tempfile.mkdtemp(prefix=f"{version.key}.", dir=self.root / STAGING))
        try:
            staging.chmod(0o755)
            with Directory.open(staging, None, "the ingress cache") as directory:
                result = fill(directory, DATA)
            now = self._clock()
            entry = CacheEntry(version.key, version.source, version.version, version.name,
                               (staging / DATA).is_dir(), result.size, result.files,
                               result.sha256, now, now, 0)
            self._write_meta(staging, entry)
            _sync_tree(staging)
            final = self.root / ENTRIES / version.key
            shutil.rmtree(final, ignore_errors=True)  # an entry whose meta was unreadable
            os.rename(staging, final)
            _sync(self.root / ENTRIES)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return entry, result.fetched

    @staticmethod
    def _write_meta(directory: Path, entry: CacheEntry) -> None:
        """Write ``meta.json`` atomically (a new file renamed over the old)."""
        fd, temporary = tempfile.mkstemp(prefix=".meta.", dir=directory)
        with os.fdopen(fd, "w") as handle:
            json.dump(asdict(entry), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)
        os.rename(temporary, directory / META)


def _sync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_tree(root: Path) -> None:
    """fsync every file and directory under ``root``, so a rename of it is durable whole."""
    for directory, _, files in os.walk(root):
        for name in files:
            _sync(Path(directory, name))
        _sync(Path(directory))
