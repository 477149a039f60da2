"""End to end: an Open MPI job over nodes on different machines keeps one daemon per node.

Where a job's nodes report one machine (``fuzz.io/machine``, the local provider's
default), ``mpirun`` takes them as one host of all the slots (vader between their
containers, tests/e2e/test_mpi_real_e2e.py). A real cluster's nodes are on machines of
their own: ``mpirun`` then gets one host per node, starts an ``orted`` on each through
fuzz's launch helper, and the ranks talk through a BTL between nodes, never vader. Here
three one-node pools label their nodes with three machines, so that path runs on this
one machine with Debian's Open MPI.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pytest
import yaml

from fuzz.resources import MACHINE_LABEL
from fuzz.testing import cluster as testing_cluster
from fuzz.testing.oci import PushedImage, Registry, free_port
from tests.e2e.test_mpi_real_e2e import RANK_LINE
from tests.support.agents import agent_client
from tests.support.cliutil import kill_agents
from tests.support.workflowutil import LocalCluster, dump, tasks_by_key

MACHINES = ("machine-a", "machine-b", "machine-c")


def _spec(registry: Registry) -> str:
    """The usual local cluster spec with one pool of one node per machine label."""
    spec = yaml.safe_load(testing_cluster.cluster_spec(
        "machines", 1, [registry.host], free_port()))
    pool = spec["pools"].pop("cpu")
    for machine in MACHINES:
        spec["pools"][machine] = {**pool, "labels": {**pool["labels"], MACHINE_LABEL: machine}}
    return yaml.safe_dump(spec, sort_keys=False)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, registry: Registry
            ) -> Iterator[LocalCluster]:
    """Three local nodes that report three machines, and their orchestrator."""
    directory = tmp_path_factory.mktemp("mpi-machines")
    os.chmod(directory, 0o755)
    (directory / "fuzz.yaml").write_text(_spec(registry))
    try:
        with testing_cluster.cluster_up(directory, len(MACHINES)) as running:
            yield LocalCluster(running.directory, running.nodes)
    finally:
        kill_agents(directory)


def test_open_mpi_over_three_machines_starts_a_daemon_per_node_and_no_vader(
        cluster: LocalCluster, openmpi_image: PushedImage) -> None:
    body = f"""\
    image: {{uri: {openmpi_image.reference}}}
    command: [ranks]
    env: ['OMPI_MCA_btl_base_verbose=100', 'OMPI_MCA_plm_base_verbose=5']
    resource: {{cpu: {{cores: 1}}, memory: {{size: 256MiB}}}}
    multinode: {{nodes: 3, implementation: openmpi}}
    policy: {{timeout: {{execute: 4m}}}}
"""
    cluster.start("machines3", f"version: v1\njobs:\n  mpi:\n{body}")
    status = cluster.wait("machines3", timeout=300)
    log = cluster.ok("workflow", "log", "machines3", "mpi").out
    errors = cluster.ok("workflow", "log", "machines3", "mpi", "--stderr").out
    assert status["state"] == "SUCCEEDED", dump(status) + log + errors
    ranks = RANK_LINE.findall(log)
    assert len(ranks) == 3 and len({host for _, _, host, _ in ranks}) == 3, log
    assert "sum=3 expected=3" in log and "ring=ok" in log, log
    # mpirun started a daemon on each other node through the launch helper, and its
    # ranks met through a BTL between nodes: vader was loaded but used for no peer
    assert re.search(r"plm:rsh: final template argv:\s+/\.fuzz-launch/fuzz-launch .*orted",
                     errors), errors
    assert re.search(r"Using (ofi|tcp) btl", errors), errors
    assert "Using vader btl" not in errors, errors
    for node in tasks_by_key(status)["mpi"]["nodes"]:
        client = agent_client(cluster, node)
        assert not client.list_containers() and not client.list_leases(), node
