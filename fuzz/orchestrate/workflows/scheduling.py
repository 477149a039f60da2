"""The runner's scheduling: the queued tasks of every workflow placed in one round.

Each round places the head of the queue (:mod:`fuzz.scheduler.placement`), saves the
attempts it made in one transaction, then hands each to a worker thread
(:mod:`~fuzz.orchestrate.workflows.tasks`); a worker also gets the rest of an attempt
whose end came while no thread waited for it (:meth:`SchedulingSteps.resume`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence

from fuzz.orchestrate.records import TaskRecord
from fuzz.orchestrate.secrets import SecretError
from fuzz.orchestrate.states import TaskState
from fuzz.orchestrate.store import DiskFullError
from fuzz.orchestrate.workflows.agentcalls import CallsStoppedError
from fuzz.orchestrate.workflows.base import ROUND_SIZE, ROUND_SIZE_MAX
from fuzz.orchestrate.workflows.reports import ReportSteps
from fuzz.orchestrate.workflows.tasks import LaunchPlan, Outcome
from fuzz.orchestrate.workflows.transfers import TransferSteps
from fuzz.orchestrate.workflows.workflow import ActiveWorkflow, container_id
from fuzz.scheduler.placement import PendingTask

log = logging.getLogger(__name__)



class SchedulingSteps(ReportSteps, TransferSteps):
    """Places queued tasks and dispatches their attempts."""

    def provisioning(self, unfit: Mapping[str, str], waiting: Mapping[str, str]) -> None:
        """The elastic loop's verdict: ``unfit`` tasks fail at once with the reason;
        ``waiting`` reasons are added to the tasks' ``waiting_for`` from now on."""
        with self._lock:
            self._provisioning = dict(waiting)
            changed: list[TaskRecord] = []
            for key, reason in unfit.items():
                found = self._queued(key)
                if found is None:
                    continue
                workflow, task = found
                task.state, task.error, task.waiting_for = TaskState.FAILED, reason, ""
                task.finished = self._clock()
                self._count_state(workflow.record.id, task)
                workflow.dirty = True
                self._unplaced.pop(key, None)
                changed.append(task)
            if changed:
                self._store.save(*changed)
                self._touch()

    def _schedule(self) -> None:
        began = time.monotonic()
        try:
            self._place_queued()
        finally:
            self._settings.metrics.scheduling_round(time.monotonic() - began)

    def _place_queued(self) -> None:
        now = self._clock()
        size = min(self._round_size, self._settings.workers - self._acting)
        if size <= 0:  # the workers are busy: their backlog first (the loop comes back)
            return
        queued: list[tuple[ActiveWorkflow, TaskRecord]] = []
        in_transfer = self._persistent_volumes_in_transfer()
        for workflow in sorted(self._active.values(), key=lambda w: w.record.created):
            for task in workflow.queued():  # in seq order
                if self._not_before.get((workflow.record.id, task.key), 0.0) > now:
                    continue
                if self._held_by_transfer(workflow, task, in_transfer):
                    continue
                queued.append((workflow, task))
                if len(queued) == size:
                    break
            if len(queued) == size:
                break
        self._unplaced = {}
        if not queued:
            return
        full = len(queued) == size
        by_key = {f"{w.record.id}/{t.key}": (w, t) for w, t in queued}
        pending = [
            PendingTask(
                key=key,
                request=w.placing(t.job)[0],
                nodes=w.placing(t.job)[1],
                seq=n,
                waited_rounds=self._waited.get(key, 0),
            )
            for n, (key, (w, t)) in enumerate(by_key.items())
        ]
        self._update_rooms()
        placement = self._rooms.place(pending)
        self._round_size = _next_round_size(self._round_size, full, bool(placement.waiting))
        changed: list[TaskRecord] = []
        placed: list[tuple[ActiveWorkflow, TaskRecord]] = []
        for assignment in placement.assigned:
            workflow, task = by_key[assignment.key]
            self._waited.pop(assignment.key, None)
            self._assign(workflow, task, assignment.nodes)
            placed.append((workflow, task))
        self._unplaced = {task.key: task for task in pending if task.key in placement.waiting}
        for key, why in placement.waiting.items():
            self._waited[key] = self._waited.get(key, 0) + 1
            if key in self._provisioning:
                why = f"{why}; {self._provisioning[key]}"
            _, task = by_key[key]
            if task.waiting_for != why:
                task.waiting_for = why
                changed.append(task)
        if placed or changed:  # the round's decisions in one transaction, before any start
            self._store.save(*(task for _, task in placed), *changed)
            self._touch()
        for workflow, task in placed:
            self._dispatch(workflow, task)

    def _update_rooms(self) -> None:
        """Bring the kept rooms up to date: the nodes whose use, registration or state
        changed since the last round (not every node: see :class:`Rooms`)."""
        for name in self._nodes.take_changed() | self._holds.take_changed():
            view = self._nodes.view(name, self._holds.use(name))
            if view is None:
                self._rooms.remove(name)
            else:
                self._rooms.update(view)

    def _assign(self, workflow: ActiveWorkflow, task: TaskRecord, nodes: Sequence[str]) -> None:
        """Make ``task``'s next attempt, on ``nodes`` (saved by the caller)."""
        task.state = TaskState.STARTING
        task.attempt += 1
        task.nodes = list(nodes)
        task.leases = []
        task.containers = [container_id(self._settings.instance, workflow.record.id, task, r)
                           for r in range(len(nodes))]
        task.waiting_for = ""

    def _dispatch(self, workflow: ActiveWorkflow, task: TaskRecord) -> None:
        """Hand ``task``'s attempt, assigned and saved, to a worker."""
        self._settings.metrics.started(workflow.record.id, task.key)
        try:
            plan = self._plan(workflow, task)
        except SecretError as exc:  # deleted (or made unusable) since the start checked it
            self._workers.submit(self.finished, workflow.record.id, task.key, Outcome(
                TaskState.FAILED, 0, f"cannot open the job's secrets: {exc}"))
            self._touch()
            return
        workflow.plans[task.key] = plan
        problem = self._floor_problem("a job that writes to a volume") if plan.mounts else None
        if problem is not None:  # fails this attempt (its retry policy may try again)
            self._workers.submit(self.finished, workflow.record.id, task.key,
                                 Outcome(TaskState.FAILED, 0, problem))
        else:
            self._act(self._executor.launch, plan)
        self._touch()

    def resume(self, action: Callable[[LaunchPlan], None], plan: LaunchPlan) -> None:
        """Run ``action(plan)`` on a worker, guarded as an attempt's start is: the rest of
        an attempt whose container ended (or whose wait needs a look) while no thread
        waited for it (:meth:`TaskExecutor._wait_unheld`)."""
        try:
            self._act(action, plan)
        except RuntimeError:  # the runner stopped: the attempt stays as recorded, re-adopted
            log.debug("task %s of %s: left to the next orchestrator", plan.key, plan.workflow_id)

    def _act(self, action: Callable[[LaunchPlan], None], plan: LaunchPlan) -> None:
        """Hand ``action(plan)`` to a worker, counted as acting until it is done."""
        with self._acting_lock:
            self._acting += 1
        try:
            self._workers.submit(self._guard, action, plan)
        except RuntimeError:
            self._done_acting()
            raise

    def _done_acting(self) -> None:
        with self._acting_lock:
            self._acting -= 1

    def _guard(self, action: Callable[[LaunchPlan], None], plan: LaunchPlan) -> None:
        """Run an executor action; an unexpected error fails the task instead of vanishing.
        Done, it no longer counts as acting (:meth:`_act`)."""
        try:
            action(plan)
        except CallsStoppedError:
            return  # the orchestrator stops: the attempt stays as recorded, to be re-adopted
        except DiskFullError as exc:  # its outcome could not be recorded: try once more
            log.error("task %s of %s: %s", plan.key, plan.workflow_id, exc)
            with contextlib.suppress(DiskFullError):
                self.finished(plan.workflow_id, plan.key, Outcome(TaskState.FAILED, 0, str(exc)))
        except Exception as exc:
            log.exception("task %s of %s", plan.key, plan.workflow_id)
            self.finished(plan.workflow_id, plan.key,
                          Outcome(TaskState.FAILED, 0, f"internal error: {exc}"))
        finally:
            self._done_acting()


def _next_round_size(size: int, full: bool, waited: bool) -> int:
    """How many queued tasks the next round looks at, after one of ``size`` that looked at
    as many as it could (``full``) and left some waiting (``waited``) or not.

    A round's work on the nodes (their views, the placement index) is the same for one
    task or hundreds: while the queue is deep and every task it looks at is placed, the
    next round looks at twice as many (up to :data:`ROUND_SIZE_MAX`); once one waits
    (the cluster is full) it is back to :data:`ROUND_SIZE`.
    """
    if waited:
        return ROUND_SIZE
    if full:
        return min(size * 2, ROUND_SIZE_MAX)
    return size
