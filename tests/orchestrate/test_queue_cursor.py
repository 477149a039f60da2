"""The scheduler's search for queued tasks skips the ended head of a task array
(:meth:`ActiveWorkflow.unsettled`), and searches from a task again once an attempt
reports on it (:meth:`ActiveWorkflow.unsettle`), so no queued task is ever passed over."""

from __future__ import annotations

from fuzz.orchestrate.records import WorkflowRecord
from fuzz.orchestrate.states import TaskState
from fuzz.orchestrate.workflows.jobids import JobIds
from fuzz.orchestrate.workflows.workflow import ActiveWorkflow, new_tasks
from fuzz.spec.fuzzfile_loader import parse_fuzzfile

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
    fuzzfile = parse_fuzzfile(FUZZFILE, "Fuzzfile").fuzzfile
    record = WorkflowRecord(id="w1", name="w", run=1, owner="alice", file_name="Fuzzfile",
                            fuzzfile=FUZZFILE, content_hash="")
    return ActiveWorkflow(record=record, fuzzfile=fuzzfile, ids=JobIds(1000, 1000), volumes={},
                          transfers=[], images={},
                          tasks={t.key: t for t in new_tasks("w1", fuzzfile)})


def test_the_search_starts_after_the_ended_head_and_comes_back_when_told() -> None:
    workflow = _workflow()
    assert [t.key for t in workflow.unsettled()] == [f"work[{n}]" for n in range(1, 7)]
    for n, state in ((1, TaskState.SUCCEEDED), (2, TaskState.FAILED), (4, TaskState.SUCCEEDED)):
        workflow.tasks[f"work[{n}]"].state = state
    assert [t.key for t in workflow.unsettled()] == ["work[3]", "work[4]", "work[5]", "work[6]"]
    workflow.tasks["work[2]"].state = TaskState.QUEUED  # an ended task queued again
    workflow.unsettle("work[2]")
    assert [t.key for t in workflow.unsettled()][:1] == ["work[2]"]
    for task in workflow.tasks.values():
        task.state = TaskState.SUCCEEDED
    assert list(workflow.unsettled()) == []
