"""End to end: ``implementation: generic`` multinode jobs, and multinode status and logs
(issue 17, points 3 and 5).

A generic job's command is not wrapped: every rank runs it, with Fuzzball's
``MULTINODE_*`` variables in its environment and expanded in its command items.
The tiny custom launcher here (busybox sh and nc) finds the head in the host list:
the head connects to each peer named there and prints what it answers; each peer
answers twice, the second time to the head reaching it by its host name
(``JOB-RANK``, in every rank's /etc/hosts). ``fuzz workflow log`` gives rank 0's
output, ``--node K`` rank K's.
Real ``fuzz server``, two real local agents, real runc containers on job networks.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator

import pytest

from fuzz.testing.oci import PushedImage, free_port
from tests.support.workflowutil import LocalCluster, dump, local_cluster, tasks_by_key

LAUNCHER = r"""
hosts=$1; me=$2; total=$3
set -- $(echo "$hosts" | tr , ' ')
if [ "$me" != "$1" ]; then
  echo "peer $me of $total slots"
  for answer in 1 2; do echo "hello from $me" | nc -l -p 7000; done
  exit
fi
shift
for peer in "$@"; do
  tries=0
  until reply=$(nc "$peer" 7000 </dev/null) && [ -n "$reply" ]; do
    tries=$((tries + 1)); [ "$tries" -lt 300 ] || exit 3; sleep 0.2
  done
  echo "head $me got: $reply"
done
tries=0
until reply=$(nc custom-1 7000 </dev/null) && [ -n "$reply" ]; do
  tries=$((tries + 1)); [ "$tries" -lt 300 ] || exit 4; sleep 0.2
done
echo "custom-1 by name: $reply"
echo "hostlist=$MULTINODE_HOSTLIST total=$MULTINODE_TOTAL_SLOTS"
"""
GENERIC = """\
version: v1
jobs:
  custom:
    image: {{uri: {image}}}
    command: [/bin/sh, -c, {launcher}, launcher, $MULTINODE_HOSTLIST_NOSLOTS,
              "${{MULTINODE_NODE_IP}}", $MULTINODE_TOTAL_SLOTS]
    resource: {{cpu: {{cores: 1}}, memory: {{size: 32MiB}}}}
    multinode: {{nodes: 2, implementation: generic}}
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, busybox_image: PushedImage
            ) -> Iterator[LocalCluster]:
    """Two local nodes and their orchestrator."""
    directory = tmp_path_factory.mktemp("generic")
    os.chmod(directory, 0o755)
    with local_cluster(directory, [busybox_image.registry.host], free_port(),
                       nodes=2) as running:
        yield running


def test_a_custom_launcher_reaches_its_peer_through_the_host_list(
        cluster: LocalCluster, busybox_image: PushedImage) -> None:
    fuzzfile = GENERIC.format(image=busybox_image.reference, launcher=json.dumps(LAUNCHER))
    cluster.start("generic", fuzzfile)
    status = cluster.wait("generic", timeout=180)
    assert status["state"] == "SUCCEEDED", dump(status)
    assert len(set(tasks_by_key(status)["custom"]["nodes"])) == 2

    head = cluster.ok("workflow", "log", "generic", "custom").out
    found = re.fullmatch(r"head (\S+) got: hello from (\S+)\n"
                         r"custom-1 by name: hello from (\S+)\n"
                         r"hostlist=(\S+):1,(\S+):1 total=2\n", head)
    assert found, head
    me, peer, named, first, second = found.groups()
    assert (first, second, named) == (me, peer, peer) and me != peer
    assert cluster.ok("workflow", "log", "generic", "custom", "--node", "0").out == head
    assert cluster.ok("workflow", "log", "generic", "custom", "--node", "1").out == \
        f"peer {peer} of 2 slots\n"
    left = [path for folder in cluster.directory.rglob("etc-hosts") for path in folder.iterdir()]
    assert left == []  # each rank's /etc/hosts went with its container
    bad = cluster.fuzz("workflow", "log", "generic", "custom", "--node", "2")
    assert bad.code == 1 and "node 2" in bad.err and "2 nodes" in bad.err, bad.err


def test_status_shows_each_node_of_a_multinode_job(cluster: LocalCluster) -> None:
    status = cluster.wait("generic", timeout=180)
    nodes = tasks_by_key(status)["custom"]["nodes"]
    table = cluster.ok("workflow", "status", "generic").out
    for rank, node in enumerate(nodes):
        assert re.search(rf"^\s+node {rank}\s+custom\s+SUCCEEDED\s+{re.escape(node)}\s", table,
                         re.MULTILINE), table
