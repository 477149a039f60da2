"""End to end: a multinode MPI job is one program, its remote starts through fuzz, no SSH.

Real agents, containers and gRPC. The launcher here is a stand-in for Open MPI's
``mpirun`` (a busybox script in the image, ``/bin/mpirun``) that does what the real
one does with the host list fuzz gives it: it runs the program itself on its own
host and, on every other host, through the remote start Open MPI is told to use
(``$OMPI_MCA_plm_rsh_agent HOST COMMAND...``), which fuzz points at its launch
helper. The real Open MPI and MPICH run in tests/e2e/test_mpi_real_e2e.py.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fuzz.api import orchestrator_pb2, substrate_pb2
from fuzz.clients.orchestrator import AccessDeniedError
from fuzz.errors import FuzzError
from fuzz.testing.oci import PushedImage, Registry, build_busybox_layout, free_port, push_layout
from tests.support.agents import agent_client, kill_agent, restarted
from tests.support.orchestratorutil import wait_until
from tests.support.workflowutil import LocalCluster, dump, local_cluster, tasks_by_key

NODES = ("pool.cpu.node[0]", "pool.cpu.node[1]", "pool.cpu.node[2]")

FAKE_MPIRUN = b"""#!/bin/sh
# A stand-in for Open MPI's mpirun: --host H:S,... -np N [--bind-to X] PROGRAM ARGS...
# Its own host's slots are ranks it starts itself (behind $OMPI_MCA_orte_fork_agent
# when set, with OMPI_COMM_WORLD_RANK, as Open MPI 4 does), another host's through
# the remote start.
while [ $# -gt 0 ]; do
  case "$1" in
    --host) hosts=$2; shift 2;;
    -np|--bind-to) shift 2;;
    *) break;;
  esac
done
pids=""
rank=0
for entry in $(echo "$hosts" | tr , ' '); do
  host=${entry%%:*}
  if [ "$host" = "$(hostname)" ]; then
    for slot in $(seq 1 ${entry##*:}); do
      OMPI_COMM_WORLD_RANK=$rank $OMPI_MCA_orte_fork_agent "$@" </dev/null &
      pids="$pids $!"
      rank=$((rank + 1))
    done
  else
    "$OMPI_MCA_plm_rsh_agent" "$host" "$@" </dev/null &
    pids="$pids $!"
    rank=$((rank + 1))
  fi
done
status=0
for pid in $pids; do wait $pid || status=$?; done
exit $status
"""

HELLO = b"""#!/bin/sh
# one rank: where it runs, as whom, its own rank's variables, and what it was given
echo "hello from $(hostname) as $(id -u) rank $FUZZ_RANK at $MULTINODE_NODE_IP with $*"
"""

PROBE = b"""#!/bin/sh
# what a container may ask of the launch helper
if [ -e /.fuzz-launch/launch.sock ]; then echo "socket: present"; else echo "socket: absent"; fi
for host in "$@"; do
  out=$(/.fuzz-launch/fuzz-launch "$host" hostname 2>&1)
  echo "launch $host: rc=$? $out"
done
"""

LONG = b"""#!/bin/sh
# a rank that runs until stopped, saying where it runs once it has started
echo "$(hostname)" > /results/started-$(hostname)
while true; do sleep 0.2; done
"""


@pytest.fixture(scope="module")
def mpi_image(tmp_path_factory: pytest.TempPathFactory, registry: Registry) -> PushedImage:
    """busybox with the stand-in ``mpirun`` and the test programs."""
    layout = build_busybox_layout(tmp_path_factory.mktemp("fake-mpi"), {
        "/bin/mpirun": FAKE_MPIRUN, "/bin/hello": HELLO, "/bin/probe": PROBE,
        "/bin/long": LONG,
    })
    return push_layout(layout, registry, "fuzz/fake-mpi")


@contextlib.contextmanager
def _cluster(directory: Path, image: PushedImage, grace: str = "120s"
             ) -> Iterator[LocalCluster]:
    os.chmod(directory, 0o755)  # jobs run as the owner's uid; volumes live under it
    with local_cluster(directory, [image.registry.host], free_port(), nodes=3,
                       orchestrator={"node_grace": grace}) as running:
        yield running


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, mpi_image: PushedImage
            ) -> Iterator[LocalCluster]:
    """Three local nodes and their orchestrator."""
    with _cluster(tmp_path_factory.mktemp("mpicluster"), mpi_image) as running:
        yield running


def _mpi_job(image: PushedImage, name: str, command: str, nodes: int = 3,
             extra: str = "") -> str:
    return f"""\
  {name}:
    image: {{uri: {image.reference}}}
    command: {command}
    resource: {{cpu: {{cores: 1}}, memory: {{size: 64MiB}}}}
    multinode: {{nodes: {nodes}, implementation: openmpi}}
    policy: {{timeout: {{execute: 3m}}}}
{extra}"""


def _log(cluster: LocalCluster, workflow: str, job: str) -> str:
    return cluster.ok("workflow", "log", workflow, job).out


def test_an_mpi_job_is_one_program_launched_on_every_node_without_ssh(
        cluster: LocalCluster, mpi_image: PushedImage) -> None:
    # the published form: the command is only the program; fuzz wraps it in the launcher
    fuzzfile = "version: v1\njobs:\n" + _mpi_job(mpi_image, "ring", "[hello, a, b]")
    cluster.start("mpi-one", fuzzfile)
    status = cluster.wait("mpi-one", timeout=240)
    assert status["state"] == "SUCCEEDED", dump(status)
    assert sorted(tasks_by_key(status)["ring"]["nodes"]) == list(NODES)
    lines = [line for line in _log(cluster, "mpi-one", "ring").splitlines() if line]
    said = [re.fullmatch(r"hello from (\S+) as \d+ rank (\d) at (\S+) with a b", line)
            for line in lines]
    assert len(said) == 3 and all(said), lines  # one rank per node, through the one launcher
    hosts = sorted(match.group(1) for match in said if match)
    # each rank has its own container's per-rank variables, not the launcher's
    assert all(match.group(3) == match.group(1) for match in said if match), lines
    assert sorted(match.group(2) for match in said if match) == ["0", "1", "2"], lines
    subnets = {ipaddress.ip_network(f"{host}/24", strict=False) for host in hosts}
    assert len(subnets) == 3, f"the ranks did not run on three nodes: {hosts}"
    uids = {line.split(" as ")[1].split()[0] for line in lines}
    assert len(uids) == 1 and uids != {"0"}, lines  # remote ranks run as the job's user
    for node in NODES:  # nothing left: containers removed, leases given back
        client = agent_client(cluster, node)
        assert not client.list_containers() and not client.list_leases()


def test_a_remote_rank_failing_fails_the_job_with_its_exit_status(
        cluster: LocalCluster, mpi_image: PushedImage) -> None:
    # the program fails on the ranks the helper started (not on rank 0's own host):
    # their exit status comes back through the helper and the launcher fails
    fuzzfile = "version: v1\njobs:\n" + _mpi_job(
        mpi_image, "bad", '[sh, -c, "test \\"$(hostname)\\" = \\"${FUZZ_NODES%%,*}\\" || exit 7"]')
    cluster.start("mpi-bad", fuzzfile)
    status = cluster.wait("mpi-bad", timeout=240)
    assert status["state"] == "FAILED", dump(status)
    error = tasks_by_key(status)["bad"]["error"]
    assert "rank 0 (the launcher): exit code 7" in error, dump(status)


def test_only_the_jobs_own_containers_can_be_entered(
        cluster: LocalCluster, mpi_image: PushedImage) -> None:
    results = "volumes: {results: {reference: volume://user/persistent/mpi-probe}}\n"
    mount = "    mounts: {results: {location: /results}}\n"
    victim = "version: v1\n" + results + "jobs:\n" + _mpi_job(
        mpi_image, "victim", "[long]", nodes=2, extra=mount)
    cluster.start("mpi-victim", victim)
    root = cluster.volume_root / "persistent" / "admin" / "mpi-probe"
    wait_until("the victim's two ranks to start",
               lambda: len(list(root.glob("started-*"))) == 2, timeout=120)
    victim_hosts = sorted(path.read_text().strip() for path in root.glob("started-*"))
    # another MPI job names the victim's ranks; a job of one node has no socket at all
    intruder = "version: v1\njobs:\n" + _mpi_job(
        mpi_image, "intruder", f"[probe, {victim_hosts[0]}, {victim_hosts[1]}]", nodes=2) + f"""\
  single:
    image: {{uri: {mpi_image.reference}}}
    command: [probe, {victim_hosts[1]}]
    resource: {{cpu: {{cores: 1}}, memory: {{size: 64MiB}}}}
"""
    cluster.start("mpi-intruder", intruder)
    status = cluster.wait("mpi-intruder", timeout=240)
    assert status["state"] == "SUCCEEDED", dump(status)
    probes = _log(cluster, "mpi-intruder", "intruder")
    assert probes.count("socket: present") == 2, probes
    for host in victim_hosts:
        assert probes.count(f"launch {host}: rc=255 fuzz-launch: {host}: ") == 2, probes
        assert f"host '{host}' is not a node of this job" in probes, probes
    assert "hello" not in probes
    single = _log(cluster, "mpi-intruder", "single")
    assert "socket: absent" in single and f"launch {victim_hosts[1]}: rc=127" in single, single
    # the orchestrator's LaunchExec with no job's token: refused before anything runs
    with cluster.client() as client:
        start = substrate_pb2.ExecInput(start=substrate_pb2.ExecStart(args=["true"]))
        call = client.launch_exec(iter([orchestrator_pb2.LaunchExecRequest(
            token="guessed", host=victim_hosts[1], input=start)]))
        with pytest.raises(AccessDeniedError, match="no running multinode job has this launch"):
            list(call)
    cluster.ok("workflow", "cancel", "mpi-victim")
    assert cluster.wait("mpi-victim", timeout=120)["state"] == "CANCELED"


def test_a_rank_whose_node_dies_fails_the_job_at_once_and_leaves_nothing(
        tmp_path: Path, mpi_image: PushedImage) -> None:
    # a grace period of two minutes: the job must not wait it out
    with _cluster(tmp_path, mpi_image, grace="120s") as cluster:
        fuzzfile = ("version: v1\nvolumes: {results: {reference: volume://user/persistent/dead}}"
                    "\njobs:\n" + _mpi_job(mpi_image, "doomed", "[long]",
                                           extra="    mounts: {results: {location: /results}}\n"))
        cluster.start("mpi-dead", fuzzfile)
        root = cluster.volume_root / "persistent" / "admin" / "dead"
        wait_until("the three ranks to start",
                   lambda: len(list(root.glob("started-*"))) == 3, timeout=120)
        status = cluster.status("mpi-dead")
        victim = next(node for node in tasks_by_key(status)["doomed"]["nodes"][1:])
        killed_at = time.monotonic()
        command = kill_agent(cluster, victim)
        status = cluster.wait("mpi-dead", timeout=60)
        assert time.monotonic() - killed_at < 45, "the job waited for the dead node"
        assert status["state"] == "FAILED", dump(status)
        error = tasks_by_key(status)["doomed"]["error"]
        assert f"node {victim} stopped answering" in error, dump(status)
        for node in NODES:  # the living nodes: containers removed, leases free
            if node != victim:
                client = agent_client(cluster, node)
                assert not client.list_containers() and not client.list_leases(), node
        with restarted(command):  # the dead node back: the sweep removes what it held
            def cleaned() -> bool:
                try:
                    client = agent_client(cluster, victim)
                    return not client.list_containers() and not client.list_leases()
                except FuzzError:  # not answering yet
                    return False
            wait_until(f"{victim}'s leftovers to be swept", cleaned, timeout=90)


def test_gasnet_fails_at_start_in_one_sentence_rather_than_running_copies(
        cluster: LocalCluster, mpi_image: PushedImage) -> None:
    fuzzfile = "version: v1\njobs:\n" + _mpi_job(mpi_image, "upc", "[hello]", nodes=2).replace(
        "implementation: openmpi", "implementation: gasnet")
    cluster.start("gasnet", fuzzfile)
    status = cluster.wait("gasnet", timeout=120)
    assert status["state"] == "FAILED", dump(status)
    assert tasks_by_key(status)["upc"]["error"].startswith(
        "multinode implementation gasnet is not supported by fuzz yet"), dump(status)
    assert "hello" not in cluster.fuzz("workflow", "log", "gasnet", "upc").out
