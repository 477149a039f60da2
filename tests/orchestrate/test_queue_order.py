"""The scheduler's queue (:meth:`ActiveWorkflow.queued`) holds the queued tasks in seq
order, kept as they are written: a task queued again goes back at its place, and the
running and ended tasks of a task array are never looked at."""

from __future__ import annotations

from fuzz.orchestrate.states import TaskState
from fuzz.orchestrate.workflows.workflow import ActiveWorkflow
from tests.support.activeworkflow import active_workflow

FUZZFILE = """\
version: v1
jobs:
  work:
    image: {uri: "docker://127.0.0.1:9/simulated:1"}
    command: [/bin/true]
    resource: {cpu: {cores: 1}, memory: {size: 16MiB}}
    task-array: {start: 1, end: 6}
"""


def _workflow() -> ActiveWorkflow:
    return active_workflow(FUZZFILE)


def _set(workflow: ActiveWorkflow, state: TaskState, *numbers: int) -> None:
    for n in numbers:
        task = workflow.tasks[f"work[{n}]"]
        task.state = state
        workflow.tally.note(task)  # as the runner's store does when the task is written


def test_the_queue_holds_the_queued_tasks_in_order_and_a_requeued_one_at_its_place() -> None:
    workflow = _workflow()
    assert list(workflow.queued()) == []
    _set(workflow, TaskState.QUEUED, 1, 2, 3, 4, 5, 6)
    assert [t.key for t in workflow.queued()] == [f"work[{n}]" for n in range(1, 7)]
    _set(workflow, TaskState.STARTING, 1, 2, 4)
    _set(workflow, TaskState.SUCCEEDED, 1)
    assert [t.key for t in workflow.queued()] == ["work[3]", "work[5]", "work[6]"]
    _set(workflow, TaskState.QUEUED, 2)  # its attempt could not start: queued again
    assert [t.key for t in workflow.queued()] == ["work[2]", "work[3]", "work[5]", "work[6]"]
    _set(workflow, TaskState.CANCELED, 2, 3, 5, 6)
    assert list(workflow.queued()) == []
