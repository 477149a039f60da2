"""The node agent's image store: ``docker://`` images pulled by digest and unpacked once.

Layout under the store's ``root``::

    images.json            digest -> reference, size, last use, image config (atomic writes)
    oci/<algo>-<hex>/      the OCI layout that ``skopeo copy`` wrote for that digest
    rootfs/<algo>-<hex>/   its root filesystem, unpacked once by ``umoci raw unpack`` and
                           shared read-only by every container of that digest
    tmp/                   work in progress; emptied when a store opens

An image is complete only once its entry is in ``images.json``; pulls unpack into
``tmp/`` and rename into place before writing the entry, and a store that opens drops
directories without an entry, so a crash never leaves a half image that looks whole.

Every pull asks the registry for the reference's digest (``skopeo inspect``) with
that request's credentials, so credentials are checked even when the digest is
already here; only then does a cached image return at once. Credentials reach
skopeo through a private auth file (mode 0600, removed afterwards), never on a
command line, in a log line, a progress message or an error.

Reference counts (:meth:`ImageStore.acquire`) live in memory only: whoever runs
containers re-acquires the images of the containers it finds after a restart.
One process at a time uses a store root (the agent's state-dir lock ensures it).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from fuzz.errors import FuzzError
from fuzz.substrate.statedir import read_json, write_json_atomic

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

META_FILE = "images.json"
LAYOUT_TAG = "image"
DOCKER_HUB = "docker.io"
INSPECT_TIMEOUT = 120.0
PULL_TIMEOUT = 3600.0
UNPACK_TIMEOUT = 1800.0
SYSTEM_POLICY = Path("/etc/containers/policy.json")
# How stale the use times in images.json may get: writing the file on every job start
# and end (a rename each, about 0.7 ms on ext4) was a tenth of a short job's start.
# Use times only order eviction, so after an agent restart they may be this old.
USE_TIME_SAVE_INTERVAL = 60.0
ACCEPT_ANYTHING_POLICY = {"default": [{"type": "insecureAcceptAnything"}]}
MIN_SCRUB_LEN = 3  # shorter secrets would mangle every message they are scrubbed from

_DIGEST = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[0-9a-f]{32,}$")
_MSG = re.compile(r'msg="((?:[^"\\]|\\.)*)"')
_UNREACHABLE = (
    ("connection refused", "connection refused"),
    ("no such host", "no such host"),
    ("i/o timeout", "timed out"),
    ("tls handshake timeout", "TLS handshake timed out"),
    ("network is unreachable", "network is unreachable"),
    ("no route to host", "no route to host"),
    ("connection reset by peer", "connection reset by peer"),
)
_NOT_FOUND = ("manifest unknown", "name unknown", "repository name not known", "statuscode: 404")
_AUTH = ("unauthorized", "authentication required", "denied", "statuscode: 401")


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


class ImageError(FuzzError):
    """An image could not be pulled, unpacked or found in the store."""


class ImageNotFoundError(ImageError):
    """The registry has no such repository, tag or digest."""


class ImageAuthError(ImageError):
    """The registry refused the request's credentials (or wants some)."""


class RegistryUnreachableError(ImageError):
    """The registry did not answer (refused, unresolvable, timed out)."""


@dataclass(frozen=True)
class Credentials:
    """A registry user name and password for one pull request."""

    username: str
    password: str = field(repr=False)

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password='***')"

    __str__ = __repr__


@dataclass(frozen=True)
class ImageConfig:
    """What a container of the image runs by default (from the OCI image config)."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""

    @classmethod
    def from_oci(cls, config: Mapping[str, Any]) -> ImageConfig:
        """Read the ``config`` object of an OCI image configuration blob."""
        inner = config.get("config") or {}
        return cls(
            entrypoint=tuple(inner.get("Entrypoint") or ()),
            cmd=tuple(inner.get("Cmd") or ()),
            env=tuple(inner.get("Env") or ()),
            working_dir=str(inner.get("WorkingDir") or ""),
            user=str(inner.get("User") or ""),
        )

    def to_json(self) -> dict[str, Any]:
        """This config as a JSON object for the store's metadata."""
        return {
            "entrypoint": list(self.entrypoint),
            "cmd": list(self.cmd),
            "env": list(self.env),
            "working_dir": self.working_dir,
            "user": self.user,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ImageConfig:
        """The inverse of :meth:`to_json`."""
        return cls(
            entrypoint=tuple(data.get("entrypoint", ())),
            cmd=tuple(data.get("cmd", ())),
            env=tuple(data.get("env", ())),
            working_dir=str(data.get("working_dir", "")),
            user=str(data.get("user", "")),
        )


@dataclass(frozen=True)
class Image:
    """An unpacked image; ``rootfs`` is shared by all its containers and never modified."""

    reference: str
    digest: str
    rootfs: Path
    config: ImageConfig
    size_bytes: int


@dataclass(frozen=True)
class ImageRef:
    """A parsed ``docker://`` reference."""

    text: str  # as the user wrote it
    registry: str  # host[:port]; docker.io for Docker Hub
    repository: str
    tag: str | None
    digest: str | None

    def pinned(self, digest: str) -> str:
        """The skopeo reference of this repository at ``digest``."""
        return f"docker://{self.registry}/{self.repository}@{digest}"

    def __str__(self) -> str:
        return self.text


def parse_reference(reference: str) -> ImageRef:
    """Parse ``docker://[HOST[:PORT]/]REPO[:TAG][@DIGEST]`` (a tag defaults to ``latest``)."""
    text = reference.strip()
    if not text.startswith("docker://"):
        raise ImageError(f"image reference {reference!r} must start with docker://")
    rest = text[len("docker://") :]
    digest: str | None = None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST.match(digest):
            raise ImageError(f"image reference {text} has a malformed digest {digest!r}")
    first, _, remainder = rest.partition("/")
    if remainder and ("." in first or ":" in first or first == "localhost"):
        registry, name = first, remainder
    else:
        registry, name = DOCKER_HUB, rest
        if "/" not in name:
            name = f"library/{name}"
    tag: str | None = None
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = name.rsplit(":", 1)
    if not name or name.endswith("/") or tag == "" or any(c.isspace() for c in text):
        raise ImageError(f"image reference {text!r} is not of the form docker://HOST/REPO:TAG")
    if tag is None and digest is None:
        tag = "latest"
    return ImageRef(text, registry, name, tag, digest)


def _skopeo_message(stderr: str) -> str:
    """skopeo's last stderr line, without its logrus decoration."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    if not lines:
        return "no error output"
    last = lines[-1].strip()
    match = _MSG.search(last)
    if match:
        last = match.group(1).replace('\\"', '"').replace("\\\\", "\\")
    return last


def classify_skopeo_error(stderr: str, ref: ImageRef, with_credentials: bool) -> ImageError:
    """Turn skopeo's stderr about ``ref`` into the matching typed error."""
    message = _skopeo_message(stderr)
    low = message.lower()
    host = ref.registry
    for needle, reason in _UNREACHABLE:
        if needle in low:
            return RegistryUnreachableError(f"registry {host} is not reachable: {reason}")
    if any(needle in low for needle in _NOT_FOUND):
        return ImageNotFoundError(f"image {ref} not found in registry {host}")
    if any(needle in low for needle in _AUTH):
        if with_credentials:
            return ImageAuthError(f"registry {host} refused the credentials for {ref}")
        return ImageAuthError(f"registry {host} requires credentials for {ref}")
    if "server gave http response to https client" in low:
        return ImageError(
            f"registry {host} speaks plain HTTP; list it in insecure_registries to pull {ref}: "
            f"{message}"
        )
    return ImageError(f"pulling {ref} failed: {message}")


def _scrub(text: str, credentials: Credentials | None) -> str:
    """``text`` with the password masked (defence in depth: skopeo never prints it)."""
    if credentials is None or len(credentials.password) < MIN_SCRUB_LEN:
        return text
    secret = credentials.password
    encoded = base64.b64encode(f"{credentials.username}:{secret}".encode()).decode()
    return text.replace(secret, "***").replace(encoded, "***")


@contextlib.contextmanager
def _auth_file(credentials: Credentials | None, registry: str) -> Iterator[Path | None]:
    """A containers-auth.json for ``registry`` in a private directory, removed on exit."""
    if credentials is None:
        yield None
        return
    shm = Path("/dev/shm")  # memory-backed where available: the secret never hits a disk
    base = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    directory = Path(tempfile.mkdtemp(prefix="fuzz-auth-", dir=base))
    path = directory / "auth.json"
    try:
        token = base64.b64encode(f"{credentials.username}:{credentials.password}".encode())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"auths": {registry: {"auth": token.decode()}}}, handle)
        yield path
    finally:
        path.unlink(missing_ok=True)
        directory.rmdir()


def tree_size(path: Path) -> int:
    """Bytes taken by the files and links under ``path`` (hard links counted once)."""
    total = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(path):
        for name in (*dirnames, *filenames):
            try:
                info = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if stat.S_ISDIR(info.st_mode):
                continue
            key = (info.st_dev, info.st_ino)
            if info.st_nlink > 1:
                if key in seen:
                    continue
                seen.add(key)
            total += info.st_size
    return total


def _remove_tree(path: Path) -> None:
    """Remove ``path`` even where the image made directories read-only."""

    def retry(func: Callable[..., Any], target: str, *_exc: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(target), stat.S_IRWXU)
        with contextlib.suppress(OSError):
            os.chmod(target, stat.S_IRWXU)
        func(target)

    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        if sys.version_info >= (3, 12):
            shutil.rmtree(path, onexc=retry)
        else:
            shutil.rmtree(path, onerror=retry)


def read_layout_config(layout: Path, tag: str) -> ImageConfig:
    """The image config of ``tag`` in the OCI layout at ``layout``."""

    def blob(digest: str) -> dict[str, Any]:
        algo, _, hexpart = digest.partition(":")
        data = json.loads((layout / "blobs" / algo / hexpart).read_text())
        if not isinstance(data, dict):
            raise ValueError(f"blob {digest} is not a JSON object")
        return data

    index = json.loads((layout / "index.json").read_text())
    manifests = index.get("manifests") or []
    chosen = [
        m
        for m in manifests
        if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") == tag
    ] or manifests
    if not chosen:
        raise ValueError(f"OCI layout {layout} has no manifest")
    manifest = blob(chosen[0]["digest"])
    return ImageConfig.from_oci(blob(manifest["config"]["digest"]))


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


def _key(digest: str) -> str:
    """The directory name for ``digest`` (no ``:``, which overlayfs options cannot hold)."""
    return digest.replace(":", "-", 1)


class ImageStore:
    """A node-local, size-bounded store of unpacked ``docker://`` images, keyed by digest.

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
        self.insecure_registries = frozenset(insecure_registries)
        self._skopeo = skopeo
        self._umoci = umoci
        self._lock = threading.Lock()  # guards _entries, _refs, _flights and images.json
        self._flights: dict[str, threading.Lock] = {}
        self._refs: dict[str, int] = {}
        self._entries: dict[str, _Entry] = {}
        self._resolve_ttl = resolve_ttl
        self._resolved: dict[tuple[str, str], tuple[str, float]] = {}
        self._use_times_saved = 0.0  # time.monotonic() of the last save
        for sub in ("oci", "rootfs", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / "rootfs", 0o755)
        self._policy = self._policy_file()
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
                progress(_scrub(message, credentials))

        key = (ref.text, _fingerprint(credentials))
        recent = self._recently_resolved(key)
        if recent is not None:
            image = self._lookup(recent, ref.text, acquire)
            if image is not None:
                report(f"ready {recent} ({image.size_bytes / 2**20:.1f} MiB, resolved recently)")
                return image
        with _auth_file(credentials, ref.registry) as authfile:
            report(f"resolving {ref}")
            digest = self._resolve(ref, authfile, credentials)
            with self._lock:
                self._resolved[key] = (digest, time.monotonic() + self._resolve_ttl)
            image = self._lookup(digest, ref.text, acquire)
            if image is None:
                with self._flight(digest):
                    image = self._lookup(digest, ref.text, acquire)
                    if image is None:
                        image = self._fetch(ref, digest, authfile, credentials, report, acquire)
        self._evict(keep=digest)
        report(f"ready {digest} ({image.size_bytes / 2**20:.1f} MiB)")
        return image

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

    # -- pulling --------------------------------------------------------------------

    def _tls_flag(self, ref: ImageRef, prefix: str) -> list[str]:
        if ref.registry in self.insecure_registries:
            return [f"--{prefix}tls-verify=false"]
        return []

    def _auth_flags(self, authfile: Path | None, prefix: str) -> list[str]:
        if authfile is None:
            return [f"--{prefix}no-creds"]  # never the node's own credentials
        return [f"--{prefix}authfile", str(authfile)]

    def _env(self) -> dict[str, str]:
        return {**os.environ, "TMPDIR": str(self.root / "tmp")}

    def _resolve(
        self, ref: ImageRef, authfile: Path | None, credentials: Credentials | None
    ) -> str:
        """The digest ``ref`` names now, asked of the registry with the request's credentials."""
        target = (
            ref.pinned(ref.digest)
            if ref.digest
            else (f"docker://{ref.registry}/{ref.repository}:{ref.tag}")
        )
        argv = [
            self._skopeo,
            "inspect",
            "--no-tags",
            "--format",
            "{{.Digest}}",
            *self._tls_flag(ref, ""),
            *self._auth_flags(authfile, ""),
            target,
        ]
        log.debug("resolving %s: %s", ref, argv)
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=INSPECT_TIMEOUT,
                env=self._env(),
                check=False,
            )
        except FileNotFoundError:
            raise ImageError(f"{self._skopeo} is not installed (apt-get install skopeo)") from None
        except subprocess.TimeoutExpired:
            raise RegistryUnreachableError(
                f"registry {ref.registry} is not reachable: no answer in {INSPECT_TIMEOUT:.0f}s"
            ) from None
        if done.returncode != 0:
            error = classify_skopeo_error(done.stderr, ref, credentials is not None)
            raise type(error)(_scrub(str(error), credentials))
        digest = done.stdout.strip()
        if not _DIGEST.match(digest):
            raise ImageError(f"skopeo returned no digest for {ref}: {digest[:80]!r}")
        return digest

    def _fetch(
        self,
        ref: ImageRef,
        digest: str,
        authfile: Path | None,
        credentials: Credentials | None,
        report: Progress,
        acquire: bool,
    ) -> Image:
        """Copy ``digest`` into an OCI layout, unpack it, and record it (all or nothing)."""
        key = _key(digest)
        work = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=self.root / "tmp"))
        layout, rootfs = work / "layout", work / "rootfs"
        try:
            report(f"pulling {digest} from {ref.registry}")
            self._copy(ref, digest, layout, authfile, credentials, report)
            report(f"unpacking {digest}")
            self._unpack(digest, layout, rootfs)
            try:
                config = read_layout_config(layout, LAYOUT_TAG)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ImageError(f"image {ref} has an unreadable config: {exc}") from None
            mode = stat.S_IMODE(os.lstat(rootfs).st_mode)
            os.chmod(rootfs, mode & ~0o022)  # nobody but its owner may write the shared tree
            size = tree_size(layout) + tree_size(rootfs)
            final_layout, final_rootfs = self.root / "oci" / key, self.root / "rootfs" / key
            for stale in (final_layout, final_rootfs):  # left by a failed commit
                _remove_tree(stale)
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
            _remove_tree(work)

    def _copy(
        self,
        ref: ImageRef,
        digest: str,
        layout: Path,
        authfile: Path | None,
        credentials: Credentials | None,
        report: Progress,
    ) -> None:
        argv = [
            self._skopeo,
            *(["--policy", str(self._policy)] if self._policy else []),
            "copy",
            "--remove-signatures",
            *self._tls_flag(ref, "src-"),
            *self._auth_flags(authfile, "src-"),
            ref.pinned(digest),
            f"oci:{layout}:{LAYOUT_TAG}",
        ]
        log.debug("pulling %s: %s", ref, argv)
        with tempfile.TemporaryFile(mode="w+", dir=self.root / "tmp") as errors:
            returncode = self._stream(argv, errors, PULL_TIMEOUT, report)
            errors.seek(0)
            stderr = errors.read()
        if returncode is None:
            raise ImageError(f"pulling {ref} timed out after {PULL_TIMEOUT:.0f}s")
        if returncode != 0:
            error = classify_skopeo_error(stderr, ref, credentials is not None)
            raise type(error)(_scrub(str(error), credentials))

    def _stream(
        self, argv: list[str], errors: IO[str], timeout: float, report: Progress
    ) -> int | None:
        """Run skopeo, forwarding its per-blob lines; its exit code, None on timeout."""
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
                env=self._env(),
            )
        except FileNotFoundError:
            raise ImageError(f"{self._skopeo} is not installed (apt-get install skopeo)") from None
        timed_out = threading.Event()

        def expire() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(timeout, expire)
        timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith("Copying "):
                    report(line.strip())
            returncode = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return None if timed_out.is_set() else returncode

    def _unpack(self, digest: str, layout: Path, rootfs: Path) -> None:
        argv = [self._umoci, "raw", "unpack"]
        if os.geteuid() != 0:
            argv.append("--rootless")
        argv += ["--image", f"{layout}:{LAYOUT_TAG}", str(rootfs)]
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=UNPACK_TIMEOUT,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except FileNotFoundError:
            raise ImageError(f"{self._umoci} is not installed (apt-get install umoci)") from None
        except subprocess.TimeoutExpired:
            raise ImageError(f"unpacking {digest} timed out after {UNPACK_TIMEOUT:.0f}s") from None
        if done.returncode != 0:
            lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
            last = lines[-1].strip() if lines else f"exit code {done.returncode}"
            raise ImageError(f"unpacking {digest} failed: {last}")

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
            rootfs=self.root / "rootfs" / _key(digest),
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
                key = _key(digest)
                grave = Path(tempfile.mkdtemp(prefix=f"evicted-{key}.", dir=self.root / "tmp"))
                for sub in ("rootfs", "oci"):
                    source = self.root / sub / key
                    if source.exists():
                        os.rename(source, grave / sub)
                doomed.append(grave)
            if evicted:
                self._save()
        for grave in doomed:
            _remove_tree(grave)
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
            _remove_tree(leftover)
        data = read_json(self.root / META_FILE) or {}
        entries: dict[str, _Entry] = {}
        for digest, raw in (data.get("images") or {}).items():
            key = _key(digest)
            complete = (self.root / "rootfs" / key).is_dir() and (self.root / "oci" / key).is_dir()
            try:
                if complete and isinstance(raw, dict):
                    entries[digest] = _Entry.from_json(raw)
            except (KeyError, TypeError, ValueError):
                continue
        keys = {_key(digest) for digest in entries}
        for sub in ("rootfs", "oci"):
            for child in (self.root / sub).iterdir():
                if child.name not in keys:
                    log.info("removing incomplete image directory %s", child)
                    _remove_tree(child)
        with self._lock:
            self._entries = entries
            self._save()

    def _policy_file(self) -> Path | None:
        """The system signature policy if there is one, else our accept-anything policy."""
        if SYSTEM_POLICY.exists():
            return None
        path = self.root / "policy.json"
        write_json_atomic(path, ACCEPT_ANYTHING_POLICY)
        return path
