"""End to end: the containers of one multinode job talk across nodes; nothing else is open.

A local cluster of two nodes (two agents on this machine, each with its own job
bridge and subnet) runs a two-rank job: rank 1 listens with busybox ``nc``, rank
0 connects to rank 1's address as ``FUZZ_NODES`` gives it. Both ranks also try
the orchestrator's and the agents' ports (on 127.0.0.1, where the local cluster
listens), which must be closed to them. No packet leaves the machine: the
cluster's addresses are all on it, and the job subnets are its own bridges.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Iterator

import pytest

from fuzz.testing.oci import PushedImage, free_port
from tests.support.workflowutil import LocalCluster, dump, local_cluster, tasks_by_key


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, busybox_image: PushedImage
            ) -> Iterator[LocalCluster]:
    """Two local nodes and their orchestrator."""
    directory = tmp_path_factory.mktemp("netcluster")
    os.chmod(directory, 0o755)  # jobs run as nobody; volumes live under it
    with local_cluster(directory, [busybox_image.registry.host], free_port()) as running:
        yield running


def _local_ports(cluster: LocalCluster) -> list[int]:
    """The ports the orchestrator and the agents listen on (all on 127.0.0.1)."""
    server = json.loads((cluster.data_dir / "server.json").read_text())
    ports = [int(str(server["endpoint"]).rsplit(":", 1)[1])]
    for info in cluster.directory.glob(".fuzz/nodes/*/*/agent.json"):
        ports.append(int(json.loads(info.read_text())["endpoint"].rsplit(":", 1)[1]))
    return ports


RANKS = """\
set -- $(echo "$FUZZ_NODES" | tr , ' ')
echo "$FUZZ_NODES" > /results/nodes-$FUZZ_RANK
for port in {ports}; do
  if nc -w 2 -e /bin/true 127.0.0.1 $port 2>/dev/null; then echo "reached $port"; fi
done > /results/local-$FUZZ_RANK
if [ "$FUZZ_RANK" = 1 ]; then
  echo hello-from-rank-1 | nc -l -p 7777
else
  for i in $(seq 100); do
    nc -w 2 $2 7777 </dev/null > /results/got && [ -s /results/got ] && break
    sleep 0.2
  done
fi
"""


def test_multinode_ranks_reach_each_other_across_nodes_and_nothing_local(
        cluster: LocalCluster, busybox_image: PushedImage) -> None:
    ports = _local_ports(cluster)
    assert len(ports) == 3, ports  # the orchestrator and two agents
    script = RANKS.format(ports=" ".join(map(str, ports)))
    fuzzfile = f"""\
version: v1
volumes:
  results: {{reference: volume://user/persistent/net-results}}
jobs:
  ranks:
    image: {{uri: {busybox_image.reference}}}
    script: {json.dumps(script)}
    mounts: {{results: {{location: /results}}}}
    multinode: {{nodes: 2, implementation: generic}}
    policy: {{timeout: {{execute: 2m}}}}
"""
    cluster.start("mpi-net", fuzzfile)
    status = cluster.wait("mpi-net", timeout=180)
    assert status["state"] == "SUCCEEDED", dump(status)
    assert len(set(tasks_by_key(status)["ranks"]["nodes"])) == 2
    results = cluster.volume_root / "persistent" / "admin" / "net-results"
    addresses = (results / "nodes-0").read_text().split()[0].split(",")
    assert (results / "nodes-1").read_text() == (results / "nodes-0").read_text()
    assert len(addresses) == 2 and all(ipaddress.ip_address(a).is_private for a in addresses), \
        f"FUZZ_NODES does not name the ranks' addresses: {addresses}"
    assert ipaddress.ip_network(f"{addresses[0]}/24", strict=False) != \
        ipaddress.ip_network(f"{addresses[1]}/24", strict=False), "both ranks on one node's subnet"
    assert (results / "got").read_text() == "hello-from-rank-1\n"
    assert (results / "local-0").read_text() == "" and (results / "local-1").read_text() == ""
