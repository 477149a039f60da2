"""Fixtures: real container registries and a real busybox image (see :mod:`fuzz.testing.oci`).

``registry`` and ``auth_registry`` are Debian's ``docker-registry`` on 127.0.0.1
(the second with htpasswd auth); ``busybox_image`` / ``auth_busybox_image`` are an
OCI image built from ``busybox-static`` with umoci and pushed there with skopeo.
Missing tools fail the fixture with the apt-get line that installs them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fuzz.testing.oci import (
    AUTH_PASSWORD,
    AUTH_USER,
    BUSYBOX_REPO,
    PushedImage,
    Registry,
    build_busybox_layout,
    free_port,
    push_layout,
    serve_registry,
)

__all__ = ["AUTH_PASSWORD", "AUTH_USER", "PushedImage", "Registry", "build_busybox_layout",
           "free_port", "push_layout"]


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """An anonymous docker-registry on 127.0.0.1 for the whole session."""
    with serve_registry(tmp_path_factory.mktemp("registry")) as running:
        yield running


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A docker-registry on 127.0.0.1 that wants ``AUTH_USER``/``AUTH_PASSWORD`` (htpasswd)."""
    with serve_registry(tmp_path_factory.mktemp("auth-registry"),
                        (AUTH_USER, AUTH_PASSWORD)) as running:
        yield running


@pytest.fixture(scope="session")
def busybox_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The busybox OCI layout, built once per session."""
    return build_busybox_layout(tmp_path_factory.mktemp("busybox-image"))


@pytest.fixture(scope="session")
def busybox_image(busybox_layout: Path, registry: Registry) -> PushedImage:
    """``docker://HOST/fuzz/busybox:latest`` in the anonymous ``registry``."""
    return push_layout(busybox_layout, registry, BUSYBOX_REPO)


@pytest.fixture(scope="session")
def auth_busybox_image(busybox_layout: Path, auth_registry: Registry) -> PushedImage:
    """The same busybox image in ``auth_registry`` (pull it with the registry's credentials)."""
    return push_layout(busybox_layout, auth_registry, BUSYBOX_REPO)
