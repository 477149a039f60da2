"""End to end: multinode jobs are gang-scheduled (issue 17).

A multinode job takes all its nodes at once or none: it never holds some leases
while it waits for the rest, so two 2-node jobs on three nodes cannot each hold
one node and wait forever for a second. Every job here asks for all of a node's
cores, so no two jobs share a node: the second must wait for the first to end.
Real ``fuzz server``, three real local agents, real runc containers.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fuzz.testing.oci import PushedImage, free_port
from tests.support.workflowutil import LocalCluster, dump, local_cluster, tasks_by_key

CORES = len(os.sched_getaffinity(0))  # what a local node offers: this machine's cores
HOLD_VOLUME = "gang-hold"  # a held job runs until the test puts RELEASE in it
RELEASE = "go"
GANG = """\
version: v1
{volumes}jobs:
{jobs}"""
JOB = """\
  {name}:
    image: {{uri: {image}}}
    command: [/bin/sh, -c, "{wait}; echo $FUZZ_RANK"]
    resource: {{cpu: {{cores: {cores}}}, memory: {{size: 32MiB}}}}
    multinode: {{nodes: 2, implementation: generic}}
"""
HOLD = f"volumes:\n  hold: {{reference: volume://user/persistent/{HOLD_VOLUME}}}\n"
HELD = f"until [ -e /hold/{RELEASE} ]; do sleep 0.2; done"
HELD_MOUNT = "    mounts: {hold: {location: /hold}}\n"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, busybox_image: PushedImage
            ) -> Iterator[LocalCluster]:
    """Three local nodes and their orchestrator."""
    directory = tmp_path_factory.mktemp("gang")
    os.chmod(directory, 0o755)
    with local_cluster(directory, [busybox_image.registry.host], free_port(),
                       nodes=3) as running:
        yield running


def jobs(image: PushedImage, *names: str, hold: bool = False) -> str:
    """A Fuzzfile of independent 2-node jobs, each taking all of both its nodes' cores
    for a second, or the first (``hold``) until it is released (:func:`release`)."""
    held = [hold] + [False] * (len(names) - 1)
    return GANG.format(volumes=HOLD if hold else "", jobs="".join(
        JOB.format(name=name, image=image.reference, cores=CORES,
                   wait=HELD if held_job else "sleep 1") + (HELD_MOUNT if held_job else "")
        for name, held_job in zip(names, held, strict=True)))


def release(cluster: LocalCluster) -> None:
    """Let the held job end (a no-op when its volume was never made)."""
    with contextlib.suppress(FileNotFoundError):
        (cluster.volume_root / "persistent" / "admin" / HOLD_VOLUME / RELEASE).touch()


def assert_one_after_the_other(cluster: LocalCluster, runs: list[tuple[str, str]]) -> None:
    """Each of ``runs`` (workflow, job) succeeded on two nodes, and jobs that shared a
    node did not overlap in time."""
    ended = []
    for workflow, job in runs:
        status = cluster.wait(workflow, timeout=180)
        assert status["state"] == "SUCCEEDED", dump(status)
        ended.append(tasks_by_key(status)[job])
        assert len(set(ended[-1]["nodes"])) == 2, dump(status)
    spans = sorted(ended, key=lambda task: task["started"])
    for before, after in itertools.pairwise(spans):
        if set(before["nodes"]) & set(after["nodes"]):
            assert after["started"] >= before["finished"], (before, after)


def test_two_two_node_jobs_on_three_nodes_both_finish(cluster: LocalCluster,
                                                      busybox_image: PushedImage) -> None:
    cluster.start("pair", jobs(busybox_image, "first", "second", hold=True))
    try:
        cluster.wait_for("pair", "first", "RUNNING")  # and it runs until released
        waiting = tasks_by_key(cluster.status("pair"))["second"]
        assert waiting["state"] == "QUEUED" and waiting["nodes"] == [], waiting  # no node held
        assert "on each of 2 nodes" in waiting["waiting_for"], waiting
    finally:
        release(cluster)
    assert_one_after_the_other(cluster, [("pair", "first"), ("pair", "second")])


@pytest.mark.parametrize("round_", range(3))
def test_soak_two_workflows_of_two_node_jobs_started_together(
        cluster: LocalCluster, busybox_image: PushedImage, tmp_path: Path, round_: int) -> None:
    names = [f"soak{round_}-{side}" for side in ("a", "b")]
    paths = []
    for name in names:
        paths.append(tmp_path / f"{name}.yaml")
        paths[-1].write_text(jobs(busybox_image, "gang"))
    for name, path in zip(names, paths, strict=True):
        cluster.ok("workflow", "start", name, str(path))
    assert_one_after_the_other(cluster, [(name, "gang") for name in names])
