"""End to end: how many calls to its agent a task costs, counted by the real agents.

Each agent counts the calls it serves, by method, in ``/metrics``
(``fuzz_rpc_duration_seconds_count``). A task array on a local cluster of two nodes: each
task is its start and its removal (three calls before: StartContainer, WaitContainer held
until the end, RemoveContainer); its end comes on its node's one WatchContainers stream
(still open, so not counted yet: a call is counted when it ends). Starts go in
StartContainers calls (those asked of a node meanwhile together).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from fuzz.testing.oci import PushedImage, free_port
from fuzz.testing.web import plain_get
from tests.support.workflowutil import local_cluster

TASKS = 8
FUZZFILE = """\
version: v1
jobs:
  work:
    image: {{uri: {image}}}
    command: [sleep, "0.3"]
    resource: {{cpu: {{cores: 1}}, memory: {{size: 32MiB}}}}
    task-array: {{start: 1, end: {tasks}}}
"""
PER_TASK = ("StartContainer", "StartContainers", "WaitContainer", "GetContainer", "RemoveContainer",
            "RemoveContainers", "AcquireLease", "ReleaseLease")


def _agent_calls(directory: Path) -> Counter[str]:
    """The calls every agent of the cluster in ``directory`` served, by method."""
    calls: Counter[str] = Counter()
    for info in (directory / ".fuzz").rglob("agent.json"):
        code, text = plain_get(f"http://{json.loads(info.read_text())['metrics']}/metrics")
        assert code == 200, text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "fuzz_rpc_duration_seconds_count":
                    calls[sample.labels["method"].rsplit("/", 1)[-1]] += int(sample.value)
    return calls


def test_a_task_costs_its_node_two_calls(tmp_path: Path, busybox_image: PushedImage) -> None:
    os.chmod(tmp_path, 0o755)  # jobs run as nobody
    with local_cluster(tmp_path, [busybox_image.registry.host], free_port()) as cluster, \
            cluster.client() as client:
        client.start_workflow("calls", FUZZFILE.format(image=busybox_image.reference,
                                                       tasks=TASKS), "Fuzzfile")
        updates = list(client.watch_workflow("calls"))
        assert updates and updates[-1].state == "SUCCEEDED", updates[-1:]
        calls = _agent_calls(tmp_path)
    assert calls["WaitContainer"] == 0, calls  # the ends came on the watch streams
    assert calls["StartContainer"] == 0 and calls["StartContainers"] >= 1, calls
    assert sum(calls[method] for method in PER_TASK) <= 2 * TASKS, calls
