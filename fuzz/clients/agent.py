"""A small client for one node agent: health, inventory, leases, images and containers.

gRPC failures become :class:`fuzz.errors.FuzzError` subclasses with one-line
messages, so that the CLI and the providers can report them as they are.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import grpc

from fuzz.api import substrate_pb2, substrate_pb2_grpc
from fuzz.errors import FuzzError
from fuzz.resources import ResourceRequest
from fuzz.rpc.client import (
    DEFAULT_TIMEOUT,
    ClientTls,
    DuplexCall,
    GrpcClient,
    status_of,
    tls_failure,
)

_AFFINITIES = ("NONE", "CORE", "SOCKET", "NUMA")
_PORT_FORWARD_METHOD = "/fuzz.substrate.v1.Substrate/PortForward"
# The starts of one StartContainers call, in all: under gRPC's 4 MiB message limit (a start's
# files may hold 2 MiB, docs/security.md)
START_BATCH_BYTES = 3 * 1024 * 1024
_STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}  # the wire's int -> code
_CHANNEL_OPTIONS = (("SingleThreadedUnaryStream", 1),)  # grpc.experimental.ChannelOptions'


class AgentError(FuzzError):
    """A call to a node agent failed: ``code`` and ``details`` are the agent's status."""

    code: grpc.StatusCode | None = None
    details: str = ""


class AgentUnreachableError(AgentError):
    """Nothing answers at the agent's endpoint, or it did not answer in time."""


class AgentAuthError(AgentError):
    """The agent refused the client's token."""


class AgentResourceExhaustedError(AgentError):
    """The agent cannot grant a lease now; the message says what is short."""


class AgentInvalidRequestError(AgentError):
    """The agent (or the client, before sending) found the request invalid."""


class AgentNotFoundError(AgentError):
    """The agent has no such object, e.g. a lease that was released or expired."""


def lease_request(request: ResourceRequest, holder: str = "", ttl_seconds: float = 0.0,
                  allow_root: bool = False) -> substrate_pb2.LeaseRequest:
    """The wire form of a lease for ``request``; AgentInvalidRequestError for a bad affinity."""
    if request.affinity not in _AFFINITIES:
        raise AgentInvalidRequestError(
            f"unknown affinity {request.affinity!r}: expected one of {', '.join(_AFFINITIES)}"
        )
    return substrate_pb2.LeaseRequest(
        cores=request.cores,
        affinity=f"AFFINITY_{request.affinity}",
        memory_bytes=request.memory_bytes,
        devices=dict(request.devices),
        exclusive=request.exclusive,
        holder=holder,
        ttl_seconds=ttl_seconds,
        allow_root=allow_root,
        sockets=request.sockets,
        threads=request.threads,
    )


def start_request(
    job_id: str,
    image: str,
    lease_id: str = "",
    *,
    lease: ResourceRequest | None = None,
    lease_ttl: float = 0.0,
    args: Sequence[str] = (),
    env: Sequence[str] = (),
    cwd: str = "",
    uid: int | None = None,
    gid: int | None = None,
    mounts: Sequence[tuple[str, str, bool]] = (),
    timeout_seconds: float = 0.0,
    credentials: tuple[str, str] | None = None,
    log_limit_bytes: int = 0,
    peers: Sequence[str] = (),
    files: Sequence[tuple[str, bytes]] = (),
    launch_token: str = "",
    hostname: str = "",
    hosts: Sequence[str] = (),
    prepare_only: bool = False,
    sandbox: str = "",
) -> substrate_pb2.StartContainerRequest:
    """The request to start job ``job_id``'s container from ``image`` under lease ``lease_id``.

    Or, with ``lease`` instead, acquire that lease (held by ``job_id``, for
    ``lease_ttl`` seconds) and start under it in one call: the returned status
    names the lease. ``mounts`` are (host source, destination, read only) triples;
    ``peers`` the addresses of the other containers of its multinode job (from
    their leases), which it may reach; ``hosts`` its /etc/hosts lines
    (``ADDRESS NAME``) for them. ``log_limit_bytes``: what is kept of each of
    stdout and stderr (0: all). ``files`` are (path in the container, content) pairs,
    placed there read-only. ``launch_token``: an MPI job's, for its launch
    socket (docs/security.md, "MPI without SSH"); ``hostname``: the container's.
    ``prepare_only``: make the container but leave the job's process unstarted
    (:meth:`AgentClient.start_prepared_container` starts it). ``sandbox``: a task
    array's task (``WORKFLOW/JOB``), which the node may run in that job's task sandbox.
    """
    return substrate_pb2.StartContainerRequest(
        id=job_id, image=image, lease_id=lease_id, args=list(args), env=list(env),
        cwd=cwd, uid=uid, gid=gid, timeout_seconds=timeout_seconds,
        credentials=_credentials(credentials), log_limit_bytes=log_limit_bytes,
        mounts=[substrate_pb2.Mount(source=s, destination=d, read_only=ro)
                for s, d, ro in mounts],
        lease=lease_request(lease, job_id, lease_ttl) if lease is not None else None,
        peers=list(peers), hosts=list(hosts), launch_token=launch_token,
        hostname=hostname, prepare_only=prepare_only, sandbox=sandbox,
        files=[substrate_pb2.ContainerFile(path=path, content=content)
               for path, content in files],
    )


def _chunks(requests: Sequence[substrate_pb2.StartContainerRequest], limit: int
            ) -> Iterator[list[substrate_pb2.StartContainerRequest]]:
    """``requests`` in order, in runs of at most ``limit`` bytes (one larger goes alone)."""
    chunk: list[substrate_pb2.StartContainerRequest] = []
    size = 0
    for request in requests:
        length = request.ByteSize()
        if chunk and size + length > limit:
            yield chunk
            chunk, size = [], 0
        chunk.append(request)
        size += length
    if chunk:
        yield chunk


def _credentials(pair: tuple[str, str] | None) -> substrate_pb2.RegistryCredentials | None:
    if pair is None:
        return None
    return substrate_pb2.RegistryCredentials(username=pair[0], password=pair[1])


class AgentClient(GrpcClient):
    """Talk to the agent at ``endpoint`` (``host:port``), authenticating with ``token``."""

    def __init__(
        self, endpoint: str, token: str, timeout: float = DEFAULT_TIMEOUT,
        tls: ClientTls | None = None, metadata: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """Open a channel (TLS as ``tls`` says, plain text without); nothing is sent yet.
        Every call carries ``metadata`` too (a leader's epoch: :mod:`fuzz.rpc.epoch`).

        Server streams (the container watch, pulls, logs) are read on the reading thread
        itself (gRPC's SingleThreadedUnaryStream): otherwise each waiting reader wakes
        every 0.1 s (grpc/_common.py's MAXIMUM_WAIT_TIMEOUT), and an orchestrator holds a
        watch open on every node: 20,000 wakeups a second at 2,000 nodes."""
        super().__init__(endpoint, token, timeout, tls, metadata, options=_CHANNEL_OPTIONS)
        self.tls = tls
        self._stub: Any = substrate_pb2_grpc.SubstrateStub(self._channel)
        self._port_forward_serialized = self._channel.stream_stream(
            _PORT_FORWARD_METHOD, request_serializer=None,
            response_deserializer=None)  # frames stay bytes both ways

    def inventory(self, timeout: float | None = None) -> substrate_pb2.Inventory:
        """Return the node's inventory (cores, NUMA domains, memory, GPUs, labels)."""
        reply: substrate_pb2.Inventory = self._call(
            self._stub.Inventory, substrate_pb2.InventoryRequest(), timeout
        )
        return reply

    def acquire_lease(
        self,
        cores: int = 0,
        *,
        affinity: str = "NONE",
        memory_bytes: int = 0,
        devices: Mapping[str, int] | None = None,
        exclusive: bool = False,
        holder: str = "",
        ttl_seconds: float = 0.0,
        allow_root: bool = False,
        timeout: float | None = None,
        reserve_address: bool = False,
        sockets: int = 0,
        threads: bool = False,
    ) -> substrate_pb2.Lease:
        """Acquire a lease of ``cores`` (packed by ``affinity``), memory and devices.

        ``ttl_seconds`` 0 takes the agent's default. With ``reserve_address`` the
        lease also names the job network address of container ``holder`` (a rank
        of a multinode job). ``sockets`` and ``threads`` place the cores as a job's
        ``cpu.sockets`` and ``cpu.threads`` ask. Raises AgentResourceExhaustedError
        saying what is short, or AgentInvalidRequestError.
        """
        request = lease_request(
            ResourceRequest(cores, affinity.upper() if affinity else "NONE",  # type: ignore[arg-type]
                            memory_bytes, dict(devices or {}), exclusive, sockets=sockets,
                            threads=threads),
            holder, ttl_seconds, allow_root)
        request.reserve_address = reserve_address
        reply: substrate_pb2.Lease = self._call(self._stub.AcquireLease, request, timeout)
        return reply

    def renew_lease(
        self, lease_id: str, ttl_seconds: float = 0.0, timeout: float | None = None
    ) -> substrate_pb2.Lease:
        """Extend a lease to ``ttl_seconds`` from now (0: the agent's default).

        Raises AgentNotFoundError once the lease was released or expired.
        """
        request = substrate_pb2.RenewLeaseRequest(lease_id=lease_id, ttl_seconds=ttl_seconds)
        reply: substrate_pb2.Lease = self._call(self._stub.RenewLease, request, timeout)
        return reply

    def release_lease(self, lease_id: str, timeout: float | None = None) -> None:
        """Give a lease back (releasing an unknown or expired lease is not an error)."""
        self._call(
            self._stub.ReleaseLease, substrate_pb2.ReleaseLeaseRequest(lease_id=lease_id), timeout
        )

    def list_leases(self, timeout: float | None = None) -> list[substrate_pb2.Lease]:
        """The node's live leases, oldest first."""
        reply: substrate_pb2.ListLeasesResponse = self._call(
            self._stub.ListLeases, substrate_pb2.ListLeasesRequest(), timeout
        )
        return list(reply.leases)

    def wait_ready(self, timeout: float) -> None:
        """Wait until the agent reports SERVING; raise AgentUnreachableError after ``timeout``."""
        if not self.ready_within(timeout):
            raise AgentUnreachableError(
                f"agent at {self.endpoint} did not become ready within {timeout:g}s"
            )

    def pull_image(
        self, image: str, credentials: tuple[str, str] | None = None,
        timeout: float | None = None,
    ) -> Iterator[substrate_pb2.PullProgress]:
        """Pull ``image`` on the node, yielding its progress messages (the last has the digest)."""
        request = substrate_pb2.PullImageRequest(image=image,
                                                 credentials=_credentials(credentials))
        yield from self._stream(self._stub.PullImage, request, timeout)

    def start_container(self, job_id: str, image: str, lease_id: str = "", *,
                        call_timeout: float | None = None, **fields: Any
                        ) -> substrate_pb2.ContainerStatus:
        """Start job ``job_id``'s container: the request :func:`start_request` makes of the
        same arguments; ``call_timeout``: how long the call may take (default: 300 s or
        more)."""
        return self.start(start_request(job_id, image, lease_id, **fields), call_timeout)

    def start(self, request: substrate_pb2.StartContainerRequest,
              call_timeout: float | None = None) -> substrate_pb2.ContainerStatus:
        """Start the container ``request`` describes (:func:`start_request`)."""
        reply: substrate_pb2.ContainerStatus = self._call(
            self._stub.StartContainer, request, call_timeout or max(self.timeout, 300.0))
        return reply

    def start_containers(self, requests: Sequence[substrate_pb2.StartContainerRequest]
                         ) -> list[substrate_pb2.ContainerStatus | AgentError]:
        """Start several containers in one call (side by side on the node): for each, in
        order, the status its StartContainer would answer or the AgentError it would raise.

        Requests of more than :data:`START_BATCH_BYTES` in all go in several calls (each
        under gRPC's message limit: one start's files alone may hold 2 MiB); a call that
        fails as a whole fails its own starts (an agent without the call: raised).
        """
        outcomes: list[substrate_pb2.ContainerStatus | AgentError] = []
        for chunk in _chunks(requests, START_BATCH_BYTES):
            try:
                reply: substrate_pb2.StartContainersResponse = self._call(
                    self._stub.StartContainers,
                    substrate_pb2.StartContainersRequest(containers=chunk),
                    max(self.timeout, 300.0))
            except AgentError as exc:
                if exc.code == grpc.StatusCode.UNIMPLEMENTED and not outcomes:
                    raise
                outcomes.extend([exc] * len(chunk))
                continue
            outcomes.extend(outcome.status if outcome.code == 0 else self._outcome_error(outcome)
                            for outcome in reply.outcomes)
        return outcomes

    def start_prepared_container(self, job_id: str) -> substrate_pb2.ContainerStatus:
        """Start a job prepared by ``start_container(..., prepare_only=True)``."""
        reply: substrate_pb2.ContainerStatus = self._call(
            self._stub.StartPreparedContainer, substrate_pb2.ContainerRef(id=job_id),
            max(self.timeout, 300.0))
        return reply

    def get_container(self, job_id: str) -> substrate_pb2.ContainerStatus:
        """A job's status now."""
        reply: substrate_pb2.ContainerStatus = self._call(
            self._stub.GetContainer, substrate_pb2.ContainerRef(id=job_id), None)
        return reply

    def wait_container(self, job_id: str, timeout: float) -> substrate_pb2.ContainerStatus:
        """Wait up to ``timeout`` seconds for a job to finish; returns its status then."""
        reply: substrate_pb2.ContainerStatus = self._call(
            self._stub.WaitContainer,
            substrate_pb2.WaitContainerRequest(id=job_id, timeout_seconds=timeout),
            timeout + self.timeout)
        return reply

    def cancel_container(self, job_id: str, grace_seconds: float = 0.0
                         ) -> substrate_pb2.ContainerStatus:
        """SIGTERM a job, SIGKILL after ``grace_seconds`` (0: the agent's default)."""
        reply: substrate_pb2.ContainerStatus = self._call(
            self._stub.CancelContainer,
            substrate_pb2.CancelContainerRequest(id=job_id, grace_seconds=grace_seconds), None)
        return reply

    def list_containers(self) -> list[substrate_pb2.ContainerStatus]:
        """Every job the node knows."""
        reply = self._call(self._stub.ListContainers, substrate_pb2.ListContainersRequest(),
                           None)
        return list(reply.containers)

    def remove_container(self, job_id: str, release_lease: bool = False) -> None:
        """Forget a finished job (its logs and writable layer go), and its lease if asked."""
        self._call(self._stub.RemoveContainer,
                   substrate_pb2.ContainerRef(id=job_id, release_lease=release_lease), None)

    def remove_containers(self, job_ids: Sequence[str], release_lease: bool = True
                          ) -> list[AgentError | None]:
        """Forget several finished jobs in one call (and their leases if asked): for each,
        in order, None once removed or the AgentError its RemoveContainer would raise."""
        request = substrate_pb2.RemoveContainersRequest(containers=[
            substrate_pb2.ContainerRef(id=job_id, release_lease=release_lease)
            for job_id in job_ids])
        reply: substrate_pb2.RemoveContainersResponse = self._call(
            self._stub.RemoveContainers, request, None)
        return [None if outcome.code == 0 else self._outcome_error(outcome)
                for outcome in reply.outcomes]

    def _outcome_error(self, outcome: substrate_pb2.RemovalOutcome | substrate_pb2.StartOutcome
                       ) -> AgentError:
        """The AgentError of one failed removal or start of a RemoveContainers or
        StartContainers call."""
        code = _STATUS_CODES.get(outcome.code, grpc.StatusCode.UNKNOWN)
        error = self._classify(code, outcome.message)
        error.code, error.details = code, outcome.message
        return error

    def watch_containers(self) -> DuplexCall[substrate_pb2.ContainerEvent]:
        """The node's container ends: those not removed yet, ``caught_up``, then each end
        as it happens (no deadline: it lasts until cancelled or the agent stops)."""
        try:
            call = self._stub.WatchContainers(substrate_pb2.WatchContainersRequest(),
                                              metadata=self._metadata)
        except ValueError as exc:  # gRPC's "Cannot invoke RPC on closed channel!"
            if not self._closed:
                raise
            raise self._closed_error() from exc
        return DuplexCall(call, self._error)

    def stream_logs(self, job_id: str, stream: str = "stdout", *, offset: int = 0,
                    follow: bool = False, timeout: float | None = None) -> Iterator[bytes]:
        """A job's output from ``offset``; with ``follow``, until the job has finished."""
        request = substrate_pb2.StreamLogsRequest(id=job_id, stream=stream, offset=offset,
                                                  follow=follow)
        for chunk in self._stream(self._stub.StreamLogs, request, timeout):
            yield chunk.data

    def exec(self, inputs: Iterator[substrate_pb2.ExecInput]
             ) -> DuplexCall[substrate_pb2.ExecOutput]:
        """Run a process in a running container: ``inputs`` starts with ``start``."""
        call: DuplexCall[substrate_pb2.ExecOutput] = self._duplex(self._stub.Exec, inputs)
        return call

    def port_forward(self, frames: Iterator[bytes]) -> DuplexCall[bytes]:
        """Relay a TCP connection to a port in a running container: ``frames`` (serialized
        PortForwardFrame messages) starts with ``open``; their end half-closes the connection.

        The replies are the agent's PortForwardFrame messages still serialized: a relay
        passes frames on as they are, without parsing and re-serializing each data chunk.
        """
        call: DuplexCall[bytes] = self._duplex(self._port_forward_serialized, frames)
        return call

    def grant_access(self, ticket_sha256: bytes, container_id: str, port: int, user: str,
                     ttl_seconds: float, reusable: bool = False,
                     exec_start: substrate_pb2.ExecStart | None = None) -> int:
        """Register a single-use ticket (its hash) for ``port`` of ``container_id``
        (``reusable``: its connection may open that port again), or, with ``exec_start``
        (and port 0), for running that process there once; the agent's direct TLS port
        (0: it has none)."""
        reply: substrate_pb2.AccessGrantReply = self._call(
            self._stub.GrantAccess, substrate_pb2.AccessGrant(
                ticket_sha256=ticket_sha256, container_id=container_id, port=port,
                user=user, ttl_seconds=ttl_seconds, reusable=reusable, exec=exec_start),
            None)
        return reply.direct_port

    def _closed_error(self) -> AgentError:
        """A call on a closed client: the orchestrator replaced it (the agent moved)."""
        return AgentUnreachableError(f"the client of the agent at {self.endpoint} was closed")

    def _error(self, exc: grpc.RpcError) -> AgentError:
        """What a failed call to the agent means, as an AgentError carrying its status."""
        code, details = status_of(exc)
        error = self._classify(code, details)
        error.code, error.details = code, details
        return error

    def _classify(self, code: grpc.StatusCode | None, details: str) -> AgentError:
        """The AgentError (subclass) for a failed call's status."""
        if code == grpc.StatusCode.UNAVAILABLE:
            failure = tls_failure(details)
            return AgentUnreachableError(f"agent at {self.endpoint} is not reachable"
                                         + (f": {failure}" if failure else ""))
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return AgentUnreachableError(f"agent at {self.endpoint} did not answer in time")
        if code == grpc.StatusCode.UNAUTHENTICATED:
            return AgentAuthError(f"agent at {self.endpoint} refused the token: {details}")
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return AgentResourceExhaustedError(
                f"agent at {self.endpoint} cannot grant the lease: {details}"
            )
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return AgentInvalidRequestError(
                f"agent at {self.endpoint} rejected the request: {details}"
            )
        if code == grpc.StatusCode.NOT_FOUND:
            return AgentNotFoundError(f"agent at {self.endpoint}: {details}")
        name = code.name if code is not None else "UNKNOWN"
        return AgentError(f"agent at {self.endpoint} failed: {name}: {details}")
