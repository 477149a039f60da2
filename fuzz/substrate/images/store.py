"""The node agent's image store: ``docker://`` and ``oras://`` images pulled by digest and
unpacked once.

Layout under the store's ``root``::

    images.json            digest -> reference, size, last use, image config (atomic writes)
    oci/<algo>-<hex>/      the OCI layout that ``skopeo copy`` wrote for that digest
                           (for an ``oras://`` SIF image: its manifest only)
    rootfs/<algo>-<hex>/   its root filesystem, unpacked once by ``umoci raw unpack`` (or
                           ``unsquashfs`` from the SIF) and shared read-only by every
                           container of that digest
    tmp/                   work in progress; emptied when a store opens

An image is complete only once its entry is in ``images.json``; pulls unpack into
``tmp/`` and rename into place before writing the entry, and a store that opens drops
directories without an entry, so a crash never leaves a half image that looks whole.

Every pull asks the registry for the reference's digest (``skopeo inspect``) with
that request's credentials, so credentials are checked even when the digest is
already here; only then does a cached image return at once. Credentials reach
skopeo through a private auth file (mode 0600, removed afterwards), never on a
command line, in a log line, a progress message or an error
(:mod:`fuzz.substrate.images.pull` runs skopeo and umoci).

Reference counts (:meth:`ImageStore.acquire`) live in memory only: whoever runs
containers re-acquires the images of the containers it finds after a restart.
One process at a time uses a store root (the agent's state-dir lock ensures it).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import stat
import tempfile
import threading
import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fuzz.fsutil import read_json, write_json_atomic
from fuzz.substrate.images.layout import ImageConfig, layout_key, remove_tree, tree_size
from fuzz.substrate.images.pull import (
    DockerSource,
    ImageSource,
    Progress,
    Puller,
    auth_file,
    policy_file,
    scrub,
)
from fuzz.substrate.images.reference import Credentials, ImageError, ImageRef, parse_reference

log = logging.getLogger(__name__)

META_FILE = "images.json"
# How stale the use times in images.json may get: writing the file on every job start
# and end (a rename each, about 0.7 ms on ext4) was a tenth of a short job's start.
# Use times only order eviction, so after an agent restart they may be this old.
USE_TIME_SAVE_INTERVAL = 60.0

# A tag resolved to a digest with the same credentials this recently is not asked of
# the registry again: many jobs starting from one image cost one round trip (a
# `skopeo inspect`, tens of milliseconds) per TTL instead of one each.
RESOLVE_TTL = 30.0


def _fingerprint(credentials: Credentials | None) -> str:
    """A digest of the credentials, so cached resolutions are per credentials (memory only)."""
    if credentials is None:
        return ""
    text = f"{credentials.username}\0{credentials.password}".encode()
    return hashlib.sha256(text).hexdigest()


@dataclass(frozen=True)
class Image:
    """An unpacked image; ``rootfs`` is shared by all its containers and never modified."""

    reference: str
    digest: str
    rootfs: Path
    config: ImageConfig
    size_bytes: int


@dataclass
class _Entry:
    """What the store remembers of one digest."""

    reference: str
    size_bytes: int
    last_used: float
    config: ImageConfig

    def to_json(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "size_bytes": self.size_bytes,
            "last_used": self.last_used,
            "config": self.config.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> _Entry:
        return cls(
            reference=str(data["reference"]),
            size_bytes=int(data["size_bytes"]),
            last_used=float(data["last_used"]),
            config=ImageConfig.from_json(data.get("config") or {}),
        )


class ImageStore:
    """A node-local, size-bounded store of unpacked ``docker://`` and ``oras://`` images,
    keyed by digest.

    ``max_bytes`` bounds the store: after every pull, and on :meth:`evict`, the least
    recently used images that no container holds are removed until it fits.
    ``insecure_registries`` (``host:port``) are reached over plain HTTP or with
    unverified TLS. ``skopeo`` and ``umoci`` name the programs to run.
    """

    def __init__(
        self,
        root: Path,
        max_bytes: int,
        *,
        insecure_registries: Collection[str] = (),
        skopeo: str = "skopeo",
        umoci: str = "umoci",
        resolve_ttl: float = RESOLVE_TTL,
    ) -> None:
        if ":" in str(root):
            raise ImageError(f"image store path {root} must not contain ':'")
        self.root = Path(root)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()  # guards _entries, _refs, _flights and images.json
        self._flights: dict[str, threading.Lock] = {}
        self._refs: dict[str, int] = {}
        self._entries: dict[str, _Entry] = {}
        self._resolve_ttl = resolve_ttl
        self._resolved: dict[tuple[str, str], tuple[str, float]] = {}
        self._use_times_saved = 0.0  # time.monotonic() of the last save
        self.fetches = 0  # images fetched from a registry by this process (for /metrics)
        self.fetched_bytes = 0  # their unpacked size
        for sub in ("oci", "rootfs", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / "rootfs", 0o755)
        self._puller = Puller(self.root / "tmp", insecure_registries=insecure_registries,
                              skopeo=skopeo, umoci=umoci, policy=policy_file(self.root))
        self._insecure_registries = tuple(insecure_registries)
        self._recover()

    # -- public API ---------------------------------------------------------------

    def pull(
        self,
        reference: str,
        credentials: Credentials | None = None,
        progress: Progress | None = None,
        *,
        acquire: bool = False,
    ) -> Image:
        """Resolve ``reference``, fetch and unpack its digest unless already here, return it.

        Concurrent pulls of one digest share a single fetch. With ``acquire`` the image
        comes back already held (as by :meth:`acquire`), so no eviction can slip in
        between the pull and its use. Raises ImageNotFoundError, ImageAuthError,
        RegistryUnreachableError or ImageError.
        """
        ref = parse_reference(reference)

        def report(message: str) -> None:
            if progress is not None:
                progress(scrub(message, credentials))

        key = (ref.text, _fingerprint(credentials))
        recent = self._recently_resolved(key)
        if recent is not None:
            image = self._lookup(recent, ref.text, acquire)
            if image is not None:
                report(f"ready {recent} ({image.size_bytes / 2**20:.1f} MiB, resolved recently)")
                return image
        with self._source(ref, credentials) as source:
            report(f"resolving {ref}")
            digest = source.resolve()
            with self._lock:
                self._resolved[key] = (digest, time.monotonic() + self._resolve_ttl)
            image = self._lookup(digest, ref.text, acquire)
            if image is None:
                with self._flight(digest):
                    image = self._lookup(digest, ref.text, acquire)
                    if image is None:
                        image = self._fetch(ref, digest, source, report, acquire)
                        with self._lock:
                            self.fetches += 1
                            self.fetched_bytes += image.size_bytes
        self._evict(keep=digest)
        report(f"ready {digest} ({image.size_bytes / 2**20:.1f} MiB)")
        return image

    @contextlib.contextmanager
    def _source(self, ref: ImageRef, credentials: Credentials | None) -> Iterator[ImageSource]:
        """Where ``ref`` comes from: skopeo and umoci for docker://, ORAS for oras://."""
        if ref.scheme == "oras":
            # Imported here: oras-py and requests take most of a second to import, which
            # only agents that pull SIF images should pay (at their first such pull).
            from fuzz.substrate.images.oras_pull import OrasPuller

            puller = OrasPuller(insecure_registries=self._insecure_registries)
            with puller.source(ref, credentials) as sif:
                yield sif
            return
        with auth_file(credentials, ref.registry) as authfile:
            yield DockerSource(self._puller, ref, authfile, credentials)

    def _recently_resolved(self, key: tuple[str, str]) -> str | None:
        """The digest this reference resolved to, with these credentials, within the TTL."""
        with self._lock:
            found = self._resolved.get(key)
        return found[0] if found is not None and found[1] > time.monotonic() else None

    def acquire(self, digest: str) -> Image:
        """Hold ``digest`` for a container: held images are never evicted."""
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                raise ImageError(f"image {digest} is not in the store")
            self._refs[digest] = self._refs.get(digest, 0) + 1
            self._used(entry)
            return self._image(digest, entry)

    def release(self, digest: str) -> None:
        """Drop one hold taken by :meth:`acquire` (or ``pull(acquire=True)``)."""
        with self._lock:
            count = self._refs.get(digest, 0)
            if count <= 0:
                raise ImageError(f"image {digest} is not in use")
            if count == 1:
                del self._refs[digest]
            else:
                self._refs[digest] = count - 1
            entry = self._entries.get(digest)
            if entry is not None:
                self._used(entry)

    def in_use(self, digest: str) -> int:
        """How many holds ``digest`` has."""
        with self._lock:
            return self._refs.get(digest, 0)

    def evict(self) -> list[str]:
        """Remove least recently used, unheld images until the store fits; their digests."""
        return self._evict(keep=None)

    def images(self) -> list[Image]:
        """The images in the store, most recently used first."""
        with self._lock:
            ordered = sorted(self._entries.items(), key=lambda item: -item[1].last_used)
            return [self._image(digest, entry) for digest, entry in ordered]

    def get(self, digest: str) -> Image | None:
        """The image of ``digest`` if the store has it (does not count as a use)."""
        with self._lock:
            entry = self._entries.get(digest)
            return None if entry is None else self._image(digest, entry)

    def total_bytes(self) -> int:
        """The size of all images in the store."""
        with self._lock:
            return sum(entry.size_bytes for entry in self._entries.values())

    # -- fetching -------------------------------------------------------------------

    def _fetch(
        self,
        ref: ImageRef,
        digest: str,
        source: ImageSource,
        report: Progress,
        acquire: bool,
    ) -> Image:
        """Fetch ``digest`` from ``source``, unpack it, and record it (all or nothing)."""
        key = layout_key(digest)
        work = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=self.root / "tmp"))
        layout, rootfs = work / "layout", work / "rootfs"
        try:
            report(f"pulling {digest} from {ref.registry}")
            config = source.fetch(digest, layout, rootfs, report)
            mode = stat.S_IMODE(os.lstat(rootfs).st_mode)
            os.chmod(rootfs, mode & ~0o022)  # nobody but its owner may write the shared tree
            size = tree_size(layout) + tree_size(rootfs)
            final_layout, final_rootfs = self.root / "oci" / key, self.root / "rootfs" / key
            for stale in (final_layout, final_rootfs):  # left by a failed commit
                remove_tree(stale)
            os.rename(layout, final_layout)
            os.rename(rootfs, final_rootfs)
            entry = _Entry(ref.text, size, time.time(), config)
            with self._lock:
                self._entries[digest] = entry
                if acquire:
                    self._refs[digest] = self._refs.get(digest, 0) + 1
                self._save()
            log.info("pulled %s as %s (%d bytes)", ref, digest, size)
            return self._image(digest, entry)
        finally:
            remove_tree(work)

    @contextlib.contextmanager
    def _flight(self, digest: str) -> Iterator[None]:
        """Hold the per-digest lock, so one digest is fetched by one thread at a time."""
        with self._lock:
            lock = self._flights.setdefault(digest, threading.Lock())
        with lock:
            yield

    # -- bookkeeping ----------------------------------------------------------------

    def _image(self, digest: str, entry: _Entry) -> Image:
        return Image(
            reference=entry.reference,
            digest=digest,
            rootfs=self.root / "rootfs" / layout_key(digest),
            config=entry.config,
            size_bytes=entry.size_bytes,
        )

    def _lookup(self, digest: str, reference: str, acquire: bool) -> Image | None:
        """The stored image of ``digest`` marked as used now (and held if ``acquire``)."""
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            renamed = entry.reference != reference
            entry.reference = reference
            if acquire:
                self._refs[digest] = self._refs.get(digest, 0) + 1
            self._used(entry, save=renamed)
            return self._image(digest, entry)

    def _evict(self, keep: str | None) -> list[str]:
        """Evict LRU unheld images (never ``keep``) until the store fits in ``max_bytes``."""
        doomed: list[Path] = []
        evicted: list[str] = []
        with self._lock:
            total = sum(entry.size_bytes for entry in self._entries.values())
            candidates = sorted(
                (
                    (entry.last_used, digest)
                    for digest, entry in self._entries.items()
                    if digest != keep and self._refs.get(digest, 0) == 0
                ),
            )
            for _, digest in candidates:
                if total <= self.max_bytes:
                    break
                entry = self._entries.pop(digest)
                total -= entry.size_bytes
                evicted.append(digest)
                key = layout_key(digest)
                grave = Path(tempfile.mkdtemp(prefix=f"evicted-{key}.", dir=self.root / "tmp"))
                for sub in ("rootfs", "oci"):
                    source = self.root / sub / key
                    if source.exists():
                        os.rename(source, grave / sub)
                doomed.append(grave)
            if evicted:
                self._save()
        for grave in doomed:
            remove_tree(grave)
        for digest in evicted:
            log.info("evicted image %s", digest)
        return evicted

    def _used(self, entry: _Entry, save: bool = False) -> None:
        """Mark ``entry`` used now; persisted with the next save, or now when ``save`` or
        the last save is older than :data:`USE_TIME_SAVE_INTERVAL` (caller holds ``_lock``)."""
        entry.last_used = time.time()
        if save or time.monotonic() - self._use_times_saved > USE_TIME_SAVE_INTERVAL:
            self._save()

    def _save(self) -> None:
        """Persist the entries (caller holds ``_lock``).

        Not durable (no fsync; it runs on every pull and release): after a node crash a
        lost entry only means its directory is dropped by :meth:`_recover` and pulled again.
        """
        write_json_atomic(
            self.root / META_FILE,
            {"version": 1, "images": {d: e.to_json() for d, e in self._entries.items()}},
            durable=False,
        )
        self._use_times_saved = time.monotonic()

    def _recover(self) -> None:
        """Load the entries, dropping incomplete ones and directories nobody recorded."""
        for leftover in (self.root / "tmp").iterdir():
            remove_tree(leftover)
        data = read_json(self.root / META_FILE) or {}
        entries: dict[str, _Entry] = {}
        for digest, raw in (data.get("images") or {}).items():
            key = layout_key(digest)
            complete = (self.root / "rootfs" / key).is_dir() and (self.root / "oci" / key).is_dir()
            try:
                if complete and isinstance(raw, dict):
                    entries[digest] = _Entry.from_json(raw)
            except (KeyError, TypeError, ValueError):
                continue
        keys = {layout_key(digest) for digest in entries}
        for sub in ("rootfs", "oci"):
            for child in (self.root / sub).iterdir():
                if child.name not in keys:
                    log.info("removing incomplete image directory %s", child)
                    remove_tree(child)
        with self._lock:
            self._entries = entries
            self._save()
