"""Many simulated node agents in one process, for control-plane tests and bench/control_plane.py.

Each simulated node speaks the real agent API (``fuzz.substrate.v1.Substrate``) and
joins the orchestrator as a real agent does (:mod:`fuzz.substrate.join`): it registers
with its join token and keeps registering every :data:`HEARTBEAT_INTERVAL` seconds.
The orchestrator reads its inventory, leases its cores, starts, waits for, and
removes its containers through its ordinary client, so every call goes through the
orchestrator's real code paths. No container is ever run: a start succeeds at once,
and the job exits 0 ``run_seconds`` later, as a real agent would report it.

All the nodes share one gRPC server (grpc.aio, on 127.0.0.1); the orchestrator tells
them apart by the agent token each registered with, which it sends on every call.
The server, the heartbeats and the job clocks run on one asyncio loop in a thread of
their own; :class:`SimulatedAgents` is the thread-safe handle the caller holds.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from fuzz.api import orchestrator_pb2 as opb
from fuzz.api import orchestrator_pb2_grpc as opb_grpc
from fuzz.api import substrate_pb2 as spb
from fuzz.api import substrate_pb2_grpc as spb_grpc
from fuzz.rpc.auth import bearer_metadata, presented_token
from fuzz.substrate.join import HEARTBEAT_INTERVAL

GIB = 1024**3
_Result = TypeVar("_Result")


@dataclass
class _Container:
    """A simulated job: it "runs" from ``started`` for the node's run time, then exits 0."""

    id: str
    lease_id: str
    started: float  # time.time()
    ends: float  # time.time() it exits, unless cancelled first
    cancelled: bool = False
    pushed: bool = False  # its end was put on the node's watches

    def status(self, now: float) -> spb.ContainerStatus:
        """The status a real agent would report now."""
        reply = spb.ContainerStatus(id=self.id, lease_id=self.lease_id,
                                    started_at=_timestamp(self.started))
        if now < self.ends:
            reply.state = "running"
            return reply
        reply.state, reply.has_exit_code = "exited", True
        reply.finished_at.CopyFrom(_timestamp(self.ends))
        if self.cancelled:
            reply.cancelled, reply.signal, reply.exit_code = True, 15, 143
        return reply


@dataclass
class SimulatedNode:
    """One simulated node: its name, the token the orchestrator calls it with, its cores."""

    name: str
    token: str
    cores: int
    memory_bytes: int
    leases: dict[str, spb.Lease] = field(default_factory=dict)
    containers: dict[str, _Container] = field(default_factory=dict)
    watches: list[asyncio.Queue[spb.ContainerStatus]] = field(default_factory=list)

    def push_end(self, container: _Container) -> None:
        """Put ``container``'s end on every open watch, once (on the agents' loop)."""
        if container.pushed or self.containers.get(container.id) is not container:
            return
        container.pushed = True
        status = container.status(max(time.time(), container.ends))
        for inbox in self.watches:
            inbox.put_nowait(status)

    def free_cpus(self) -> list[int]:
        """The CPUs no lease holds."""
        held = {cpu for lease in self.leases.values() for cpu in lease.cpus}
        return [cpu for cpu in range(self.cores) if cpu not in held]

    def lease(self, request: spb.LeaseRequest, lease_id: str) -> spb.Lease | str:
        """Grant ``request`` (a Lease), or say what is short (a str), as the agent does."""
        free = self.free_cpus()
        wanted = self.cores if request.exclusive else request.cores
        if request.exclusive and self.leases:
            return "the node has leases: an exclusive lease needs it empty"
        if wanted > len(free):
            return f"{wanted} core(s) wanted, {len(free)} free"
        memory = sum(lease.memory_bytes for lease in self.leases.values())
        if memory + request.memory_bytes > self.memory_bytes:
            return f"{request.memory_bytes} bytes of memory wanted, " \
                f"{self.memory_bytes - memory} free"
        now = time.time()
        ttl = request.ttl_seconds or 60.0
        granted = spb.Lease(id=lease_id, cpus=free[:wanted], host_cpus=free[:wanted],
                            memory_bytes=request.memory_bytes, exclusive=request.exclusive,
                            holder=request.holder, affinity=request.affinity,
                            created_at=_timestamp(now), expires_at=_timestamp(now + ttl))
        self.leases[lease_id] = granted
        return granted


@dataclass(frozen=True)
class Start:
    """A container start the agents answered: when (time.monotonic()), on which node."""

    at: float
    node: str
    container: str


class _Substrate:
    """The agent API of every simulated node; the bearer token picks the node.

    Interactive access (Exec, PortForward, GrantAccess) needs a real container: it is
    answered UNIMPLEMENTED.
    """

    def __init__(self, agents: SimulatedAgents) -> None:
        self._agents = agents
        self._lease_ids = itertools.count(1)

    async def _node(self, context: Any) -> SimulatedNode:
        token, why = presented_token(context.invocation_metadata() or ())
        node = self._agents.by_token.get(token)
        if node is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, why or "invalid bearer token")
        assert node is not None
        return node

    async def Inventory(self, request: spb.InventoryRequest, context: Any) -> spb.Inventory:
        node = await self._node(context)
        return spb.Inventory(
            node_id=node.name, hostname=node.name, architecture="x86_64", sockets=1,
            cores=node.cores, memory_bytes=node.memory_bytes, agent_version="simulated",
            cpus=[spb.Cpu(id=cpu, core=cpu, host_cpu=cpu) for cpu in range(node.cores)],
            started_at=_timestamp(time.time()), declared=True)

    def _new_lease(self, node: SimulatedNode, request: spb.LeaseRequest) -> spb.Lease | str:
        return node.lease(request, f"{node.name}-lease-{next(self._lease_ids)}")

    async def AcquireLease(self, request: spb.LeaseRequest, context: Any) -> spb.Lease:
        node = await self._node(context)
        granted = self._new_lease(node, request)
        if isinstance(granted, str):
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, granted)
        assert isinstance(granted, spb.Lease)
        return granted

    async def RenewLease(self, request: spb.RenewLeaseRequest, context: Any) -> spb.Lease:
        node = await self._node(context)
        lease = node.leases.get(request.lease_id)
        if lease is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no lease {request.lease_id}")
        assert lease is not None
        lease.expires_at.CopyFrom(_timestamp(time.time() + (request.ttl_seconds or 60.0)))
        return lease

    async def ReleaseLease(self, request: spb.ReleaseLeaseRequest, context: Any
                           ) -> spb.ReleaseLeaseResponse:
        node = await self._node(context)
        node.leases.pop(request.lease_id, None)
        return spb.ReleaseLeaseResponse()

    async def ListLeases(self, request: spb.ListLeasesRequest, context: Any
                         ) -> spb.ListLeasesResponse:
        node = await self._node(context)
        return spb.ListLeasesResponse(leases=list(node.leases.values()))

    async def PullImage(self, request: spb.PullImageRequest, context: Any
                        ) -> AsyncIterator[spb.PullProgress]:
        await self._node(context)
        digest = "sha256:" + hashlib.sha256(request.image.encode()).hexdigest()
        yield spb.PullProgress(message="simulated: nothing to pull", digest=digest)

    async def StartContainer(self, request: spb.StartContainerRequest, context: Any
                             ) -> spb.ContainerStatus:
        node = await self._node(context)
        if self._agents.start_seconds:
            await asyncio.sleep(self._agents.start_seconds)
        started = self._start(node, request)
        if isinstance(started, spb.StartOutcome):
            await context.abort(_CODES[started.code], started.message)
        assert isinstance(started, spb.ContainerStatus)
        return started

    def _start(self, node: SimulatedNode, request: spb.StartContainerRequest
               ) -> spb.ContainerStatus | spb.StartOutcome:
        """Start one container: its status, or the failed outcome StartContainer ends with."""
        if request.id in node.containers:
            return _failed(grpc.StatusCode.ALREADY_EXISTS, f"container {request.id} exists")
        lease_id = request.lease_id
        if not lease_id:
            granted = self._new_lease(node, spb.LeaseRequest(
                cores=request.lease.cores, memory_bytes=request.lease.memory_bytes,
                exclusive=request.lease.exclusive, holder=request.id,
                ttl_seconds=request.lease.ttl_seconds))
            if isinstance(granted, str):
                return _failed(grpc.StatusCode.RESOURCE_EXHAUSTED, granted)
            lease_id = granted.id
        elif lease_id not in node.leases:
            return _failed(grpc.StatusCode.NOT_FOUND, f"no lease {lease_id}")
        now = time.time()
        container = _Container(request.id, lease_id, now, now + self._agents.run_seconds)
        node.containers[request.id] = container
        self._agents.started(node.name, request.id)
        asyncio.get_running_loop().call_later(self._agents.run_seconds, node.push_end, container)
        return container.status(now)

    async def _container(self, context: Any, container_id: str
                         ) -> tuple[SimulatedNode, _Container]:
        node = await self._node(context)
        found = node.containers.get(container_id)
        if found is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no container {container_id}")
        assert found is not None
        return node, found

    async def GetContainer(self, request: spb.ContainerRef, context: Any
                           ) -> spb.ContainerStatus:
        _, container = await self._container(context, request.id)
        return container.status(time.time())

    async def WaitContainer(self, request: spb.WaitContainerRequest, context: Any
                            ) -> spb.ContainerStatus:
        _, container = await self._container(context, request.id)
        left = container.ends - time.time()
        if request.timeout_seconds:
            left = min(left, request.timeout_seconds)
        if left > 0:
            await asyncio.sleep(left)
        return container.status(time.time())

    async def CancelContainer(self, request: spb.CancelContainerRequest, context: Any
                              ) -> spb.ContainerStatus:
        _, container = await self._container(context, request.id)
        now = time.time()
        if now < container.ends:
            container.ends, container.cancelled = now, True
            asyncio.get_running_loop().call_soon(self._node_of(container).push_end, container)
        return container.status(now)

    async def ListContainers(self, request: spb.ListContainersRequest, context: Any
                             ) -> spb.ListContainersResponse:
        node = await self._node(context)
        now = time.time()
        return spb.ListContainersResponse(
            containers=[container.status(now) for container in node.containers.values()])

    async def StreamLogs(self, request: spb.StreamLogsRequest, context: Any
                         ) -> AsyncIterator[spb.LogChunk]:
        await self._container(context, request.id)
        return  # a simulated job writes nothing
        yield  # an async generator, as the streaming call wants

    async def RemoveContainer(self, request: spb.ContainerRef, context: Any
                              ) -> spb.RemoveContainerResponse:
        node, container = await self._container(context, request.id)
        del node.containers[request.id]
        if request.release_lease:
            node.leases.pop(container.lease_id, None)
        return spb.RemoveContainerResponse()

    # --- the calls that serve many containers at once (fuzz/substrate/rpc/batch.py)

    async def _older(self, context: Any) -> None:
        """Answer UNIMPLEMENTED, as an agent older than these calls does, if so made."""
        if not self._agents.batch_calls:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "an older simulated agent")

    def _node_of(self, container: _Container) -> SimulatedNode:
        return self._agents.by_lease_prefix(container.lease_id)

    async def WatchContainers(self, request: spb.WatchContainersRequest, context: Any
                              ) -> AsyncIterator[spb.ContainerEvent]:
        node = await self._node(context)
        await self._older(context)
        inbox: asyncio.Queue[spb.ContainerStatus] = asyncio.Queue()
        node.watches.append(inbox)
        try:
            now = time.time()
            for container in list(node.containers.values()):
                if container.pushed:
                    yield spb.ContainerEvent(ended=container.status(now))
            yield spb.ContainerEvent(caught_up=True)
            while True:
                yield spb.ContainerEvent(ended=await inbox.get())
        finally:
            node.watches.remove(inbox)

    async def RemoveContainers(self, request: spb.RemoveContainersRequest, context: Any
                               ) -> spb.RemoveContainersResponse:
        node = await self._node(context)
        await self._older(context)
        reply = spb.RemoveContainersResponse()
        for ref in request.containers:
            outcome = reply.outcomes.add(id=ref.id)
            container = node.containers.pop(ref.id, None)
            if container is None:
                outcome.code = grpc.StatusCode.NOT_FOUND.value[0]
                outcome.message = f"no container {ref.id}"
            elif ref.release_lease:
                node.leases.pop(container.lease_id, None)
        return reply

    async def StartContainers(self, request: spb.StartContainersRequest, context: Any
                              ) -> spb.StartContainersResponse:
        node = await self._node(context)
        await self._older(context)
        if self._agents.start_seconds:
            await asyncio.sleep(self._agents.start_seconds)
        reply = spb.StartContainersResponse()
        for one in request.containers:
            started = self._start(node, one)
            if isinstance(started, spb.StartOutcome):
                reply.outcomes.append(started)
            else:
                reply.outcomes.add(status=started)
        return reply

    async def _no_container(self, request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "a simulated node runs no container")

    async def StartPreparedContainer(self, request: spb.ContainerRef, context: Any
                                     ) -> spb.ContainerStatus:
        """Not simulated: the orchestrator does not prepare its tasks' containers ahead."""
        await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                            "a simulated node prepares no container ahead")
        raise AssertionError("abort raises")

    Exec = PortForward = GrantAccess = _no_container


class SimulatedAgents:
    """``count`` simulated nodes named ``PREFIX-N``, each with ``cores`` cores; jobs exit 0
    after ``run_seconds``. Use as a context manager: the server runs inside the block."""

    def __init__(self, count: int, cores: int = 64, memory_bytes: int = 256 * GIB,
                 run_seconds: float = 0.05, prefix: str = "sim",
                 heartbeat_interval: float = HEARTBEAT_INTERVAL, batch_calls: bool = True,
                 start_seconds: float = 0.0) -> None:
        """Prepare the nodes (nothing listens until the block is entered); without
        ``batch_calls`` they answer WatchContainers, RemoveContainers and StartContainers
        UNIMPLEMENTED, as an older agent does; a start answers after ``start_seconds``."""
        self.nodes = [SimulatedNode(f"{prefix}-{n}", secrets.token_urlsafe(24), cores,
                                    memory_bytes) for n in range(count)]
        self.by_token = {node.token: node for node in self.nodes}
        self._by_name = {node.name: node for node in self.nodes}
        self.run_seconds = run_seconds
        self.start_seconds = start_seconds  # how long a start takes to answer
        self.heartbeat_interval = heartbeat_interval
        self.batch_calls = batch_calls
        self._calls: Counter[str] = Counter()  # the agent calls answered, by method
        self.endpoint = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="simagents",
                                        daemon=True)
        self._server: grpc.aio.Server | None = None
        self._beating: list[asyncio.Task[None]] = []
        self._starts: list[Start] = []
        self._latencies: list[float] = []  # seconds per heartbeat, as the agents saw it
        self._errors: dict[str, int] = {}  # heartbeat failures, by gRPC status name
        self._lock = threading.Lock()

    def __enter__(self) -> SimulatedAgents:
        """Serve the agent API on a free port of 127.0.0.1."""
        self._thread.start()
        self._run(self._serve())
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop the heartbeats and the server."""
        self._run(self._shut_down())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _run(self, work: Coroutine[Any, Any, _Result]) -> _Result:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    async def _serve(self) -> None:
        self._server = grpc.aio.server(options=[("grpc.so_reuseport", 0)],
                                       interceptors=[_CallCounter(self)])
        spb_grpc.add_SubstrateServicer_to_server(_Substrate(self), self._server)
        port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        self.endpoint = f"127.0.0.1:{port}"

    async def _shut_down(self) -> None:
        for task in self._beating:
            task.cancel()
        await asyncio.gather(*self._beating, return_exceptions=True)
        if self._server is not None:
            await self._server.stop(grace=None)

    def join(self, orchestrator: str, join_tokens: Mapping[str, str],
             spread: bool = True) -> None:
        """Start every node's heartbeat to the plain-text orchestrator at ``orchestrator``,
        each with its join token from ``join_tokens`` (by node name).

        With ``spread`` the nodes' first registrations are spread over one interval, as
        agents started at different times would be; otherwise they all register now.
        """
        self._run(self._join(orchestrator, join_tokens, spread))

    async def _join(self, orchestrator: str, join_tokens: Mapping[str, str],
                    spread: bool) -> None:
        channel = grpc.aio.insecure_channel(orchestrator)
        stub = opb_grpc.OrchestratorStub(channel)
        for node in self.nodes:
            delay = random.uniform(0, self.heartbeat_interval) if spread else 0.0
            request = opb.RegisterNodeRequest(name=node.name, endpoint=self.endpoint,
                                              agent_token=node.token,
                                              join_token=join_tokens[node.name])
            self._beating.append(asyncio.create_task(
                self._beat(stub, request, node.token, delay)))

    async def _beat(self, stub: opb_grpc.OrchestratorStub, request: opb.RegisterNodeRequest,
                    token: str, delay: float) -> None:
        await asyncio.sleep(delay)
        metadata = bearer_metadata(token)
        while True:
            began = time.monotonic()
            call: Awaitable[opb.RegisterNodeReply] = stub.RegisterNode(
                request, metadata=metadata, timeout=30.0)
            try:
                await call
            except grpc.aio.AioRpcError as exc:
                with self._lock:
                    name = exc.code().name
                    self._errors[name] = self._errors.get(name, 0) + 1
            else:
                with self._lock:
                    self._latencies.append(time.monotonic() - began)
            await asyncio.sleep(max(0.0, self.heartbeat_interval - (time.monotonic() - began)))

    def started(self, node: str, container: str) -> None:
        """Note a start the agents answered (called on the agents' loop)."""
        with self._lock:
            self._starts.append(Start(time.monotonic(), node, container))

    def starts(self) -> list[Start]:
        """Every container start answered so far, in order."""
        with self._lock:
            return list(self._starts)

    def by_lease_prefix(self, lease_id: str) -> SimulatedNode:
        """The node that granted ``lease_id`` (its ids start with the node's name)."""
        return self._by_name[lease_id.rsplit("-lease-", 1)[0]]

    def counted(self, method: str) -> None:
        """Note one call of agent method ``method`` (called on the agents' loop)."""
        with self._lock:
            self._calls[method] += 1

    def calls(self) -> Counter[str]:
        """The agent calls answered so far, by method name."""
        with self._lock:
            return Counter(self._calls)

    def start_count(self) -> int:
        """How many container starts were answered so far."""
        with self._lock:
            return len(self._starts)

    def heartbeat_latencies(self, clear: bool = False) -> list[float]:
        """The seconds each heartbeat took, as the agents saw them; ``clear``: forget them."""
        with self._lock:
            found = list(self._latencies)
            if clear:
                self._latencies.clear()
        return found

    def heartbeat_errors(self) -> dict[str, int]:
        """Failed heartbeats, by gRPC status."""
        with self._lock:
            return dict(self._errors)

    def running(self) -> int:
        """How many simulated containers exist now (started and not removed)."""
        return self._run(self._count_containers())

    async def _count_containers(self) -> int:
        return sum(len(node.containers) for node in self.nodes)


class _CallCounter(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Counts every call to the simulated agents, by method."""

    def __init__(self, agents: SimulatedAgents) -> None:
        self._agents = agents

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails
                                ) -> Any:
        self._agents.counted(details.method.rsplit("/", 1)[-1])
        return await continuation(details)


def _timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


_CODES = {code.value[0]: code for code in grpc.StatusCode}  # the wire's int -> code


def _failed(code: grpc.StatusCode, message: str) -> spb.StartOutcome:
    """A start's failure: the status StartContainer ends with, as StartContainers says it."""
    return spb.StartOutcome(code=code.value[0], message=message)
