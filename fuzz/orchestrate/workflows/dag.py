"""The workflow's job graph, as pure decisions: which tasks to queue, which will never run.

No I/O and no clocks: the runner passes what it knows (each job's requirements,
volumes and task-array concurrency, each task's state, which volumes are ready)
and applies the :class:`Step` it gets back. A job's state is derived from its
tasks'; a job whose required job failed (or did not run) does not run either.
Tasks of a task array run independently, as in Slurm: one failing does not stop
its siblings, but the job (and so the workflow) fails.

A service is a node of its own (one task, its key the service's name): a job that
runs after it (``depends-on`` status RUNNING) waits until it is READY, not merely
running. Unless it ``persist``s, a service is stopped once every job and service
that runs after it has ended (one that nothing runs after: once every job of the
workflow has ended; a workflow of services only: never, until it is stopped). The
workflow's outcome is its jobs'; a stopped service is no failure, a failed one is.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from fuzz.orchestrate.states import TERMINAL_TASK_STATES, Readiness, TaskState, WorkflowState

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
    (``depends-on`` status RUNNING; a service: that is READY); ``after_finished``: jobs
    that must have ended, whatever their result (status FINISHED).
    """

    name: str
    requires: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    concurrency: int | None = None
    after_running: tuple[str, ...] = ()
    after_finished: tuple[str, ...] = ()
    service: bool = False  # a service's node: see the module's docstring
    persist: bool = False  # a service kept until the workflow is stopped


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

    @property
    def readiness(self) -> str:
        """A service's task: STARTING or READY while it runs (empty for a job's)."""


@dataclass(frozen=True)
class TaskView:
    """A task's job and state, as plain data (a :class:`TaskLike`)."""

    key: str
    job: str
    state: str
    readiness: str = ""


@dataclass(frozen=True)
class Step:
    """What to do now: tasks to queue, tasks that will never run (with why), and the
    tasks of services to stop, no longer needed (with why)."""

    queue: tuple[str, ...] = ()
    not_run: Mapping[str, str] = field(default_factory=dict)
    stop: Mapping[str, str] = field(default_factory=dict)


def job_state(states: Iterable[str]) -> TaskState:
    """A job's state from its tasks' states.

    SUCCEEDED when every task succeeded; FAILED, CANCELED or NOT_RUN once every
    task is final and one ended that way (in that order of precedence); RUNNING
    while any task is queued, starting or running; WAITING otherwise.
    """
    return _state_of_counts(Counter(states))


def _state_of_counts(counts: Mapping[str, int]) -> TaskState:
    """:func:`job_state` from how many tasks are in each state."""
    seen = {state for state, count in counts.items() if count}
    if seen and seen == {TaskState.SUCCEEDED}:
        return TaskState.SUCCEEDED
    if seen <= UNSUCCESSFUL_STATES | {TaskState.SUCCEEDED}:
        for final in (TaskState.FAILED, TaskState.CANCELED, TaskState.NOT_RUN):
            if final in seen:
                return final
    if seen & IN_FLIGHT_TASK_STATES:
        return TaskState.RUNNING
    return TaskState.WAITING


@dataclass
class _JobTally:
    """One job's tasks, gathered in one pass: how many in each state, which wait, and
    whether one runs or has run (a service: is READY); a service's task itself."""

    counts: Counter[str] = field(default_factory=Counter)
    waiting: list[str] = field(default_factory=list)
    started: bool = False
    services: list[TaskLike] = field(default_factory=list)


def _tally(jobs: Sequence[JobNode], tasks: Collection[TaskLike], services: frozenset[str]
           ) -> dict[str, _JobTally]:
    """Every job's :class:`_JobTally`, in one pass over the tasks (a pass is per event
    on a task array of thousands: it was the runner loop's largest cost)."""
    tallies = {job.name: _JobTally() for job in jobs}
    for task in tasks:
        tally = tallies[task.job]
        state = task.state
        tally.counts[state] += 1
        if task.job in services:
            tally.services.append(task)
        if state == TaskState.WAITING:
            tally.waiting.append(task.key)
        elif not tally.started and ((state in STARTED_STATES and task.job not in services) or (
                state == TaskState.RUNNING and task.readiness == Readiness.READY)):
            tally.started = True
    return tallies


def job_states(jobs: Sequence[JobNode], tasks: Collection[TaskLike]) -> dict[str, TaskState]:
    """Every job's state (see :func:`job_state`)."""
    by_job: dict[str, Counter[str]] = {job.name: Counter() for job in jobs}
    for task in tasks:
        by_job[task.job][task.state] += 1
    return {name: _state_of_counts(counts) for name, counts in by_job.items()}


def _blocked(job: JobNode, states: Mapping[str, TaskState], started: set[str],
             services: frozenset[str]) -> tuple[bool, str | None]:
    """(whether ``job`` must wait, why it never will run or None) from its dependencies."""
    failed = [name for name in job.requires if states[name] in UNSUCCESSFUL_STATES]
    if failed:
        return True, f"required job '{failed[0]}' {states[failed[0]].lower().replace('_', ' ')}"
    never = [name for name in job.after_running
             if name not in started and states[name] in TERMINAL_TASK_STATES]
    if never and never[0] in services:
        return True, (f"service '{never[0]}' {states[never[0]].lower().replace('_', ' ')}"
                      " without becoming ready")
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
    services = frozenset(node.name for node in jobs if node.service)
    tallies = _tally(jobs, tasks, services)
    states = {name: _state_of_counts(tally.counts) for name, tally in tallies.items()}
    started = {name for name, tally in tallies.items() if tally.started}
    stop: dict[str, str] = {}
    queue: list[str] = []
    not_run: dict[str, str] = {}
    for job in jobs:
        unneeded = _unneeded(job, jobs, states) if job.service else None
        if unneeded is not None:
            for task in tallies[job.name].services:
                if task.state in PENDING_TASK_STATES:
                    not_run[task.key] = f"not needed: {unneeded}"
                elif task.state in IN_FLIGHT_TASK_STATES:
                    stop[task.key] = f"stopped: {unneeded}"
            continue
        waiting = tallies[job.name].waiting
        if not waiting:
            continue
        blocked, reason = _blocked(job, states, started, services)
        if reason is not None:
            not_run.update(dict.fromkeys(waiting, reason))
            continue
        if blocked:
            continue
        if not set(job.volumes) <= ready_volumes:
            continue
        room = len(waiting)
        if job.concurrency is not None:
            counts = tallies[job.name].counts
            in_flight = sum(counts[state] for state in IN_FLIGHT_TASK_STATES)
            room = max(job.concurrency - in_flight, 0)
        queue += waiting[:room]
    return Step(queue=tuple(queue), not_run=not_run, stop=stop)


def _unneeded(service: JobNode, nodes: Sequence[JobNode], states: Mapping[str, TaskState]
              ) -> str | None:
    """Why ``service`` is no longer needed (see the module's docstring); None while it is.

    Its dependants are the jobs and services that run after it is ready (``requires``
    or ``depends-on`` RUNNING); one that waits for it to have ended (FINISHED) keeps it
    from nothing, and does not count among the jobs it waits for.
    """
    if service.persist:
        return None
    dependants = [node for node in nodes
                  if service.name in node.requires or service.name in node.after_running]
    if dependants:
        if all(states[node.name] in TERMINAL_TASK_STATES for node in dependants):
            return "every job and service that depends on it has ended"
        return None
    jobs = [node for node in nodes
            if not node.service and service.name not in node.after_finished]
    if jobs and all(states[node.name] in TERMINAL_TASK_STATES for node in jobs):
        return "the workflow's jobs have ended"
    return None


def workflow_outcome(jobs: Sequence[JobNode], tasks: Collection[TaskLike]
                     ) -> WorkflowState | None:
    """SUCCEEDED, FAILED or CANCELED once every task is final; None before.

    A cancelled task makes the workflow CANCELED unless a task failed; a task that
    did not run (its requirement failed) makes it FAILED. Services count only when
    one failed (FAILED); a workflow of services only ends CANCELED (it is stopped).
    """
    if any(task.state not in TERMINAL_TASK_STATES for task in tasks):
        return None
    by_name = job_states(jobs, tasks)
    states = {by_name[node.name] for node in jobs if not node.service}
    services = {by_name[node.name] for node in jobs if node.service}
    if TaskState.FAILED in states | services or TaskState.NOT_RUN in states:
        return WorkflowState.FAILED
    if TaskState.CANCELED in states or (not states and TaskState.CANCELED in services):
        return WorkflowState.CANCELED
    return WorkflowState.SUCCEEDED


def first_failure(jobs: Sequence[JobNode], tasks: Collection[TaskLike]) -> str | None:
    """The first job or service (in ``jobs`` order) that failed, if any."""
    states = job_states(jobs, tasks)
    return next((job.name for job in jobs if states[job.name] == TaskState.FAILED), None)
