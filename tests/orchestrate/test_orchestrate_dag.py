"""Tests for :mod:`fuzz.orchestrate.workflows.dag`: which tasks run when, and how workflows end."""

from __future__ import annotations

from collections.abc import Sequence

from fuzz.orchestrate.states import WorkflowState
from fuzz.orchestrate.workflows import dag
from fuzz.orchestrate.workflows.dag import JobNode, Step, TaskLike, TaskTally, TaskView, job_state


def next_step(graph: Sequence[JobNode], views: Sequence[TaskLike], ready: frozenset[str],
              stop_reason: str | None = None) -> Step:
    """:func:`dag.next_step` over the tasks ``views``, counted afresh."""
    return dag.next_step(TaskTally(graph, views), ready, stop_reason)


def workflow_outcome(graph: Sequence[JobNode], views: Sequence[TaskLike]
                     ) -> WorkflowState | None:
    """:func:`dag.workflow_outcome` over the tasks ``views``, counted afresh."""
    return dag.workflow_outcome(TaskTally(graph, views))


def first_failure(graph: Sequence[JobNode], views: Sequence[TaskLike]) -> str | None:
    """:func:`dag.first_failure` over the tasks ``views``, counted afresh."""
    return dag.first_failure(TaskTally(graph, views))

# untar -> (a, b in parallel) -> summary, as in the demo pipeline
GRAPH = (
    JobNode("untar", volumes=("data",)),
    JobNode("a", requires=("untar",), volumes=("data",)),
    JobNode("b", requires=("untar",)),
    JobNode("summary", requires=("a", "b")),
)


def tasks(**states: str) -> list[TaskView]:
    return [TaskView(key, key, state) for key, state in states.items()]


def test_the_first_job_waits_for_its_volume() -> None:
    views = tasks(untar="WAITING", a="WAITING", b="WAITING", summary="WAITING")
    assert next_step(GRAPH, views, frozenset()).queue == ()
    assert next_step(GRAPH, views, frozenset({"data"})).queue == ("untar",)


def test_independent_branches_are_queued_together() -> None:
    views = tasks(untar="SUCCEEDED", a="WAITING", b="WAITING", summary="WAITING")
    assert next_step(GRAPH, views, frozenset({"data"})).queue == ("a", "b")


def test_a_job_waits_for_every_job_it_requires() -> None:
    views = tasks(untar="SUCCEEDED", a="SUCCEEDED", b="RUNNING", summary="WAITING")
    assert next_step(GRAPH, views, frozenset({"data"})).queue == ()


def test_a_failed_job_marks_its_dependents_not_run_and_the_workflow_failed() -> None:
    views = tasks(untar="SUCCEEDED", a="FAILED", b="RUNNING", summary="WAITING")
    step = next_step(GRAPH, views, frozenset({"data"}))
    assert step.queue == ()
    assert step.not_run == {"summary": "required job 'a' failed"}
    assert workflow_outcome(GRAPH, views) is None  # b still runs
    done = tasks(untar="SUCCEEDED", a="FAILED", b="SUCCEEDED", summary="NOT_RUN")
    assert workflow_outcome(GRAPH, done) == "FAILED"
    assert first_failure(GRAPH, done) == "a"


def test_a_stop_reason_ends_every_pending_task() -> None:
    views = tasks(untar="SUCCEEDED", a="QUEUED", b="RUNNING", summary="WAITING")
    step = next_step(GRAPH, views, frozenset({"data"}), stop_reason="workflow cancelled")
    assert step.queue == ()
    assert step.not_run == {"a": "workflow cancelled", "summary": "workflow cancelled"}


def test_task_array_concurrency_limits_tasks_in_flight() -> None:
    graph = (JobNode("sweep", concurrency=2),)
    views = [TaskView(f"sweep[{i}]", "sweep", "WAITING") for i in range(5)]
    assert next_step(graph, views, frozenset()).queue == ("sweep[0]", "sweep[1]")
    views[0] = TaskView("sweep[0]", "sweep", "RUNNING")
    views[1] = TaskView("sweep[1]", "sweep", "SUCCEEDED")
    assert next_step(graph, views, frozenset()).queue == ("sweep[2]",)


def test_job_state_from_task_states() -> None:
    assert job_state(["SUCCEEDED", "SUCCEEDED"]) == "SUCCEEDED"
    assert job_state(["SUCCEEDED", "RUNNING"]) == "RUNNING"
    assert job_state(["FAILED", "RUNNING"]) == "RUNNING"
    assert job_state(["FAILED", "SUCCEEDED"]) == "FAILED"
    assert job_state(["CANCELED", "NOT_RUN"]) == "CANCELED"
    assert job_state(["WAITING"]) == "WAITING"


def test_outcomes() -> None:
    graph = (JobNode("x"), JobNode("y"))
    assert workflow_outcome(graph, [TaskView("x", "x", "SUCCEEDED"),
                                    TaskView("y", "y", "SUCCEEDED")]) == "SUCCEEDED"
    assert workflow_outcome(graph, [TaskView("x", "x", "SUCCEEDED"),
                                    TaskView("y", "y", "CANCELED")]) == "CANCELED"
    assert workflow_outcome(graph, [TaskView("x", "x", "QUEUED"),
                                    TaskView("y", "y", "CANCELED")]) is None


# depends-on: "server" RUNNING lets "client" start; "report" follows "client" whatever its result
DEPENDS = (
    JobNode("server"),
    JobNode("client", after_running=("server",)),
    JobNode("report", after_finished=("client",)),
)


def test_depends_on_running_starts_beside_a_running_job() -> None:
    assert next_step(DEPENDS, tasks(server="QUEUED", client="WAITING", report="WAITING"),
                     frozenset()).queue == ()
    assert next_step(DEPENDS, tasks(server="STARTING", client="WAITING", report="WAITING"),
                     frozenset()).queue == ()
    assert next_step(DEPENDS, tasks(server="RUNNING", client="WAITING", report="WAITING"),
                     frozenset()).queue == ("client",)
    assert next_step(DEPENDS, tasks(server="SUCCEEDED", client="WAITING", report="WAITING"),
                     frozenset()).queue == ("client",)


def test_depends_on_finished_follows_whatever_the_result() -> None:
    running = tasks(server="RUNNING", client="RUNNING", report="WAITING")
    assert next_step(DEPENDS, running, frozenset()).queue == ()
    failed = tasks(server="RUNNING", client="FAILED", report="WAITING")
    assert next_step(DEPENDS, failed, frozenset()).queue == ("report",)
    not_run = tasks(server="CANCELED", client="NOT_RUN", report="WAITING")
    assert next_step(DEPENDS, not_run, frozenset()).queue == ("report",)


def test_a_job_that_ended_without_running_never_lets_its_running_dependents_start() -> None:
    step = next_step(DEPENDS, tasks(server="CANCELED", client="WAITING", report="WAITING"),
                     frozenset())
    assert step.queue == ()
    assert step.not_run == {"client": "job 'server' canceled without running"}


# a service, a job that uses it, and a job that does not
SERVICES = (
    JobNode("db", service=True),
    JobNode("use", after_running=("db",)),
    JobNode("other"),
)


def service_views(db: str, readiness: str, use: str, other: str) -> list[TaskView]:
    return [TaskView("db", "db", db, readiness), TaskView("use", "use", use),
            TaskView("other", "other", other)]


def test_a_job_after_a_service_waits_until_it_is_ready() -> None:
    running = next_step(SERVICES, service_views("RUNNING", "STARTING", "WAITING", "RUNNING"),
                        frozenset())
    assert running.queue == () and not running.stop
    ready = next_step(SERVICES, service_views("RUNNING", "READY", "WAITING", "RUNNING"),
                      frozenset())
    assert ready.queue == ("use",)


def test_a_service_that_failed_before_ready_means_its_dependants_never_run() -> None:
    step = next_step(SERVICES, service_views("FAILED", "", "WAITING", "RUNNING"), frozenset())
    assert step.not_run == {"use": "service 'db' failed without becoming ready"}


def test_a_service_is_stopped_once_its_dependants_ended_unless_it_persists() -> None:
    views = service_views("RUNNING", "READY", "SUCCEEDED", "RUNNING")
    assert next_step(SERVICES, views, frozenset()).stop == {
        "db": "stopped: every job and service that depends on it has ended"}
    kept = (JobNode("db", service=True, persist=True), *SERVICES[1:])
    assert next_step(kept, views, frozenset()).stop == {}


def test_a_service_nothing_depends_on_lives_as_long_as_the_jobs() -> None:
    alone = (JobNode("db", service=True), JobNode("other"))
    views = [TaskView("db", "db", "RUNNING", "READY"), TaskView("other", "other", "RUNNING")]
    assert next_step(alone, views, frozenset()).stop == {}
    views[1] = TaskView("other", "other", "FAILED")
    assert next_step(alone, views, frozenset()).stop == {
        "db": "stopped: the workflow's jobs have ended"}
    only = (JobNode("db", service=True),)  # services only: until the workflow is stopped
    assert next_step(only, views[:1], frozenset()).stop == {}


def test_a_pending_service_no_longer_needed_does_not_run() -> None:
    views = service_views("QUEUED", "", "NOT_RUN", "SUCCEEDED")
    assert next_step(SERVICES, views, frozenset()).not_run == {
        "db": "not needed: every job and service that depends on it has ended"}


def test_the_outcome_is_the_jobs_and_a_failed_service_fails_it() -> None:
    assert workflow_outcome(SERVICES, service_views(
        "SUCCEEDED", "", "SUCCEEDED", "SUCCEEDED")) == "SUCCEEDED"
    assert workflow_outcome(SERVICES, service_views(
        "CANCELED", "", "SUCCEEDED", "SUCCEEDED")) == "SUCCEEDED"  # persist, then stopped
    assert workflow_outcome(SERVICES, service_views(
        "NOT_RUN", "", "SUCCEEDED", "SUCCEEDED")) == "SUCCEEDED"
    assert workflow_outcome(SERVICES, service_views(
        "FAILED", "", "NOT_RUN", "SUCCEEDED")) == "FAILED"
    assert workflow_outcome(SERVICES, service_views(
        "RUNNING", "READY", "SUCCEEDED", "SUCCEEDED")) is None
    only = (JobNode("db", service=True),)
    assert workflow_outcome(only, [TaskView("db", "db", "CANCELED")]) == "CANCELED"
