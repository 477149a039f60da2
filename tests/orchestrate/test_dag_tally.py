"""The DAG's :class:`TaskTally` is kept as tasks change state: a pass decides what a
pass over every task decides, and costs what changed, not the workflow's size."""

from __future__ import annotations

import random

from fuzz.orchestrate.states import Readiness, TaskState
from fuzz.orchestrate.workflows import dag
from fuzz.orchestrate.workflows.dag import JobNode, TaskTally

GRAPH = (
    JobNode("db", service=True),
    JobNode("prep"),
    JobNode("array", requires=("prep",), concurrency=5),
    JobNode("client", after_running=("db",)),
    JobNode("report", requires=("array",), after_finished=("client",)),
)


class CountedTask:
    """A task (a :class:`dag.TaskLike`) that counts how often its state is read."""

    reads = 0

    def __init__(self, key: str, job: str) -> None:
        self.key, self.job = key, job
        self.readiness = ""
        self._state = TaskState.WAITING

    @property
    def state(self) -> str:
        """Its state, counting the read."""
        CountedTask.reads += 1
        return self._state

    @state.setter
    def state(self, value: TaskState) -> None:
        self._state = value


def _tasks(size: int) -> list[CountedTask]:
    keys = [("db", "db"), ("prep", "prep"), ("client", "client"), ("report", "report")]
    keys += [(f"array[{n}]", "array") for n in range(1, size + 1)]
    return [CountedTask(key, job) for key, job in keys]


def test_a_pass_reads_what_changed_not_the_ended_tasks() -> None:
    tasks = _tasks(10_000)
    tally = TaskTally(GRAPH, tasks)
    for task in tasks:
        if task.job == "array" and task.key != "array[10000]":
            task.state = TaskState.SUCCEEDED
            tally.note(task)
    CountedTask.reads = 0
    dag.next_step(tally, frozenset())
    dag.workflow_outcome(tally)
    assert CountedTask.reads < 20  # the service's task; before: every task, twice


def test_a_kept_tally_decides_as_one_counted_afresh() -> None:
    rng = random.Random(23)
    states = [state for state in TaskState if state != TaskState.WAITING]  # never again
    for _ in range(10):
        tasks = _tasks(30)
        tally = TaskTally(GRAPH, tasks)
        for _ in range(100):
            task = rng.choice(tasks)
            task.state = rng.choice(states)
            task.readiness = rng.choice(["", Readiness.STARTING, Readiness.READY])
            tally.note(task)
            fresh = TaskTally(GRAPH, tasks)
            for stop in (None, "workflow cancelled"):
                kept_step, fresh_step = dag.next_step(tally, frozenset(), stop), \
                    dag.next_step(fresh, frozenset(), stop)
                assert kept_step.queue == fresh_step.queue
                assert kept_step.not_run == fresh_step.not_run
                assert kept_step.stop == fresh_step.stop
            assert dag.workflow_outcome(tally) == dag.workflow_outcome(fresh)
            assert dag.first_failure(tally) == dag.first_failure(fresh)
            assert list(tally.queued()) == list(fresh.queued())


def test_waiting_tasks_are_queued_in_their_order_up_to_the_concurrency() -> None:
    tasks = _tasks(12)
    tally = TaskTally(GRAPH, tasks)
    by_key = {task.key: task for task in tasks}
    by_key["prep"].state = TaskState.SUCCEEDED
    tally.note(by_key["prep"])
    step = dag.next_step(tally, frozenset())
    assert [key for key in step.queue if key.startswith("array")] == \
        [f"array[{n}]" for n in range(1, 6)]
    for key in step.queue:
        by_key[key].state = TaskState.QUEUED
        tally.note(by_key[key])
    by_key["array[2]"].state = TaskState.SUCCEEDED
    tally.note(by_key["array[2]"])
    assert dag.next_step(tally, frozenset()).queue == ("array[6]",)
