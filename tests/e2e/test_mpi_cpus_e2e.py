"""End to end: the ranks of a multinode job on local nodes do not share one host core.

The local provider's nodes are agents on this one machine. Each counts the
machine's CPUs as its own and leases the lowest first, so, unless the agents
spread their containers, rank 0 and rank 1 of a two-node job are both pinned to
host CPU 0 (and an MPI allreduce between them takes turns on that core while the
other idles: 68 ms for 1,000 of them instead of 7). Here two ranks print their
``Cpus_allowed_list`` while both run (rank 1 waits for the head, busybox ``nc``).
Real ``fuzz server``, two real local agents, real runc containers.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator

import pytest

from fuzz.substrate.capacity.inventory import read_online_cpus
from fuzz.testing.oci import PushedImage, free_port
from tests.support.workflowutil import LocalCluster, dump, local_cluster

BOTH = r"""
grep Cpus_allowed_list /proc/self/status
set -- $(echo "$MULTINODE_HOSTLIST_NOSLOTS" | tr , ' ')
if [ "$MULTINODE_NODE_IP" != "$1" ]; then echo bye | nc -l -p 7000; exit; fi
tries=0
until reply=$(nc "$2" 7000 </dev/null) && [ -n "$reply" ]; do
  tries=$((tries + 1)); [ "$tries" -lt 300 ] || exit 3; sleep 0.2
done
"""
FUZZFILE = """\
version: v1
jobs:
  pinned:
    image: {{uri: {image}}}
    command: [/bin/sh, -c, {script}]
    resource: {{cpu: {{cores: 1}}, memory: {{size: 32MiB}}}}
    multinode: {{nodes: 2, implementation: generic}}
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, busybox_image: PushedImage
            ) -> Iterator[LocalCluster]:
    """Two local nodes and their orchestrator."""
    directory = tmp_path_factory.mktemp("cpus")
    os.chmod(directory, 0o755)
    with local_cluster(directory, [busybox_image.registry.host], free_port(),
                       nodes=2) as running:
        yield running


def test_two_ranks_on_two_local_nodes_run_on_different_host_cpus(
        cluster: LocalCluster, busybox_image: PushedImage) -> None:
    assert len(read_online_cpus()) >= 2, "this test needs a machine of two CPUs or more"
    cluster.start("pinned", FUZZFILE.format(image=busybox_image.reference,
                                            script=json.dumps(BOTH)))
    status = cluster.wait("pinned", timeout=180)
    assert status["state"] == "SUCCEEDED", dump(status)
    allowed = []
    for node in ("0", "1"):
        log = cluster.ok("workflow", "log", "pinned", "pinned", "--node", node).out
        found = re.search(r"^Cpus_allowed_list:\s*(\S+)$", log, re.MULTILINE)
        assert found, log
        allowed.append(found.group(1))
    assert allowed[0] != allowed[1], allowed
