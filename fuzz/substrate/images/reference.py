"""``docker://`` and ``oras://`` image references, the registry credentials of a pull, and
the image errors."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from fuzz.errors import FuzzError

DOCKER_HUB = "docker.io"
SCHEMES = ("docker", "oras")
"""``docker://`` OCI images (skopeo, umoci) and ``oras://`` SIF artifacts (ORAS, unsquashfs)."""

_DIGEST = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[0-9a-f]{32,}$")


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
class ImageRef:
    """A parsed ``docker://`` or ``oras://`` reference."""

    text: str  # as the user wrote it
    registry: str  # host[:port]; docker.io for Docker Hub
    repository: str
    tag: str | None
    digest: str | None
    scheme: str = "docker"  # one of SCHEMES

    def pinned(self, digest: str) -> str:
        """The skopeo reference of this repository at ``digest``."""
        return f"docker://{self.registry}/{self.repository}@{digest}"

    def __str__(self) -> str:
        return self.text


def is_digest(text: str) -> bool:
    """Whether ``text`` is a content digest (``ALGO:HEX``)."""
    return _DIGEST.match(text) is not None


def parse_reference(reference: str) -> ImageRef:
    """Parse ``docker://[HOST[:PORT]/]REPO[:TAG][@DIGEST]`` (a tag defaults to ``latest``),
    or the same after ``oras://``."""
    text = reference.strip()
    scheme, separator, rest = text.partition("://")
    if not separator or scheme not in SCHEMES:
        raise ImageError(f"image reference {reference!r} must start with docker:// or oras://")
    digest: str | None = None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not is_digest(digest):
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
        raise ImageError(f"image reference {text!r} is not of the form {scheme}://HOST/REPO:TAG")
    if tag is None and digest is None:
        tag = "latest"
    return ImageRef(text, registry, name, tag, digest, scheme)
