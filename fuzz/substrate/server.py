"""The node agent's process: the Substrate service, the gRPC server and its lifecycle.

:func:`serve` locks the state dir (see :mod:`fuzz.substrate.statedir` for its
files), starts the gRPC server with the bearer-token interceptor and the standard
health service, publishes ``agent.json`` once it answers, and stops gracefully on
SIGTERM or SIGINT. Leases (:mod:`fuzz.substrate.capacity.leases`) are kept in
``state_dir/leases.json`` and so outlive the process.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import grpc

from fuzz import __version__
from fuzz.api import substrate_pb2, substrate_pb2_grpc
from fuzz.errors import FuzzError
from fuzz.fsutil import acquire_lock, release_lock, write_json_atomic
from fuzz.rpc.auth import OrchestratorOnlyInterceptor, shared_token
from fuzz.rpc.epoch import NewestEpoch
from fuzz.rpc.metrics import RpcLatency, new_registry
from fuzz.rpc.server import (
    RunningServer,
    ServerStartError,
    TlsFiles,
    install_signal_handlers,
    restore_signal_handlers,
    start_server,
    wait_for_stop,
)
from fuzz.rpc.statusweb import StatusListener, StatusListenError
from fuzz.rpc.tunnel import read_frame
from fuzz.substrate.capacity.cdi import DEFAULT_CDI_DIRS
from fuzz.substrate.capacity.declared import read_declared_inventory
from fuzz.substrate.capacity.inventory import MachineInventory, hardware_labels, read_inventory
from fuzz.substrate.capacity.leases import (
    DEFAULT_TTL,
    Lease,
    LeaseBook,
    LeaseExhausted,
    LeaseNotFound,
    LeaseRequest,
    LeaseRequestError,
    LeaseStateError,
)
from fuzz.substrate.enroll import TLS_DIR, NodeIdentity, enroll
from fuzz.substrate.jobs import DEFAULT_IMAGE_CACHE_BYTES, JobRunner, JobSettings
from fuzz.substrate.join import JoinSettings, keep_registered
from fuzz.substrate.launch.sockets import OrchestratorLink
from fuzz.substrate.metrics import AgentCollector, AgentParts
from fuzz.substrate.monitor.jobnet import AUTO, JobNetwork
from fuzz.substrate.rpc.access import AccessRpcs
from fuzz.substrate.rpc.batch import BatchRpcs, ContainerEnds
from fuzz.substrate.rpc.direct import DirectListener
from fuzz.substrate.rpc.jobs import JobRpcs, abort_for
from fuzz.substrate.statedir import INFO_FILE, LOCK_FILE, read_node_id

logger = logging.getLogger(__name__)

SERVICE_NAME = "fuzz.substrate.v1.Substrate"
DEFAULT_METRICS_LISTEN = "127.0.0.1:0"  # loopback, a port the system picks (see agent.json)


def add_substrate_service(service: SubstrateService, server: grpc.Server) -> None:
    """Register ``service`` on ``server``, PortForward's frames left serialized.

    PortForward reads data frames as views of what arrived and yields its frames
    serialized (:mod:`fuzz.rpc.tunnel`); the generated registration would parse and
    build a message per chunk, so that one method is registered again (a later
    registration wins).
    """
    substrate_pb2_grpc.add_SubstrateServicer_to_server(service, server)
    # grpc-stubs predates add_registered_method_handlers (grpcio 1.63)
    server.add_registered_method_handlers(SERVICE_NAME, {  # type: ignore[attr-defined]
        "PortForward": grpc.stream_stream_rpc_method_handler(
            service.PortForward, request_deserializer=read_frame),
    })


LEASES_FILE = "leases.json"
# a lease's affinity (NUMA) <-> the wire enum (AFFINITY_NUMA); UNSPECIFIED reads as NONE
_AFFINITY_NAMES = {
    code: name.removeprefix("AFFINITY_") for name, code in substrate_pb2.Affinity.items()
}
_AFFINITY_NAMES[substrate_pb2.AFFINITY_UNSPECIFIED] = "NONE"
STOP_GRACE = 2.0
# Waits, followed log streams, execs and forwarded connections hold a worker each
# while they last.
MAX_WORKERS = 256


_Reply = TypeVar("_Reply")


class AgentStartError(ServerStartError):
    """The agent cannot start: it cannot use its state dir or cannot listen."""


# --- the Substrate service --------------------------------------------------------------


def inventory_message(
    machine: MachineInventory, node_id: str, labels: Mapping[str, str], started_at: datetime
) -> substrate_pb2.Inventory:
    """Build the wire message for ``machine`` as the agent ``node_id`` reports it."""
    message = substrate_pb2.Inventory(
        node_id=node_id,
        hostname=machine.hostname,
        architecture=machine.architecture,
        sockets=machine.sockets,
        cores=machine.cores,
        memory_bytes=machine.memory_bytes,
        labels=dict(labels),
        agent_version=__version__,
        declared=machine.declared,
    )
    message.started_at.FromDatetime(started_at)
    for domain in machine.numa:
        message.numa.add(id=domain.id, cpu_ids=domain.cpu_ids, memory_bytes=domain.memory_bytes)
    for gpu in machine.gpus:
        message.gpus.add(
            index=gpu.index,
            uuid=gpu.uuid,
            model=gpu.model,
            memory_bytes=gpu.memory_bytes,
            numa_node=gpu.numa_node,
            pci_bus_id=gpu.pci_bus_id,
        )
    for cpu in machine.cpus:
        message.cpus.add(
            id=cpu.id,
            socket=cpu.socket,
            core=cpu.core,
            numa_node=cpu.numa_node,
            host_cpu=cpu.host_cpu,
        )
    return message


def lease_message(lease: Lease) -> substrate_pb2.Lease:
    """Build the wire message for ``lease``."""
    message = substrate_pb2.Lease(
        id=lease.id,
        cpus=lease.cpus,
        host_cpus=lease.host_cpus,
        numa_nodes=lease.numa_nodes,
        memory_bytes=lease.memory_bytes,
        exclusive=lease.exclusive,
        allow_root=lease.allow_root,
        holder=lease.holder,
        affinity=(
            f"AFFINITY_{lease.affinity}"
            if lease.affinity in _AFFINITY_NAMES.values()
            else "AFFINITY_UNSPECIFIED"
        ),
    )
    for kind, ids in lease.devices.items():
        message.devices[kind].ids.extend(ids)
    message.created_at.FromNanoseconds(round(lease.created_at * 1e9))
    message.expires_at.FromNanoseconds(round(lease.expires_at * 1e9))
    return message


def lease_request(message: substrate_pb2.LeaseRequest) -> LeaseRequest:
    """Turn the wire request into a :class:`LeaseRequest` (raises LeaseRequestError)."""
    affinity = _AFFINITY_NAMES.get(message.affinity)
    if affinity is None:
        raise LeaseRequestError(f"unknown affinity {message.affinity}")
    return LeaseRequest(
        cores=message.cores,
        affinity=affinity,
        memory_bytes=message.memory_bytes,
        devices=dict(message.devices),
        exclusive=message.exclusive,
        allow_root=message.allow_root,
        holder=message.holder,
        ttl_seconds=message.ttl_seconds or DEFAULT_TTL,
        sockets=message.sockets,
        threads=message.threads,
    )


_LEASE_STATUS: tuple[tuple[type[FuzzError], grpc.StatusCode], ...] = (
    (LeaseExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (LeaseRequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (LeaseNotFound, grpc.StatusCode.NOT_FOUND),
    (LeaseStateError, grpc.StatusCode.FAILED_PRECONDITION),
)


class SubstrateService(JobRpcs, BatchRpcs, AccessRpcs):
    """The ``fuzz.substrate.v1.Substrate`` servicer.

    The machine is read on the first Inventory call (not at start, which stays fast
    even where ``nvidia-smi`` is slow) and kept: hardware does not change under a
    running agent. The lease book is made (and ``lease_path`` loaded) on the first
    lease call, for it needs the machine.
    """

    def __init__(
        self,
        node_id: str,
        labels: Mapping[str, str],
        started_at: datetime,
        reader: Callable[[], MachineInventory] = read_inventory,
        lease_path: Path | None = None,
        clock: Callable[[], float] = time.time,
        job_settings: JobSettings | None = None,
    ) -> None:
        """Serve as ``node_id`` with ``labels``; ``reader`` reads the machine.

        Leases are kept in ``lease_path`` (in memory only when None) and timed by ``clock``.
        """
        self.node_id = node_id
        self._labels = dict(labels)
        self._started_at = started_at
        self._reader = reader
        self._machine: MachineInventory | None = None
        self._lock = threading.Lock()
        self._lease_path = lease_path
        self._clock = clock
        self._book: LeaseBook | None = None
        self._book_lock = threading.Lock()
        self._job_settings = job_settings
        self._jobs: JobRunner | None = None
        self._jobs_lock = threading.Lock()
        self._ends = ContainerEnds(self.jobs)

    def machine(self) -> MachineInventory:
        """The machine's inventory, read once."""
        with self._lock:
            if self._machine is None:
                self._machine = self._reader()
            return self._machine

    def book(self) -> LeaseBook:
        """The node's lease book, made on first use (raises LeaseStateError)."""
        with self._book_lock:
            if self._book is None:
                self._book = LeaseBook(self.machine(), self._lease_path, self._clock)
            return self._book

    def jobs(self) -> JobRunner:
        """The node's job runner, made on first use."""
        with self._jobs_lock:
            if self._jobs is None:
                if self._job_settings is None:
                    raise AgentStartError("this agent was started without a state dir for jobs")
                self._jobs = self._job_settings.open_runner(self.book)
            return self._jobs

    def Inventory(  # the gRPC method's name
        self, request: substrate_pb2.InventoryRequest, context: grpc.ServicerContext
    ) -> substrate_pb2.Inventory:
        """Answer the Inventory RPC: the hardware labels, the declared labels over them,
        and the ``--label`` options over both."""
        machine = self.machine()
        labels = {**hardware_labels(machine), **machine.labels, **self._labels}
        return inventory_message(machine, self.node_id, labels, self._started_at)

    def AcquireLease(
        self, request: substrate_pb2.LeaseRequest, context: grpc.ServicerContext
    ) -> substrate_pb2.Lease:
        """Answer the AcquireLease RPC (reserving the holder's job network address if asked)."""
        def acquire(book: LeaseBook) -> substrate_pb2.Lease:
            return lease_message(book.acquire(lease_request(request)))

        lease = self._leases(context, acquire)
        if request.reserve_address:
            try:
                lease.address = self._run(
                    context, lambda jobs: jobs.containers.reserve_address(request.holder)) or ""
            except BaseException:
                self.book().release(lease.id)
                raise
        return lease

    def RenewLease(
        self, request: substrate_pb2.RenewLeaseRequest, context: grpc.ServicerContext
    ) -> substrate_pb2.Lease:
        """Answer the RenewLease RPC."""
        ttl = request.ttl_seconds or DEFAULT_TTL
        return self._leases(context, lambda book: lease_message(book.renew(request.lease_id, ttl)))

    def ReleaseLease(
        self, request: substrate_pb2.ReleaseLeaseRequest, context: grpc.ServicerContext
    ) -> substrate_pb2.ReleaseLeaseResponse:
        """Answer the ReleaseLease RPC."""

        def release(book: LeaseBook) -> substrate_pb2.ReleaseLeaseResponse:
            book.release(request.lease_id)
            return substrate_pb2.ReleaseLeaseResponse()

        return self._leases(context, release)

    def ListLeases(
        self, request: substrate_pb2.ListLeasesRequest, context: grpc.ServicerContext
    ) -> substrate_pb2.ListLeasesResponse:
        """Answer the ListLeases RPC."""
        def list_leases(book: LeaseBook) -> substrate_pb2.ListLeasesResponse:
            return substrate_pb2.ListLeasesResponse(leases=[lease_message(x) for x in book.list()])

        return self._leases(context, list_leases)

    def StartContainer(
        self, request: substrate_pb2.StartContainerRequest, context: grpc.ServicerContext
    ) -> substrate_pb2.ContainerStatus:
        """Start a job under its lease, or acquire the request's lease and start in one call."""
        return self.start_job(request, context)

    def start_job(
        self, request: substrate_pb2.StartContainerRequest, context: grpc.ServicerContext
    ) -> substrate_pb2.ContainerStatus:
        """StartContainer's work (StartContainers' too, one start each)."""
        if request.lease_id or not request.HasField("lease"):
            return self._watched(super().StartContainer(request, context))
        lease = self._leases(context, lambda book: book.acquire(lease_request(request.lease)))
        request.lease_id = lease.id
        try:
            return self._watched(super().StartContainer(request, context))
        except BaseException:
            self.book().release(lease.id)  # the job did not start: nothing holds the lease
            raise

    def StartPreparedContainer(
        self, request: substrate_pb2.ContainerRef, context: grpc.ServicerContext
    ) -> substrate_pb2.ContainerStatus:
        """Start a job's prepared container, watched for its end from then on."""
        return self._watched(super().StartPreparedContainer(request, context))

    def _watched(self, status: substrate_pb2.ContainerStatus) -> substrate_pb2.ContainerStatus:
        """``status`` of a container just started, now watched for its end."""
        self._ends.started(status)
        return status

    def container_ends(self) -> ContainerEnds:
        """The ends of this node's containers, for WatchContainers."""
        return self._ends

    def close_watches(self) -> None:
        """Stop watching the containers' ends (the agent stops)."""
        self._ends.close()

    def RemoveContainer(
        self, request: substrate_pb2.ContainerRef, context: grpc.ServicerContext
    ) -> substrate_pb2.RemoveContainerResponse:
        """Forget a finished job; with ``release_lease`` also give back its lease."""
        try:
            self.remove_job(request.id, request.release_lease)
        except FuzzError as exc:
            abort_for(context, exc)
        return substrate_pb2.RemoveContainerResponse()

    def remove_job(self, container_id: str, release_lease: bool) -> None:
        """Forget finished job ``container_id``; with ``release_lease`` also give back its
        lease (a job error, NOT_FOUND and the like, or a lease error is raised)."""
        jobs = self.jobs()
        lease_id = ""
        if release_lease:
            record = jobs.status(container_id).record
            lease_id = record.lease_id if record is not None else ""
        jobs.remove(container_id)
        self._ends.removed(container_id)
        if lease_id:
            self.book().release(lease_id)

    def _leases(
        self, context: grpc.ServicerContext, call: Callable[[LeaseBook], _Reply]
    ) -> _Reply:
        """Run ``call`` on the lease book; lease errors become gRPC statuses."""
        try:
            return call(self.book())
        except FuzzError as exc:
            abort_for(context, exc, _LEASE_STATUS)


# --- the process --------------------------------------------------------------------------


def listen_host(listen: str) -> str:
    """The host part of ``listen`` (``HOST:PORT``), where the direct port listens too."""
    host = listen.rpartition(":")[0].strip("[]")
    return {"": "0.0.0.0", "localhost": "127.0.0.1"}.get(host, host)


def serve(
    listen: str,
    state_dir: Path,
    token: str,
    labels: dict[str, str],
    *,
    stop: threading.Event | None = None,
    grace: float = STOP_GRACE,
    inventory_file: Path | None = None,
    image_cache_bytes: int = DEFAULT_IMAGE_CACHE_BYTES,
    insecure_registries: tuple[str, ...] = (),
    tls: TlsFiles | None = None,
    join: JoinSettings | None = None,
    cdi_dirs: tuple[Path, ...] = DEFAULT_CDI_DIRS,
    job_network: JobNetwork | None = None,
    metrics_listen: str | None = DEFAULT_METRICS_LISTEN,
    share_cpus_with: Path | None = None,
) -> None:
    """Run the agent until SIGTERM or SIGINT (or ``stop`` is set), then stop gracefully.

    Blocks for the agent's whole life. Holds ``state_dir/agent.lock`` throughout and
    publishes ``state_dir/agent.json`` once the server answers; removes it on the way
    out. With ``inventory_file`` the node is the one declared there (see
    :mod:`fuzz.substrate.capacity.declared`), not the hardware. With ``tls`` it serves TLS
    only; with mutual TLS (an enrolled node) it answers only the orchestrator's
    certificate (:class:`~fuzz.rpc.auth.OrchestratorOnlyInterceptor`). With
    ``join`` it registers with that orchestrator and keeps doing so
    (:mod:`fuzz.substrate.join`). Jobs get their leased devices as the CDI specs
    in ``cdi_dirs`` describe them (:mod:`fuzz.substrate.capacity.devices`), each in a
    network namespace of its own on ``job_network`` (default: a free subnet;
    see :mod:`fuzz.substrate.monitor.jobnet`). With ``metrics_listen`` (``HOST:PORT``)
    it serves ``/metrics``, ``/healthz`` and ``/readyz`` there (:mod:`fuzz.rpc.statusweb`;
    the bound address goes into ``agent.json`` as ``metrics``).
    With ``share_cpus_with`` its containers are
    spread over the CPUs it shares with the agents whose state dirs are there
    (:mod:`fuzz.substrate.capacity.shared_host`). Raises
    AgentStartError or DeclaredInventoryError (FuzzErrors) when it cannot start.
    """
    if not token:
        raise AgentStartError("the agent's token must not be empty")
    reader: Callable[[], MachineInventory] = read_inventory
    if inventory_file is not None:
        declared = read_declared_inventory(inventory_file)

        def reader() -> MachineInventory:
            return declared
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock_fd = acquire_lock(state_dir, LOCK_FILE, owner="agent")
    except OSError as exc:
        raise AgentStartError(f"cannot use state dir {state_dir}: {exc.strerror}") from exc
    info_path = state_dir / INFO_FILE
    stop_event = stop or threading.Event()
    previous = install_signal_handlers(stop_event)
    direct: DirectListener | None = None
    running: RunningServer | None = None
    service: SubstrateService | None = None
    status: StatusListener | None = None
    registry = new_registry()
    try:
        info_path.unlink(missing_ok=True)  # left by an agent that was killed
        identity: NodeIdentity | None = None
        if join is not None and join.ca_pem is not None:
            identity = NodeIdentity(state_dir / TLS_DIR)
            if not enroll(identity, join.orchestrator, join.name, join.token, join.ca_pem,
                          stop_event):
                return
            tls = identity.server_files()
        started_at = datetime.now(UTC)
        service = SubstrateService(
            read_node_id(state_dir), labels, started_at, reader, state_dir / LEASES_FILE,
            job_settings=JobSettings(
                state_dir, image_cache_bytes, insecure_registries, cdi_dirs,
                job_network or JobNetwork.parse(AUTO),
                OrchestratorLink(join.orchestrator, join.ca_pem) if join is not None else None,
                share_cpus_with),
        )
        if tls is not None:  # the direct port-forward path: TLS only, never plain text
            tls.server_credentials()  # the files' own check first, naming them in one line
            try:
                direct = service.open_direct_port(listen_host(listen), str(tls.cert),
                                                  str(tls.key))
            except OSError as exc:  # ssl.SSLError among them
                raise AgentStartError(f"cannot serve direct port-forward on "
                                      f"{listen_host(listen)}: {exc.strerror or exc}") from exc
        running = start_server(
            listen, shared_token(token),
            lambda server: add_substrate_service(service, server),
            SERVICE_NAME, tls=tls, max_workers=MAX_WORKERS,
            interceptors=[*([OrchestratorOnlyInterceptor()] if tls and tls.client_ca else []),
                          NewestEpoch(), RpcLatency(registry)],
            serving=False,  # until its metrics listener is up too
        )
        if metrics_listen is not None:
            registry.register(AgentCollector(AgentParts(service.jobs, service.book)))
            server = running

            def ready() -> str | None:
                return None if server.serving else "the gRPC server is not serving"

            try:
                status = StatusListener(metrics_listen, registry, ready)
            except StatusListenError as exc:
                raise AgentStartError(str(exc)) from None
            status.start()
        if tls is None:
            logger.warning("serving plain text (insecure) on %s: anyone on the network can "
                           "read and alter the agent's traffic", running.endpoint)
        running.set_serving(True)  # before agent.json: who reads it finds the agent serving
        write_json_atomic(
            info_path,
            {
                "pid": os.getpid(),
                "endpoint": running.endpoint,
                "started_at": started_at.isoformat(),
                "version": __version__,
                "node_id": service.node_id,
                "metrics": status.endpoint if status is not None else None,
            },
        )
        if join is not None:
            threading.Thread(
                target=keep_registered,
                args=(join, running.endpoint, token, labels, stop_event, identity),
                name="join", daemon=True,
            ).start()
        wait_for_stop(stop_event)
    finally:
        if direct is not None and service is not None:
            direct.close()
            service.close_handoff()
        if running is not None:
            running.health.enter_graceful_shutdown()
            running.server.stop(grace).wait()
        if service is not None:
            service.close_watches()
        if status is not None:
            status.stop()
        info_path.unlink(missing_ok=True)
        restore_signal_handlers(previous)
        release_lock(lock_fd)
