"""The runner's shared state: its settings, its parts, the active workflows, and look-ups.

Each step of the runner is a class over :class:`RunnerBase` in a module of its own
(:mod:`~fuzz.orchestrate.workflows.transfers`, :mod:`~fuzz.orchestrate.workflows.reports`,
:mod:`~fuzz.orchestrate.workflows.scheduling`, :mod:`~fuzz.orchestrate.workflows.lifecycle`);
:class:`~fuzz.orchestrate.workflows.loop.Runner` joins them and runs the loop.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from fuzz.errors import FuzzError
from fuzz.orchestrate.cluster.nodes import NodeDirectory
from fuzz.orchestrate.diskspace import DiskFloor
from fuzz.orchestrate.metrics import FINAL_TASK_STATES, OrchestratorMetrics
from fuzz.orchestrate.records import (
    ImageRecord,
    TaskRecord,
    TransferRecord,
    VolumeRecord,
    WorkflowRecord,
)
from fuzz.orchestrate.secrets import SecretStore, environment_value, registry_credentials
from fuzz.orchestrate.states import TaskState
from fuzz.orchestrate.store import Store
from fuzz.orchestrate.transfer.cache import IngressCache
from fuzz.orchestrate.transfer.host_roots import HostRoots
from fuzz.orchestrate.transfer.ingress_policy import IngressPolicy
from fuzz.orchestrate.transfer.volume_limits import VolumeLimits
from fuzz.orchestrate.workflows.holds import NodeHolds
from fuzz.orchestrate.workflows.jobids import DEFAULT_JOB_IDS, JobIdAllocator, JobIdRange
from fuzz.orchestrate.workflows.tallying import TallyingCommit
from fuzz.orchestrate.workflows.tasks import LaunchPlan, TaskExecutor
from fuzz.orchestrate.workflows.volumes import VolumeManager
from fuzz.orchestrate.workflows.workflow import ActiveWorkflow, LaunchSettings, launch_plan
from fuzz.scheduler.placement import PendingTask, Rooms
from fuzz.spec.cluster import LimitsSpec
from fuzz.spec.endpoint_urls import GatewayAddress
from fuzz.spec.fuzzfile_values import secret_name, secret_scope


class WorkflowNotFoundError(FuzzError):
    """No workflow of that owner and name."""


class WorkflowExistsError(FuzzError):
    """The owner's workflow of that name is still running."""


ROUND_SIZE = 64  # the queued tasks a round looks at, at first and once one had to wait
ROUND_SIZE_MAX = 256  # doubled up to this while a round places every task it looks at

@dataclass(frozen=True)
class RunnerSettings:
    """Where volumes and logs go, the ids owners' jobs run as, how many attempts act at once."""

    volume_root: Path
    log_dir: Path
    instance: str = "fuzz"  # this orchestrator's id, in every container id it makes
    job_ids: JobIdRange = DEFAULT_JOB_IDS  # each owner's uid:gid comes from here
    workers: int = 256  # attempts starting or ending at once (a one-node job's wait holds none)
    transfer_workers: int = 4
    # the open roots of host_paths, where file:/// transfers may read and write
    host_roots: HostRoots = field(default_factory=HostRoots)
    ingress: IngressPolicy = field(default_factory=IngressPolicy)  # where http(s) ingress may go
    limits: LimitsSpec = field(default_factory=LimitsSpec)  # the spec's orchestrator.limits
    disk_floor: DiskFloor | None = None  # below it no new volume writes start; None: no floor
    log_headroom: int = 0  # bytes a log copy leaves free on the log dir's disk (the database's)
    cache: IngressCache | None = None  # the ingress cache; None: every ingress fetches
    cache_links: bool = True  # cached files go into volumes as hard links (else copies)
    # where the endpoint gateway is reached: services' FB_ENDPOINT_URL_* variables
    endpoints: GatewayAddress = field(default_factory=GatewayAddress)
    # the Prometheus series the runner counts into (task starts and ends, queue wait...)
    metrics: OrchestratorMetrics = field(default_factory=OrchestratorMetrics)


@dataclass(frozen=True)
class WorkflowSnapshot:
    """A consistent copy of one run's records, for status and watch."""

    record: WorkflowRecord
    volumes: list[VolumeRecord]
    transfers: list[TransferRecord]
    images: list[ImageRecord]
    tasks: list[TaskRecord]


class RunnerBase:
    """What every step of the runner shares: its parts, its lock, and the active workflows.

    Thread-safe: every step takes ``_lock`` (re-entrant) around what it reads or changes.
    """

    _executor: TaskExecutor  # made by the whole runner, which receives the attempts' reports

    def __init__(self, store: Store, nodes: NodeDirectory, secrets: SecretStore,
                 settings: RunnerSettings, clock: Callable[[], float] = time.time) -> None:
        """Prepare the shared state of every step (nothing runs yet)."""
        self._active: dict[str, ActiveWorkflow] = {}
        # attempts' reports are written in groups; the tasks written are counted in the DAG
        self._store = TallyingCommit(store, self._active)
        self._nodes = nodes
        self._secrets = secrets
        self._settings = settings
        self._clock = clock
        self._volumes = VolumeManager(settings.volume_root, settings.host_roots, settings.ingress,
                                      settings.cache, settings.cache_links)
        self._ids = JobIdAllocator(store, settings.job_ids)
        self._volume_limits = VolumeLimits(settings.limits.volume_bytes)
        self._launch = LaunchSettings(settings.log_dir, settings.limits.job_log_bytes,
                                      settings.endpoints)
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._version = 0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._transfers_running: set[tuple[str, str, str, int]] = set()
        self._not_before: dict[tuple[str, str], float] = {}
        self._adopting: set[tuple[str, str]] = set()  # (workflow, task) re-adopted, unheard
        self._waited: dict[str, int] = {}  # scheduling rounds a queued task has waited
        self._quota_stops: dict[str, str] = {}  # WORKFLOW_ID/KEY stopped over a volume limit
        self._reschedule = True  # tasks were queued or resources freed since the last round
        self._unplaced: dict[str, PendingTask] = {}  # left waiting by the last round
        self._holds = NodeHolds()  # what the attempts in flight hold, by node
        self._rooms = Rooms()  # what the nodes have free, kept from round to round
        self._round_size = ROUND_SIZE  # how many queued tasks the next round looks at
        self._provisioning: dict[str, str] = {}  # what the elastic loop says of waiting tasks
        self._evicted: dict[tuple[str, str], str] = {}  # attempts a drain stopped, and why
        self._last_progress_save: dict[tuple[str, str, str, int], float] = {}
        self._workers = ThreadPoolExecutor(settings.workers, thread_name_prefix="task")
        # attempts' actions handed to the workers and not done (starts, and the ends of
        # attempts that waited without a worker): a round starts no more than the workers
        # can take, so the ends never queue behind a backlog of starts
        self._acting = 0
        self._acting_lock = threading.Lock()
        self._movers = ThreadPoolExecutor(settings.transfer_workers,
                                          thread_name_prefix="transfer")

    def log_dir(self) -> Path:
        """Where finished tasks' output is kept."""
        return self._settings.log_dir

    @property
    def limits(self) -> LimitsSpec:
        """The cluster's limits (``orchestrator.limits``)."""
        return self._settings.limits

    @property
    def metrics(self) -> OrchestratorMetrics:
        """The Prometheus series the runner (and the elastic loop) count into."""
        return self._settings.metrics

    def tally(self) -> tuple[dict[str, int], int]:
        """The tasks of active workflows by state, and the leases their attempts hold."""
        by_state: dict[str, int] = {}
        leases = 0
        with self._lock:
            for workflow in self._active.values():
                for task in workflow.tasks.values():
                    by_state[task.state] = by_state.get(task.state, 0) + 1
                    leases += len(task.leases)
        return by_state, leases

    def _count_state(self, workflow_id: str, task: TaskRecord) -> None:
        """Count ``task``'s new state in the metrics: queued again, or final."""
        if task.state == TaskState.QUEUED:
            self._settings.metrics.queued(workflow_id, task.key)
        elif task.state in FINAL_TASK_STATES:
            self._settings.metrics.ended(workflow_id, task.key, task.state)

    def _touch(self) -> None:
        """Note a change: wake the loop and every watcher."""
        with self._changed:
            self._version += 1
            self._changed.notify_all()
        self._wake.set()

    def _runs(self, owner: str, name: str) -> list[WorkflowRecord]:
        """The runs of ``owner``'s workflow ``name`` in the store, latest first."""
        return self._store.load(WorkflowRecord, order_by="run DESC", owner=owner, name=name)

    def _find_active(self, owner: str, name: str, run_id: str = "") -> ActiveWorkflow | None:
        """The active run of ``owner``'s ``name`` (only if its id is ``run_id``, when given)."""
        return next((w for w in self._active.values()
                     if (w.record.owner, w.record.name) == (owner, name)
                     and run_id in ("", w.record.id)), None)

    def run_record(self, run_id: str) -> WorkflowRecord | None:
        """The run whose id is ``run_id`` (any owner's, unchecked), None when there is none."""
        with self._lock:
            active = self._active.get(run_id)
            if active is not None:
                return copy.copy(active.record)
        records = self._store.load(WorkflowRecord, id=run_id)
        return records[0] if records else None

    def _task(self, workflow_id: str, key: str) -> tuple[ActiveWorkflow, TaskRecord] | None:
        """The task an event is about; its workflow is marked for the next pass."""
        workflow = self._active.get(workflow_id)
        if workflow is None or key not in workflow.tasks:
            return None
        workflow.dirty = True
        return workflow, workflow.tasks[key]

    def _queued(self, key: str) -> tuple[ActiveWorkflow, TaskRecord] | None:
        """The task of a ``WORKFLOW_ID/TASK_KEY`` key while it is queued."""
        workflow_id, _, task_key = key.partition("/")
        workflow = self._active.get(workflow_id)
        task = workflow.tasks.get(task_key) if workflow is not None else None
        if workflow is None or task is None or task.state != TaskState.QUEUED:
            return None
        return workflow, task

    def _floor_problem(self, what: str) -> str | None:
        """Why ``what`` may not write to a volume now (the disk floor); None while it may."""
        floor = self._settings.disk_floor
        return floor.problem(what) if floor is not None else None

    def _plan(self, workflow: ActiveWorkflow, task: TaskRecord) -> LaunchPlan:
        """``task``'s launch plan, with the secrets of its image pull and its ``env``
        opened (only the runner opens secrets; they travel in the plan, never stored)."""
        job = workflow.fuzzfile.container(task.job)
        image = job.image
        credentials = None
        if image.secret_name:
            credentials = registry_credentials(self._secrets.open(
                workflow.secret_owner(image.secret_scope), image.secret_name))
        secret_env = {variable: self._env_secret(workflow, reference)
                      for variable, reference in job.env_secrets().items()}
        return launch_plan(workflow, task, self._launch, credentials, secret_env)

    def _env_secret(self, workflow: ActiveWorkflow, reference: str) -> str:
        """The value of the secret ``reference`` names, as an environment variable's."""
        name = secret_name(reference)
        return environment_value(self._secrets.open(
            workflow.secret_owner(secret_scope(reference)), name), name)


def mounted_paths(workflow: ActiveWorkflow, task: TaskRecord) -> set[str]:
    """The paths of the volumes ``task``'s job mounts."""
    return {workflow.volumes[name].path for name in workflow.fuzzfile.container(task.job).mounts}
