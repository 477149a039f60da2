"""End to end: the MPI test images (issue 17, real parts).

The images are Debian root filesystems made by mmdebstrap with Open MPI or MPICH,
the programs of ``tests/support/mpi/`` compiled inside by the image's own mpicc
(see :mod:`fuzz.testing.mpi_images`), cached between runs. Here: they hold no ssh
client or server, a second build is the cached one, and each runs its program
as one rank in a real container of a one-node cluster.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from fuzz.testing.mpi_images import REMOTE_SHELLS, MpiLayout, mpi_layout
from fuzz.testing.oci import PushedImage, Registry, free_port
from tests.support.mpiimages import MPI_SOURCES, layer_paths
from tests.support.workflowutil import LocalCluster, dump, local_cluster

FLAVORS = ("openmpi", "mpich")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, registry: Registry
            ) -> Iterator[LocalCluster]:
    """One local node and its orchestrator, pulling from the session's registry."""
    directory = tmp_path_factory.mktemp("mpi-images")
    os.chmod(directory, 0o755)
    with local_cluster(directory, [registry.host], free_port(), nodes=1) as running:
        yield running


def layout_of(request: pytest.FixtureRequest, flavor: str) -> MpiLayout:
    """The session's layout of ``flavor``."""
    layout: MpiLayout = request.getfixturevalue(f"{flavor}_layout")
    return layout


@pytest.mark.parametrize("flavor", FLAVORS)
def test_the_images_hold_mpi_and_the_programs_but_no_remote_shell(
        request: pytest.FixtureRequest, flavor: str) -> None:
    layout = layout_of(request, flavor)
    paths = set(layer_paths(layout.path))
    assert {"usr/local/bin/ranks", "usr/local/bin/allreduce"} <= paths
    assert f"usr/bin/{layout.flavor.launcher}" in paths
    shells = sorted(path for path in paths if Path(path).name in REMOTE_SHELLS)
    assert shells == [], f"the {flavor} image holds remote shells: {shells}"
    assert not [path for path in paths if path.startswith("etc/ssh")]
    assert layout.versions[layout.flavor.packages[0]]  # the implementation's Debian version


@pytest.mark.parametrize("flavor", FLAVORS)
def test_a_second_build_is_the_cached_one(request: pytest.FixtureRequest, flavor: str) -> None:
    first = layout_of(request, flavor)
    again = mpi_layout(flavor, MPI_SOURCES)
    assert not again.built_now
    assert again.path == first.path
    assert (again.path / "index.json").read_bytes() == (first.path / "index.json").read_bytes()


# Open MPI 4 starts a daemon even for one rank, and refuses to unless its remote
# launcher exists: `false` does (it is never run for a local rank).
RANKS = """\
version: v1
jobs:
  ranks:
    image: {{uri: {image}}}
    command: [ranks]
    env: [OMPI_MCA_plm_rsh_agent=false]
    resource: {{cpu: {{cores: 1}}, memory: {{size: 256MiB}}}}
  allreduce:
    image: {{uri: {image}}}
    command: [allreduce, "100"]
    env: [OMPI_MCA_plm_rsh_agent=false]
    resource: {{cpu: {{cores: 1}}, memory: {{size: 256MiB}}}}
    requires: [ranks]
"""


@pytest.mark.parametrize("flavor", FLAVORS)
def test_one_rank_runs_in_a_real_container(cluster: LocalCluster,
                                           request: pytest.FixtureRequest, flavor: str) -> None:
    image: PushedImage = request.getfixturevalue(f"{flavor}_image")
    cluster.start(f"one-{flavor}", RANKS.format(image=image.reference))
    status = cluster.wait(f"one-{flavor}", timeout=300)
    assert status["state"] == "SUCCEEDED", dump(status)
    out = cluster.ok("workflow", "log", f"one-{flavor}", "ranks").out
    assert re.fullmatch(
        r"rank 0 of 1 host=\S+ address=\S+\nsum=0 expected=0\nring=ok\n", out), out
    timed = cluster.ok("workflow", "log", f"one-{flavor}", "allreduce").out
    assert re.fullmatch(r"allreduce iterations=100 bytes=8 seconds=\d+\.\d{6}\n", timed), timed
