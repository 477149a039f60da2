"""End to end: the orchestrator grows an AWS pool (moto) for queued jobs and shrinks it again.

``fuzz server`` runs the elastic loop against moto's EC2. The test plays each
new instance as a machine would: it reads the instance's user-data from moto and
runs that bootstrap script locally (:func:`fuzz.testing.boot.boot`), so the node
joins through the real bootstrap path; a terminated instance's agent is stopped.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fuzz.plugin.provider import TAG_CLUSTER
from fuzz.testing.boot import boot, stop_agents
from fuzz.testing.oci import PushedImage, free_port
from tests.support.cliutil import kill_agents
from tests.support.moto_server import AMI, REGION, Ec2Front, MotoEc2
from tests.support.workflowutil import LocalCluster, dump, tasks_by_key

CLUSTER = "elastic"
SPEC = """\
version: 1
cluster: {cluster}
state: {{backend: local, path: .fuzz/state.json}}
providers:
  aws:
    region: {region}
    endpoint_url: {endpoint}
    ami: {ami}
    prices: {{m5.large: 0.096, m5.xlarge: 0.192}}
    max_attempts: 1
    bootstrap: {{insecure_registries: [{registry}]}}
pools:
  burst:
    provider: aws
    offerings: [m5.xlarge, m5.large]
    min: 0
    max: 3
    idle_ttl: 3s
    boot_timeout: {boot_timeout}
    boot_retries: {boot_retries}
orchestrator:
  listen: 127.0.0.1:{port}
  data_dir: .fuzz/server
  reconcile_interval: 0.3s
"""

JOBS = """\
version: v1
jobs:
{jobs}
"""
JOB = """\
  {name}:
    image: {{uri: {image}}}
    command: [/bin/sh, -c, "echo ran"]
    resource: {{cpu: {{cores: {cores}}}, memory: {{size: 64MiB}}}}
"""


class Machines:
    """Plays every instance moto starts for the cluster; stops the agents of terminated ones."""

    def __init__(self, moto: MotoEc2, root: Path, play: bool) -> None:
        self.moto, self.root, self.play = moto, root, play
        self.seen: dict[str, str] = {}  # instance id → instance type
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def instances(self) -> list[dict[str, Any]]:
        pages = self.moto.client().get_paginator("describe_instances").paginate(
            Filters=[{"Name": f"tag:{TAG_CLUSTER}", "Values": [CLUSTER]}])
        return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]

    def live(self) -> list[dict[str, Any]]:
        return [i for i in self.instances()
                if i["State"]["Name"] not in ("terminated", "shutting-down")]

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            for instance in self.instances():
                ident, state = instance["InstanceId"], instance["State"]["Name"]
                if state in ("terminated", "shutting-down"):
                    stop_agents(self.root / ident, wait=2.0)
                elif ident not in self.seen:
                    self.seen[ident] = instance["InstanceType"]
                    if self.play:
                        self._boot(ident)

    def _boot(self, ident: str) -> None:
        data = self.moto.client().describe_instance_attribute(
            InstanceId=ident, Attribute="userData")["UserData"]["Value"]
        try:
            boot(base64.b64decode(data).decode(), self.root / ident, timeout=30)
        except Exception as exc:  # reported by the test, not lost in this thread
            self.errors.append(f"{ident}: {exc}")

    def __enter__(self) -> Machines:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@contextlib.contextmanager
def elastic_cluster(moto: MotoEc2, directory: Path, image: PushedImage, play: bool = True,
                    boot_timeout: str = "60s", boot_retries: int = 3, endpoint: str = ""
                    ) -> Iterator[tuple[LocalCluster, Machines]]:
    """An orchestrator with an elastic AWS pool on moto (or ``endpoint``, a front to it),
    and the machines it starts."""
    os.chmod(directory, 0o755)
    (directory / "fuzz.yaml").write_text(SPEC.format(
        cluster=CLUSTER, region=REGION, endpoint=endpoint or moto.endpoint_url, ami=AMI,
        registry=image.registry.host, boot_timeout=boot_timeout, boot_retries=boot_retries,
        port=free_port()))
    cluster = LocalCluster(directory, 0)
    machines = Machines(moto, directory / "machines", play)
    try:
        cluster.ok("init")
        cluster.ok("server", "--detach")
        with machines:
            yield cluster, machines
    finally:
        cluster.fuzz("server", "--stop")
        stop_agents(machines.root, wait=2.0)  # the machines still up, with their jobs
        kill_agents(directory)


def wait_until(what: str, check: Any, timeout: float = 40.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return found


def node_list(cluster: LocalCluster) -> list[str]:
    """The addresses ``fuzz node list`` shows (it waits for the loop's state lock)."""
    rows = cluster.ok("node", "list", "--json", "--lock-timeout", "20s").json()
    return [str(row["address"]) for row in rows]


def test_queued_jobs_grow_the_pool_with_the_cheapest_type_and_idle_nodes_go(
    moto_ec2: MotoEc2, tmp_path: Path, busybox_image: PushedImage
) -> None:
    with elastic_cluster(moto_ec2, tmp_path, busybox_image) as (cluster, machines):
        jobs = "".join(JOB.format(name=n, image=busybox_image.reference, cores=1)
                       for n in ("first", "second"))
        cluster.start("burst", JOBS.format(jobs=jobs))
        listed = wait_until("a node in fuzz node list", lambda: node_list(cluster))
        status = cluster.wait("burst", timeout=60)
        assert status["state"] == "SUCCEEDED", dump(status) + "\n".join(machines.errors)
        nodes = {node for task in status["tasks"] for node in task["nodes"]}
        assert nodes and all(n.startswith("pool.burst.node[") for n in nodes), nodes
        assert set(machines.seen.values()) == {"m5.large"}, (
            "1 core each: an m5.large (2 vCPUs, $0.096) is cheaper than an m5.xlarge")
        assert set(listed) <= nodes

        wait_until("the idle instances to be terminated", lambda: not machines.live())
        wait_until("the nodes to leave fuzz node list", lambda: not node_list(cluster))
        pools = cluster.ok("pool", "list", "--json").json()["pools"]
        assert [(p["name"], p["failing"]) for p in pools] == [("burst", "")]


def test_a_job_no_offering_can_hold_fails_at_once_with_the_reason(
    moto_ec2: MotoEc2, tmp_path: Path, busybox_image: PushedImage
) -> None:
    with elastic_cluster(moto_ec2, tmp_path, busybox_image) as (cluster, machines):
        cluster.start("huge", JOBS.format(jobs=JOB.format(
            name="huge", image=busybox_image.reference, cores=64)))
        status = cluster.wait("huge", timeout=20)
        task = tasks_by_key(status)["huge"]
        assert (status["state"], task["state"]) == ("FAILED", "FAILED"), dump(status)
        assert "needs 64 cores; the largest offering in pool burst has 4" in task["error"]
        assert machines.seen == {}


def test_an_instance_that_never_joins_is_replaced_then_the_pool_fails(
    moto_ec2: MotoEc2, tmp_path: Path, busybox_image: PushedImage
) -> None:
    with elastic_cluster(moto_ec2, tmp_path, busybox_image, play=False, boot_timeout="2s",
                         boot_retries=1) as (cluster, machines):
        cluster.start("stuck", JOBS.format(jobs=JOB.format(
            name="stuck", image=busybox_image.reference, cores=1)))

        def failing() -> str:
            pools = cluster.ok("pool", "list", "--json").json()["pools"]
            return str(pools[0]["failing"]) if pools else ""

        reason = wait_until("the pool to be marked failing", failing)
        assert "did not join within 2s after 1 replacement(s)" in reason
        assert len(machines.seen) == 2, "the first instance and one replacement"
        wait_until("the replacement to be terminated", lambda: not machines.live())
        task = wait_until("the task to say why it waits", lambda: (
            t := tasks_by_key(cluster.status("stuck"))["stuck"])["waiting_for"]
            and "failing" in t["waiting_for"] and t)
        assert task["state"] == "QUEUED"
        assert "pool burst is failing" in task["waiting_for"]


def test_kill_9_of_the_orchestrator_mid_create_leaves_one_recorded_instance(
    moto_ec2: MotoEc2, ec2_front: Ec2Front, tmp_path: Path, busybox_image: PushedImage
) -> None:
    with elastic_cluster(moto_ec2, tmp_path, busybox_image, play=False,
                         endpoint=ec2_front.url) as (cluster, machines):
        with ec2_front.holding("RunInstances"):  # EC2 acts, its answer is held back
            cluster.start("crash", JOBS.format(jobs=JOB.format(
                name="crash", image=busybox_image.reference, cores=1)))
            wait_until("EC2 to start an instance", machines.live)
            os.kill(cluster.server_pid(), signal.SIGKILL)  # before it heard the instance id
        state = json.loads((tmp_path / ".fuzz" / "state.json").read_text())
        assert [r["status"] for r in state["resources"].values()] == ["pending_create"]

        cluster.ok("server", "--detach")  # carries on: the create again, same client token

        def recorded() -> list[str]:
            state = json.loads((tmp_path / ".fuzz" / "state.json").read_text())
            return [str(r["provider_id"]) for r in state["resources"].values()
                    if r["status"] == "created"]

        assert wait_until("the instance to be recorded", recorded) == \
            [i["InstanceId"] for i in machines.live()]
        assert len(machines.instances()) == 1, "no duplicate instance, none orphaned"


def test_a_quota_error_shows_and_plan_and_apply_go_with_the_orchestrator(
    moto_ec2: MotoEc2, ec2_front: Ec2Front, tmp_path: Path, busybox_image: PushedImage
) -> None:
    quota = "You have requested more vCPU capacity than your current vCPU limit of 0 allows"
    with elastic_cluster(moto_ec2, tmp_path, busybox_image,
                         endpoint=ec2_front.url) as (cluster, machines):
        with ec2_front.failing("RunInstances", "VcpuLimitExceeded", quota):
            cluster.start("quota", JOBS.format(jobs=JOB.format(
                name="quota", image=busybox_image.reference, cores=1).replace(
                    "echo ran", "sleep 15")))  # outlasts fuzz apply below on a loaded machine
            task = wait_until("the task to name the provider's error", lambda: (
                t := tasks_by_key(cluster.status("quota"))["quota"])["waiting_for"]
                and quota in t["waiting_for"] and t)
            assert task["state"] == "QUEUED"
            assert "pool burst" in task["waiting_for"], task["waiting_for"]
            pools = cluster.ok("pool", "list", "--json").json()["pools"]
            assert quota in pools[0]["error"] and pools[0]["failing"] == ""

            plan = cluster.ok("plan", "--json", "--lock-timeout", "20s").json()
            assert plan["membership"] == "orchestrator"
            assert [(c["address"], c["action"]) for c in plan["changes"]] == [
                ("pool.burst.node[0]", "create")], plan["changes"]
            assert machines.seen == {}, "EC2 refused every RunInstances"

        cluster.wait_for("quota", "quota", "RUNNING")  # the quota is raised: the pool grows
        applied = cluster.ok("apply", "--auto-approve", "--json", "--lock-timeout", "20s")
        result = [json.loads(line) for line in applied.out.splitlines()][-1]
        assert (result["added"], result["destroyed"]) == (0, 0), (
            "fuzz apply in CI keeps the orchestrator's member")
        assert [i["InstanceType"] for i in machines.live()] == ["m5.large"]
        status = cluster.wait("quota", timeout=60)
        assert status["state"] == "SUCCEEDED", dump(status) + "\n".join(machines.errors)
        pools = cluster.ok("pool", "list", "--json").json()["pools"]
        assert pools[0]["error"] == "", "a create that succeeded clears the pool's error"
