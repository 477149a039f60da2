"""The runner: advances every active workflow, one decision loop for the whole cluster.

The loop wakes on every event (a task started or ended, a transfer finished, a
workflow was submitted or cancelled) and at least every second. Each pass it,
for each workflow: creates its volumes and starts their ingress; asks the DAG
(:mod:`fuzz.orchestrate.dag`) which tasks to queue and which will never run;
once every task is final, runs the egress and finishes the workflow. Then it
places the queued tasks of all workflows onto nodes in one scheduler call
(:mod:`fuzz.scheduler.placement`) and hands each placed attempt to a worker
thread (:mod:`fuzz.orchestrate.taskexec`).

Every change is written to the store before the action it announces, so after a
crash :meth:`Runner.start` re-adopts the containers of attempts in flight, restarts
interrupted transfers, and never runs a task that had succeeded again.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from fuzz.errors import FuzzError
from fuzz.orchestrate import dag
from fuzz.orchestrate.host_roots import HostRoots
from fuzz.orchestrate.ingress_policy import IngressPolicy
from fuzz.orchestrate.jobids import DEFAULT_JOB_IDS, JobIdAllocator, JobIdRange
from fuzz.orchestrate.nodes import NodeDirectory, NodeUse
from fuzz.orchestrate.records import (
    ImageRecord,
    TaskRecord,
    TransferRecord,
    VolumeRecord,
    WorkflowRecord,
)
from fuzz.orchestrate.secretstore import SecretStore, missing_secret, registry_credentials
from fuzz.orchestrate.store import Store
from fuzz.orchestrate.taskexec import LaunchPlan, Outcome, TaskExecutor
from fuzz.orchestrate.transfer import TransferError, s3_credentials_from_secret
from fuzz.orchestrate.volume_limits import VolumeLimits
from fuzz.orchestrate.volumes import VolumeManager
from fuzz.orchestrate.workflow import (
    ActiveWorkflow,
    HostPathError,
    LaunchSettings,
    check_workflow_name,
    container_id,
    launch_plan,
    new_images,
    new_tasks,
    new_transfers,
    secret_references,
)
from fuzz.scheduler.offerings import QueuedJob
from fuzz.scheduler.placement import PendingTask, place
from fuzz.spec.cluster import LimitsSpec
from fuzz.spec.fuzzfile_loader import LoadedFuzzfile, parse_fuzzfile

log = logging.getLogger(__name__)

TICK = 1.0
COALESCE = 0.005  # after a wake-up, let the events of the same moment arrive first
MAX_PENDING_PER_ROUND = 64  # the head of the queue: more could not start at once anyway
REQUEUE_BACKOFF = 1.0
PROGRESS_SAVE_INTERVAL = 1.0


class WorkflowNotFoundError(FuzzError):
    """No workflow of that owner and name."""


class WorkflowExistsError(FuzzError):
    """The owner's workflow of that name is still running."""


@dataclass(frozen=True)
class RunnerSettings:
    """Where volumes and logs go, the ids owners' jobs run as, how many attempts run at once."""

    volume_root: Path
    log_dir: Path
    instance: str = "fuzz"  # this orchestrator's id, in every container id it makes
    job_ids: JobIdRange = DEFAULT_JOB_IDS  # each owner's uid:gid comes from here
    workers: int = 256
    transfer_workers: int = 4
    # the open roots of host_paths, where file:/// transfers may read and write
    host_roots: HostRoots = field(default_factory=HostRoots)
    ingress: IngressPolicy = field(default_factory=IngressPolicy)  # where http(s) ingress may go
    limits: LimitsSpec = field(default_factory=LimitsSpec)  # the spec's orchestrator.limits


@dataclass(frozen=True)
class WorkflowSnapshot:
    """A consistent copy of one run's records, for status and watch."""

    record: WorkflowRecord
    volumes: list[VolumeRecord]
    transfers: list[TransferRecord]
    images: list[ImageRecord]
    tasks: list[TaskRecord]


class Runner:
    """Runs workflows; thread-safe; the service calls it, worker threads report to it."""

    def __init__(self, store: Store, nodes: NodeDirectory, secrets: SecretStore,
                 settings: RunnerSettings, clock: Callable[[], float] = time.time) -> None:
        """Prepare (nothing runs until :meth:`start`)."""
        self._store = store
        self._nodes = nodes
        self._secrets = secrets
        self._settings = settings
        self._clock = clock
        self._volumes = VolumeManager(settings.volume_root, settings.host_roots, settings.ingress)
        self._ids = JobIdAllocator(store, settings.job_ids)
        self._volume_limits = VolumeLimits(settings.limits.volume_bytes)
        self._launch = LaunchSettings(settings.log_dir, settings.limits.job_log_bytes)
        self._executor = TaskExecutor(nodes, self)
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._version = 0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._active: dict[str, ActiveWorkflow] = {}
        self._transfers_running: set[tuple[str, str, str, int]] = set()
        self._not_before: dict[tuple[str, str], float] = {}
        self._waited: dict[str, int] = {}  # scheduling rounds a queued task has waited
        self._reschedule = True  # tasks were queued or resources freed since the last round
        self._unplaced: dict[str, PendingTask] = {}  # left waiting by the last round
        self._provisioning: dict[str, str] = {}  # what the elastic loop says of waiting tasks
        self._last_progress_save: dict[tuple[str, str, str, int], float] = {}
        self._workers = ThreadPoolExecutor(settings.workers, thread_name_prefix="task")
        self._movers = ThreadPoolExecutor(settings.transfer_workers,
                                          thread_name_prefix="transfer")
        self._thread = threading.Thread(target=self._loop, name="runner", daemon=True)

    # --- life -------------------------------------------------------------------------

    def start(self) -> None:
        """Load unfinished workflows, re-adopt their attempts, and start the loop."""
        for record in self._store.load(WorkflowRecord, order_by="created"):
            if not record.finished_state:
                self._resume(record)
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop; attempts in flight keep running on their nodes."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()
        self._workers.shutdown(wait=False, cancel_futures=True)
        self._movers.shutdown(wait=False, cancel_futures=True)

    def _resume(self, record: WorkflowRecord) -> None:
        fuzzfile = parse_fuzzfile(record.fuzzfile, record.file_name).fuzzfile
        workflow = ActiveWorkflow(
            record=record,
            fuzzfile=fuzzfile,
            ids=self._ids.of(record.owner),
            volumes={v.name: v for v in self._store.load(VolumeRecord, workflow_id=record.id)},
            transfers=self._store.load(TransferRecord, order_by="seq", workflow_id=record.id),
            images={i.uri: i for i in self._store.load(ImageRecord, workflow_id=record.id)},
            tasks={t.key: t for t in self._store.load(TaskRecord, order_by="seq",
                                                      workflow_id=record.id)},
            max_concurrency=self._settings.limits.task_array_concurrency,
        )
        for move in workflow.transfers:
            if move.state == "RUNNING":
                move.state = "PENDING"  # interrupted: it starts again from the beginning
        with self._lock:
            self._active[record.id] = workflow
            for task in workflow.tasks.values():
                if task.state in ("STARTING", "RUNNING"):
                    plan = self._plan(workflow, task)
                    workflow.plans[task.key] = plan
                    self._workers.submit(self._guard, self._executor.adopt, plan)

    # --- the service's calls ---------------------------------------------------------

    def submit(self, name: str, owner: str, loaded: LoadedFuzzfile) -> WorkflowRecord:
        """Start a new run of ``owner``'s workflow ``name`` from a validated Fuzzfile.

        Its secrets and persistent volumes are ``owner``'s, its jobs run as
        ``owner``'s ids (given now if this is their first workflow).
        """
        check_workflow_name(name)
        self._check_secrets(owner, loaded)
        with self._lock:
            runs = self._runs(owner, name)
            if runs and not runs[0].finished_state:
                raise WorkflowExistsError(
                    f"workflow {name!r} is still {runs[0].state.lower()}; "
                    "cancel it or choose another name")
            ids = self._ids.of(owner)
            run = runs[0].run + 1 if runs else 1
            # Owner names may hold dots, workflow names never do: ids stay unique, and
            # never clash with the OWNERLESS ``NAME.RUN`` ids of runs from before (schema 1).
            workflow_id = f"{owner}.{name}.{run}"
            fuzzfile = loaded.fuzzfile
            record = WorkflowRecord(
                id=workflow_id, name=name, run=run, owner=owner,
                file_name=str(loaded.path), fuzzfile=loaded.text,
                content_hash=loaded.content_hash, created=self._clock(),
            )
            volumes = {
                vname: VolumeRecord(
                    workflow_id, vname, spec.reference,
                    str(self._volumes.path_for(workflow_id, owner, vname, spec)),
                    ephemeral=spec.persistent_name is None,
                )
                for vname, spec in fuzzfile.volumes.items()
            }
            transfers = new_transfers(workflow_id, fuzzfile)
            self._check_host_paths(loaded, owner, transfers)
            workflow = ActiveWorkflow(
                record=record, fuzzfile=fuzzfile, ids=ids, volumes=volumes,
                transfers=transfers,
                images=new_images(workflow_id, fuzzfile),
                tasks={t.key: t for t in new_tasks(workflow_id, fuzzfile)},
                max_concurrency=self._settings.limits.task_array_concurrency,
            )
            self._store.save(record, *volumes.values(), *workflow.transfers,
                             *workflow.images.values(), *workflow.tasks.values())
            self._active[workflow_id] = workflow
            self._touch()
            return copy.copy(record)

    def _check_host_paths(self, loaded: LoadedFuzzfile, owner: str,
                          transfers: list[TransferRecord]) -> None:
        """HostPathError for the first transfer whose orchestrator-host path is refused."""
        for move in transfers:
            problem = self._volumes.host_path_problem(move, owner)
            if problem is not None:
                raise HostPathError(f"{loaded.path}: volumes.{move.volume}.{move.direction}"
                                    f"[{move.seq}]: {problem}")

    def _check_secrets(self, owner: str, loaded: LoadedFuzzfile) -> None:
        known = {secret.name for secret in self._secrets.list(owner)}
        for where, secret in secret_references(loaded.fuzzfile):
            if secret not in known:
                raise missing_secret(loaded.path, where, secret)

    def _runs(self, owner: str, name: str) -> list[WorkflowRecord]:
        """The runs of ``owner``'s workflow ``name`` in the store, latest first."""
        return self._store.load(WorkflowRecord, order_by="run DESC", owner=owner, name=name)

    def cancel(self, owner: str, name: str) -> WorkflowRecord:
        """Ask the latest run of ``owner``'s ``name`` to stop: queued tasks end, running
        ones are stopped."""
        with self._lock:
            workflow = self._find_active(owner, name)
            if workflow is None:
                return self.snapshot(owner, name).record
            workflow.record.cancel_requested = True
            workflow.dirty = True
            self._store.save(workflow.record)
            plans = list(workflow.plans.values())
            self._touch()
        for plan in plans:
            self._workers.submit(self._guard, self._executor.cancel, plan)
        return copy.copy(workflow.record)

    def snapshot(self, owner: str, name: str) -> WorkflowSnapshot:
        """The latest run of ``owner``'s ``name``; WorkflowNotFoundError if there is none."""
        with self._lock:
            workflow = self._find_active(owner, name)
            if workflow is not None:
                # Shallow copies suffice: the runner replaces a record's lists, never edits them.
                return WorkflowSnapshot(
                    copy.copy(workflow.record),
                    [copy.copy(v) for v in workflow.volumes.values()],
                    [copy.copy(m) for m in workflow.transfers],
                    [copy.copy(i) for i in workflow.images.values()],
                    [copy.copy(t) for t in sorted(workflow.tasks.values(), key=lambda t: t.seq)])
        runs = self._runs(owner, name)
        if not runs:
            raise WorkflowNotFoundError(f"no workflow {name!r} of {owner}")
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

    def live_attempt(self, owner: str, name: str, key: str) -> LaunchPlan | None:
        """The attempt of task ``key`` of ``owner``'s ``name`` running now, if any."""
        with self._lock:
            workflow = self._find_active(owner, name)
            if workflow is None:
                return None
            return workflow.plans.get(key)

    def log_dir(self) -> Path:
        """Where finished tasks' output is kept."""
        return self._settings.log_dir

    @property
    def limits(self) -> LimitsSpec:
        """The cluster's limits (``orchestrator.limits``)."""
        return self._settings.limits

    def used_resources(self) -> dict[str, NodeUse]:
        """What the attempts in flight hold on each node."""
        used: dict[str, NodeUse] = {}
        with self._lock:
            for workflow in self._active.values():
                for plan in workflow.plans.values():
                    for node in plan.nodes:
                        used[node] = used.get(node, NodeUse()).plus(plan.request)
        return used

    def unplaced(self) -> list[QueuedJob]:
        """The queued tasks the last scheduling round could place on no node, oldest first.

        Keys are ``WORKFLOW_ID/TASK_KEY``; the elastic loop adds nodes for them.
        """
        with self._lock:
            return [QueuedJob(key, task.request, task.nodes)
                    for key, task in sorted(self._unplaced.items(), key=lambda kv: kv[1].seq)
                    if self._queued(key) is not None]

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
                task.state, task.error, task.waiting_for = "FAILED", reason, ""
                task.finished = self._clock()
                workflow.dirty = True
                self._unplaced.pop(key, None)
                changed.append(task)
            if changed:
                self._store.save(*changed)
                self._touch()

    def _queued(self, key: str) -> tuple[ActiveWorkflow, TaskRecord] | None:
        """The task of a ``WORKFLOW_ID/TASK_KEY`` key while it is queued."""
        workflow_id, _, task_key = key.partition("/")
        workflow = self._active.get(workflow_id)
        task = workflow.tasks.get(task_key) if workflow is not None else None
        if workflow is None or task is None or task.state != "QUEUED":
            return None
        return workflow, task

    def _find_active(self, owner: str, name: str) -> ActiveWorkflow | None:
        return next((w for w in self._active.values()
                     if (w.record.owner, w.record.name) == (owner, name)), None)

    # --- the loop -------------------------------------------------------------------------

    def _touch(self) -> None:
        """Note a change: wake the loop and every watcher."""
        with self._changed:
            self._version += 1
            self._changed.notify_all()
        self._wake.set()

    def _loop(self) -> None:
        last_round = last_full = 0.0
        while not self._stopping.is_set():
            if self._wake.wait(TICK):
                time.sleep(COALESCE)
            self._wake.clear()
            try:
                with self._lock:
                    now = time.monotonic()
                    full = now - last_full >= TICK  # every workflow, now and then
                    last_full = now if full else last_full
                    for workflow in list(self._active.values()):
                        if workflow.dirty or full:
                            workflow.dirty = False
                            self._advance(workflow)
                    if self._reschedule or now - last_round >= TICK:
                        self._reschedule = False
                        last_round = now
                        self._schedule()
            except Exception:  # the loop must outlive any one bad decision
                log.exception("runner pass failed")

    def _advance(self, workflow: ActiveWorkflow) -> None:
        record = workflow.record
        if record.state == "PENDING":
            self._begin(workflow)
        for move in workflow.transfers:
            if move.direction == "ingress" and move.state == "PENDING":
                self._start_transfer(workflow, move)
        stop_reason = self._stop_reason(workflow)
        step = dag.next_step(workflow.graph, workflow.task_views(), workflow.ready_volumes(),
                             stop_reason)
        changed: list[TaskRecord] = []
        for key in step.queue:
            task = workflow.tasks[key]
            task.state = "QUEUED"
            changed.append(task)
            self._reschedule = True
        for key, reason in step.not_run.items():
            task = workflow.tasks[key]
            task.state = "CANCELED" if record.cancel_requested else "NOT_RUN"
            task.error = reason
            task.waiting_for = ""
            changed.append(task)
        if changed:
            self._store.save(*changed)
            self._touch()
        outcome = dag.workflow_outcome(workflow.graph, workflow.task_views())
        if outcome is not None:
            self._conclude(workflow, outcome, stop_reason)

    def _begin(self, workflow: ActiveWorkflow) -> None:
        record = workflow.record
        record.state = "RUNNING"
        record.started = self._clock()
        has_ingress = {m.volume for m in workflow.transfers if m.direction == "ingress"}
        for volume in workflow.volumes.values():
            try:
                self._volumes.create(volume, workflow.ids)
            except OSError as exc:
                volume.state, volume.error = "FAILED", f"cannot create {volume.path}: {exc}"
                continue
            volume.state = "INGRESS" if volume.name in has_ingress else "READY"
        self._store.save(record, *workflow.volumes.values())
        self._touch()

    def _stop_reason(self, workflow: ActiveWorkflow) -> str | None:
        if workflow.record.cancel_requested:
            return "workflow cancelled"
        failed = next((v for v in workflow.volumes.values() if v.state == "FAILED"), None)
        if failed is not None:
            return f"volume {failed.name}: {failed.error}"
        return None

    def _conclude(self, workflow: ActiveWorkflow, outcome: str, stop_reason: str | None) -> None:
        """Every task is final: egress after success, then finish the workflow."""
        egress = [m for m in workflow.transfers if m.direction == "egress"]
        if outcome == "SUCCEEDED" and stop_reason is None:
            for move in egress:
                if move.state == "PENDING":
                    workflow.volumes[move.volume].state = "EGRESS"
                    self._start_transfer(workflow, move)
            if any(m.state in ("PENDING", "RUNNING") for m in egress):
                return
            failed = next((m for m in egress if m.state == "FAILED"), None)
            if failed is not None:
                self._finish(workflow, "FAILED", failed.error)
                return
            self._finish(workflow, "SUCCEEDED", "")
            return
        if any(m.state == "RUNNING" for m in workflow.transfers):
            return  # let an ingress still running end before its volume goes
        for move in egress:
            if move.state == "PENDING":
                move.state = "SKIPPED"
        error = stop_reason or self._failure_message(workflow)
        state = "FAILED" if outcome == "NOT_RUN" else outcome
        if outcome == "SUCCEEDED" and stop_reason is not None and \
                not workflow.record.cancel_requested:
            state = "FAILED"  # every task succeeded, but a volume failed (e.g. over its limit)
        self._finish(workflow, state, error)

    def _failure_message(self, workflow: ActiveWorkflow) -> str:
        job = dag.first_failure(workflow.graph, workflow.task_views())
        if job is None:
            return ""
        task = next(t for t in workflow.tasks.values() if t.job == job and t.state == "FAILED")
        return f"job {job!r} failed: {task.key}: {task.error}"

    def _finish(self, workflow: ActiveWorkflow, state: str, error: str) -> None:
        record = workflow.record
        record.state, record.error, record.finished = state, error, self._clock()
        for volume in workflow.volumes.values():
            self._volume_limits.forget(volume)
            if volume.ephemeral:  # a failed one too: it may hold what made it fail
                self._volumes.delete(volume)
            if volume.state != "FAILED":
                volume.state = "DELETED" if volume.ephemeral else "DONE"
        self._store.save(record, *workflow.volumes.values(), *workflow.transfers)
        del self._active[record.id]
        self._touch()

    # --- scheduling -------------------------------------------------------------------------

    def _schedule(self) -> None:
        now = self._clock()
        queued: list[tuple[ActiveWorkflow, TaskRecord]] = []
        in_transfer = self._persistent_volumes_in_transfer()
        for workflow in sorted(self._active.values(), key=lambda w: w.record.created):
            for task in workflow.tasks.values():  # in seq order
                if task.state != "QUEUED":
                    continue
                if self._not_before.get((workflow.record.id, task.key), 0.0) > now:
                    continue
                if self._held_by_transfer(workflow, task, in_transfer):
                    continue
                queued.append((workflow, task))
                if len(queued) == MAX_PENDING_PER_ROUND:
                    break
            if len(queued) == MAX_PENDING_PER_ROUND:
                break
        self._unplaced = {}
        if not queued:
            return
        by_key = {f"{w.record.id}/{t.key}": (w, t) for w, t in queued}
        pending = [
            PendingTask(
                key=f"{w.record.id}/{t.key}",
                request=w.fuzzfile.jobs[t.job].resource.request(),
                nodes=_node_count(w, t),
                seq=n,
                waited_rounds=self._waited.get(f"{w.record.id}/{t.key}", 0),
            )
            for n, (w, t) in enumerate(queued)
        ]
        placement = place(pending, self._nodes.views(self.used_resources()))
        changed: list[TaskRecord] = []
        for assignment in placement.assigned:
            workflow, task = by_key[assignment.key]
            self._waited.pop(assignment.key, None)
            self._dispatch(workflow, task, assignment.nodes)
        self._unplaced = {task.key: task for task in pending if task.key in placement.waiting}
        for key, why in placement.waiting.items():
            self._waited[key] = self._waited.get(key, 0) + 1
            if key in self._provisioning:
                why = f"{why}; {self._provisioning[key]}"
            _, task = by_key[key]
            if task.waiting_for != why:
                task.waiting_for = why
                changed.append(task)
        if changed:
            self._store.save(*changed)
            self._touch()

    def _persistent_volumes_in_transfer(self) -> dict[str, str]:
        """The paths of persistent volumes a transfer is running on, and its workflow's id."""
        return {workflow.volumes[move.volume].path: workflow.record.id
                for workflow in self._active.values() for move in workflow.transfers
                if move.state == "RUNNING" and not workflow.volumes[move.volume].ephemeral}

    def _held_by_transfer(self, workflow: ActiveWorkflow, task: TaskRecord,
                          in_transfer: dict[str, str]) -> bool:
        """Whether ``task`` must wait: it mounts a persistent volume that another workflow's
        transfer is copying (noted in its ``waiting_for``)."""
        for path in _mounted_paths(workflow, task):
            other = in_transfer.get(path)
            if other is not None and other != workflow.record.id:
                why = f"waiting for a transfer of workflow {other} to this persistent volume"
                if task.waiting_for != why:
                    task.waiting_for = why
                    self._store.save(task)
                    self._touch()
                return True
        return False

    def _dispatch(self, workflow: ActiveWorkflow, task: TaskRecord, nodes: Sequence[str]) -> None:
        task.state = "STARTING"
        task.attempt += 1
        task.nodes = list(nodes)
        task.leases = []
        task.containers = [container_id(self._settings.instance, workflow.record.id, task, r)
                           for r in range(len(nodes))]
        task.waiting_for = ""
        self._store.save(task)
        plan = self._plan(workflow, task)
        workflow.plans[task.key] = plan
        self._workers.submit(self._guard, self._executor.launch, plan)
        self._touch()

    def _plan(self, workflow: ActiveWorkflow, task: TaskRecord) -> LaunchPlan:
        secret = workflow.fuzzfile.jobs[task.job].image.secret_name
        credentials = None
        if secret:
            credentials = registry_credentials(self._secrets.open(workflow.record.owner, secret))
        return launch_plan(workflow, task, self._launch, credentials)

    def _guard(self, action: Callable[[LaunchPlan], None], plan: LaunchPlan) -> None:
        """Run an executor action; an unexpected error fails the task instead of vanishing."""
        try:
            action(plan)
        except Exception as exc:
            log.exception("task %s of %s", plan.key, plan.workflow_id)
            self.finished(plan.workflow_id, plan.key,
                          Outcome("FAILED", 0, f"internal error: {exc}"))

    # --- transfers ----------------------------------------------------------------------------

    def _start_transfer(self, workflow: ActiveWorkflow, move: TransferRecord) -> None:
        ident = (move.workflow_id, move.volume, move.direction, move.seq)
        if ident in self._transfers_running:
            return
        waiting = self._mounted_elsewhere(workflow, workflow.volumes[move.volume])
        if waiting != move.waiting_for:
            move.waiting_for = waiting
            self._store.save(move)
            self._touch()
        if waiting:
            return
        self._transfers_running.add(ident)
        move.state = "RUNNING"
        self._store.save(move, workflow.volumes[move.volume])
        self._touch()
        self._movers.submit(self._transfer, workflow, move)

    def _mounted_elsewhere(self, workflow: ActiveWorkflow, volume: VolumeRecord) -> str:
        """Why no transfer may touch ``volume`` now: it is persistent and a job of another
        workflow mounts it, and could change it under the transfer ('' when none does)."""
        if volume.ephemeral:
            return ""
        for other in self._active.values():
            if other is workflow:
                continue
            for task in other.tasks.values():
                if task.state in ("STARTING", "RUNNING") and \
                        volume.path in _mounted_paths(other, task):
                    return (f"waiting until job {task.key} of workflow {other.record.id} no "
                            "longer mounts this persistent volume")
        return ""

    def _transfer(self, workflow: ActiveWorkflow, move: TransferRecord) -> None:
        ident = (move.workflow_id, move.volume, move.direction, move.seq)
        volume = workflow.volumes[move.volume]

        def progress(done: int, total: int | None) -> None:
            with self._lock:
                move.bytes_done, move.bytes_total = done, total or 0
                now = self._clock()
                if now - self._last_progress_save.get(ident, 0.0) >= PROGRESS_SAVE_INTERVAL:
                    self._last_progress_save[ident] = now
                    self._store.save(move)
                    self._touch()

        try:
            credentials = None
            if move.secret:
                credentials = s3_credentials_from_secret(
                    self._secrets.open(workflow.record.owner, move.secret))
            budget = (self._volume_limits.ingress_budget(volume)
                      if move.direction == "ingress" else None)
            result = self._volumes.move(move, volume, workflow.record.owner, credentials,
                                        progress, workflow.ids, budget)
        except (TransferError, FuzzError, OSError) as exc:
            with self._lock:
                move.state, move.error = "FAILED", str(exc)
                volume.state, volume.error = "FAILED", str(exc)
                self._after_transfer(ident, move, volume)
            return
        with self._lock:
            move.state, move.bytes_done, move.bytes_total = "DONE", result.size, result.size
            move.sha256 = result.sha256
            siblings = [m for m in workflow.transfers
                        if m.volume == move.volume and m.direction == move.direction]
            if all(m.state == "DONE" for m in siblings):
                volume.state = "READY" if move.direction == "ingress" else "DONE"
            self._after_transfer(ident, move, volume)

    def _after_transfer(self, ident: tuple[str, str, str, int], move: TransferRecord,
                        volume: VolumeRecord) -> None:
        workflow = self._active.get(move.workflow_id)
        if workflow is not None:
            workflow.dirty = True
        self._transfers_running.discard(ident)
        self._last_progress_save.pop(ident, None)
        self._store.save(move, volume)
        self._touch()

    # --- what attempts report (TaskEvents) ------------------------------------------------------

    def _task(self, workflow_id: str, key: str) -> tuple[ActiveWorkflow, TaskRecord] | None:
        """The task an event is about; its workflow is marked for the next pass."""
        workflow = self._active.get(workflow_id)
        if workflow is None or key not in workflow.tasks:
            return None
        workflow.dirty = True
        return workflow, workflow.tasks[key]

    def leased(self, workflow_id: str, key: str, leases: Sequence[str]) -> None:
        """Record the leases of an attempt (so a restart can give them back)."""
        with self._lock:
            found = self._task(workflow_id, key)
            if found is not None:
                self._hold(*found, leases)

    def _hold(self, workflow: ActiveWorkflow, task: TaskRecord, leases: Sequence[str]) -> None:
        """Save ``task`` holding ``leases``, and keep its attempt's plan in step."""
        task.leases = list(leases)
        self._store.save(task)
        plan = workflow.plans.get(task.key)
        if plan is not None:
            workflow.plans[task.key] = launch_plan(workflow, task, self._launch, plan.credentials)

    def _image(self, workflow_id: str, uri: str) -> ImageRecord | None:
        workflow = self._active.get(workflow_id)
        return workflow.images.get(uri) if workflow is not None else None

    def pulling(self, workflow_id: str, image: str) -> None:
        """An image pull began on some node."""
        with self._lock:
            record = self._image(workflow_id, image)
            if record is not None and record.state == "PENDING":
                record.state = "PULLING"
                self._store.save(record)
                self._touch()

    def pulled(self, workflow_id: str, image: str, digest: str) -> None:
        """An image is on a node."""
        with self._lock:
            record = self._image(workflow_id, image)
            if record is not None and (record.state != "READY" or record.digest != digest):
                record.state, record.digest, record.error = "READY", digest, ""
                self._store.save(record)
                self._touch()

    def image_failed(self, workflow_id: str, image: str, error: str) -> None:
        """An image could not be pulled."""
        with self._lock:
            record = self._image(workflow_id, image)
            if record is not None:
                record.state, record.error = "FAILED", error
                self._store.save(record)
                self._touch()

    def running(self, workflow_id: str, key: str, leases: Sequence[str]) -> None:
        """Every rank of an attempt runs, under ``leases``."""
        with self._lock:
            found = self._task(workflow_id, key)
            if found is None:
                return
            workflow, task = found
            task.state = "RUNNING"
            task.started = task.started or self._clock()
            self._hold(workflow, task, leases)
            self._touch()

    def _end_attempt(self, workflow_id: str, key: str) -> TaskRecord | None:
        """Under the lock: the task whose attempt ended, its plan dropped (None if unknown)."""
        found = self._task(workflow_id, key)
        if found is None:
            return None
        found[0].plans.pop(key, None)
        self._reschedule = True
        return found[1]

    def requeue(self, workflow_id: str, key: str, reason: str) -> None:
        """An attempt could not start for now: queue the task again, briefly held back."""
        with self._lock:
            task = self._end_attempt(workflow_id, key)
            if task is None:
                return
            task.state, task.attempt, task.waiting_for = "QUEUED", task.attempt - 1, reason
            task.nodes, task.leases, task.containers = [], [], []
            self._not_before[(workflow_id, key)] = self._clock() + REQUEUE_BACKOFF
            self._store.save(task)
            self._touch()

    def finished(self, workflow_id: str, key: str, outcome: Outcome) -> None:
        """An attempt ended: the task succeeds, fails, is retried or is cancelled.

        The volumes it mounted are measured first (outside the lock: it walks them);
        one over the volume limit fails, and so stops, the workflow.
        """
        overruns = self._overruns(workflow_id, key)
        with self._lock:
            task = self._end_attempt(workflow_id, key)
            if task is None:
                return
            workflow = self._active[workflow_id]
            for volume, problem in overruns:
                if volume.state != "FAILED":
                    volume.state, volume.error = "FAILED", problem
                    self._store.save(volume)
            task.exit_code, task.error, task.finished = outcome.exit_code, outcome.error, \
                self._clock()
            attempts = workflow.fuzzfile.jobs[task.job].policy.retry.attempts
            if outcome.state == "FAILED" and task.attempt < attempts and \
                    not workflow.record.cancel_requested:
                task.state = "QUEUED"
                task.error = f"attempt {task.attempt} failed: {outcome.error}"
            elif workflow.record.cancel_requested and outcome.state != "SUCCEEDED":
                task.state = "CANCELED"
            else:
                task.state = outcome.state
            self._store.save(task)
            self._touch()

    def _overruns(self, workflow_id: str, key: str) -> list[tuple[VolumeRecord, str]]:
        """The volumes task ``key`` mounts that hold more than the limit, and by how much."""
        with self._lock:
            workflow = self._active.get(workflow_id)
            task = workflow.tasks.get(key) if workflow is not None else None
            if workflow is None or task is None:
                return []
            mounted = [workflow.volumes[name]
                       for name in workflow.fuzzfile.jobs[task.job].mounts]
        found = ((volume, self._volume_limits.overrun(volume)) for volume in mounted)
        return [(volume, problem) for volume, problem in found if problem is not None]


def _node_count(workflow: ActiveWorkflow, task: TaskRecord) -> int:
    multinode = workflow.fuzzfile.jobs[task.job].multinode
    return multinode.nodes if multinode is not None else 1


def _mounted_paths(workflow: ActiveWorkflow, task: TaskRecord) -> set[str]:
    """The paths of the volumes ``task``'s job mounts."""
    return {workflow.volumes[name].path for name in workflow.fuzzfile.jobs[task.job].mounts}
