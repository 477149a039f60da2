"""Pulling with ``skopeo`` (resolve a reference, copy a digest into an OCI layout) and
unpacking with ``umoci``.

Credentials reach skopeo through a private auth file (:func:`auth_file`, mode 0600,
removed afterwards), never on a command line, in a log line, a progress message or
an error (:func:`scrub`); without credentials skopeo is told to use none, never the
node's own. skopeo's stderr becomes a typed error (:func:`classify_skopeo_error`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
import subprocess
import tempfile
import threading
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from fuzz.fsutil import write_json_atomic
from fuzz.substrate.images.layout import LAYOUT_TAG, ImageConfig, read_layout_config
from fuzz.substrate.images.reference import (
    Credentials,
    ImageAuthError,
    ImageError,
    ImageNotFoundError,
    ImageRef,
    RegistryUnreachableError,
    is_digest,
)

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

INSPECT_TIMEOUT = 120.0
PULL_TIMEOUT = 3600.0
UNPACK_TIMEOUT = 1800.0
SYSTEM_POLICY = Path("/etc/containers/policy.json")
ACCEPT_ANYTHING_POLICY = {"default": [{"type": "insecureAcceptAnything"}]}
MIN_SCRUB_LEN = 3  # shorter secrets would mangle every message they are scrubbed from

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


def scrub(text: str, credentials: Credentials | None) -> str:
    """``text`` with the password masked (defence in depth: skopeo never prints it)."""
    if credentials is None or len(credentials.password) < MIN_SCRUB_LEN:
        return text
    secret = credentials.password
    encoded = base64.b64encode(f"{credentials.username}:{secret}".encode()).decode()
    return text.replace(secret, "***").replace(encoded, "***")


@contextlib.contextmanager
def auth_file(credentials: Credentials | None, registry: str) -> Iterator[Path | None]:
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


def policy_file(root: Path) -> Path | None:
    """The signature policy for skopeo copy: None (the system's) when there is one, else
    our accept-anything policy, written into ``root``."""
    if SYSTEM_POLICY.exists():
        return None
    path = root / "policy.json"
    write_json_atomic(path, ACCEPT_ANYTHING_POLICY)
    return path


class Puller:
    """Runs ``skopeo`` and ``umoci`` for a store: ``tmp`` is its work directory.

    ``insecure_registries`` (``host:port``) are reached over plain HTTP or with
    unverified TLS; ``policy`` is the signature policy file to give skopeo copy
    (None: the system's).
    """

    def __init__(
        self,
        tmp: Path,
        *,
        insecure_registries: Collection[str] = (),
        skopeo: str = "skopeo",
        umoci: str = "umoci",
        policy: Path | None = None,
    ) -> None:
        self.tmp = tmp
        self.insecure_registries = frozenset(insecure_registries)
        self._skopeo = skopeo
        self._umoci = umoci
        self._policy = policy

    def _tls_flag(self, ref: ImageRef, prefix: str) -> list[str]:
        if ref.registry in self.insecure_registries:
            return [f"--{prefix}tls-verify=false"]
        return []

    def _auth_flags(self, authfile: Path | None, prefix: str) -> list[str]:
        if authfile is None:
            return [f"--{prefix}no-creds"]  # never the node's own credentials
        return [f"--{prefix}authfile", str(authfile)]

    def _env(self) -> dict[str, str]:
        return {**os.environ, "TMPDIR": str(self.tmp)}

    def resolve(
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
            raise type(error)(scrub(str(error), credentials))
        digest = done.stdout.strip()
        if not is_digest(digest):
            raise ImageError(f"skopeo returned no digest for {ref}: {digest[:80]!r}")
        return digest

    def copy(
        self,
        ref: ImageRef,
        digest: str,
        layout: Path,
        authfile: Path | None,
        credentials: Credentials | None,
        report: Progress,
    ) -> None:
        """Copy ``ref`` at ``digest`` into the OCI layout ``layout``, reporting each blob."""
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
        with tempfile.TemporaryFile(mode="w+", dir=self.tmp) as errors:
            returncode = self._stream(argv, errors, PULL_TIMEOUT, report)
            errors.seek(0)
            stderr = errors.read()
        if returncode is None:
            raise ImageError(f"pulling {ref} timed out after {PULL_TIMEOUT:.0f}s")
        if returncode != 0:
            error = classify_skopeo_error(stderr, ref, credentials is not None)
            raise type(error)(scrub(str(error), credentials))

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

    def unpack(self, digest: str, layout: Path, rootfs: Path) -> None:
        """Unpack the image ``digest`` of the OCI layout ``layout`` into ``rootfs``."""
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


class ImageSource(Protocol):
    """One pull of one reference: the digest it names now, and fetching that digest."""

    def resolve(self) -> str:
        """The digest the reference names now, asked of the registry."""
        ...

    def fetch(self, digest: str, layout: Path, rootfs: Path, report: Progress) -> ImageConfig:
        """Fetch ``digest`` into ``layout`` (kept with the image), unpack its root
        filesystem into ``rootfs``, and return its config."""
        ...


@dataclass(frozen=True)
class DockerSource:
    """A ``docker://`` image pulled by skopeo and unpacked by umoci."""

    puller: Puller
    ref: ImageRef
    authfile: Path | None
    credentials: Credentials | None

    def resolve(self) -> str:
        """The digest ``skopeo inspect`` reports for the reference."""
        return self.puller.resolve(self.ref, self.authfile, self.credentials)

    def fetch(self, digest: str, layout: Path, rootfs: Path, report: Progress) -> ImageConfig:
        """``skopeo copy`` into an OCI layout, ``umoci raw unpack``, and the layout's config."""
        self.puller.copy(self.ref, digest, layout, self.authfile, self.credentials, report)
        report(f"unpacking {digest}")
        self.puller.unpack(digest, layout, rootfs)
        try:
            return read_layout_config(layout, LAYOUT_TAG)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ImageError(f"image {self.ref} has an unreadable config: {exc}") from None
