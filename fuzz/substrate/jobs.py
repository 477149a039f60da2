"""Jobs on a node: a lease, an image and a container, tied together.

:class:`JobRunner` turns a start request into a
:class:`~fuzz.substrate.runtime.bundle.ContainerSpec` confined by the request's lease
(its real CPUs become the cgroup cpuset, its memory the limit, its devices the
container's device nodes, mounts, env and hooks: see
:mod:`fuzz.substrate.capacity.devices`), run from the image the store pulled. It holds
the image while the job runs so eviction never removes it, and records which image and
lease each job used (``jobs.json``), so an agent restarted mid-job holds the images of
running jobs again.
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fuzz.errors import FuzzError
from fuzz.fsutil import read_json, write_json_atomic
from fuzz.substrate.capacity.cdi import DEFAULT_CDI_DIRS
from fuzz.substrate.capacity.devices import lease_edits
from fuzz.substrate.capacity.inventory import read_online_cpus
from fuzz.substrate.capacity.leases import LeaseBook, LeaseNotFound
from fuzz.substrate.capacity.shared_host import SpecCache, least_used, pinned_cpus
from fuzz.substrate.images.layout import ImageConfig
from fuzz.substrate.images.reference import Credentials
from fuzz.substrate.images.store import ImageStore
from fuzz.substrate.launch.sharedns import (
    SHARED_MEMORY_ENVIRONMENT,
    JobNamespaces,
    SharedNamespaces,
    machine_directory,
)
from fuzz.substrate.launch.sockets import MOUNT_POINT, LaunchSockets, OrchestratorLink
from fuzz.substrate.monitor.jobnet import AUTO, JobNetwork
from fuzz.substrate.runtime.bundle import ContainerFile, ContainerSpec, Mount, merge_env
from fuzz.substrate.runtime.containers import (
    ContainerManager,
    ContainerNotFoundError,
    ContainerStatus,
)

NOBODY = 65534
JOBS_FILE = "jobs.json"
IMAGES_DIR = "images"
LAUNCH_DIR = "launch"
DEFAULT_IMAGE_CACHE_BYTES = 10 * 2**30


@dataclass(frozen=True)
class JobSettings:
    """Where a node keeps its jobs and images, which registries speak plain HTTP,
    where its CDI specs are (lowest priority first), and the network its jobs are on."""

    state_dir: Path
    image_cache_bytes: int = DEFAULT_IMAGE_CACHE_BYTES
    insecure_registries: tuple[str, ...] = ()
    cdi_dirs: tuple[Path, ...] = DEFAULT_CDI_DIRS
    network: JobNetwork = field(default_factory=lambda: JobNetwork.parse(AUTO))
    orchestrator: OrchestratorLink | None = None  # where MPI jobs' launch sockets relay to
    share_cpus_with: Path | None = None  # sibling agents' state dirs (capacity/shared_host.py)

    def open_runner(self, book: Callable[[], LeaseBook]) -> JobRunner:
        """The node's job runner, with its image store and container manager."""
        images = ImageStore(self.state_dir / IMAGES_DIR, self.image_cache_bytes,
                            insecure_registries=self.insecure_registries)
        return JobRunner(self.state_dir, book, images,
                         ContainerManager(self.state_dir, network=self.network), self.cdi_dirs,
                         LaunchSockets(self.state_dir / LAUNCH_DIR, self.orchestrator),
                         self.share_cpus_with)


class JobPermissionError(FuzzError):
    """The request asks for something its lease does not allow (e.g. running as root)."""


class JobRequestError(FuzzError):
    """The request cannot be run as given (no command, bad environment entry)."""


@dataclass(frozen=True)
class JobRequest:
    """What the orchestrator asks a node to run."""

    id: str
    image: str
    lease_id: str
    credentials: Credentials | None = None
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    cwd: str = ""
    uid: int | None = None
    gid: int | None = None
    mounts: tuple[Mount, ...] = ()
    timeout_seconds: float | None = None
    stop_grace_seconds: float = 10.0
    log_limit_bytes: int = 0  # of each of stdout and stderr; 0: unlimited
    peers: tuple[str, ...] = ()  # its multinode job's other containers (their addresses)
    files: tuple[ContainerFile, ...] = ()  # placed in the container, read-only
    launch_token: str = ""  # an MPI job's: the container gets the launch socket
    hostname: str = ""  # the container's; empty: "job"
    sandbox: str = ""  # a task array's task: its WORKFLOW/JOB (the monitor's task sandbox)
    hosts: tuple[str, ...] = ()  # its /etc/hosts lines for its multinode job's ranks
    prepare_only: bool = False  # create the container; start_prepared starts it


@dataclass(frozen=True)
class JobRecord:
    """Which image and lease a job runs with, and whether its image hold was given back."""

    image_digest: str
    lease_id: str
    released: bool = False


@dataclass
class JobStatus:
    """A container's status plus the job's image digest and lease."""

    container: ContainerStatus
    record: JobRecord | None = field(default=None)
    log_bytes: tuple[int, int] = (0, 0)  # stdout, stderr


def job_command(args: Sequence[str], config: ImageConfig, image: str) -> tuple[str, ...]:
    """The job's own args, else the image's entrypoint and cmd."""
    command = tuple(args) or (*config.entrypoint, *config.cmd)
    if not command:
        raise JobRequestError(f"image {image} has no entrypoint or cmd: give the job's args")
    return command


def job_identity(uid: int | None, gid: int | None, allow_root: bool) -> tuple[int, int]:
    """The uid and gid a job runs as: nobody by default, root only where the lease allows."""
    user = NOBODY if uid is None else uid
    group = gid if gid is not None else user
    if (user == 0 or group == 0) and not allow_root:
        raise JobPermissionError(
            "running as uid or gid 0 needs a lease acquired with allow_root"
        )
    return user, group


class JobRunner:
    """Starts jobs under leases, and tracks their image holds across agent restarts."""

    def __init__(
        self,
        state_dir: Path,
        book: Callable[[], LeaseBook],
        images: ImageStore,
        containers: ContainerManager,
        cdi_dirs: Sequence[Path] = DEFAULT_CDI_DIRS,
        launch: LaunchSockets | None = None,
        share_cpus_with: Path | None = None,
    ) -> None:
        self._path = state_dir / JOBS_FILE
        self._share_cpus_with = share_cpus_with
        self._sibling_specs: SpecCache = {}  # what pinned_cpus read of the siblings' jobs
        # the agents that share this machine put a multinode job's containers on it in
        # one IPC and PID namespace: its ranks talk through shared memory (launch/sharedns.py)
        self._shared_ns = SharedNamespaces(machine_directory(share_cpus_with)) \
            if share_cpus_with is not None else None
        self._launch = launch or LaunchSockets(state_dir / LAUNCH_DIR, None)
        self._book = book
        self.images = images
        self.containers = containers
        self._cdi_dirs = tuple(cdi_dirs)
        self._lock = threading.Lock()
        self._records: dict[str, JobRecord] = self._load()
        self._hold_running_images()

    def _load(self) -> dict[str, JobRecord]:
        data = read_json(self._path) or {}
        return {job_id: JobRecord(**raw) for job_id, raw in data.items()
                if isinstance(raw, dict)}

    def _save(self) -> None:
        """Write the records (caller holds ``_lock``); only when one is added.

        A job's end and removal change the records in memory only: the file catches
        up with the next start. That is safe because what a restarted agent reads is
        checked against the containers (:meth:`_hold_running_images`), and it saves
        two file renames per job. Not durable either: the records only matter while
        the node's containers live, and a node crash ends those too.
        """
        write_json_atomic(self._path, {job_id: record.__dict__
                                       for job_id, record in self._records.items()},
                          durable=False)

    def _hold_running_images(self) -> None:
        """After a restart, hold again the images of jobs that still run.

        Records of removed containers are dropped, and those of finished ones marked
        released: the file may predate their end.
        """
        for job_id, record in list(self._records.items()):
            try:
                finished = self.containers.status(job_id).finished
            except FuzzError:  # removed (or unreadable): nothing to hold
                del self._records[job_id]
                continue
            if finished:
                self._records[job_id] = JobRecord(record.image_digest, record.lease_id, True)
            elif not record.released and self.images.get(record.image_digest) is not None:
                self.images.acquire(record.image_digest)

    def start(self, request: JobRequest) -> JobStatus:
        """Run ``request``'s container under its lease; returns once it runs (or failed).

        The lease's devices are resolved first (CdiError when the node's CDI specs
        are invalid or lack one), then the image is pulled. An MPI job's container
        (``launch_token``) gets its launch socket and helper at ``/.fuzz-launch``, and, on
        a machine shared with sibling agents, its job's IPC and PID namespaces and
        ``/dev/shm`` there and UCX's and Open MPI's settings for them
        (:mod:`fuzz.substrate.launch.sharedns`).
        """
        book = self._book()
        lease = book.get(request.lease_id)
        if lease is None:
            raise LeaseNotFound(f"lease {request.lease_id} is not held (released or expired)")
        uid, gid = job_identity(request.uid, request.gid, lease.allow_root)
        devices = lease_edits(lease.devices, book.machine.gpus, self._cdi_dirs,
                              f"job {request.id}")
        nodes = tuple(node.resolve() for node in devices.nodes)
        image = self.images.pull(request.image, request.credentials, acquire=True)
        try:
            mounts = request.mounts + devices.mounts
            shared = JobNamespaces("", "")
            shared_env: tuple[str, ...] = ()
            if request.launch_token:
                launch = self._launch.open(request.id, request.launch_token)
                mounts += (Mount(launch, MOUNT_POINT, True),)
                if self._shared_ns is not None:
                    shared = self._shared_ns.join(request.launch_token, request.id)
                    shared_env = SHARED_MEMORY_ENVIRONMENT
            spec = ContainerSpec(
                id=request.id,
                rootfs=image.rootfs,
                args=job_command(request.args, image.config, request.image),
                env=merge_env(image.config.env, shared_env, request.env, devices.env),
                cwd=request.cwd or image.config.working_dir or "/",
                uid=uid,
                gid=gid,
                cpus=self._host_cpus(lease.host_cpus),
                memory_bytes=lease.memory_bytes,
                mounts=mounts,
                timeout_seconds=request.timeout_seconds,
                devices=nodes,
                hooks=devices.hooks,
                stop_grace_seconds=request.stop_grace_seconds,
                log_limit_bytes=request.log_limit_bytes,
                peers=request.peers,
                files=request.files,
                hostname=request.hostname or "job",
                sandbox=request.sandbox,
                hosts=request.hosts,
                job_namespaces=shared.namespaces,
                job_shm=shared.shm,
            )
            with self._lock:
                self._records[request.id] = JobRecord(image.digest, lease.id)
                self._save()
            status = self.containers.start(spec, prepare=request.prepare_only)
        except BaseException:
            self._launch.close(request.id)
            self._leave_namespaces(request.id)
            self.images.release(image.digest)
            with self._lock:
                if self._records.pop(request.id, None) is not None:
                    self._save()
            raise
        return self._with_record(status)

    def _leave_namespaces(self, job_id: str) -> None:
        """``job_id``'s container is out of its job's shared namespaces, if it was in them."""
        if self._shared_ns is not None:
            self._shared_ns.leave(job_id)

    def start_prepared(self, job_id: str) -> JobStatus:
        """Start a job that :meth:`start` prepared (``prepare_only``), if its lease is still
        held; a prepared job whose lease has gone is cancelled (LeaseNotFound)."""
        with self._lock:
            record = self._records.get(job_id)
        if record is None:
            raise ContainerNotFoundError(f"no container {job_id!r} on this node")
        if self._book().get(record.lease_id) is None:
            self.containers.cancel(job_id, 0)
            raise LeaseNotFound(f"lease {record.lease_id} of job {job_id} is not held "
                                "(released or expired): the prepared job was cancelled")
        return self._with_record(self.containers.start_prepared(job_id))

    def _host_cpus(self, leased: tuple[int, ...]) -> tuple[int, ...]:
        """The real CPUs a container of a lease backed by ``leased`` is pinned to: those,
        or, on a machine shared with sibling agents, as many of the least used ones."""
        if self._share_cpus_with is None or not leased:
            return leased
        usage = pinned_cpus(self._share_cpus_with, self._sibling_specs)
        return least_used(len(leased), read_online_cpus(), usage)

    def _with_record(self, status: ContainerStatus) -> JobStatus:
        if status.finished:
            self._release_image(status.id)
        log_bytes = self.containers.log_sizes(status.id)
        with self._lock:
            return JobStatus(status, self._records.get(status.id), log_bytes)

    def _release_image(self, job_id: str) -> None:
        with self._lock:
            record = self._records.get(job_id)
            if record is None or record.released:
                return
            self._records[job_id] = JobRecord(record.image_digest, record.lease_id, True)
        if self.images.in_use(record.image_digest):
            self.images.release(record.image_digest)

    def status(self, job_id: str) -> JobStatus:
        """The job's status now."""
        return self._with_record(self.containers.status(job_id))

    def wait(self, job_id: str, timeout: float | None,
             wanted: Callable[[], bool] | None = None) -> JobStatus:
        """Block until the job has finished (ContainerWaitTimeoutError after ``timeout``, or
        once ``wanted`` says no: see :meth:`ContainerManager.wait`)."""
        return self._with_record(self.containers.wait(job_id, timeout, wanted))

    def cancel(self, job_id: str, grace_seconds: float) -> JobStatus:
        """SIGTERM the job, SIGKILL after ``grace_seconds``; returns its status now."""
        self.containers.cancel(job_id, grace_seconds)
        return self.status(job_id)

    def list(self) -> builtins.list[JobStatus]:
        """Every job this node knows."""
        return [self._with_record(s) for s in self.containers.list()]

    def remove(self, job_id: str) -> None:
        """Forget a finished job: its container dir and its record."""
        self.containers.remove(job_id)
        self._launch.close(job_id)
        self._leave_namespaces(job_id)
        self._release_image(job_id)
        with self._lock:
            self._records.pop(job_id, None)

