"""The runner's lifecycle of a run: submitted, resumed, advanced pass by pass, cancelled, finished.

Each pass over a workflow creates its volumes and starts their ingress, asks the DAG
(:mod:`~fuzz.orchestrate.workflows.dag`) which tasks to queue and which will never
run, and once every task is final runs the egress and finishes the workflow.
"""

from __future__ import annotations

import copy
import logging
from functools import partial

from fuzz.orchestrate.records import (
    ImageRecord,
    TaskRecord,
    TransferRecord,
    VolumeRecord,
    WorkflowRecord,
)
from fuzz.orchestrate.secrets import (
    SecretError,
    account_owner,
    environment_value,
    missing_secret,
)
from fuzz.orchestrate.states import (
    ACTIVE_TASK_STATES,
    TaskState,
    TransferState,
    VolumeState,
    WorkflowState,
)
from fuzz.orchestrate.workflows import dag
from fuzz.orchestrate.workflows.base import WorkflowExistsError
from fuzz.orchestrate.workflows.jobids import JobIds
from fuzz.orchestrate.workflows.scheduling import SchedulingSteps
from fuzz.orchestrate.workflows.tasks import Outcome
from fuzz.orchestrate.workflows.workflow import (
    ActiveWorkflow,
    HostPathError,
    check_workflow_name,
    is_account_volume,
    launch_plan,
    new_images,
    new_tasks,
    new_transfers,
    secret_references,
)
from fuzz.spec.fuzzfile_loader import LoadedFuzzfile, parse_fuzzfile

log = logging.getLogger(__name__)


class LifecycleSteps(SchedulingSteps):
    """Submits, resumes, advances, cancels and finishes workflows."""

    def _resume(self, record: WorkflowRecord) -> None:
        fuzzfile = parse_fuzzfile(record.fuzzfile, record.file_name).fuzzfile
        workflow = ActiveWorkflow(
            record=record,
            fuzzfile=fuzzfile,
            ids=self._ids.of(record.owner),
            account_ids=self._account_ids(record.account),
            volumes={v.name: v for v in self._store.load(VolumeRecord, workflow_id=record.id)},
            transfers=self._store.load(TransferRecord, order_by="seq", workflow_id=record.id),
            images={i.uri: i for i in self._store.load(ImageRecord, workflow_id=record.id)},
            tasks={t.key: t for t in self._store.load(TaskRecord, order_by="seq",
                                                      workflow_id=record.id)},
            max_concurrency=self._settings.limits.task_array_concurrency,
        )
        interrupted = [m for m in workflow.transfers if m.state == TransferState.RUNNING]
        for move in interrupted:  # it starts again from the beginning
            move.state = TransferState.PENDING
        in_flight = [t for t in workflow.tasks.values() if t.state in ACTIVE_TASK_STATES]
        queued = [t for t in workflow.tasks.values() if t.state == TaskState.QUEUED]
        log.info("workflow %s: re-adopting %d task(s) in flight, requeuing %d queued task(s), "
                 "restarting %d interrupted transfer(s)", record.id, len(in_flight), len(queued),
                 len(interrupted))
        for task in queued:
            log.info("workflow %s: task %s requeued (%s)", record.id, task.key,
                     task.waiting_for or "queued before the restart")
        for move in interrupted:
            log.info("workflow %s: %s of volume %s restarted from the beginning", record.id,
                     move.direction, move.volume)
        with self._lock:
            self._active[record.id] = workflow
            workflow.plans.attach(self._holds)
            for task in in_flight:
                try:
                    plan = self._plan(workflow, task)
                except SecretError:  # deleted since: adopting or concluding needs none
                    plan = launch_plan(workflow, task, self._launch, None, {})
                workflow.plans[task.key] = plan
                self._adopting.add((record.id, task.key))
                action = partial(self._executor.adopt, running=task.state == TaskState.RUNNING)
                if task.outcome:  # it ended; its containers may be gone already
                    action = partial(self._executor.conclude, outcome=Outcome(
                        TaskState(task.outcome), task.exit_code, task.error))
                self._act(action, plan)

    def submit(self, name: str, owner: str, loaded: LoadedFuzzfile, account: str = ""
               ) -> WorkflowRecord:
        """Start a new run of ``owner``'s workflow ``name`` from a validated Fuzzfile.

        Its user-scope secrets and persistent volumes are ``owner``'s, its jobs run as
        ``owner``'s ids (given now if this is their first workflow). With ``account``
        (whose membership the caller checked) its account-scope secrets and persistent
        volumes are that account's, and its jobs run with the account's gid.
        """
        check_workflow_name(name)
        self._check_secrets(owner, account, loaded)
        with self._lock:
            runs = self._runs(owner, name)
            if runs and not runs[0].finished_state:
                raise WorkflowExistsError(
                    f"workflow {name!r} is still {runs[0].state.lower()}; "
                    "cancel it or choose another name")
            ids = self._ids.of(owner)
            account_ids = self._account_ids(account)
            run = runs[0].run + 1 if runs else 1
            # Owner names may hold dots, workflow names never do: ids stay unique, and
            # never clash with the OWNERLESS ``NAME.RUN`` ids of runs from before (schema 1).
            workflow_id = f"{owner}.{name}.{run}"
            fuzzfile = loaded.fuzzfile
            record = WorkflowRecord(
                id=workflow_id, name=name, run=run, owner=owner,
                file_name=str(loaded.path), fuzzfile=loaded.text,
                content_hash=loaded.content_hash, created=self._clock(), account=account,
            )
            volumes = {
                vname: VolumeRecord(
                    workflow_id, vname, spec.reference,
                    str(self._volumes.path_for(workflow_id, owner, vname, spec, account)),
                    ephemeral=spec.persistent_name is None,
                )
                for vname, spec in fuzzfile.volumes.items()
            }
            transfers = new_transfers(workflow_id, fuzzfile)
            self._check_host_paths(loaded, owner, transfers)
            workflow = ActiveWorkflow(
                record=record, fuzzfile=fuzzfile, ids=ids, account_ids=account_ids,
                volumes=volumes,
                transfers=transfers,
                images=new_images(workflow_id, fuzzfile),
                tasks={t.key: t for t in new_tasks(workflow_id, fuzzfile)},
                max_concurrency=self._settings.limits.task_array_concurrency,
            )
            self._store.save(record, *volumes.values(), *workflow.transfers,
                             *workflow.images.values(), *workflow.tasks.values())
            self._active[workflow_id] = workflow
            workflow.plans.attach(self._holds)
            self._touch()
            return copy.copy(record)

    def _check_host_paths(self, loaded: LoadedFuzzfile, owner: str,
                          transfers: list[TransferRecord]) -> None:
        """HostPathError for the first transfer whose orchestrator-host path is refused."""
        for move in transfers:
            problem = self._volumes.host_path_problem(move, owner, loaded.fuzzfile.files)
            if problem is not None:
                raise HostPathError(f"{loaded.path}: volumes.{move.volume}.{move.direction}"
                                    f"[{move.seq}]: {problem}")

    def _account_ids(self, account: str) -> JobIds | None:
        """The ids of ``account`` (its persistent volumes'), None for no account."""
        return self._ids.of(account_owner(account)) if account else None

    def _check_secrets(self, owner: str, account: str, loaded: LoadedFuzzfile) -> None:
        """SecretError for the first secret the file names that ``owner`` (or, in the
        ``account`` scope, the account) lacks, or an ``env`` secret that is not text."""
        holders = {"user": owner, "account": account_owner(account)}
        known = {(scope, secret.name) for scope, holder in holders.items()
                 for secret in self._secrets.list(holder)}
        for where, scope, secret in secret_references(loaded.fuzzfile):
            if (scope, secret) not in known:
                raise missing_secret(loaded.path, where, secret,
                                     account if scope == "account" else "")
            if ".env." in where:
                try:
                    environment_value(self._secrets.open(holders[scope], secret), secret)
                except SecretError as exc:
                    raise SecretError(f"{loaded.path}: {where}: {exc}") from None

    def cancel(self, owner: str, name: str, run_id: str = "") -> WorkflowRecord:
        """Ask the latest run of ``owner``'s ``name`` (the run ``run_id``, when given) to
        stop: queued tasks end, running ones are stopped. A finished run stays as it is."""
        with self._lock:
            workflow = self._find_active(owner, name, run_id)
            if workflow is None:
                return self.snapshot(owner, name, run_id).record
            workflow.record.cancel_requested = True
            workflow.dirty = True
            self._store.save(workflow.record)
            plans = list(workflow.plans.values())
            self._touch()
        for plan in plans:
            self._act(self._executor.cancel, plan)
        return copy.copy(workflow.record)

    def _advance(self, workflow: ActiveWorkflow) -> None:
        record = workflow.record
        if record.state == WorkflowState.PENDING:
            self._begin(workflow)
        for move in workflow.transfers:
            if move.direction == "ingress" and move.state == TransferState.PENDING:
                self._start_transfer(workflow, move)
        stop_reason = self._stop_reason(workflow)
        step = dag.next_step(workflow.tally, workflow.ready_volumes(), stop_reason)
        changed: list[TaskRecord] = []
        for key in step.queue:
            task = workflow.tasks[key]
            task.state = TaskState.QUEUED
            self._count_state(record.id, task)
            changed.append(task)
            self._reschedule = True
        for key, reason in step.not_run.items():
            task = workflow.tasks[key]
            task.state = TaskState.CANCELED if record.cancel_requested else TaskState.NOT_RUN
            self._count_state(record.id, task)
            task.error = reason
            task.waiting_for = ""
            changed.append(task)
        if changed:
            self._store.save(*changed)
            self._touch()
        stops = dict(step.stop)
        if stop_reason is not None and not workflow.record.cancel_requested:
            # failing (a service failed, a volume failed): what still runs is stopped too
            stops.update((t.key, stop_reason) for t in workflow.tasks.values()
                         if t.state == TaskState.RUNNING)
        self._stop_tasks(workflow, stops)
        outcome = dag.workflow_outcome(workflow.tally)
        if outcome is not None:
            self._conclude(workflow, outcome, stop_reason)

    def _begin(self, workflow: ActiveWorkflow) -> None:
        record = workflow.record
        record.state = WorkflowState.RUNNING
        record.started = self._clock()
        has_ingress = {m.volume for m in workflow.transfers if m.direction == "ingress"}
        for volume in workflow.volumes.values():
            try:
                self._volumes.create(volume, workflow.volume_ids(volume),
                                     shared=is_account_volume(volume))
            except OSError as exc:
                volume.state = VolumeState.FAILED
                volume.error = f"cannot create {volume.path}: {exc}"
                continue
            volume.state = (VolumeState.INGRESS if volume.name in has_ingress
                            else VolumeState.READY)
        self._store.save(record, *workflow.volumes.values())
        self._touch()

    def _stop_tasks(self, workflow: ActiveWorkflow, stops: dict[str, str]) -> None:
        """Ask the running tasks among ``stops`` to stop, once each, noting why (a task
        still starting is asked once it runs, at a later pass)."""
        for key, reason in stops.items():
            task = workflow.tasks[key]
            plan = workflow.plans.get(key)
            if key in workflow.stopping or task.state != TaskState.RUNNING or plan is None:
                continue
            workflow.stopping[key] = reason
            log.info("workflow %s: stopping %s (%s)", workflow.record.id, key, reason)
            self._act(self._executor.cancel, plan)

    def _stop_reason(self, workflow: ActiveWorkflow) -> str | None:
        if workflow.record.cancel_requested:
            return "workflow cancelled"
        failed = next((v for v in workflow.volumes.values() if v.state == VolumeState.FAILED), None)
        if failed is not None:
            return f"volume {failed.name}: {failed.error}"
        service = next((t for t in (workflow.tasks.get(node.name) for node in workflow.graph
                                    if node.service)  # not every task: there may be 10,000
                        if t is not None and t.kind == "service" and t.state == TaskState.FAILED),
                       None)
        if service is not None:
            return f"service {service.key!r} failed: {service.error}"
        return None

    def _conclude(self, workflow: ActiveWorkflow, outcome: WorkflowState,
                  stop_reason: str | None) -> None:
        """Every task is final: egress after success, then finish the workflow."""
        egress = [m for m in workflow.transfers if m.direction == "egress"]
        if outcome == WorkflowState.SUCCEEDED and stop_reason is None:
            for move in egress:
                if move.state == TransferState.PENDING:
                    workflow.volumes[move.volume].state = VolumeState.EGRESS
                    self._start_transfer(workflow, move)
            if any(m.state in (TransferState.PENDING, TransferState.RUNNING) for m in egress):
                return
            failed = next((m for m in egress if m.state == TransferState.FAILED), None)
            if failed is not None:
                self._finish(workflow, WorkflowState.FAILED, failed.error)
                return
            self._finish(workflow, WorkflowState.SUCCEEDED, "")
            return
        if any(m.state == TransferState.RUNNING for m in workflow.transfers):
            return  # let an ingress still running end before its volume goes
        for move in egress:
            if move.state == TransferState.PENDING:
                move.state = TransferState.SKIPPED
        error = stop_reason or self._failure_message(workflow)
        state = outcome
        if outcome == WorkflowState.SUCCEEDED and stop_reason is not None and \
                not workflow.record.cancel_requested:
            # every task succeeded, but a volume failed (e.g. over its limit)
            state = WorkflowState.FAILED
        self._finish(workflow, state, error)

    def _failure_message(self, workflow: ActiveWorkflow) -> str:
        job = dag.first_failure(workflow.tally)
        if job is None:
            return ""
        task = next(t for t in workflow.tasks.values()
                    if t.job == job and t.state == TaskState.FAILED)
        if task.kind == "service":
            return f"service {job!r} failed: {task.error}"
        return f"job {job!r} failed: {task.key}: {task.error}"

    def _finish(self, workflow: ActiveWorkflow, state: WorkflowState, error: str) -> None:
        record = workflow.record
        record.state, record.error, record.finished = state, error, self._clock()
        for volume in workflow.volumes.values():
            self._volume_limits.forget(volume)
            if volume.ephemeral:  # a failed one too (its error kept): it is gone all the same
                self._volumes.delete(volume)
                volume.state = VolumeState.DELETED
            elif volume.state != VolumeState.FAILED:
                volume.state = VolumeState.DONE
        self._store.save(record, *workflow.volumes.values(), *workflow.transfers)
        del self._active[record.id]
        workflow.plans.detach()
        self._touch()
