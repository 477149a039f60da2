"""A watcher's updates (``WatchWorkflow``): each rebuilds only the tasks that changed.

The runner's records are real :class:`~fuzz.orchestrate.records.TaskRecord` objects,
changed the way the runner changes them (fields set, lists replaced); every update is
compared with a full build of the same snapshot.
"""

from __future__ import annotations

import copy
import random

import pytest

from fuzz.orchestrate.messages import TASK_FIELDS, TaskMessages, workflow_message
from fuzz.orchestrate.records import TaskRecord, WorkflowRecord
from fuzz.orchestrate.service import WATCH_MAX_PAUSE, WATCH_MIN_INTERVAL, watch_pause
from fuzz.orchestrate.states import Readiness, TaskState, WorkflowState
from fuzz.orchestrate.workflows.base import WorkflowSnapshot
from fuzz.orchestrate.workflows.reports import _shallow_copy

TASKS = 500


def array_tasks(count: int) -> list[TaskRecord]:
    """A task array of ``count`` waiting tasks, as a run starts with."""
    return [TaskRecord("run-1", f"noop[{n}]", "noop", n, n) for n in range(1, count + 1)]


def snapshot_of(tasks: list[TaskRecord]) -> WorkflowSnapshot:
    """The snapshot the runner would give now: shallow copies of its records."""
    record = WorkflowRecord(id="run-1", name="throughput", run=1, owner="alice",
                            file_name="throughput.yaml", fuzzfile="version: v1\n",
                            content_hash="h", state=WorkflowState.RUNNING)
    return WorkflowSnapshot(record, [], [], [], [copy.copy(task) for task in tasks])


def test_an_update_rebuilds_only_the_tasks_that_changed() -> None:
    tasks = array_tasks(TASKS)
    kept = TaskMessages()
    assert workflow_message(snapshot_of(tasks), kept) == workflow_message(snapshot_of(tasks))
    assert kept.built == TASKS

    tasks[7].state, tasks[7].attempt, tasks[7].nodes = TaskState.RUNNING, 1, ["node-2"]
    tasks[420].state, tasks[420].finished, tasks[420].exit_code = TaskState.FAILED, 9.5, 3
    update = workflow_message(snapshot_of(tasks), kept)

    assert kept.built == TASKS + 2
    assert update == workflow_message(snapshot_of(tasks))
    assert (update.tasks[7].state, update.tasks[7].nodes) == (TaskState.RUNNING, ["node-2"])
    assert (update.tasks[420].state, update.tasks[420].exit_code) == (TaskState.FAILED, 3)

    workflow_message(snapshot_of(tasks), kept)
    assert kept.built == TASKS + 2, "an update with nothing changed built task messages"


def _change(task: TaskRecord, rng: random.Random) -> None:
    """Change one field of ``task`` the way the runner does (lists are replaced)."""
    name = rng.choice(TASK_FIELDS[3:])  # key, job and index name the task: never changed
    value = getattr(task, name)
    if isinstance(value, list):
        setattr(task, name, [f"node-{rng.randrange(4)}" for _ in range(rng.randrange(3))])
    elif name == "state":
        task.state = rng.choice(list(TaskState))
    elif name == "readiness":
        task.readiness = rng.choice(["", *Readiness])
    elif isinstance(value, str):
        setattr(task, name, rng.choice(["", "image pull failed", "a node with 1 core"]))
    elif isinstance(value, float):
        setattr(task, name, rng.choice([0.0, 1.5, rng.random() * 1e9]))
    else:
        setattr(task, name, rng.randrange(4))


def test_incremental_messages_equal_a_full_build_after_random_changes() -> None:
    rng = random.Random(21)
    tasks = array_tasks(60)
    kept = TaskMessages()
    for _ in range(300):
        for task in rng.sample(tasks, rng.randrange(6)):
            _change(task, rng)
        if rng.random() < 0.1:  # a new run of the same workflow: other tasks, same keys
            tasks = [t for t in tasks if rng.random() < 0.8] + array_tasks(5)
            rng.shuffle(tasks)
        before = kept.built
        snapshot = snapshot_of(tasks)
        assert workflow_message(snapshot, kept) == workflow_message(snapshot)
        assert kept.built - before <= len(tasks)


def test_a_kept_message_follows_a_list_edited_in_place() -> None:
    tasks = array_tasks(3)
    kept = TaskMessages()
    workflow_message(snapshot_of(tasks), kept)
    tasks[1].nodes = ["node-1"]
    workflow_message(snapshot_of(tasks), kept)
    tasks[1].nodes.append("node-2")  # the runner replaces lists; a message must not rely on it
    assert workflow_message(snapshot_of(tasks), kept) == workflow_message(snapshot_of(tasks))


def test_a_snapshots_task_copy_is_copy_copy() -> None:
    task = TaskRecord("run-1", "noop[3]", "noop", 3, 3, TaskState.RUNNING, 2, ["node-1"],
                      ["lease-1"], ["c-1"], 0, 4.5, 0.0, "", "", "", "service",
                      Readiness.READY, "", 1, ["10.0.0.2"])
    clone = _shallow_copy(task)
    assert clone == copy.copy(task) and clone is not task
    task.state = TaskState.FAILED
    assert clone.state == TaskState.RUNNING


def test_a_watcher_waits_ten_times_its_last_updates_cost() -> None:
    assert watch_pause(0.001) == WATCH_MIN_INTERVAL  # small workflows: five updates a second
    assert watch_pause(0.05) == pytest.approx(0.5)  # a costly update: a tenth of a core
    assert watch_pause(2.0) == WATCH_MAX_PAUSE  # never slower than this
