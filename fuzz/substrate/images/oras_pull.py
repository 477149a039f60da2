"""``oras://`` images: Apptainer SIF artifacts pulled with ORAS, unpacked with ``unsquashfs``.

The artifact's manifest is read and its one SIF layer downloaded with oras-py's
registry client (``oras.provider.Registry``: its requests, its Basic and token
authentication), then checked against the layer's digest. Its high-level ``pull``
is not used: it reads the node's own Docker credentials (``~/.docker/config.json``),
where a pull must use only the request's own, and it names files by the artifact's
title annotation. The root filesystem is the SIF's squashfs partition
(:mod:`fuzz.substrate.images.sif`), unpacked in place by ``unsquashfs -o OFFSET``.

A SIF carries no OCI config: its containers get :data:`SIF_CONFIG` (Apptainer's
default ``PATH``; ``/.singularity.d/runscript`` as the command when the image has one).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import subprocess
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import oras.container
import oras.provider
import requests
from requests.adapters import HTTPAdapter

from fuzz.substrate.images.layout import ImageConfig
from fuzz.substrate.images.pull import UNPACK_TIMEOUT, Progress, scrub
from fuzz.substrate.images.reference import (
    Credentials,
    ImageAuthError,
    ImageError,
    ImageNotFoundError,
    ImageRef,
    RegistryUnreachableError,
)
from fuzz.substrate.images.sif import SifFormatError, root_partition

log = logging.getLogger(__name__)

SIF_LAYER_MEDIA_TYPE = "application/vnd.sylabs.sif.layer.v1.sif"
SIF_CONFIG_MEDIA_TYPE = "application/vnd.sylabs.sif.config.v1+json"
MANIFEST_MEDIA_TYPES = ("application/vnd.oci.image.manifest.v1+json",
                        "application/vnd.docker.distribution.manifest.v2+json")
INDEX_MEDIA_TYPES = ("application/vnd.oci.image.index.v1+json",
                     "application/vnd.docker.distribution.manifest.list.v2+json")
APPTAINER_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RUNSCRIPT = "/.singularity.d/runscript"
SIF_CONFIG = ImageConfig(env=(APPTAINER_PATH,))
MANIFEST_FILE = "manifest.json"
REQUEST_TIMEOUT = 60.0  # seconds without an answer (or a byte of a blob) before giving up
MAX_MANIFEST_BYTES = 4 * 2**20


class _TimeoutAdapter(HTTPAdapter):
    """Gives every request of a session a timeout (oras-py sets none: a silent registry
    would hold the pull forever)."""

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any
             ) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = REQUEST_TIMEOUT
        return super().send(request, *args, **kwargs)


def _reason(exc: Exception) -> str:
    """Why a connection failed, in a few words."""
    text = str(exc).lower()
    if "refused" in text:
        return "connection refused"
    if "resolve" in text or "name or service not known" in text:
        return "no such host"
    if "unreachable" in text or "no route" in text:
        return "network is unreachable"
    return "no connection"


def sif_layer(manifest: Any, ref: ImageRef) -> dict[str, Any]:
    """The one SIF layer of the artifact's manifest; ImageError for anything else."""
    if not isinstance(manifest, dict):
        raise ImageError(f"image {ref} has an unreadable manifest")
    if manifest.get("mediaType") in INDEX_MEDIA_TYPES or "manifests" in manifest:
        raise ImageError(f"image {ref} is an image index, not a SIF artifact")
    layers = manifest.get("layers")
    if not isinstance(layers, list) or not all(isinstance(layer, dict) for layer in layers):
        raise ImageError(f"image {ref} has an unreadable manifest")
    types = [str(layer.get("mediaType")) for layer in layers]
    if types != [SIF_LAYER_MEDIA_TYPE]:
        found = ", ".join(types) or "no layers"
        raise ImageError(f"image {ref} is not a SIF image: its layers are {found}, "
                         f"not one {SIF_LAYER_MEDIA_TYPE}")
    layer: dict[str, Any] = layers[0]
    if not isinstance(layer.get("digest"), str) or not isinstance(layer.get("size"), int):
        raise ImageError(f"image {ref} has an unreadable manifest")
    return layer


def sha256_file(path: Path) -> str:
    """``sha256:HEX`` of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(2**20), b""):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


class OrasPuller:
    """Pulls ``oras://`` SIF images for a store; ``insecure_registries`` (``host:port``)
    are reached over plain HTTP or with unverified TLS, as for ``docker://``."""

    def __init__(self, *, insecure_registries: Collection[str] = (),
                 unsquashfs: str = "unsquashfs") -> None:
        self.insecure_registries = frozenset(insecure_registries)
        self._unsquashfs = unsquashfs

    @contextlib.contextmanager
    def source(self, ref: ImageRef, credentials: Credentials | None) -> Iterator[SifSource]:
        """A pull of ``ref`` with ``credentials`` (None: anonymous, never the node's own)."""
        pull = SifSource(self, ref, credentials)
        try:
            yield pull
        finally:
            pull.close()

    def unsquash(self, ref: ImageRef, sif: Path, rootfs: Path) -> None:
        """Unpack the root filesystem partition of the SIF file ``sif`` into ``rootfs``."""
        try:
            partition = root_partition(sif)
        except SifFormatError as exc:
            raise ImageError(f"image {ref} is not a usable SIF: {exc}") from None
        argv = [self._unsquashfs, "-no-progress", "-quiet", "-offset", str(partition.offset),
                "-dest", str(rootfs), str(sif)]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=UNPACK_TIMEOUT,
                                  check=False, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise ImageError(f"{self._unsquashfs} is not installed "
                             "(apt-get install squashfs-tools)") from None
        except subprocess.TimeoutExpired:
            raise ImageError(f"unpacking {ref} timed out after {UNPACK_TIMEOUT:.0f}s") from None
        if done.returncode != 0:
            lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
            last = lines[-1].strip() if lines else f"exit code {done.returncode}"
            raise ImageError(f"image {ref} is not a usable SIF: unsquashfs failed: {last}")


class SifSource:
    """One pull of an ``oras://`` reference (an ``ImageSource`` of the store)."""

    def __init__(self, puller: OrasPuller, ref: ImageRef,
                 credentials: Credentials | None) -> None:
        self._puller = puller
        self.ref = ref
        self._credentials = credentials
        self._container = oras.container.Container(
            f"{ref.repository}:{ref.tag or 'latest'}" + (f"@{ref.digest}" if ref.digest else ""),
            registry=ref.registry)
        self._client: Any = None
        self._manifest: Any = None

    def close(self) -> None:
        """Close the registry connections."""
        if self._client is not None:
            self._client.session.close()

    def _error(self, message: str, kind: type[ImageError] = ImageError) -> ImageError:
        return kind(scrub(message, self._credentials))

    def _connect(self) -> Any:
        """An oras-py client for the registry: its scheme, and the authentication that its
        ``/v2/`` answer asks for (Basic or token), with the request's credentials only."""
        host = self.ref.registry
        insecure = host in self._puller.insecure_registries
        schemes = ("https", "http") if insecure else ("https",)
        answer: requests.Response | None = None
        for scheme in schemes:
            try:
                answer = requests.get(f"{scheme}://{host}/v2/", timeout=REQUEST_TIMEOUT,
                                      verify=not insecure, allow_redirects=False)
                break
            except requests.exceptions.SSLError as exc:
                if scheme == schemes[-1]:
                    if "wrong version number" in str(exc).lower():
                        raise self._error(
                            f"registry {host} speaks plain HTTP; list it in insecure_registries"
                            f" to pull {self.ref}") from None
                    raise self._error(f"registry {host} failed TLS: {exc}") from None
            except requests.exceptions.Timeout:
                raise self._error(f"registry {host} is not reachable: no answer in "
                                  f"{REQUEST_TIMEOUT:.0f}s", RegistryUnreachableError) from None
            except requests.exceptions.ConnectionError as exc:
                raise self._error(f"registry {host} is not reachable: {_reason(exc)}",
                                  RegistryUnreachableError) from None
        assert answer is not None
        challenge = answer.headers.get("WWW-Authenticate", "")
        basic = answer.status_code == 401 and challenge.lower().startswith("basic")
        if basic and self._credentials is None:
            raise self._error(f"registry {host} requires credentials for {self.ref}",
                              ImageAuthError)
        client = oras.provider.Registry(
            hostname=host, insecure=scheme == "http", tls_verify=not insecure,
            auth_backend="basic" if basic else "token")
        adapter = _TimeoutAdapter()
        client.session.mount("http://", adapter)
        client.session.mount("https://", adapter)
        if self._credentials is not None:
            client.auth.set_basic_auth(self._credentials.username, self._credentials.password)
        return client

    def _refused(self, status: int, what: str) -> ImageError:
        """The error for an HTTP ``status`` answered to a request for ``what``."""
        host = self.ref.registry
        if status == 404:
            return self._error(f"image {self.ref} not found in registry {host}",
                               ImageNotFoundError)
        if status in (401, 403):
            if self._credentials is not None:
                return self._error(f"registry {host} refused the credentials for {self.ref}",
                                   ImageAuthError)
            return self._error(f"registry {host} requires credentials for {self.ref}",
                               ImageAuthError)
        return self._error(f"pulling {self.ref} failed: {what} answered HTTP {status}")

    def resolve(self) -> str:
        """The manifest digest the reference names now (the manifest is kept for fetch)."""
        self._client = self._client or self._connect()
        url = f"{self._client.prefix}://{self._container.manifest_url()}"
        accept = ", ".join((*MANIFEST_MEDIA_TYPES, *INDEX_MEDIA_TYPES))
        body = b""
        try:
            with self._client.do_request(url, "GET", headers={"Accept": accept},
                                         stream=True) as response:
                if response.status_code != 200:
                    raise self._refused(response.status_code, "the manifest")
                for chunk in response.iter_content(2**16):
                    body += chunk
                    if len(body) > MAX_MANIFEST_BYTES:
                        raise self._error(f"image {self.ref} has a manifest over "
                                          f"{MAX_MANIFEST_BYTES // 2**20} MiB")
        except (requests.RequestException, ValueError) as exc:
            raise self._error(f"pulling {self.ref} failed: {exc}") from None
        digest = f"sha256:{hashlib.sha256(body).hexdigest()}"
        if self.ref.digest and digest != self.ref.digest:
            raise self._error(f"image {self.ref}: the registry sent a manifest of digest {digest}")
        try:
            self._manifest = json.loads(body)
        except ValueError:
            raise self._error(f"image {self.ref} has an unreadable manifest") from None
        return digest

    def fetch(self, digest: str, layout: Path, rootfs: Path, report: Progress) -> ImageConfig:
        """Download the SIF layer into ``layout``, check it, and unsquash its root filesystem
        into ``rootfs``; ``layout`` keeps only the manifest afterwards."""
        layer = sif_layer(self._manifest, self.ref)
        layout.mkdir()
        (layout / MANIFEST_FILE).write_text(json.dumps(self._manifest))
        sif = layout / "image.sif"
        report(f"Copying SIF {layer['digest']} ({layer['size']} bytes)")
        try:
            self._client.download_blob(self._container, layer["digest"], str(sif))
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            raise self._refused(status, "the SIF layer") from None
        except (requests.RequestException, ValueError, OSError) as exc:
            raise self._error(f"pulling {self.ref} failed: {exc}") from None
        if sha256_file(sif) != layer["digest"] or sif.stat().st_size != layer["size"]:
            raise self._error(f"image {self.ref}: the SIF layer does not match its digest")
        report(f"unpacking {digest}")
        try:
            self._puller.unsquash(self.ref, sif, rootfs)
        finally:
            sif.unlink()
        runscript = rootfs / RUNSCRIPT.lstrip("/")
        if runscript.is_file() and not runscript.is_symlink():
            return ImageConfig(cmd=(RUNSCRIPT,), env=SIF_CONFIG.env)
        return SIF_CONFIG
