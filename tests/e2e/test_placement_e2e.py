"""End to end: placement by ``resource.annotations``, ``cpu.threads`` and ``cpu.sockets`` on a
local cluster of two real agents, in real containers.

Two local provider blocks declare two kinds of node: ``a100`` (GPUs ``NVIDIA A100``, from
the declared inventory, published by the agent as its hardware label
``nvidia.com/gpu.model``) and ``h100`` (the same machine shape, labelled
``nvidia.com/gpu.model: NVIDIA H100`` by its pool in the cluster spec). Both have 2
sockets of 1 core of 2 hardware threads, whose four logical CPUs are backed by this
machine's CPUs 0, 1, 0, 1: so a core with its two threads is real CPUs 0-1, and one
thread alone is CPU 0. Each job prints the CPUs its container may run on
(``Cpus_allowed_list``, the cgroup cpuset runc set), and the test asserts the node.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from fuzz.testing import cluster
from fuzz.testing.oci import PushedImage, free_port
from tests.support.cliutil import kill_agents
from tests.support.workflowutil import LocalCluster, dump, tasks_by_key

A100, H100 = "pool.a100.node[0]", "pool.h100.node[0]"
NODE_YAML = ("sockets: 2\ncores_per_numa: 1\nthreads_per_core: 2\nmemory: 4GiB\n"
             "gpus: [{model: NVIDIA A100, architecture: ampere}]\n")
SHOW = "grep Cpus_allowed_list /proc/self/status"
JOB = """\
  {name}:
    image: {{uri: {image}}}
    command: [/bin/sh, -c, '{SHOW}']
    resource:
      cpu: {cpu}
      memory: {{size: 16MiB}}
      annotations: {{nvidia.com/gpu.model: {model}}}
"""


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory,
             busybox_image: PushedImage) -> Iterator[LocalCluster]:
    """The two nodes of the module's doc and their orchestrator."""
    directory = tmp_path_factory.mktemp("placement")
    os.chmod(directory, 0o755)
    (directory / "node.yaml").write_text(NODE_YAML)
    spec = yaml.safe_load(cluster.cluster_spec(
        "e2e", 2, [busybox_image.registry.host], free_port(), local={"inventory": "node.yaml"}))
    spec["providers"]["other"] = {**spec["providers"]["local"], "kind": "local",
                                  "workdir": ".fuzz/other-nodes"}
    spec["pools"] = {
        "a100": {"provider": "local", "min": 1, "max": 1},
        "h100": {"provider": "other", "min": 1, "max": 1,
                 "labels": {"nvidia.com/gpu.model": "NVIDIA H100"}},
    }
    (directory / "fuzz.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    try:
        with cluster.cluster_up(directory, 2) as running:
            yield LocalCluster(running.directory, running.nodes)
    finally:
        kill_agents(directory)


def _jobs(image: str, *jobs: tuple[str, str, str]) -> str:
    return "version: v1\njobs:\n" + "".join(
        JOB.format(name=name, image=image, SHOW=SHOW, cpu=cpu, model=model)
        for name, cpu, model in jobs)


def _allowed(cluster_: LocalCluster, workflow: str, job: str) -> str:
    lines = cluster_.ok("workflow", "log", workflow, job).out.split()
    return lines[-1]


def test_a_job_lands_only_on_the_node_whose_gpu_model_matches(labelled: LocalCluster,
                                                               busybox_image: PushedImage) -> None:
    text = _jobs(busybox_image.reference,
                 *[(f"a{n}", "{cores: 1}", "NVIDIA A100") for n in range(3)],
                 *[(f"h{n}", "{cores: 1}", "NVIDIA H100") for n in range(3)])
    labelled.start("models", text)
    status = labelled.wait("models", timeout=180)
    assert status["state"] == "SUCCEEDED", dump(status)
    tasks = tasks_by_key(status)
    assert {key: task["nodes"] for key, task in tasks.items()} == {
        **{f"a{n}": [A100] for n in range(3)}, **{f"h{n}": [H100] for n in range(3)}}


def test_threads_give_the_container_both_threads_of_its_core(labelled: LocalCluster,
                                                             busybox_image: PushedImage) -> None:
    text = _jobs(busybox_image.reference,
                 ("whole", "{cores: 1, threads: true}", "NVIDIA H100"),
                 ("alone", "{cores: 1}", "NVIDIA A100"),
                 ("spread", "{cores: 2, sockets: 2, threads: true}", "NVIDIA A100"))
    text = text.replace("  alone:\n", "  alone:\n    requires: [spread]\n")
    labelled.start("threads", text)
    status = labelled.wait("threads", timeout=180)
    assert status["state"] == "SUCCEEDED", dump(status)
    assert tasks_by_key(status)["whole"]["nodes"] == [H100]
    assert _allowed(labelled, "threads", "whole") == "0-1"  # logical CPUs 0, 1: one core
    assert _allowed(labelled, "threads", "alone") == "0"  # logical CPU 0 alone
    assert _allowed(labelled, "threads", "spread") == "0-1"  # all 4 logical CPUs


def test_a_start_refuses_what_no_node_could_ever_match(labelled: LocalCluster,
                                                       busybox_image: PushedImage,
                                                       tmp_path: Path) -> None:
    path = tmp_path / "never.yaml"
    path.write_text(_jobs(busybox_image.reference,
                          ("b200", "{cores: 1}", "NVIDIA B200"),
                          ("wide", "{cores: 2, sockets: 1, threads: true}", "NVIDIA A100")))
    result = labelled.fuzz("workflow", "start", "never", str(path))
    assert result.code == 1
    assert result.err.strip().splitlines() == [
        f"Error: {path}:6:5: jobs.b200.resource: needs annotation nvidia.com/gpu.model="
        "NVIDIA B200; no node has it (nodes have nvidia.com/gpu.model: NVIDIA A100, NVIDIA H100)",
        f"{path}:13:5: jobs.wide.resource: needs 2 cores with their hardware threads on 1 "
        "socket; the largest node has 1 core of 2 threads per socket",
    ], result.err
