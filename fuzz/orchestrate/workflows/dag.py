"""The workflow's job graph, as pure decisions: which tasks to queue, which will never run.

No I/O and no clocks: the runner passes what it knows (each job's requirements,
volumes and task-array concurrency, each task's state, which volumes are ready)
and applies the :class:`Step` it gets back. A job's state is derived from its
tasks'; a job whose required job failed (or did not run) does not run either.
Tasks of a task array run independently, as in Slurm: one failing does not stop
its siblings, but the job (and so the workflow) fails.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from fuzz.orchestrate.states import TaskState, WorkflowState

PENDING_TASK_STATES = frozenset({TaskState.WAITING, TaskState.QUEUED})
IN_FLIGHT_TASK_STATES = frozenset({TaskState.QUEUED, TaskState.STARTING, TaskState.RUNNING})
UNSUCCESSFUL_STATES = frozenset({TaskState.FAILED, TaskState.CANCELED, TaskState.NOT_RUN})


STARTED_STATES = frozenset({TaskState.RUNNING, TaskState.SUCCEEDED, TaskState.FAILED})
"""Task states of a task that has run (or runs)."""


@dataclass(frozen=True)
class JobNode:
    """What the graph needs to know about one job of the Fuzzfile.

    ``requires``: jobs that must succeed first (``requires:``, Fuzzball's deprecated
    form); ``after_running``: jobs one of whose tasks must have started running
    (``depends-on`` status RUNNING); ``after_finished``: jobs that must have ended,
    whatever their result (status FINISHED).
    """

    name: str
    requires: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    concurrency: int | None = None
    after_running: tuple[str, ...] = ()
    after_finished: tuple[str, ...] = ()


class TaskLike(Protocol):
    """What the graph reads of a task: its key, its job and its state.

    The runner passes its task records as they are (copying hundreds of them into
    views on every pass was a fifth of its CPU on a large task array).
    """

    @property
    def key(self) -> str:
        """The task's key: the job's name, with ``[index]`` for a task array."""

    @property
    def job(self) -> str:
        """The job it belongs to."""

    @property
    def state(self) -> str:
        """WAITING, QUEUED, STARTING, RUNNING, SUCCEEDED, FAILED, CANCELED or NOT_RUN."""


@dataclass(frozen=True)
class TaskView:
    """A task's job and state, as plain data (a :class:`TaskLike`)."""

    key: str
    job: str
    state: str


@dataclass(frozen=True)
class Step:
    """What to do now: tasks to queue, and tasks that will never run (with why)."""

    queue: tuple[str, ...] = ()
    not_run: Mapping[str, str] = field(default_factory=dict)


def job_state(states: Iterable[str]) -> TaskState:
    """A job's state from its tasks' states.

    SUCCEEDED when every task succeeded; FAILED, CANCELED or NOT_RUN once every
    task is final and one ended that way (in that order of precedence); RUNNING
    while any task is queued, starting or running; WAITING otherwise.
    """
    seen = list(states)
    if seen and all(state == TaskState.SUCCEEDED for state in seen):
        return TaskState.SUCCEEDED
    if all(state == TaskState.SUCCEEDED or state in UNSUCCESSFUL_STATES for state in seen):
        for final in (TaskState.FAILED, TaskState.CANCELED, TaskState.NOT_RUN):
            if final in seen:
                return final
    if any(state in IN_FLIGHT_TASK_STATES for state in seen):
        return TaskState.RUNNING
    return TaskState.WAITING


def job_states(jobs: Sequence[JobNode], tasks: Collection[TaskLike]) -> dict[str, TaskState]:
    """Every job's state (see :func:`job_state`)."""
    by_job: dict[str, list[str]] = {job.name: [] for job in jobs}
    for task in tasks:
        by_job[task.job].append(task.state)
    return {name: job_state(states) for name, states in by_job.items()}


def _started_jobs(tasks: Collection[TaskLike]) -> set[str]:
    """Jobs one of whose tasks is running or has run."""
    return {task.job for task in tasks if task.state in STARTED_STATES}


def _blocked(job: JobNode, states: Mapping[str, TaskState], started: set[str]
             ) -> tuple[bool, str | None]:
    """(whether ``job`` must wait, why it never will run or None) from its dependencies."""
    failed = [name for name in job.requires if states[name] in UNSUCCESSFUL_STATES]
    if failed:
        return True, f"required job '{failed[0]}' {states[failed[0]].lower().replace('_', ' ')}"
    never = [name for name in job.after_running
             if name not in started and states[name] in UNSUCCESSFUL_STATES]
    if never:
        return True, (f"job '{never[0]}' {states[never[0]].lower().replace('_', ' ')}"
                      " without running")
    waiting = (any(states[name] != TaskState.SUCCEEDED for name in job.requires)
               or any(name not in started for name in job.after_running)
               or any(states[name] not in UNSUCCESSFUL_STATES | {TaskState.SUCCEEDED}
                      for name in job.after_finished))
    return waiting, None


def next_step(
    jobs: Sequence[JobNode],
    tasks: Collection[TaskLike],
    ready_volumes: frozenset[str],
    stop_reason: str | None = None,
) -> Step:
    """Which waiting tasks to queue now and which will never run.

    With ``stop_reason`` (the workflow is failing or cancelled) nothing new is
    queued and every waiting or queued task will not run, for that reason.
    Otherwise a job's waiting tasks are queued once every job it requires has
    succeeded, every job it runs after (``after_running``) has a task running or
    run, every job it follows (``after_finished``) has ended whatever its result,
    and every volume it mounts is ready, at most ``concurrency`` of them in flight
    at once; and they will not run once a required job did not succeed (or a job
    it runs after ended without running).
    """
    if stop_reason is not None:
        return Step(not_run={t.key: stop_reason for t in tasks if t.state in PENDING_TASK_STATES})
    states = job_states(jobs, tasks)
    started = _started_jobs(tasks)
    by_job: dict[str, list[TaskLike]] = {job.name: [] for job in jobs}
    for task in tasks:
        by_job[task.job].append(task)
    queue: list[str] = []
    not_run: dict[str, str] = {}
    for job in jobs:
        waiting = [t.key for t in by_job[job.name] if t.state == TaskState.WAITING]
        if not waiting:
            continue
        blocked, reason = _blocked(job, states, started)
        if reason is not None:
            not_run.update(dict.fromkeys(waiting, reason))
            continue
        if blocked:
            continue
        if not set(job.volumes) <= ready_volumes:
            continue
        room = len(waiting)
        if job.concurrency is not None:
            in_flight = sum(1 for t in by_job[job.name] if t.state in IN_FLIGHT_TASK_STATES)
            room = max(job.concurrency - in_flight, 0)
        queue += waiting[:room]
    return Step(queue=tuple(queue), not_run=not_run)


def workflow_outcome(jobs: Sequence[JobNode], tasks: Collection[TaskLike]
                     ) -> WorkflowState | None:
    """SUCCEEDED, FAILED or CANCELED once every task is final; None before.

    A cancelled task makes the workflow CANCELED unless a task failed; a task that
    did not run (its requirement failed) makes it FAILED.
    """
    if any(task.state not in UNSUCCESSFUL_STATES | {TaskState.SUCCEEDED} for task in tasks):
        return None
    states = set(job_states(jobs, tasks).values())
    if TaskState.FAILED in states or TaskState.NOT_RUN in states:
        return WorkflowState.FAILED
    if TaskState.CANCELED in states:
        return WorkflowState.CANCELED
    return WorkflowState.SUCCEEDED


def first_failure(jobs: Sequence[JobNode], tasks: Collection[TaskLike]) -> str | None:
    """The first job (in ``jobs`` order) that failed, if any."""
    states = job_states(jobs, tasks)
    return next((job.name for job in jobs if states[job.name] == TaskState.FAILED), None)
