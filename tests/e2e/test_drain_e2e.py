"""End to end: nodes leave the cluster drained (issue 20, point 2).

Real ``fuzz server``, real local agents, real runc containers. Every job asks for all
of a node's cores, so one task runs per node and where each runs is known: ``pin``
(seq 0) goes to ``node[0]``, ``short`` to ``node[1]``, ``queued`` waits for a free node.
Scale-down deletes ``node[1]`` (the highest index). Jobs run ``sleep`` under ``sh``,
which as the container's init ignores SIGTERM: stopping one takes its whole grace.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from fuzz.testing.oci import PushedImage, free_port
from tests.support.cliutil import fuzz_command
from tests.support.orchestratorutil import wait_until
from tests.support.workflowutil import LocalCluster, dump, local_cluster, tasks_by_key

NODE0, NODE1 = "pool.cpu.node[0]", "pool.cpu.node[1]"
JOB = """\
  {name}:
    image: {{uri: {image}}}
    command: [/bin/sh, -c, "{prelude}sleep {seconds}; echo {name} done"]
    resource: {{cpu: {{cores: {cores}}}, memory: {{size: 32MiB}}}}
    policy: {{retry: {{attempts: {attempts}}}}}
"""


def fuzzfile(image: PushedImage, attempts: int = 1, prelude: str = "", **jobs: float) -> str:
    """A Fuzzfile of independent jobs, each sleeping its seconds on a whole node
    (after the shell code ``prelude``)."""
    cores = len(os.sched_getaffinity(0))  # what a local node offers: this machine's cores
    return "version: v1\njobs:\n" + "".join(
        JOB.format(name=name, image=image.reference, seconds=seconds, cores=cores,
                   attempts=attempts, prelude=prelude) for name, seconds in jobs.items())


@pytest.fixture
def cluster(tmp_path: Path, busybox_image: PushedImage) -> Iterator[LocalCluster]:
    """Two local nodes and their orchestrator, for one test."""
    os.chmod(tmp_path, 0o755)
    with local_cluster(tmp_path, [busybox_image.registry.host], free_port()) as running:
        yield running


def set_nodes(cluster: LocalCluster, count: int, drain_timeout: str | None = None) -> None:
    """Rewrite the spec's pool to ``count`` nodes (and a drain_timeout)."""
    path = cluster.directory / "fuzz.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["pools"]["cpu"].update({"min": count, "max": count})
    if drain_timeout is not None:
        spec["pools"]["cpu"]["drain_timeout"] = drain_timeout
    path.write_text(yaml.safe_dump(spec, sort_keys=False))


def start_pinned(cluster: LocalCluster, name: str, text: str) -> None:
    """Start ``text`` and wait until ``pin`` runs on node[0] and ``short`` on node[1]."""
    cluster.start(name, text)
    for task, node in (("pin", NODE0), ("short", NODE1)):
        found = cluster.wait_for(name, task, "RUNNING")
        assert found["nodes"] == [node], dump(cluster.status(name))


def background(cluster: LocalCluster, *args: str) -> subprocess.Popen[str]:
    """``fuzz ARGS`` started in the background (output captured)."""
    return subprocess.Popen(fuzz_command(*args), cwd=cluster.directory, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen[str], timeout: float = 180) -> tuple[int, str]:
    """Wait for a background fuzz; its exit code and everything it printed."""
    out, err = proc.communicate(timeout=timeout)
    assert "Traceback" not in err, err
    return proc.returncode, out + err


def test_scale_down_under_load_fails_no_task_and_moves_queued_work(
        cluster: LocalCluster, busybox_image: PushedImage) -> None:
    start_pinned(cluster, "load", fuzzfile(busybox_image, pin=30, short=15, queued=1))
    assert tasks_by_key(cluster.status("load"))["queued"]["state"] == "QUEUED"
    set_nodes(cluster, 1)
    code, printed = finish(background(cluster, "apply", "--auto-approve"))
    assert code == 0, printed  # one apply: drained, deleted, cleaned up
    assert f"draining {NODE1}: 1 task(s) still running: admin/load short (RUNNING)" in printed
    status = cluster.wait("load")
    tasks = tasks_by_key(status)
    assert status["state"] == "SUCCEEDED", dump(status)
    assert [t["attempt"] for t in tasks.values()] == [1, 1, 1], dump(status)
    # short ended before its node went; queued never went to the cordoned node
    assert tasks["queued"]["nodes"] == [NODE0], dump(status)
    assert cluster.ok("workflow", "log", "load", "short").out == "short done\n"
    nodes = cluster.ok("node", "list", "--json").json()
    assert [row["address"] for row in nodes] == [NODE0]


def test_replace_drains_and_never_fails_a_queued_job(
        cluster: LocalCluster, busybox_image: PushedImage) -> None:
    start_pinned(cluster, "swap", fuzzfile(busybox_image, pin=20, short=12, queued=1))
    code, printed = finish(background(cluster, "apply", "--auto-approve", "--replace", NODE1))
    assert code == 0, printed
    status = cluster.wait("swap")
    assert status["state"] == "SUCCEEDED", dump(status)
    tasks = tasks_by_key(status)
    assert [t["attempt"] for t in tasks.values()] == [1, 1, 1], dump(status)
    cluster.wait_for_nodes()  # the new node[1] joined, and takes work
    cluster.start("after", fuzzfile(busybox_image, a=1, b=1))
    after = tasks_by_key(cluster.wait("after"))
    assert sorted(t["nodes"][0] for t in after.values()) == [NODE0, NODE1]


def test_past_the_drain_timeout_tasks_are_stopped_with_the_reason_and_retried(
        cluster: LocalCluster, busybox_image: PushedImage) -> None:
    start_pinned(cluster, "slow", fuzzfile(busybox_image, attempts=2, pin=3, short=300))
    set_nodes(cluster, 1, drain_timeout="2s")
    started = time.monotonic()
    code, printed = finish(background(cluster, "apply", "--auto-approve"))
    assert code == 0, printed  # one apply, though the job ignored SIGTERM
    assert time.monotonic() - started < 90
    assert f"draining {NODE1}: drain timeout (2s) reached; stopping 1 task(s): " \
           "admin/slow short (RUNNING)" in printed
    short = cluster.wait_for("slow", "short", "RUNNING")  # its second attempt, on node[0]
    assert short["attempt"] == 2 and short["nodes"] == [NODE0], short
    assert f"still running when its node {NODE1} was deleted: the drain timeout (2s) had " \
           "passed" in short["error"], short
    cluster.ok("workflow", "cancel", "slow")


def test_destroy_drains_and_one_destroy_cleans_up(
        cluster: LocalCluster, busybox_image: PushedImage) -> None:
    start_pinned(cluster, "bye", fuzzfile(busybox_image, pin=4, short=300))
    code, printed = finish(background(cluster, "destroy", "--auto-approve",
                                      "--drain-timeout", "20"))
    assert code == 0, printed
    status = cluster.wait("bye")
    tasks = tasks_by_key(status)
    assert tasks["pin"]["state"] == "SUCCEEDED", dump(status)
    assert tasks["short"]["state"] == "FAILED", dump(status)
    assert "the drain timeout (20s) had passed" in tasks["short"]["error"], dump(status)
    assert not [d for d in (cluster.directory / ".fuzz" / "nodes").glob("*/*") if d.is_dir()]


def test_one_destroy_stops_jobs_that_ignore_sigterm_without_an_orchestrator(
        cluster: LocalCluster, busybox_image: PushedImage) -> None:
    # point 4: the first delete failed with "cannot stop its jobs: the container monitor
    # (pid …) did not exit" (the job's 10 s grace outlasted the provider's wait)
    start_pinned(cluster, "stubborn", fuzzfile(busybox_image, prelude="trap '' TERM; ",
                                               pin=300, short=300))
    cluster.ok("server", "--stop")
    code, printed = finish(background(cluster, "destroy", "--auto-approve"))
    assert code == 0, printed
    assert "they are deleted without draining" in printed
    assert not [d for d in (cluster.directory / ".fuzz" / "nodes").glob("*/*") if d.is_dir()]


def test_plan_shows_the_running_tasks_a_change_would_interrupt(
        cluster: LocalCluster, busybox_image: PushedImage) -> None:
    start_pinned(cluster, "busy", fuzzfile(busybox_image, pin=300, short=300))
    set_nodes(cluster, 1)
    planned = cluster.ok("plan", "--json").json()
    assert planned["interrupts"] == {NODE1: [
        {"workflow": "busy", "owner": "admin", "task": "short", "job": "short",
         "state": "RUNNING"}]}
    text = cluster.ok("plan").out
    assert "Running tasks these changes would interrupt" in text
    assert f"{NODE1}: admin/busy short (RUNNING)" in text
    destroy = cluster.ok("plan", "--destroy", "--json").json()
    assert set(destroy["interrupts"]) == {NODE0, NODE1}
    cluster.ok("workflow", "cancel", "busy")


def test_admins_cordon_uncordon_and_drain_nodes(
        cluster: LocalCluster, busybox_image: PushedImage) -> None:
    for action in ("cordon", "uncordon", "drain"):
        unknown = cluster.fuzz("node", action, "pool.cpu.node[7]")
        assert unknown.code == 1, unknown.out
        assert "no node 'pool.cpu.node[7]' is registered" in unknown.err, unknown.err
    cordoned = cluster.ok("node", "cordon", NODE0, "--json").json()
    assert cordoned == {"node": NODE0, "state": "CORDONED", "tasks": []}
    listed = {row["address"]: row for row in cluster.ok("node", "list", "--json").json()}
    assert listed[NODE0]["scheduling"] == "CORDONED"
    assert listed[NODE1]["scheduling"] == "READY"
    cluster.start("one", fuzzfile(busybox_image, a=1, b=1))  # one at a time, on node[1]
    status = cluster.wait("one")
    assert [t["nodes"] for t in status["tasks"]] == [[NODE1], [NODE1]], dump(status)
    cluster.ok("node", "uncordon", NODE0)
    cluster.start("two", fuzzfile(busybox_image, a=3, b=3))
    tasks = tasks_by_key(cluster.wait("two"))
    assert sorted(t["nodes"][0] for t in tasks.values()) == [NODE0, NODE1]

    cluster.start("three", fuzzfile(busybox_image, a=12))
    cluster.wait_for("three", "a", "RUNNING")
    node = tasks_by_key(cluster.status("three"))["a"]["nodes"][0]
    drained = cluster.ok("node", "drain", node, "--timeout", "60s").out
    assert f"draining {node}: 1 task(s) still running: admin/three a (RUNNING)" in drained
    assert f"Node {node} is drained (DRAINING)" in drained
    assert tasks_by_key(cluster.status("three"))["a"]["state"] == "SUCCEEDED"
    wait_until("the drained node listed", lambda: {
        row["address"]: row["scheduling"]
        for row in cluster.ok("node", "list", "--json").json()}[node] == "DRAINING")
    cluster.ok("node", "uncordon", node)


def test_only_admins_may_cordon(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
                                ) -> None:
    added = cluster.ok("iam", "user", "add", "carol", "--role", "user", "--json").json()
    home = tmp_path_factory.mktemp("carol")
    env = {**os.environ, "FUZZ_CONFIG": str(home / "config.yaml")}
    endpoint = json.loads((cluster.data_dir / "server.json").read_text())["endpoint"]
    login = subprocess.run(fuzz_command("login", endpoint, "--code", added["code"],
                                        "--ca-file", str(cluster.data_dir / "ca.pem")),
                           cwd=home, env=env, capture_output=True, text=True, timeout=60)
    assert login.returncode == 0, login.stderr
    for action in ("cordon", "uncordon", "drain"):
        refused = subprocess.run(fuzz_command("node", action, NODE0), cwd=home, env=env,
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1, refused.stdout
        assert "Traceback" not in refused.stderr
        assert f"permission denied: carol may not node:drain on node/{NODE0}" in \
            refused.stderr, refused.stderr
    states = {row["address"]: row["scheduling"]
              for row in cluster.ok("node", "list", "--json").json()}
    assert states == {NODE0: "READY", NODE1: "READY"}
