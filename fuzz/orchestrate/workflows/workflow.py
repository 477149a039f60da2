"""A workflow run in memory: its records, built from a Fuzzfile, and what its tasks need.

Building the records of a new run (one task per service, per job, per task-array
index; one volume, transfer and image record each) and the launch plan of a task attempt
are pure functions of the Fuzzfile and the settings, kept apart from the runner
that sequences them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fuzz.errors import FuzzError
from fuzz.orchestrate.records import (
    ImageRecord,
    TaskRecord,
    TransferRecord,
    VolumeRecord,
    WorkflowRecord,
)
from fuzz.orchestrate.secrets import account_owner
from fuzz.orchestrate.states import TaskState, VolumeState
from fuzz.orchestrate.workflows.dag import JobNode, TaskTally
from fuzz.orchestrate.workflows.holds import AttemptPlans
from fuzz.orchestrate.workflows.jobids import JobIds
from fuzz.orchestrate.workflows.multinode import multinode_environment
from fuzz.orchestrate.workflows.tasks import LaunchPlan
from fuzz.resources import ResourceRequest
from fuzz.spec import fuzzfile_values as values
from fuzz.spec.cluster import FUZZBALL_MAX_CONCURRENCY
from fuzz.spec.endpoint_urls import GatewayAddress, endpoint_variables
from fuzz.spec.fuzzfile import Fuzzfile, JobSpec, PolicySpec, ServiceSpec
from fuzz.spec.fuzzfile_values import volume_parts
from fuzz.spec.labels import TASK_SANDBOX_ANNOTATION
from fuzz.spec.workflowref import WORKFLOW_NAME_PATTERN

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


class HostPathError(FuzzError):
    """A Fuzzfile's transfer names a path on the orchestrator host that workflows may not use."""


class WorkflowNameError(FuzzError):
    """A workflow name that cannot be used."""


def check_workflow_name(name: str) -> str:
    """``name`` if it is a valid workflow name, else WorkflowNameError."""
    if not WORKFLOW_NAME_PATTERN.fullmatch(name):
        raise WorkflowNameError(
            f"workflow name {name!r}: use letters, digits, '_' or '-' (at most 64), "
            "starting with a letter or digit"
        )
    return name


@dataclass
class ActiveWorkflow:
    """A run the runner is advancing: its records and its attempts in flight."""

    record: WorkflowRecord
    fuzzfile: Fuzzfile
    ids: JobIds  # the owner's: every job runs as their uid, their volumes belong to them
    volumes: dict[str, VolumeRecord]
    transfers: list[TransferRecord]
    images: dict[str, ImageRecord]
    tasks: dict[str, TaskRecord]  # in ``seq`` order
    plans: AttemptPlans = field(default_factory=AttemptPlans)  # its attempts in flight
    dirty: bool = True  # something changed since the runner last advanced it
    graph: tuple[JobNode, ...] = ()
    max_concurrency: int = FUZZBALL_MAX_CONCURRENCY  # for task arrays that name none
    account_ids: JobIds | None = None  # the account's it runs in: its persistent volumes'
    stopping: dict[str, str] = field(default_factory=dict)  # tasks fuzz asked to stop, why
    # Its tasks counted by job and state, and its queue, kept as they are written
    # (see tallying.py).
    tally: TaskTally = field(init=False, repr=False)
    # Each job's request for one node and its node count, made once (a round asks for
    # them for every task it looks at).
    _placing: dict[str, tuple[ResourceRequest, int]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        """Derive the job graph from the Fuzzfile, and its tasks' tally."""
        self.graph = job_graph(self.fuzzfile, self.max_concurrency)
        self.tally = TaskTally(self.graph, self.tasks.values())

    def placing(self, job: str) -> tuple[ResourceRequest, int]:
        """What each task of ``job`` asks for on one node, and on how many nodes."""
        found = self._placing.get(job)
        if found is None:
            container = self.fuzzfile.container(job)
            multinode = container.multinode
            found = self._placing[job] = (container.resource.request(),
                                          multinode.nodes if multinode is not None else 1)
        return found

    def queued(self) -> Iterator[TaskRecord]:
        """The queued tasks in seq order: a round looks for them at the head of the queue,
        not among the thousands of a task array that are running or have ended."""
        tasks = self.tasks
        return (tasks[key] for key in self.tally.queued())

    @property
    def job_ids(self) -> JobIds:
        """What its jobs run as: the owner's uid, and the account's gid when it runs in an
        account (so they enter the account's volumes, 2770, and no other member's own)."""
        gid = self.ids.gid if self.account_ids is None else self.account_ids.gid
        return JobIds(self.ids.uid, gid)

    def volume_ids(self, volume: VolumeRecord) -> JobIds:
        """Who ``volume`` belongs to: the account for its persistent volumes, else the owner."""
        if self.account_ids is not None and is_account_volume(volume):
            return self.account_ids
        return self.ids

    def secret_owner(self, scope: str | None) -> str:
        """Whose secret a reference of ``scope`` names: the account's it runs in
        (``account``), else its owner's."""
        if scope == "account":
            return account_owner(self.record.account)
        return self.record.owner

    def ready_volumes(self) -> frozenset[str]:
        """Names of the volumes whose ingress is done."""
        return frozenset(name for name, v in self.volumes.items() if v.state == VolumeState.READY)


def job_graph(fuzzfile: Fuzzfile, max_concurrency: int = FUZZBALL_MAX_CONCURRENCY
              ) -> tuple[JobNode, ...]:
    """The Fuzzfile's services, then its jobs in a topological order, as graph nodes.

    A task array runs at most ``max_concurrency`` tasks at once unless it names fewer.
    A dependency on a service waits for it to be READY (``requires`` and ``depends-on``
    RUNNING alike: a service never succeeds while it is needed), or with FINISHED for
    it to have ended.
    """
    nodes = []
    for name, item in fuzzfile.runnables().items():
        array = item.task_array if isinstance(item, JobSpec) else None
        dependencies = [(other, "RUNNING" if other in fuzzfile.services
                         and when == "SUCCEEDED" else when)
                        for other, when in item.dependencies()]
        nodes.append(JobNode(
            name=name,
            requires=tuple(other for other, when in dependencies if when == "SUCCEEDED"),
            after_running=tuple(other for other, when in dependencies if when == "RUNNING"),
            after_finished=tuple(other for other, when in dependencies if when == "FINISHED"),
            volumes=tuple(item.mounts),
            concurrency=min(array.concurrency or max_concurrency, max_concurrency)
            if array is not None else None,
            service=isinstance(item, ServiceSpec),
            persist=isinstance(item, ServiceSpec) and item.persist,
        ))
    return tuple(nodes)


def new_tasks(workflow_id: str, fuzzfile: Fuzzfile) -> list[TaskRecord]:
    """One task per service (its key the service's name), then one per job, or per index
    of a job's task array, numbered in graph order."""
    tasks: list[TaskRecord] = [TaskRecord(workflow_id, name, name, -1, seq, kind="service")
                               for seq, name in enumerate(fuzzfile.services)]
    for name in fuzzfile.job_order():
        array = fuzzfile.jobs[name].task_array
        if array is None:
            tasks.append(TaskRecord(workflow_id, name, name, -1, len(tasks)))
            continue
        for index in range(array.start, array.end + 1):
            tasks.append(TaskRecord(workflow_id, f"{name}[{index}]", name, index, len(tasks)))
    return tasks


def new_transfers(workflow_id: str, fuzzfile: Fuzzfile) -> list[TransferRecord]:
    """Every ingress and egress of every volume, in file order."""
    records = []
    for volume_name, volume in fuzzfile.volumes.items():
        for direction, moves in (("ingress", volume.ingress), ("egress", volume.egress)):
            for seq, move in enumerate(moves):
                end = move.source if move.source.secret else move.destination
                records.append(TransferRecord(
                    workflow_id, volume_name, direction, seq, move.source.uri,
                    move.destination.uri, secret=end.secret_name or "",
                    secret_scope=end.secret_scope or "",
                ))
    return records


def transfer_policy(fuzzfile: Fuzzfile, move: TransferRecord) -> PolicySpec | None:
    """The ``policy`` the Fuzzfile gives transfer ``move`` (None: it gives none)."""
    volume = fuzzfile.volumes[move.volume]
    moves = volume.ingress if move.direction == "ingress" else volume.egress
    return moves[move.seq].policy


def secret_references(fuzzfile: Fuzzfile) -> list[tuple[str, str, str]]:
    """(where, scope, secret name) for every secret the Fuzzfile uses: image pulls, job
    and service environments (``jobs.JOB.env.VARIABLE``: defaults are merged into the
    jobs), then transfers. The scope is ``user`` or ``account``."""
    items = [(f"{'services' if name in fuzzfile.services else 'jobs'}.{name}", item)
             for name, item in fuzzfile.runnables().items()]
    wanted = [(f"{where}.image.secret", item.image.secret_scope or "",
               item.image.secret_name or "") for where, item in items]
    wanted += [(f"{where}.env.{variable}", values.secret_scope(reference),
                values.secret_name(reference))
               for where, item in items
               for variable, reference in item.env_secrets().items()]
    wanted += [(f"volumes.{m.volume}.{m.direction}[{m.seq}]", m.secret_scope, m.secret)
               for m in new_transfers("check", fuzzfile)]
    return [(where, scope, name) for where, scope, name in wanted if name]


def account_references(fuzzfile: Fuzzfile) -> list[tuple[str, str]]:
    """(where, reference) of every account-scoped secret and volume of the Fuzzfile."""
    found = [(f"volumes.{name}.reference", volume.reference)
             for name, volume in fuzzfile.volumes.items() if volume.scope == "account"]
    found += [(where, f"secret://account/{name}")
              for where, scope, name in secret_references(fuzzfile) if scope == "account"]
    return found


def is_account_volume(volume: VolumeRecord) -> bool:
    """Whether ``volume`` is an account's persistent volume (``volume://account/persistent``)."""
    return not volume.ephemeral and volume_parts(volume.reference)[0] == "account"


def new_images(workflow_id: str, fuzzfile: Fuzzfile) -> dict[str, ImageRecord]:
    """One record per distinct image the services and jobs use."""
    uris = dict.fromkeys(item.image.uri for item in fuzzfile.runnables().values())
    return {uri: ImageRecord(workflow_id, uri) for uri in uris}


def container_id(instance: str, workflow_id: str, task: TaskRecord, rank: int) -> str:
    """The agent-side id of ``task``'s container on its ``rank``-th node, this attempt.

    ``instance`` tells orchestrators apart: runc keeps container ids machine-wide,
    and two clusters may run workflows of the same name on one machine.
    """
    return f"{container_prefix(instance)}{workflow_id}.{_UNSAFE.sub('-', task.key)}." \
        f"{task.attempt}.{rank}"


def container_prefix(instance: str) -> str:
    """What the id of every container orchestrator ``instance`` makes begins with."""
    return f"{instance}-"


@dataclass(frozen=True)
class LaunchSettings:
    """What every launch shares: where logs are kept and how much of each is kept
    (``orchestrator.limits.job_log_bytes``)."""

    log_dir: Path
    log_limit_bytes: int = 0
    endpoints: GatewayAddress = field(default_factory=GatewayAddress)  # services' URLs


def log_paths(log_dir: Path, workflow_id: str, key: str) -> tuple[Path, Path]:
    """Where a task's stdout and stderr are kept once it has ended."""
    base = log_dir / workflow_id
    return base / f"{key}.stdout", base / f"{key}.stderr"


def task_environment(workflow: ActiveWorkflow, task: TaskRecord, rank: int,
                     secret_env: Mapping[str, str],
                     endpoints: GatewayAddress) -> tuple[str, ...]:
    """The job's (or service's) env, its secrets' values (``secret_env``: variable →
    value) in place of their references, plus what fuzz tells every task: Fuzzball's
    ``FB_WORKFLOW_ID`` (the run's id), ``FB_JOB_NAME`` (the job's or service's name),
    ``FB_ACCOUNT_ID`` (the account it runs in, else its owner), fuzz's own ``FUZZ_*``,
    the task index and the ranks; a service also ``FB_ENDPOINT_PATH_<EP>`` and
    ``FB_ENDPOINT_URL_<EP>`` of its endpoints on the gateway at ``endpoints``."""
    job = workflow.fuzzfile.container(task.job)
    env = dict(job.environment())
    env.update(secret_env)
    record = workflow.record
    env.update(FUZZ_WORKFLOW=record.name, FUZZ_JOB=task.job, FB_WORKFLOW_ID=record.id,
               FB_JOB_NAME=task.job, FB_ACCOUNT_ID=record.account or record.owner)
    if task.index >= 0:
        env.update(FB_TASK_ID=str(task.index), FUZZ_TASK_ID=str(task.index))
    if isinstance(job, ServiceSpec):
        env.update(endpoint_variables(endpoints, record.owner, record.name, task.job, [
            (endpoint.name, endpoint.type) for endpoint in job.network.endpoints]))
    if job.multinode is not None:
        env.update(FUZZ_RANK=str(rank), FUZZ_NODE_COUNT=str(len(task.nodes)),
                   FUZZ_NODES=",".join(task.nodes),
                   FUZZ_MPI_IMPLEMENTATION=job.multinode.implementation)
        # the nodes' names until their leases give the ranks addresses (tasks.py); one
        # node: its ranks are all local
        hosts = task.nodes if len(task.nodes) > 1 else ["localhost"]
        slots = job.multinode.procs_per_node or job.resource.request().cores
        env.update(multinode_environment(hosts, slots, rank))
    return tuple(f"{key}={value}" for key, value in env.items())


def launch_plan(
    workflow: ActiveWorkflow, task: TaskRecord, settings: LaunchSettings,
    credentials: tuple[str, str] | None, secret_env: Mapping[str, str],
) -> LaunchPlan:
    """Everything the executor needs to run (or adopt) ``task``'s current attempt;
    ``credentials`` and ``secret_env`` are opened secrets (see
    :meth:`~fuzz.orchestrate.workflows.base.RunnerBase._plan`)."""
    job = workflow.fuzzfile.container(task.job)
    policy = job.policy
    timeout = policy.timeout.execute if policy is not None and policy.timeout is not None \
        else None
    service = job if isinstance(job, ServiceSpec) else None
    hosts, peers = service_routes(workflow, task)
    return LaunchPlan(
        workflow_id=workflow.record.id,
        key=task.key,
        nodes=tuple(task.nodes),
        containers=tuple(task.containers),
        image=job.image.uri,
        credentials=credentials,
        request=job.resource.request(),
        argv=tuple(job.argv()),
        expand_args=job.multinode is not None and job.script is None,
        env=tuple(task_environment(workflow, task, rank, secret_env, settings.endpoints)
                  for rank in range(len(task.nodes))),
        secret_env=tuple(secret_env.items()),
        cwd=job.cwd or "",
        mounts=tuple((workflow.volumes[name].path, mount.location, False)
                     for name, mount in job.mounts.items()),
        timeout_seconds=timeout or 0.0,
        uid=workflow.job_ids.uid,
        gid=workflow.job_ids.gid,
        log_paths=log_paths(settings.log_dir, workflow.record.id, task.key),
        leases=tuple(task.leases),
        log_limit_bytes=settings.log_limit_bytes,
        files=workflow.fuzzfile.placed_files(job),
        implementation=job.multinode.implementation if job.multinode is not None else "",
        slots=job.multinode.procs_per_node or job.resource.request().cores
        if job.multinode is not None else 0,
        service=service is not None,
        probe=service.readiness_probe if service is not None else None,
        service_hosts=hosts,
        service_peers=peers,
        sandbox=task_sandbox(workflow, task),
    )



def task_sandbox(workflow: ActiveWorkflow, task: TaskRecord) -> str:
    """``WORKFLOW/JOB`` when ``task`` may run in its node's task sandbox (a task array's
    task with no devices of its own, whose job does not opt out with the annotation
    ``fuzz.io/task-sandbox: "false"``); empty: a container of its own."""
    job = workflow.fuzzfile.container(task.job)
    if task.index < 0 or not isinstance(job, JobSpec) or job.task_array is None \
            or job.multinode is not None or any(job.resource.devices.values()):
        return ""
    if str(job.annotations.get(TASK_SANDBOX_ANNOTATION, "")).strip().lower() == "false":
        return ""
    return f"{workflow.record.id}/{task.job}"


def service_routes(workflow: ActiveWorkflow, task: TaskRecord
                   ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """How ``task`` reaches the workflow's services (reference §2.7.4): its
    ``/etc/hosts`` lines (``ADDRESS SERVICE.svc``), one per other service running with a
    job network address now, and its firewall's peer entries
    (:func:`fuzz.substrate.monitor.firewall.parse_peer`, the agent's): each such
    service's declared ports (``ADDRESS:PROTO/PORT``; any port, ``ADDRESS``, for a
    service that declares none); and a service's own: its ports open to the jobs of the
    job network's other nodes (``jobs:PROTO/PORT``; ``jobs``), whose own firewalls let
    only this workflow's jobs through."""
    hosts: list[str] = []
    peers: list[str] = []
    if not workflow.fuzzfile.services:  # no service to reach: the tasks need not be looked at
        return (), ()  # (every plan looked at every task: a 10,000-task array's start was O(n²))
    if task.kind == "service":
        peers += _service_peers("jobs", workflow.fuzzfile.services[task.job])
    for other in workflow.tasks.values():
        if other.kind != "service" or other.key == task.key or not other.addresses \
                or other.state != TaskState.RUNNING or not other.addresses[0]:
            continue
        hosts.append(f"{other.addresses[0]} {other.key.lower()}.svc")
        peers += _service_peers(other.addresses[0], workflow.fuzzfile.services[other.job])
    return tuple(hosts), tuple(peers)


def _service_peers(host: str, service: ServiceSpec) -> list[str]:
    """Peer entries for ``service``'s declared ports at ``host``; ``host`` alone when it
    declares none."""
    ports = service.network.ports
    return [f"{host}:{port.protocol}/{port.port}" for port in ports] if ports else [host]
