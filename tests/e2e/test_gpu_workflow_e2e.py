"""End to end: a Fuzzfile's GPU jobs on a local cluster whose node declares 2 GPUs.

The local provider's ``inventory`` makes the node's agent serve the declared test
node (2 sockets x 2 NUMA x 8 cores, 2 GPUs) and its ``cdi_dirs`` give the agent a
CDI spec whose GPUs are stand-in character devices (the null device's numbers,
made with mknod in the test's directory). The orchestrator places the jobs by
their ``devices``, the agent leases GPUs to them, and each runc container shows
what it got: the test reads the jobs' logs.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

import pytest
import yaml

from fuzz.testing.oci import PushedImage, free_port
from tests.support.declared import declared_node_yaml
from tests.support.workflowutil import LocalCluster, dump, local_cluster, tasks_by_key

GPU = "nvidia.com/gpu"
SHOW = ('for d in /dev/nvidia*; do [ -c "$d" ] && echo "$d"; done; '
        'echo "visible=$NVIDIA_VISIBLE_DEVICES"')
JOB = """\
  {name}:
    image: {{uri: {image}}}
    command: [/bin/sh, -c, '{script}']
    resource: {{cpu: {{cores: 1}}, memory: {{size: 32MiB}}, devices: {{{gpu}: {gpus}}}}}
"""


@pytest.fixture(scope="module")
def gpu_cluster(tmp_path_factory: pytest.TempPathFactory,
                busybox_image: PushedImage) -> Iterator[LocalCluster]:
    """One local node declaring 2 GPUs, whose CDI spec names two stand-in devices."""
    directory = tmp_path_factory.mktemp("gpus")
    os.chmod(directory, 0o755)
    (directory / "node.yaml").write_text(declared_node_yaml())
    (directory / "cdi").mkdir()
    devices = []
    for index in (0, 1):
        stand_in = directory / f"stand-in-gpu{index}"
        os.mknod(stand_in, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        devices.append({"name": str(index), "containerEdits": {
            "deviceNodes": [{"path": f"/dev/nvidia{index}", "hostPath": str(stand_in)}]}})
    (directory / "cdi" / "nvidia.yaml").write_text(yaml.safe_dump({
        "cdiVersion": "0.6.0", "kind": GPU, "devices": devices}))
    with local_cluster(directory, [busybox_image.registry.host], free_port(), nodes=1,
                       local={"inventory": "node.yaml", "cdi_dirs": ["cdi"]}) as running:
        yield running


def _log(cluster: LocalCluster, workflow: str, job: str) -> list[str]:
    return cluster.ok("workflow", "log", workflow, job).out.splitlines()


def test_gpu_jobs_get_their_own_gpus_and_wait_for_them(gpu_cluster: LocalCluster,
                                                       busybox_image: PushedImage) -> None:
    jobs = "".join(JOB.format(name=name, image=busybox_image.reference, gpu=GPU, gpus=gpus,
                              script=script)
                   for name, gpus, script in (
                       ("one", 1, f"{SHOW}; sleep 2"),
                       ("other", 1, f"{SHOW}; sleep 2"),
                       ("both", 2, SHOW)))
    gpu_cluster.start("gpus", f"version: v1\njobs:\n{jobs}")
    status = gpu_cluster.wait("gpus", timeout=90)
    assert status["state"] == "SUCCEEDED", dump(status)
    seen = {job: _log(gpu_cluster, "gpus", job) for job in ("one", "other", "both")}
    singles = sorted(seen["one"] + seen["other"])
    assert singles == ["/dev/nvidia0", "/dev/nvidia1", "visible=0", "visible=1"], seen
    assert seen["one"][1] == f"visible={seen['one'][0].removeprefix('/dev/nvidia')}"
    assert seen["both"] == ["/dev/nvidia0", "/dev/nvidia1", "visible=0,1"], seen
    one, other, both = (tasks_by_key(status)[job] for job in ("one", "other", "both"))
    assert one["started"] < other["finished"] and other["started"] < one["finished"], (
        "the 1-GPU jobs ran at the same time, each on its own GPU")
    assert both["started"] >= max(one["finished"], other["finished"]), (
        "the 2-GPU job waited until both GPUs were given back")


def test_a_job_wanting_more_gpus_than_any_node_has_is_refused(
        gpu_cluster: LocalCluster, busybox_image: PushedImage) -> None:
    path = gpu_cluster.directory / "greedy.yaml"
    path.write_text("version: v1\njobs:\n" + JOB.format(
        name="greedy", image=busybox_image.reference, gpu=GPU, gpus=3, script="true"))
    refused = gpu_cluster.fuzz("workflow", "start", "greedy", str(path))
    assert refused.code == 1
    assert f"needs 3 {GPU}; the largest node has 2" in refused.err, refused.err
