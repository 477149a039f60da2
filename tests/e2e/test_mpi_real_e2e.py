"""End to end: real Open MPI and MPICH jobs across three nodes, launched by fuzz, no SSH.

The images are Debian's Open MPI and MPICH (``tests/support/mpiimages.py``), with
no ssh client or server; ``ranks`` (``tests/support/mpi/ranks.c``) gathers each
rank's host and address, allreduces the ranks and sends a ring. The Fuzzfiles are
published-style: the command is only the program, and fuzz wraps it in the
implementation's launcher, whose remote starts go through fuzz's launch helper.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterator

import pytest

from fuzz.substrate.launch.sharedns import machine_directory
from fuzz.testing.mpi_images import REMOTE_SHELLS, MpiLayout
from fuzz.testing.oci import PushedImage, Registry, free_port
from tests.support.agents import agent_client
from tests.support.mpiimages import layer_paths
from tests.support.workflowutil import LocalCluster, dump, local_cluster, tasks_by_key

RANK_LINE = re.compile(r"rank (\d+) of (\d+) host=(\S+) address=(\S+)")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, registry: Registry
            ) -> Iterator[LocalCluster]:
    """Three local nodes and their orchestrator."""
    directory = tmp_path_factory.mktemp("mpi-real")
    os.chmod(directory, 0o755)
    with local_cluster(directory, [registry.host], free_port(), nodes=3) as running:
        yield running


def _check_ranks(log: str, count: int) -> None:
    """``ranks``' output: ``count`` ranks on ``count`` nodes, the sum and the ring right."""
    ranks = [RANK_LINE.fullmatch(line) for line in log.splitlines() if line.startswith("rank ")]
    assert len(ranks) == count and all(ranks), log
    addresses = {match.group(4) for match in ranks if match}
    hosts = {match.group(3) for match in ranks if match}
    subnets = {ipaddress.ip_network(f"{address}/24", strict=False) for address in addresses}
    assert len(subnets) == count and len(hosts) == count, f"ranks share a node:\n{log}"
    expected = count * (count - 1) // 2
    assert f"sum={expected} expected={expected}" in log, log
    assert "ring=ok" in log, log


def _run(cluster: LocalCluster, name: str, body: str) -> str:
    cluster.start(name, f"version: v1\njobs:\n  mpi:\n{body}")
    status = cluster.wait(name, timeout=300)
    log = cluster.ok("workflow", "log", name, "mpi").out
    assert status["state"] == "SUCCEEDED", dump(status) + log
    assert len(set(tasks_by_key(status)["mpi"]["nodes"])) == 3
    for node in tasks_by_key(status)["mpi"]["nodes"]:
        client = agent_client(cluster, node)
        assert not client.list_containers() and not client.list_leases(), node
    return log


def test_open_mpi_runs_one_program_over_three_nodes(
        cluster: LocalCluster, openmpi_image: PushedImage, openmpi_layout: MpiLayout) -> None:
    assert not [path for path in layer_paths(openmpi_layout.path)
                if os.path.basename(path) in REMOTE_SHELLS]
    log = _run(cluster, "ompi3", f"""\
    image: {{uri: {openmpi_image.reference}}}
    command: [ranks]
    resource: {{cpu: {{cores: 1}}, memory: {{size: 256MiB}}}}
    multinode: {{nodes: 3, implementation: openmpi}}
    policy: {{timeout: {{execute: 4m}}}}
""")
    _check_ranks(log, 3)


def test_mpich_runs_one_program_over_three_nodes_from_a_catalog_style_script(
        cluster: LocalCluster, mpich_image: PushedImage, mpich_layout: MpiLayout) -> None:
    assert not [path for path in layer_paths(mpich_layout.path)
                if os.path.basename(path) in REMOTE_SHELLS]
    log = _run(cluster, "mpich3", f"""\
    image: {{uri: {mpich_image.reference}}}
    script: "#!/bin/sh\\nranks"
    resource: {{cpu: {{cores: 1}}, memory: {{size: 256MiB}}}}
    multinode: {{nodes: 3, implementation: mpich}}
    policy: {{timeout: {{execute: 4m}}}}
""")
    _check_ranks(log, 3)


def test_procs_per_node_and_the_ompi_spelling(
        cluster: LocalCluster, openmpi_image: PushedImage) -> None:
    log = _run(cluster, "ompi6", f"""\
    image: {{uri: {openmpi_image.reference}}}
    command: [ranks]
    resource: {{cpu: {{cores: 1}}, memory: {{size: 256MiB}}}}
    multinode: {{nodes: 3, implementation: ompi, procs-per-node: 2}}
    policy: {{timeout: {{execute: 4m}}}}
""")
    assert "sum=15 expected=15" in log and "ring=ok" in log, log
    assert len(RANK_LINE.findall(log)) == 6, log



def test_mpich_ranks_on_one_machine_share_their_jobs_namespaces_and_talk_through_memory(
        cluster: LocalCluster, mpich_image: PushedImage) -> None:
    # Debian's MPICH is ch4:ucx, which gives UCX its peers' whole addresses: UCX forced
    # onto SysV shared memory alone (no TCP), the ranks connect only if their two
    # containers are in one IPC and PID namespace. The job's own UCX_TLS wins over fuzz's.
    body = f"""\
    image: {{uri: {mpich_image.reference}}}
    command: [sh, -c, 'echo ns=$(readlink /proc/self/ns/ipc)$(readlink /proc/self/ns/pid); ranks']
    env: ['UCX_TLS=self,sysv']
    resource: {{cpu: {{cores: 1}}, memory: {{size: 256MiB}}}}
    multinode: {{nodes: 2, implementation: mpich}}
    policy: {{timeout: {{execute: 4m}}}}
"""
    cluster.start("shm2", f"version: v1\njobs:\n  mpi:\n{body}")
    status = cluster.wait("shm2", timeout=300)
    log = cluster.ok("workflow", "log", "shm2", "mpi").out
    assert status["state"] == "SUCCEEDED", dump(status) + log
    namespaces = re.findall(r"^ns=(ipc:\[\d+\]pid:\[\d+\])$", log, re.MULTILINE)
    assert len(namespaces) == 2 and len(set(namespaces)) == 1, log
    own = os.readlink("/proc/self/ns/ipc") + os.readlink("/proc/self/ns/pid")
    assert namespaces[0] != own, log
    ranks = RANK_LINE.findall(log)
    assert len(ranks) == 2 and len({host for _, _, host, _ in ranks}) == 2, log
    assert "sum=1 expected=1" in log and "ring=ok" in log, log
    for node in tasks_by_key(status)["mpi"]["nodes"]:
        client = agent_client(cluster, node)
        assert not client.list_containers() and not client.list_leases(), node
    # the last container out ended the job's namespaces: nothing is left on the machine
    (shared,) = cluster.directory.glob(".fuzz/nodes/*")  # --share-cpus-with: the cluster's
    assert [path.name for path in machine_directory(shared).iterdir()] == [".lock"]


def test_open_mpi_ranks_on_one_machine_talk_through_shared_memory_only(
        cluster: LocalCluster, openmpi_image: PushedImage) -> None:
    # Open MPI's pml ucx gives a peer on another node only the network part of its UCX
    # address; on one machine fuzz's ranks go through ob1 and libfabric's shm provider
    # (btl ofi) instead, which maps its peers' regions from /dev/shm: one /dev/shm for
    # the job's containers. The BTLs forced to self and ofi (no tcp, no vader), the ranks
    # connect only through that shared memory.
    body = f"""\
    image: {{uri: {openmpi_image.reference}}}
    command: [ranks]
    env: ['OMPI_MCA_btl=self,ofi', 'OMPI_MCA_btl_base_verbose=100']
    resource: {{cpu: {{cores: 1}}, memory: {{size: 256MiB}}}}
    multinode: {{nodes: 2, implementation: openmpi}}
    policy: {{timeout: {{execute: 4m}}}}
"""
    cluster.start("ompi-shm2", f"version: v1\njobs:\n  mpi:\n{body}")
    status = cluster.wait("ompi-shm2", timeout=300)
    log = cluster.ok("workflow", "log", "ompi-shm2", "mpi").out
    assert status["state"] == "SUCCEEDED", dump(status) + log
    ranks = RANK_LINE.findall(log)
    assert len(ranks) == 2 and len({host for _, _, host, _ in ranks}) == 2, log
    assert "sum=1 expected=1" in log and "ring=ok" in log, log
    errors = cluster.ok("workflow", "log", "ompi-shm2", "mpi", "--stderr").out
    assert re.search(r"Using ofi btl for send to \S+ on node", errors), errors
    assert "Using tcp btl" not in errors, errors
    for node in tasks_by_key(status)["mpi"]["nodes"]:
        client = agent_client(cluster, node)
        assert not client.list_containers() and not client.list_leases(), node
    (shared,) = cluster.directory.glob(".fuzz/nodes/*")
    assert [path.name for path in machine_directory(shared).iterdir()] == [".lock"]


def test_open_mpi_ranks_on_one_machine_are_one_node_to_it_and_talk_through_vader(
        cluster: LocalCluster, openmpi_image: PushedImage) -> None:
    # the three nodes are one machine (their agents report one fuzz.io/machine): mpirun is
    # given it as one host of all the slots and starts every rank as a rank of its own
    # node, the launch helper (its fork agent) putting each in its own node's container.
    # The BTLs forced to self and vader (shared memory between ranks of one node only),
    # the job succeeds only if Open MPI sees the ranks as one node's and their
    # containers share the memory.
    body = f"""\
    image: {{uri: {openmpi_image.reference}}}
    command: [ranks]
    env: ['OMPI_MCA_btl=self,vader', 'OMPI_MCA_btl_base_verbose=100']
    resource: {{cpu: {{cores: 1}}, memory: {{size: 256MiB}}}}
    multinode: {{nodes: 3, implementation: openmpi}}
    policy: {{timeout: {{execute: 4m}}}}
"""
    log = _run(cluster, "ompi-vader", body)
    _check_ranks(log, 3)
    errors = cluster.ok("workflow", "log", "ompi-vader", "mpi", "--stderr").out
    assert len(re.findall(r"Using vader btl for send to \S+ on node", errors)) == 6, errors
    assert "Using tcp btl" not in errors and "Using ofi btl" not in errors, errors
    (shared,) = cluster.directory.glob(".fuzz/nodes/*")
    assert [path.name for path in machine_directory(shared).iterdir()] == [".lock"]


def test_mpich_ranks_on_one_machine_keep_tcp_out_of_their_busy_loop(
        cluster: LocalCluster, mpich_image: PushedImage) -> None:
    # with fuzz's UCX settings (tcp kept for peers on other machines) no protocol between
    # the two containers' ranks takes tcp: a tcp lane (UCX 1.18 picks it for zero-copy
    # puts, sysv having none) is progressed by an epoll_wait in every poll of the ranks'
    # busy loop, a syscall that seccomp makes dearer still (docs/architecture.md)
    body = f"""\
    image: {{uri: {mpich_image.reference}}}
    command: [allreduce, '100']
    env: ['UCX_PROTO_INFO=y']
    resource: {{cpu: {{cores: 1}}, memory: {{size: 256MiB}}}}
    multinode: {{nodes: 2, implementation: mpich}}
    policy: {{timeout: {{execute: 4m}}}}
"""
    cluster.start("mpich-lanes", f"version: v1\njobs:\n  mpi:\n{body}")
    status = cluster.wait("mpich-lanes", timeout=300)
    log = cluster.ok("workflow", "log", "mpich-lanes", "mpi").out  # UCX logs to stdout
    assert status["state"] == "SUCCEEDED", dump(status) + log
    assert "allreduce iterations=100" in log, log
    assert "intra-node" in log and "sysv/memory" in log, log
    assert "tcp/" not in log, log
