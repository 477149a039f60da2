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

import bisect
import itertools
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from fuzz.orchestrate.states import TERMINAL_TASK_STATES, Readiness, TaskState, WorkflowState

PENDING_TASK_STATES = frozenset({TaskState.WAITING, TaskState.QUEUED})
IN_FLIGHT_TASK_STATES = frozenset({TaskState.QUEUED, TaskState.STARTING, TaskState.RUNNING})
UNSUCCESSFUL_STATES = frozenset({TaskState.FAILED, TaskState.CANCELED, TaskState.NOT_RUN})


STARTED_STATES = frozenset({TaskState.RUNNING, TaskState.SUCCEEDED, TaskState.FAILED})
"""Task states of a task that has run (or runs)."""

NOT_FINAL_TASK_STATES = frozenset(TaskState) - TERMINAL_TASK_STATES


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


class TaskTally:
    """A workflow's tasks counted by job and state, kept as tasks change state.

    The runner tells it each task it writes (:meth:`note`), so a DAG pass costs the
    workflow's jobs and its waiting tasks, not its size: over a task array of 10,000
    mostly ended tasks, walking every task at each pass was the runner loop's largest
    cost. Tasks are in the order they were first seen (the tasks' ``seq`` order): each
    job's waiting tasks are kept in it (no task goes back to WAITING), and so are the
    queued tasks (:meth:`queued`, for the scheduler), a task queued again among them at
    its place. A service's task is read as it is (one per service), for its readiness.
    """

    def __init__(self, jobs: Sequence[JobNode], tasks: Iterable[TaskLike]) -> None:
        """Count ``tasks`` (every task of the workflow) under the graph ``jobs``."""
        self.jobs = tuple(jobs)
        self.service_names = frozenset(job.name for job in jobs if job.service)
        self.counts: dict[str, Counter[str]] = {job.name: Counter() for job in jobs}
        self.waiting: dict[str, dict[str, None]] = {job.name: {} for job in jobs}
        self.pending: dict[str, None] = {}  # WAITING or QUEUED, every job's
        self.services: dict[str, list[TaskLike]] = {name: [] for name in self.service_names}
        self._counted: dict[str, str] = {}  # each task's state as counted
        self._keys: list[str] = []  # every task's key, in the order first seen
        self._place: dict[str, int] = {}  # each task's place in ``_keys``
        self._queued: list[int] = []  # the places of the queued tasks, ascending
        for task in tasks:
            self.note(task)

    def note(self, task: TaskLike) -> None:
        """``task`` may have changed state: count it in its state now."""
        state, key, job = task.state, task.key, task.job
        old = self._counted.get(key)
        if old == state:
            return
        counts = self.counts[job]
        if old is None:
            self._place[key] = len(self._keys)
            self._keys.append(key)
            if job in self.service_names:
                self.services[job].append(task)
        else:
            counts[old] -= 1
            if old == TaskState.WAITING:
                del self.waiting[job][key]
            elif old == TaskState.QUEUED:
                # bisect: the queue is kept sorted by hand (no sorted container in the stdlib)
                del self._queued[bisect.bisect_left(self._queued, self._place[key])]
            if state not in PENDING_TASK_STATES:
                self.pending.pop(key, None)
        counts[state] += 1
        self._counted[key] = state
        if state == TaskState.WAITING:
            self.waiting[job][key] = None
        elif state == TaskState.QUEUED:
            bisect.insort(self._queued, self._place[key])
        if state in PENDING_TASK_STATES:
            self.pending[key] = None

    def queued(self) -> Iterator[str]:
        """The keys of the queued tasks, in the tasks' order (lazily: note no change of
        state while going through them)."""
        return map(self._keys.__getitem__, self._queued)

    def job_states(self) -> dict[str, TaskState]:
        """Every job's state (see :func:`job_state`)."""
        return {name: _state_of_counts(counts) for name, counts in self.counts.items()}

    def started(self) -> set[str]:
        """The jobs one of whose tasks runs or has run, and the services that are READY."""
        found = {name for name, counts in self.counts.items() if name not in self.service_names
                 and any(counts[state] for state in STARTED_STATES)}
        found.update(name for name, tasks in self.services.items() if any(
            task.state == TaskState.RUNNING and task.readiness == Readiness.READY
            for task in tasks))
        return found

    def ended(self) -> bool:
        """Whether every task is final."""
        return not any(counts[state] for counts in self.counts.values()
                       for state in NOT_FINAL_TASK_STATES)


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
    tally: TaskTally,
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
        return Step(not_run=dict.fromkeys(tally.pending, stop_reason))
    jobs = tally.jobs
    states = tally.job_states()
    started = tally.started()
    stop: dict[str, str] = {}
    queue: list[str] = []
    not_run: dict[str, str] = {}
    for job in jobs:
        unneeded = _unneeded(job, jobs, states) if job.service else None
        if unneeded is not None:
            for task in tally.services[job.name]:
                if task.state in PENDING_TASK_STATES:
                    not_run[task.key] = f"not needed: {unneeded}"
                elif task.state in IN_FLIGHT_TASK_STATES:
                    stop[task.key] = f"stopped: {unneeded}"
            continue
        waiting = tally.waiting[job.name]
        if not waiting:
            continue
        blocked, reason = _blocked(job, states, started, tally.service_names)
        if reason is not None:
            not_run.update(dict.fromkeys(waiting, reason))
            continue
        if blocked:
            continue
        if not set(job.volumes) <= ready_volumes:
            continue
        room = len(waiting)
        if job.concurrency is not None:
            counts = tally.counts[job.name]
            in_flight = sum(counts[state] for state in IN_FLIGHT_TASK_STATES)
            room = max(job.concurrency - in_flight, 0)
        queue += itertools.islice(waiting, room)
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


def workflow_outcome(tally: TaskTally) -> WorkflowState | None:
    """SUCCEEDED, FAILED or CANCELED once every task is final; None before.

    A cancelled task makes the workflow CANCELED unless a task failed; a task that
    did not run (its requirement failed) makes it FAILED. Services count only when
    one failed (FAILED); a workflow of services only ends CANCELED (it is stopped).
    """
    if not tally.ended():
        return None
    by_name = tally.job_states()
    states = {by_name[node.name] for node in tally.jobs if not node.service}
    services = {by_name[node.name] for node in tally.jobs if node.service}
    if TaskState.FAILED in states | services or TaskState.NOT_RUN in states:
        return WorkflowState.FAILED
    if TaskState.CANCELED in states or (not states and TaskState.CANCELED in services):
        return WorkflowState.CANCELED
    return WorkflowState.SUCCEEDED


def first_failure(tally: TaskTally) -> str | None:
    """The first job or service (in the graph's order) that failed, if any."""
    states = tally.job_states()
    return next((job.name for job in tally.jobs if states[job.name] == TaskState.FAILED), None)
