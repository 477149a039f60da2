"""End to end: agents die under running tasks and come back, or stay dead (issue 20, point 1).

Real local clusters (``fuzz server`` and ``fuzz apply``), real runc containers:
an agent is killed with SIGKILL while its container monitor keeps the jobs
running, then started again in place as a supervisor would (same command line,
same state dir, a new port), or left dead past the orchestrator's grace period
(``orchestrator.node_grace``).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fuzz.testing.oci import PushedImage, free_port
from tests.support.agents import (
    agent_client,
    kill_agent,
    live_endpoint,
    restarted,
    start_again,
    state_dir,
)
from tests.support.orchestratorutil import wait_until
from tests.support.workflowutil import LocalCluster, dump, local_cluster, tasks_by_key

NODE0, NODE1 = "pool.cpu.node[0]", "pool.cpu.node[1]"
LINES = 40  # each line 0.2 s apart: the job runs for about 8 s


@contextlib.contextmanager
def _cluster(tmp_path: Path, image: PushedImage, nodes: int,
             grace: str) -> Iterator[LocalCluster]:
    os.chmod(tmp_path, 0o755)  # jobs run as nobody; volumes live under it
    with local_cluster(tmp_path, [image.registry.host], free_port(), nodes=nodes,
                       orchestrator={"node_grace": grace}) as running:
        yield running


@pytest.fixture
def one_node(tmp_path: Path, busybox_image: PushedImage) -> Iterator[LocalCluster]:
    """One node whose agent is given 60 s to come back."""
    with _cluster(tmp_path, busybox_image, 1, "60s") as cluster:
        yield cluster


@pytest.fixture
def two_nodes(tmp_path: Path, busybox_image: PushedImage) -> Iterator[LocalCluster]:
    """Two nodes; an agent silent for 3 s is lost."""
    with _cluster(tmp_path, busybox_image, 2, "3s") as cluster:
        yield cluster


def _counting(image: PushedImage, *names: str, attempts: int = 1) -> str:
    jobs = "".join(f"""\
  {name}:
    image: {{uri: {image.reference}}}
    script: for i in $(seq 1 {LINES}); do echo "{name} $i"; sleep 0.2; done
    resource: {{cpu: {{cores: 1}}, memory: {{size: 32MiB}}}}
    policy: {{retry: {{attempts: {attempts}}}}}
""" for name in names)
    return f"version: v1\njobs:\n{jobs}"


def _stdout(cluster: LocalCluster, status: dict[str, object], task: str) -> str:
    run = cluster.data_dir / "logs" / f"{status['owner']}.{status['name']}.{status['run']}"
    return (run / f"{task}.stdout").read_text()


def _server_log(cluster: LocalCluster) -> str:
    return (cluster.data_dir / "server.log").read_text(errors="replace")


def _started_within(cluster: LocalCluster, name: str, task: str, seconds: float) -> dict:
    """Start a one-task workflow; the task's record once it ran, checked to have started
    within ``seconds`` of the workflow's creation."""
    status = cluster.wait(name, timeout=60)
    found = tasks_by_key(status)[task]
    assert found["started"] - status["created"] < seconds, dump(status)
    return found


def test_tasks_survive_their_agent_restarting_in_place(
        one_node: LocalCluster, busybox_image: PushedImage) -> None:
    cluster = one_node
    cluster.start("survive", _counting(busybox_image, "left", "right"))
    for task in ("left", "right"):
        cluster.wait_for("survive", task, "RUNNING")
    old_endpoint = live_endpoint(state_dir(cluster, NODE0))
    command = kill_agent(cluster, NODE0)
    time.sleep(2)  # the orchestrator's waits fail meanwhile: it must keep waiting
    tasks = tasks_by_key(cluster.status("survive"))
    assert [tasks[t]["state"] for t in ("left", "right")] == ["RUNNING", "RUNNING"], tasks
    with restarted(command):
        status = cluster.wait("survive")
        assert status["state"] == "SUCCEEDED", dump(status)
        for task in ("left", "right"):
            assert tasks_by_key(status)[task]["attempt"] == 1
            assert _stdout(cluster, status, task) == "".join(
                f"{task} {i}\n" for i in range(1, LINES + 1))

        # the restarted agent replaced the old endpoint, in the admin's node list too
        new_endpoint = live_endpoint(state_dir(cluster, NODE0))
        assert new_endpoint and new_endpoint != old_endpoint
        rows = cluster.ok("node", "list", "--json").json()
        assert [(r["endpoint"], r["agent"]) for r in rows] == [(new_endpoint, "ready")], rows
        with cluster.client() as client:
            nodes = client.list_nodes()
        assert [(n.endpoint, n.state) for n in nodes] == [(new_endpoint, "READY")]

        # the leases went back at once: the next workflow starts without waiting
        cluster.start("next", _counting(busybox_image, "after").replace(
            f"seq 1 {LINES}", "seq 1 2"))
        _started_within(cluster, "next", "after", 5)


def test_a_lost_node_s_tasks_are_retried_elsewhere_or_fail_naming_it(
        two_nodes: LocalCluster, busybox_image: PushedImage) -> None:
    cluster = two_nodes
    fuzzfile = _counting(busybox_image, "retried", attempts=2) + \
        _counting(busybox_image, "once").split("jobs:\n", 1)[1]
    cluster.start("lost", fuzzfile)
    for task in ("retried", "once"):
        found = cluster.wait_for("lost", task, "RUNNING")
        assert found["nodes"] == [NODE0]  # best fit: both on the first node
    command = kill_agent(cluster, NODE0)
    status = cluster.wait("lost")
    tasks = tasks_by_key(status)
    assert tasks["retried"]["state"] == "SUCCEEDED", dump(status)
    assert (tasks["retried"]["attempt"], tasks["retried"]["nodes"]) == (2, [NODE1])
    assert tasks["once"]["state"] == "FAILED", dump(status)
    assert f"node {NODE0} is lost" in tasks["once"]["error"], dump(status)
    log = _server_log(cluster)
    assert f"node {NODE0} is lost" in log, log
    assert "retried: attempt 1 failed" in log and "queued again" in log, log
    with cluster.client() as client:
        states = {n.name: n.state for n in client.list_nodes()}
    assert states[NODE0] == "LOST", states

    # the node comes back: what was left there is cleaned up, its leases given back
    with restarted(command):
        wait_until("the lost node's leases given back", lambda: _no_leases(cluster, NODE0),
                   timeout=30)
        with cluster.client() as client:
            wait_until("the node ready again", lambda: {
                n.name: n.state for n in client.list_nodes()}[NODE0] == "READY", timeout=30)


def _no_leases(cluster: LocalCluster, address: str) -> bool:
    if not live_endpoint(state_dir(cluster, address)):
        return False
    with agent_client(cluster, address) as client:
        try:
            return client.list_leases() == [] and client.list_containers() == []
        except Exception:  # not answering yet
            return False


def test_a_node_refusing_leases_is_skipped_until_it_has_room(
        two_nodes: LocalCluster, busybox_image: PushedImage) -> None:
    cluster = two_nodes
    for node in (NODE0, NODE1):  # what is timed is the placement, not a first pull
        with agent_client(cluster, node) as client:
            list(client.pull_image(busybox_image.reference))
    with agent_client(cluster, NODE0) as client:
        cores = client.inventory().cores
        held = client.acquire_lease(cores, holder="a leaked lease", ttl_seconds=600)
    short = _counting(busybox_image, "quick").replace(f"seq 1 {LINES}", "seq 1 2")
    cluster.start("refused", short)
    found = _started_within(cluster, "refused", "quick", 5)
    assert found["state"] == "SUCCEEDED" and found["nodes"] == [NODE1], found

    # once the node has room again it is chosen again (best fit: by name)
    with agent_client(cluster, NODE0) as client:
        client.release_lease(held.id)
    wait_until("the node schedulable again", lambda: _placed_on(cluster, short), timeout=60)


_runs = iter(range(1000))


def _placed_on(cluster: LocalCluster, fuzzfile: str) -> bool:
    name = f"again{next(_runs)}"
    cluster.start(name, fuzzfile)
    return tasks_by_key(cluster.wait(name))["quick"]["nodes"] == [NODE0]


def test_a_running_task_whose_container_vanished_is_resolved_after_a_restart(
        one_node: LocalCluster, busybox_image: PushedImage) -> None:
    cluster = one_node
    cluster.start("vanish", _counting(busybox_image, "gone"))
    cluster.wait_for("vanish", "gone", "RUNNING")
    os.kill(cluster.server_pid(), signal.SIGKILL)
    with agent_client(cluster, NODE0) as client:
        (container,) = client.list_containers()
        client.cancel_container(container.id)
        wait_until("the container ended",
                   lambda: client.get_container(container.id).state in ("exited", "failed"))
        client.remove_container(container.id, release_lease=True)
    cluster.ok("server", "--detach")
    status = cluster.wait("vanish")
    task = tasks_by_key(status)["gone"]
    assert (task["state"], task["attempt"]) == ("FAILED", 1), dump(status)
    assert f"its container is gone from node {NODE0}" in task["error"], dump(status)


CHAOS = """\
version: v1
volumes:
  marks: {{reference: volume://user/persistent/chaos}}
jobs:
  work:
    image: {{uri: {image}}}
    task-array: {{start: 1, end: {count}}}
    script: echo "start $FB_TASK_ID" >> /marks/log; sleep 1.5; echo "end $FB_TASK_ID" >> /marks/log
    mounts: {{marks: {{location: /marks}}}}
    resource: {{cpu: {{cores: 1}}, memory: {{size: 32MiB}}}}
"""


def test_agents_killed_again_and_again_lose_and_repeat_nothing(
        tmp_path: Path, busybox_image: PushedImage) -> None:
    """Agents killed every few seconds (mid-start, mid-wait, mid-copy of the logs), each
    restarted after a moment, once with the orchestrator killed and restarted while an
    agent was down: every task runs exactly once and succeeds."""
    count = 16
    with _cluster(tmp_path, busybox_image, 2, "60s") as cluster:
        cluster.start("chaos", CHAOS.format(image=busybox_image.reference, count=count))
        restarts: list[subprocess.Popen[bytes]] = []
        try:
            for round_ in itertools.count():
                if cluster.status("chaos")["state"] != "RUNNING" or round_ == 12:
                    break
                command = kill_agent(cluster, (NODE0, NODE1)[round_ % 2])
                if round_ == 3:  # the orchestrator dies too, and comes back before the agent
                    os.kill(cluster.server_pid(), signal.SIGKILL)
                    cluster.ok("server", "--detach")
                time.sleep(0.3 + 0.4 * (round_ % 3))
                restarts.append(start_again(command))
                time.sleep(1.0 + 0.5 * (round_ % 2))
            status = cluster.wait("chaos", timeout=180)
        finally:
            for proc in restarts:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
        assert status["state"] == "SUCCEEDED", dump(status)
        assert all(task["attempt"] == 1 for task in status["tasks"]), dump(status)
        marks = cluster.volume_root / "persistent" / "admin" / "chaos" / "log"
        lines = sorted(marks.read_text().splitlines())
        assert lines == sorted(f"{word} {i}" for word in ("start", "end")
                               for i in range(1, count + 1)), lines


def test_what_a_lost_node_held_is_cleaned_up_after_an_orchestrator_restart_too(
        two_nodes: LocalCluster, busybox_image: PushedImage) -> None:
    cluster = two_nodes
    cluster.start("orphans", _counting(busybox_image, "moved", attempts=2))
    assert cluster.wait_for("orphans", "moved", "RUNNING")["nodes"] == [NODE0]
    command = kill_agent(cluster, NODE0)
    wait_until("the task moved to the other node", lambda: (
        tasks_by_key(cluster.status("orphans"))["moved"]["nodes"] == [NODE1]), timeout=60)
    os.kill(cluster.server_pid(), signal.SIGKILL)  # it forgets what it left on the lost node
    cluster.ok("server", "--detach")
    with restarted(command):
        wait_until("the lost node's container and lease removed",
                   lambda: _no_leases(cluster, NODE0), timeout=60)
        status = cluster.wait("orphans")
    assert status["state"] == "SUCCEEDED", dump(status)


def test_a_multinode_task_survives_one_of_its_agents_restarting(
        tmp_path: Path, busybox_image: PushedImage) -> None:
    fuzzfile = f"""\
version: v1
jobs:
  ranks:
    image: {{uri: {busybox_image.reference}}}
    script: for i in $(seq 1 {LINES}); do echo "rank $FUZZ_RANK $i"; sleep 0.2; done
    multinode: {{nodes: 2, implementation: generic}}
"""
    with _cluster(tmp_path, busybox_image, 2, "60s") as cluster:
        cluster.start("ranks", fuzzfile)
        cluster.wait_for("ranks", "ranks", "RUNNING")
        command = kill_agent(cluster, NODE1)
        time.sleep(2)  # the rank on the other node runs on; the orchestrator keeps waiting
        assert tasks_by_key(cluster.status("ranks"))["ranks"]["state"] == "RUNNING"
        with restarted(command):
            status = cluster.wait("ranks")
        assert status["state"] == "SUCCEEDED", dump(status)
        assert tasks_by_key(status)["ranks"]["attempt"] == 1
        for rank, kept in enumerate(("ranks", "ranks.node1")):  # each rank's output apart
            assert _stdout(cluster, status, kept) == "".join(
                f"rank {rank} {i}\n" for i in range(1, LINES + 1))
