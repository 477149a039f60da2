"""Fixtures: MPI images from Debian packages (see :mod:`fuzz.testing.mpi_images`).

``openmpi_layout`` / ``mpich_layout`` are built once per machine (cached outside the
repository, under a file lock that pytest-xdist workers share) with the programs of
``tests/support/mpi/`` compiled inside; ``openmpi_image`` / ``mpich_image`` are the
same pushed to the session's anonymous ``registry``. :func:`layer_paths` lists what
an image's layers hold, for tests that look inside.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from fuzz.testing.mpi_images import MpiLayout, mpi_layout
from fuzz.testing.oci import PushedImage, Registry, push_layout

MPI_SOURCES = Path(__file__).parent / "mpi"
"""The C programs every MPI image carries in /usr/local/bin (ranks, allreduce)."""


def layer_paths(layout: Path) -> list[str]:
    """Every path (without a leading ``./``) in the layers of ``layout``'s ``latest``."""
    blobs = layout / "blobs" / "sha256"
    index = json.loads((layout / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"].split(":", 1)[1]
    manifest = json.loads((blobs / manifest_digest).read_text())
    paths: list[str] = []
    for layer in manifest["layers"]:
        with tarfile.open(blobs / layer["digest"].split(":", 1)[1]) as tar:
            paths += [name.removeprefix("./") for name in tar.getnames()]
    return paths


@pytest.fixture(scope="session")
def openmpi_layout() -> MpiLayout:
    """The Open MPI image's layout (Debian's openmpi-bin), built or taken from the cache."""
    return mpi_layout("openmpi", MPI_SOURCES)


@pytest.fixture(scope="session")
def mpich_layout() -> MpiLayout:
    """The MPICH image's layout (Debian's mpich), built or taken from the cache."""
    return mpi_layout("mpich", MPI_SOURCES)


@pytest.fixture(scope="session")
def openmpi_image(openmpi_layout: MpiLayout, registry: Registry) -> PushedImage:
    """``docker://HOST/fuzz/openmpi:latest`` in the anonymous ``registry``."""
    return push_layout(openmpi_layout.path, registry, "fuzz/openmpi")


@pytest.fixture(scope="session")
def mpich_image(mpich_layout: MpiLayout, registry: Registry) -> PushedImage:
    """``docker://HOST/fuzz/mpich:latest`` in the anonymous ``registry``."""
    return push_layout(mpich_layout.path, registry, "fuzz/mpich")
