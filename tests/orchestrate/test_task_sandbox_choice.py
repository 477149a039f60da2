"""Which tasks the orchestrator lets a node run in a task sandbox (``task_sandbox``): a
task array's tasks without devices, unless the job opts out with the annotation
``fuzz.io/task-sandbox: "false"`` (metadata, never a node selector)."""

from __future__ import annotations

import pytest

from fuzz.orchestrate.workflows.workflow import ActiveWorkflow, task_sandbox
from tests.support.activeworkflow import active_workflow

FUZZFILE = """\
version: v1
jobs:
  array:
    image: {uri: "docker://127.0.0.1:9/simulated:1"}
    command: [/bin/true]
    resource: {cpu: {cores: 1}, memory: {size: 16MiB}}
    task-array: {start: 1, end: 2}
  opted-out:
    image: {uri: "docker://127.0.0.1:9/simulated:1"}
    command: [/bin/true]
    resource: {cpu: {cores: 1}, memory: {size: 16MiB}}
    task-array: {start: 1, end: 2}
    annotations: {fuzz.io/task-sandbox: "false"}
  gpus:
    image: {uri: "docker://127.0.0.1:9/simulated:1"}
    command: [/bin/true]
    resource: {cpu: {cores: 1}, memory: {size: 16MiB}, devices: {nvidia.com/gpu: 1}}
    task-array: {start: 1, end: 2}
  single:
    image: {uri: "docker://127.0.0.1:9/simulated:1"}
    command: [/bin/true]
    resource: {cpu: {cores: 1}, memory: {size: 16MiB}}
"""


@pytest.fixture
def workflow() -> ActiveWorkflow:
    return active_workflow(FUZZFILE)


def test_a_task_array_s_tasks_share_their_job_s_sandbox(workflow: ActiveWorkflow) -> None:
    assert task_sandbox(workflow, workflow.tasks["array[1]"]) == "w1/array"
    assert task_sandbox(workflow, workflow.tasks["array[2]"]) == "w1/array"


@pytest.mark.parametrize("key", ["opted-out[1]", "gpus[1]", "single"])
def test_the_opt_out_devices_and_plain_jobs_keep_a_container_per_task(
    workflow: ActiveWorkflow, key: str
) -> None:
    assert task_sandbox(workflow, workflow.tasks[key]) == ""


def test_the_opt_out_annotation_selects_no_node(workflow: ActiveWorkflow) -> None:
    job = workflow.fuzzfile.container("opted-out")
    assert "fuzz.io/task-sandbox" not in job.resource.request().labels
