"""The runner's reports: what attempts report in (the TaskEvents), and what it reports out.

Worker threads call these as an attempt leases, pulls, runs and ends; the service
reads snapshots, the list of workflows, and what is in flight.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

from fuzz.orchestrate.cluster.nodes import NodeUse
from fuzz.orchestrate.records import (
    ImageRecord,
    TaskRecord,
    TransferRecord,
    VolumeRecord,
    WorkflowRecord,
)
from fuzz.orchestrate.states import ImageState, Readiness, TaskState, VolumeState
from fuzz.orchestrate.workflows.base import RunnerBase, WorkflowNotFoundError, WorkflowSnapshot
from fuzz.orchestrate.workflows.mpi import LaunchTarget
from fuzz.orchestrate.workflows.tasks import LaunchPlan, Outcome
from fuzz.orchestrate.workflows.workflow import ActiveWorkflow, launch_plan
from fuzz.scheduler.offerings import QueuedJob

log = logging.getLogger(__name__)

REQUEUE_BACKOFF = 1.0
SERVICE_RESTARTS = 5  # a service's container is restarted at most this many times
RESTART_BACKOFF = 1.0  # before its first restart; doubled for each next one
RESTART_BACKOFF_MAX = 60.0


def restart_backoff(restarts: int) -> float:
    """Seconds before a service's restart number ``restarts`` (1, 2, ...): 1, 2, 4, 8, 16
    (at most :data:`RESTART_BACKOFF_MAX`)."""
    return min(RESTART_BACKOFF * 2.0 ** (restarts - 1), RESTART_BACKOFF_MAX)


def _shallow_copy(task: TaskRecord) -> TaskRecord:
    """What ``copy.copy(task)`` gives, in half its time: a snapshot copies every task of a
    run under the runner's lock, thousands for a task array, several times a second for
    each watcher. (A TaskRecord is a plain dataclass: its fields are its ``__dict__``.)"""
    clone = object.__new__(TaskRecord)
    clone.__dict__.update(task.__dict__)
    return clone


class ReportSteps(RunnerBase):
    """Records what attempts report, and answers the service's questions."""

    def snapshot(self, owner: str, name: str, run_id: str = "") -> WorkflowSnapshot:
        """The latest run of ``owner``'s ``name`` (the run ``run_id``, when given);
        WorkflowNotFoundError if there is none."""
        with self._lock:
            workflow = self._find_active(owner, name, run_id)
            if workflow is not None:
                # Shallow copies suffice: the runner replaces a record's lists, never edits them.
                return WorkflowSnapshot(
                    copy.copy(workflow.record),
                    [copy.copy(v) for v in workflow.volumes.values()],
                    [copy.copy(m) for m in workflow.transfers],
                    [copy.copy(i) for i in workflow.images.values()],
                    [_shallow_copy(t)
                     for t in sorted(workflow.tasks.values(), key=lambda t: t.seq)])
        runs = ([r for r in self._store.load(WorkflowRecord, id=run_id)
                 if (r.owner, r.name) == (owner, name)] if run_id else self._runs(owner, name))
        if not runs:
            raise WorkflowNotFoundError(f"no workflow {run_id or name!r} of {owner}")
        record = runs[0]
        return WorkflowSnapshot(
            record,
            self._store.load(VolumeRecord, workflow_id=record.id),
            self._store.load(TransferRecord, order_by="seq", workflow_id=record.id),
            self._store.load(ImageRecord, workflow_id=record.id),
            self._store.load(TaskRecord, order_by="seq", workflow_id=record.id),
        )

    def workflows(self) -> list[WorkflowRecord]:
        """The latest run of every workflow (of every owner), newest first."""
        latest: dict[tuple[str, str], WorkflowRecord] = {}
        for record in self._store.load(WorkflowRecord, order_by="run"):
            latest[record.owner, record.name] = record
        with self._lock:
            for workflow in self._active.values():
                record = workflow.record
                latest[record.owner, record.name] = copy.copy(record)
        return sorted(latest.values(), key=lambda r: r.created, reverse=True)

    def wait_for_change(self, seen: int, timeout: float) -> int:
        """Block until something changed after version ``seen`` (or ``timeout``)."""
        with self._changed:
            self._changed.wait_for(lambda: self._version != seen or self._stopping.is_set(),
                                   timeout)
            return self._version

    def live_attempt(self, owner: str, name: str, key: str, run_id: str = ""
                     ) -> LaunchPlan | None:
        """The attempt of task ``key`` of ``owner``'s ``name`` (of its run ``run_id``, when
        given) running now, if any."""
        with self._lock:
            workflow = self._find_active(owner, name, run_id)
            if workflow is None:
                return None
            return workflow.plans.get(key)

    def launch_target(self, token: str) -> LaunchTarget:
        """The containers an MPI job's launch ``token`` may start processes in
        (LaunchTokenError when it names no attempt in flight)."""
        return self._executor.launch_tokens.target(token)

    def used_resources(self) -> dict[str, NodeUse]:
        """What the attempts in flight hold on each node."""
        with self._lock:
            return self._holds.used()

    def unplaced(self) -> list[QueuedJob]:
        """The queued tasks the last scheduling round could place on no node, oldest first.

        Keys are ``WORKFLOW_ID/TASK_KEY``; the elastic loop adds nodes for them.
        """
        with self._lock:
            return [QueuedJob(key, task.request, task.nodes)
                    for key, task in sorted(self._unplaced.items(), key=lambda kv: kv[1].seq)
                    if self._queued(key) is not None]

    def leased(self, workflow_id: str, key: str, leases: Sequence[str]) -> None:
        """Record the leases of an attempt (so a restart can give them back)."""
        with self._lock:
            found = self._task(workflow_id, key)
            if found is not None:
                self._hold(*found, leases)
                self._store.save(found[1])

    def _hold(self, workflow: ActiveWorkflow, task: TaskRecord, leases: Sequence[str]) -> None:
        """Make ``task`` hold ``leases`` (saved by the caller), and keep its attempt's plan
        in step."""
        task.leases = list(leases)
        plan = workflow.plans.get(task.key)
        if plan is not None:
            workflow.plans[task.key] = launch_plan(workflow, task, self._launch, plan.credentials,
                                                   dict(plan.secret_env))

    def _image(self, workflow_id: str, uri: str) -> ImageRecord | None:
        workflow = self._active.get(workflow_id)
        return workflow.images.get(uri) if workflow is not None else None

    def pulling(self, workflow_id: str, image: str) -> None:
        """An image pull began on some node."""
        with self._lock:
            record = self._image(workflow_id, image)
            if record is not None and record.state == ImageState.PENDING:
                record.state = ImageState.PULLING
                self._store.save(record)
                self._touch()

    def pulled(self, workflow_id: str, image: str, digest: str) -> None:
        """An image is on a node."""
        with self._lock:
            record = self._image(workflow_id, image)
            if record is not None and (record.state != ImageState.READY or record.digest != digest):
                record.state, record.digest, record.error = ImageState.READY, digest, ""
                self._store.save(record)
                self._touch()

    def image_failed(self, workflow_id: str, image: str, error: str) -> None:
        """An image could not be pulled."""
        with self._lock:
            record = self._image(workflow_id, image)
            if record is not None:
                record.state, record.error = ImageState.FAILED, error
                self._store.save(record)
                self._touch()

    def running(self, workflow_id: str, key: str, leases: Sequence[str],
                addresses: Sequence[str] = ()) -> None:
        """Every rank of an attempt runs, under ``leases`` (a service: at ``addresses``,
        and STARTING until its readiness probe passes); returns once that is on record
        (a restart that finds it RUNNING with its containers gone fails it; STARTING, and
        none found, queues it again: a watcher that saw it run must not see that)."""
        with self._lock:
            found = self._task(workflow_id, key)
            if found is None:
                return
            workflow, task = found
            if self._adopted(workflow_id, key):
                log.info("workflow %s: task %s re-adopted: its container %s still runs on %s",
                         workflow_id, key, ", ".join(task.containers), ", ".join(task.nodes))
            task.state = TaskState.RUNNING
            task.started = task.started or self._clock()
            if task.kind == "service":
                task.readiness = task.readiness or Readiness.STARTING
                task.addresses = list(addresses) or task.addresses
            self._hold(workflow, task, leases)
            ticket = self._store.save_later(task)
        self._store.wait(ticket)
        self._touch()  # once on record: watchers and the loop see what a restart would

    def readiness(self, workflow_id: str, key: str, readiness: Readiness, error: str) -> None:
        """A service's probe passed (READY) or failed again (STARTING, ``error``: why)."""
        with self._lock:
            found = self._task(workflow_id, key)
            if found is None or found[1].state != TaskState.RUNNING:
                return
            task = found[1]
            if (task.readiness, task.probe_error) == (readiness, error):
                return
            if readiness == Readiness.READY:
                log.info("workflow %s: service %s is ready", workflow_id, key)
            task.readiness, task.probe_error = readiness, error
            self._store.save(task)
            self._touch()

    def _adopted(self, workflow_id: str, key: str) -> bool:
        """Under the lock: whether this is the first word of an attempt being re-adopted
        after a restart (its outcome is then logged)."""
        if (workflow_id, key) not in self._adopting:
            return False
        self._adopting.discard((workflow_id, key))
        return True

    def _end_attempt(self, workflow_id: str, key: str) -> TaskRecord | None:
        """Under the lock: the task whose attempt ended, its plan dropped (None if unknown)."""
        found = self._task(workflow_id, key)
        if found is None:
            return None
        found[0].plans.pop(key, None)
        self._reschedule = True
        return found[1]

    def requeue(self, workflow_id: str, key: str, reason: str) -> None:
        """An attempt could not start for now: queue the task again, briefly held back
        (on record when this returns)."""
        with self._lock:
            if self._adopted(workflow_id, key):
                log.info("workflow %s: task %s requeued: %s", workflow_id, key, reason)
            self._evicted.pop((workflow_id, key), None)  # it never ran: nothing was stopped
            task = self._end_attempt(workflow_id, key)
            if task is None:
                return
            task.state, task.attempt, task.waiting_for = TaskState.QUEUED, task.attempt - 1, reason
            task.nodes, task.leases, task.containers = [], [], []
            self._not_before[(workflow_id, key)] = self._clock() + REQUEUE_BACKOFF
            self._count_state(workflow_id, task)
            ticket = self._store.save_later(task)
        self._store.wait(ticket)
        self._touch()  # once on record: watchers and the loop see what a restart would

    def ended(self, workflow_id: str, key: str, outcome: Outcome) -> None:
        """An attempt ended: its outcome goes on record before its containers are removed."""
        with self._lock:
            found = self._task(workflow_id, key)
            if found is None:
                return
            task = found[1]
            task.outcome, task.exit_code, task.error = outcome.state, outcome.exit_code, \
                outcome.error
            ticket = self._store.save_later(task)
        self._store.wait(ticket)

    def finished(self, workflow_id: str, key: str, outcome: Outcome) -> None:
        """An attempt ended: the task succeeds, fails, is retried or is cancelled.

        The volumes it mounted are measured first (outside the lock: it walks them);
        one over the volume limit fails, and so stops, the workflow.

        On record when this returns, unless the attempt's end is on record already
        (:meth:`ended`): then a restart would conclude the attempt as this does, and the
        decision goes with the next transaction unwaited, before every write made after
        it (the loop's, which act on it: the next attempt, the dependent tasks, the
        workflow's end).
        """
        overruns = self._overruns(workflow_id, key)
        ticket = self._decide_end(workflow_id, key, outcome, overruns)
        if ticket is not None:
            if ticket:
                self._store.wait(ticket)
            self._touch()

    def _decide_end(self, workflow_id: str, key: str, outcome: Outcome,
                    overruns: list[tuple[VolumeRecord, str]]) -> int | None:
        """:meth:`finished`'s decision, queued to be written: the ticket to wait on (0:
        queued unwaited, the end being on record; None when there is nothing to write,
        or it is written already)."""
        with self._lock:
            if self._adopted(workflow_id, key):
                log.warning("workflow %s: task %s could not be re-adopted: %s", workflow_id, key,
                            outcome.error)
            reason = self._evicted.pop((workflow_id, key), None)
            if reason is not None and outcome.state != TaskState.SUCCEEDED:
                outcome = Outcome(TaskState.FAILED, outcome.exit_code, reason)
            elif self._start_lost_to_cordon(workflow_id, key, outcome):
                self.requeue(workflow_id, key, "its node was cordoned before it started")
                return None
            task = self._end_attempt(workflow_id, key)
            if task is None:
                return None
            concluded = bool(task.outcome)  # its end is on record (ended)
            workflow = self._active[workflow_id]
            failed: list[VolumeRecord] = []
            for volume, problem in overruns:
                if volume.state != VolumeState.FAILED:
                    volume.state, volume.error = VolumeState.FAILED, problem
                    failed.append(volume)
            task.exit_code, task.error, task.finished = outcome.exit_code, outcome.error, \
                self._clock()
            task.outcome = ""
            if task.kind == "service":
                self._service_ended(workflow, task, outcome)
                self._count_state(workflow_id, task)
                return self._write_end(concluded, *failed, task)
            attempts = workflow.fuzzfile.jobs[task.job].policy.retry.attempts
            if outcome.state == TaskState.FAILED and task.attempt < attempts and \
                    not workflow.record.cancel_requested:
                task.state = TaskState.QUEUED
                task.error = f"attempt {task.attempt} failed: {outcome.error}"
                log.info("workflow %s task %s: %s; queued again (attempt %d of %d next)",
                         workflow_id, key, task.error, task.attempt + 1, attempts)
            elif workflow.record.cancel_requested and outcome.state != TaskState.SUCCEEDED:
                task.state = TaskState.CANCELED
            else:
                task.state = outcome.state
            self._count_state(workflow_id, task)
            return self._write_end(concluded, *failed, task)

    def _write_end(self, concluded: bool, *records: object) -> int:
        """Queue ``records``, an attempt's finish: unwaited (0) when its end is on record
        already (``concluded``), else the ticket to wait on."""
        if concluded:
            self._store.queue(*records)
            return 0
        return self._store.save_later(*records)

    def _service_ended(self, workflow: ActiveWorkflow, task: TaskRecord, outcome: Outcome
                       ) -> None:
        """A service's container ended: stopped by fuzz (no longer needed: SUCCEEDED; the
        workflow stopped: CANCELED), or by itself or from outside: restarted after a
        back-off, at most :data:`SERVICE_RESTARTS` times, then FAILED (and with it the
        workflow). One whose readiness probe gave up fails at once."""
        task.readiness = ""
        stopped = workflow.stopping.pop(task.key, None)
        how = outcome.error or f"it exited with code {outcome.exit_code}"
        if stopped is not None and not outcome.final:
            task.state, task.error = TaskState.SUCCEEDED, stopped
        elif workflow.record.cancel_requested:
            task.state = TaskState.CANCELED
        elif outcome.final:
            task.state = TaskState.FAILED
        elif task.restarts >= SERVICE_RESTARTS:
            task.state = TaskState.FAILED
            task.error = f"ended {task.restarts + 1} times, {SERVICE_RESTARTS} restarts " \
                f"spent; last: {how}"
        else:
            task.restarts += 1
            wait = restart_backoff(task.restarts)
            task.state, task.nodes, task.leases, task.containers = TaskState.QUEUED, [], [], []
            task.error = f"restart {task.restarts} of {SERVICE_RESTARTS} in {wait:g}s: {how}"
            self._not_before[(workflow.record.id, task.key)] = self._clock() + wait
            log.info("workflow %s: service %s ended (%s); restarting in %gs", workflow.record.id,
                     task.key, how, wait)

    def _start_lost_to_cordon(self, workflow_id: str, key: str, outcome: Outcome) -> bool:
        """Whether an attempt failed before it ran on a node cordoned meanwhile.

        Such a task was queued work: it is placed again elsewhere, never failed.
        """
        workflow = self._active.get(workflow_id)
        task = workflow.tasks.get(key) if workflow is not None else None
        return task is not None and task.state == TaskState.STARTING and \
            outcome.state == TaskState.FAILED and \
            any(self._nodes.draining(node) for node in task.nodes)

    def _overruns(self, workflow_id: str, key: str) -> list[tuple[VolumeRecord, str]]:
        """The volumes task ``key`` mounts that hold more than the limit, and by how much."""
        with self._lock:
            workflow = self._active.get(workflow_id)
            task = workflow.tasks.get(key) if workflow is not None else None
            if workflow is None or task is None:
                return []
            mounted = [(workflow.volumes[name], workflow.fuzzfile.volumes[name].size)
                       for name in workflow.fuzzfile.container(task.job).mounts]
        found = ((volume, self._volume_limits.overrun(volume, size)) for volume, size in mounted)
        return [(volume, problem) for volume, problem in found if problem is not None]
