"""The nodes of one cluster: join tokens, registration, heartbeats, and calling their agents.

A node's agent registers (see ``fuzz substrate serve --join``), giving its
endpoint and the bearer token the orchestrator must use to call it; the
orchestrator reads the node's inventory then, once. Registration repeats every
few seconds as the node's heartbeat (kept in memory, written to the store with the
other beats of the same second, once its recorded heartbeat is :data:`SEEN_SAVE_AGE` old:
:data:`SEEN_SAVE_INTERVAL`); a node not heard from within
:data:`HEARTBEAT_TIMEOUT` is not scheduled onto. A node whose agent stops answering
calls is not scheduled onto either, and once it has been silent for the grace period
(``orchestrator.node_grace``) it is *lost* (:meth:`NodeDirectory.silent`) until its
agent registers again. A node that refused a lease is skipped until its agent
reports free cores again (:meth:`NodeDirectory.refused`, :meth:`NodeDirectory.recheck`).
Agent tokens are stored sealed
with the server's key. Who may register as which node is decided before: by the
join token (:meth:`NodeDirectory.check_join_token`, plain-text clusters; see
:mod:`fuzz.orchestrate.cluster.jointokens`) or by the node's certificate
(:mod:`fuzz.orchestrate.cluster.enrollment`). In a TLS cluster agents
are called with mutual TLS, each verified as its node.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from fuzz.clients.agent import AgentClient, AgentError
from fuzz.crypto.envelope import Sealer
from fuzz.errors import FuzzError
from fuzz.orchestrate.cluster.jointokens import (
    DEFAULT_JOIN_TOKEN_TTL,
    JoinTokens,
    join_token_hash,
)
from fuzz.orchestrate.cluster.jointokens import JoinRefusedError as JoinRefusedError
from fuzz.orchestrate.records import DrainRecord, NodeRecord
from fuzz.orchestrate.store import Store
from fuzz.resources import NodeCapacity, ResourceRequest
from fuzz.rpc.client import ClientTls
from fuzz.rpc.epoch import epoch_metadata
from fuzz.scheduler.placement import NodeView

log = logging.getLogger(__name__)

HEARTBEAT_TIMEOUT = 30.0
DRAINING = "draining"
CORDONED = "cordoned"
DEFAULT_NODE_GRACE = 60.0  # seconds an agent may stay silent before its node is lost
RETIRED_FOR = 600.0  # seconds a retired client stays open: longer than any call's deadline
# A heartbeat's new last_seen is written with the others of the same second, in one
# transaction (at the next heartbeat a second after the last write): one write per
# heartbeat was one transaction each, 400 a second at 2,000 nodes on the store's one
# connection. A changed registration (endpoint, token, labels) is written at once.
SEEN_SAVE_INTERVAL = 1.0
# Only the beats of nodes whose last_seen on record is SEEN_SAVE_AGE old or more are
# written then (a third of HEARTBEAT_TIMEOUT, so a replica that takes over from the
# store still finds every live node reachable): a beat of each node every second was
# most of the store's work while idle, and the beats of the rest are written as the
# server stops.
SEEN_SAVE_AGE = HEARTBEAT_TIMEOUT / 3
# A plain-text node's heartbeat shows its join token: checked in the store (two reads)
# at its registration and then once every JOIN_RECHECK seconds while its endpoint, agent
# token and join token stay as they were. A token issued here voids the check at once
# (another replica's: within JOIN_RECHECK).
JOIN_RECHECK = HEARTBEAT_TIMEOUT
GPU_DEVICE = "nvidia.com/gpu"


@dataclass(frozen=True)
class NodeUse:
    """What the orchestrator's attempts hold on one node."""

    cores: int = 0
    memory_bytes: int = 0
    devices: Mapping[str, int] = field(default_factory=dict)
    tasks: int = 0
    exclusive: bool = False

    @classmethod
    def holding(cls, requests: Sequence[ResourceRequest]) -> NodeUse:
        """What attempts holding ``requests`` use (one NodeUse made, not one per attempt:
        a scheduling round sums every attempt in flight)."""
        devices: dict[str, int] = {}
        for request in requests:
            for kind, count in request.devices.items():
                devices[kind] = devices.get(kind, 0) + count
        return cls(sum(request.cores for request in requests),
                   sum(request.memory_bytes for request in requests), devices, len(requests),
                   any(request.exclusive for request in requests))


class NodeDirectory:
    """Registered nodes, their agents' clients, and the resources the scheduler sees."""

    def __init__(
        self, store: Store, sealer: Sealer, clock: Callable[[], float] = time.time,
        agent_tls: Callable[[str], ClientTls] | None = None,
        join_token_ttl: float = DEFAULT_JOIN_TOKEN_TTL, node_grace: float = DEFAULT_NODE_GRACE,
        acting: Callable[[], bool] | None = None, epoch: int = 0,
    ) -> None:
        """Load the nodes recorded in ``store``; call agents as ``agent_tls(node)`` says.

        Join tokens live ``join_token_ttl`` seconds; an agent silent for ``node_grace``
        seconds makes its node lost. ``acting`` (a replica: whether it surely still
        leads) is asked before any agent's client is handed out; its calls carry its
        leadership ``epoch`` (0: none), which agents check (:mod:`fuzz.rpc.epoch`).
        """
        self._store = store
        self._acting = acting
        self._epoch_metadata = epoch_metadata(epoch)
        self.join_tokens = JoinTokens(store, join_token_ttl, clock)
        self._sealer = sealer
        self._clock = clock
        self._agent_tls = agent_tls
        self._lock = threading.Lock()
        self._nodes = {node.name: node for node in store.load(NodeRecord)}
        self._draining = {drain.name: drain.mode for drain in store.load(DrainRecord)}
        self._clients: dict[str, AgentClient] = {}
        self._grace = node_grace
        self._silent_since: dict[str, float] = {}  # when calls to a node's agent began failing
        self._lost: dict[str, str] = {}  # node: why it was declared lost
        self._refused: dict[str, float] = {}  # node: when its agent last refused a lease
        self._retired: list[tuple[float, AgentClient]] = []  # (when, client) dropped on silence
        self._beating: dict[str, tuple[str, float]] = {}  # node: (join token hash, checked)
        self._capacities: dict[str, tuple[NodeRecord, NodeCapacity]] = {}  # for views()
        self._unsaved: dict[str, NodeRecord] = {}  # heartbeats not yet written to the store
        self._stale: set[str] = set()  # of those, the nodes whose last_seen on record is old
        self._seen_on_record = {node.name: node.last_seen for node in self._nodes.values()}
        self._seen_saved = time.monotonic()  # when the heartbeats were last written
        # What the scheduler's kept rooms must look at again (take_changed): the nodes
        # whose registration, state or reachability changed; and the reachable nodes in
        # the order of their last heartbeat, so those that fell silent are found at the
        # front without a walk over every node.
        self._changed: set[str] = set(self._nodes)
        self._beats: OrderedDict[str, None] = OrderedDict(
            (node.name, None) for node in sorted(self._nodes.values(),
                                                 key=lambda node: node.last_seen))

    def issue_join_token(self, node: str) -> str:
        """A new join token for the node called ``node``; older ones for it are void."""
        with self._lock:
            self._beating.pop(node, None)
        return self.join_tokens.issue(node)

    def check_join_token(self, name: str, join_token: str, endpoint: str = "",
                         agent_token: str = "") -> None:
        """JoinRefusedError unless ``join_token`` is node ``name``'s newest one.

        It must not have expired unless the node has registered with it already
        (a plain-text node shows its join token at every heartbeat). A heartbeat (the
        node's ``endpoint`` and ``agent_token`` as registered, the join token checked
        at its last registration) is checked against the store once every
        :data:`JOIN_RECHECK` seconds, not at every beat.
        """
        digest = join_token_hash(join_token)
        now = time.monotonic()
        with self._lock:
            joined = name in self._nodes
            checked = self._beating.get(name)
            if checked is not None and checked[0] == digest and now - checked[1] < JOIN_RECHECK \
                    and self._same_agent(name, endpoint, agent_token):
                return
        self.join_tokens.check(name, join_token, expired_ok=joined)
        with self._lock:
            self._beating[name] = (digest, now)

    def _same_agent(self, name: str, endpoint: str, agent_token: str) -> bool:
        """Whether node ``name`` is registered at ``endpoint`` with ``agent_token`` (under
        ``_lock``)."""
        known = self._nodes.get(name)
        return known is not None and known.endpoint == endpoint and \
            self._sealer.unseal(known.agent_token).decode() == agent_token

    def register(
        self, name: str, endpoint: str, agent_token: str, labels: Mapping[str, str],
    ) -> bool:
        """Record (or refresh) node ``name``; True when it is new or its agent changed.

        The caller has made sure the registration is ``name``'s. Raises
        JoinRefusedError when the agent cannot be reached at ``endpoint`` with
        ``agent_token``.
        """
        now = self._clock()
        due: list[NodeRecord] = []
        with self._lock:
            known = self._nodes.get(name)
            unchanged = self._same_agent(name, endpoint, agent_token)
            if known is not None and unchanged:
                known.last_seen = now
                merged = {**known.inventory_labels, **labels}
                changed = merged != known.labels
                known.labels = merged
                if changed or name not in self._beats:  # new labels, or back in time
                    self._changed.add(name)
                self._beats[name] = None
                self._beats.move_to_end(name)
                self._unsaved[name] = known
                if now - self._seen_on_record.get(name, 0.0) >= SEEN_SAVE_AGE:
                    self._stale.add(name)
                if changed:
                    self._stale.add(name)
                    due = self._take_unsaved(self._stale)
                elif self._stale and time.monotonic() - self._seen_saved >= SEEN_SAVE_INTERVAL:
                    due = self._take_unsaved(self._stale)
        if unchanged:
            if due:
                self._store.save(*due)
            self._heard_from(name)
            return False
        record = self._inspect(name, endpoint, agent_token, labels, now)
        with self._lock:
            self._nodes[name] = record
            self._seen_on_record[name] = record.last_seen  # written below
            self._changed.add(name)
            self._beats[name] = None
            self._beats.move_to_end(name)
            stale = self._clients.pop(name, None)
            self._refused.pop(name, None)  # a new agent: its leases are its own to report
        if stale is not None:
            stale.close()
        self._store.save(record)
        self._heard_from(name)
        return True

    def _take_unsaved(self, names: set[str] | None = None) -> list[NodeRecord]:
        """The heartbeats not yet written (of ``names``; of every node when None), to
        write now (under ``_lock``)."""
        taken = [self._unsaved.pop(name) for name in (names if names is not None
                                                     else list(self._unsaved))
                 if name in self._unsaved]
        self._stale -= {record.name for record in taken}
        unsaved = [record for record in taken if record is self._nodes.get(record.name)]
        for record in unsaved:
            self._seen_on_record[record.name] = record.last_seen
        self._seen_saved = time.monotonic()
        return unsaved

    def save_heartbeats(self) -> None:
        """Write the heartbeats not written yet (the server calls it as it stops); if the
        store fails now, at most the last second of them is lost, said in one line."""
        with self._lock:
            unsaved = self._take_unsaved()
        if unsaved:
            try:
                self._store.save(*unsaved)
            except FuzzError as exc:
                log.warning("the last heartbeats of %d node(s) were not recorded: %s",
                            len(unsaved), exc)

    def _inspect(
        self, name: str, endpoint: str, agent_token: str, labels: Mapping[str, str], now: float
    ) -> NodeRecord:
        client = AgentClient(endpoint, agent_token, timeout=10.0, tls=self._tls_for(name))
        try:
            inventory = client.inventory()
        except AgentError as exc:
            raise JoinRefusedError(f"node {name!r}: cannot reach its agent: {exc}") from None
        finally:
            client.close()
        devices = {GPU_DEVICE: len(inventory.gpus)} if inventory.gpus else {}
        threads = Counter((cpu.socket, cpu.core) for cpu in inventory.cpus)
        return NodeRecord(
            name=name, endpoint=endpoint, agent_token=self._sealer.seal(agent_token.encode()),
            cores=inventory.cores, memory_bytes=inventory.memory_bytes, devices=devices,
            labels={**inventory.labels, **labels},
            architecture=inventory.architecture or "x86_64",
            registered=now, last_seen=now, sockets=max(inventory.sockets, 1),
            threads_per_core=max(threads.values(), default=1),
            inventory_labels=dict(inventory.labels),
        )

    def _tls_for(self, name: str) -> ClientTls | None:
        return self._agent_tls(name) if self._agent_tls is not None else None

    def forget(self, name: str) -> None:
        """Drop node ``name`` (it was deleted), and its drain mark."""
        with self._lock:
            record = self._nodes.pop(name, None)
            client = self._clients.pop(name, None)
            self._silent_since.pop(name, None)
            self._lost.pop(name, None)
            self._refused.pop(name, None)
            self._beating.pop(name, None)
            self._unsaved.pop(name, None)
            self._stale.discard(name)
            self._seen_on_record.pop(name, None)
            self._capacities.pop(name, None)
            self._beats.pop(name, None)
            self._changed.add(name)
            drained = self._draining.pop(name, None) is not None
        if client is not None:
            client.close()
        if record is not None:
            self._store.delete(record)
        if drained:
            self._store.delete(DrainRecord(name, 0.0))

    def drain(self, name: str) -> None:
        """Mark node ``name`` draining: the scheduler places nothing more there."""
        self._mark(name, DRAINING)

    def cordon(self, name: str) -> None:
        """Mark node ``name`` cordoned (an admin's word): nothing more is placed there.

        A node already draining stays draining.
        """
        self._mark(name, CORDONED)

    def _mark(self, name: str, mode: str) -> None:
        with self._lock:
            known = self._draining.get(name)
            if known in (mode, DRAINING):
                return
            self._draining[name] = mode
            self._changed.add(name)
        self._store.save(DrainRecord(name, self._clock(), mode))

    def uncordon(self, name: str) -> bool:
        """Take node ``name``'s cordon or drain mark away; False when it had none."""
        with self._lock:
            if self._draining.pop(name, None) is None:
                return False
            self._changed.add(name)
        self._store.delete(DrainRecord(name, 0.0))
        return True

    def draining(self, name: str) -> bool:
        """Whether node ``name`` is cordoned or draining (nothing new is placed there)."""
        with self._lock:
            return name in self._draining

    def cordon_mode(self, name: str) -> str:
        """``draining``, ``cordoned``, or "" for a node that takes work."""
        with self._lock:
            return self._draining.get(name, "")

    def records(self) -> list[NodeRecord]:
        """Every registered node, by name."""
        with self._lock:
            return [self._nodes[name] for name in sorted(self._nodes)]

    def reachable(self, record: NodeRecord) -> bool:
        """Whether ``record``'s agent was heard from recently."""
        return self._clock() - record.last_seen <= HEARTBEAT_TIMEOUT

    # --- agents that stop answering, and come back ---------------------------------------

    def silent(self, name: str, error: str) -> str | None:
        """A call to node ``name``'s agent failed as a dead or restarting agent's would.

        Returns why the node is lost once it has been silent for the grace period
        (declaring it lost the first time), None while it may still come back. The
        client is retired, so the next call dials afresh rather than waiting out
        gRPC's reconnect backoff; it is closed only later (:meth:`close_retired`),
        for closing it would cancel the calls other attempts have in flight on it
        (a start among them, whose outcome would then be unknown).
        """
        now = time.monotonic()  # the grace is real time, whatever the records' clock says
        with self._lock:
            stale = self._clients.pop(name, None)
            if stale is not None:
                self._retired.append((now, stale))
            reason = self._lost.get(name)
            if name not in self._silent_since:
                self._changed.add(name)
            since = self._silent_since.setdefault(name, now)
            if reason is None and now - since >= self._grace:
                reason = (f"node {name} is lost: its agent has not answered for "
                          f"{now - since:.0f}s ({error})")
                self._lost[name] = reason
                log.warning("%s; its tasks are retried elsewhere or failed", reason)
        return reason

    def close_retired(self) -> None:
        """Close the clients retired longer ago than any call on them can last."""
        now = time.monotonic()
        with self._lock:
            done = [client for since, client in self._retired if now - since >= RETIRED_FOR]
            self._retired = [(since, c) for since, c in self._retired
                             if now - since < RETIRED_FOR]
        for client in done:
            client.close()

    def answered(self, name: str) -> None:
        """A call to node ``name``'s agent succeeded: it is not silent."""
        self._heard_from(name)

    def _heard_from(self, name: str) -> None:
        with self._lock:
            quiet = self._silent_since.pop(name, None) is not None
            back = self._lost.pop(name, None) is not None
            if quiet or back:
                self._changed.add(name)
        if back:
            log.info("node %s is back: its agent answers again", name)

    def lost(self, name: str) -> bool:
        """Whether node ``name`` was declared lost (and has not come back)."""
        with self._lock:
            return name in self._lost

    def refused(self, name: str) -> None:
        """Node ``name``'s agent refused a lease: skip it until it has room again."""
        with self._lock:
            self._refused[name] = self._clock()
            self._changed.add(name)

    def refusing(self) -> list[str]:
        """The nodes skipped because their agent refused a lease."""
        with self._lock:
            return sorted(self._refused)

    def recheck(self, name: str) -> None:
        """Ask node ``name``'s agent for its leases; schedule onto it again once it has a
        free core (or once it cannot say: the next start will find out)."""
        with self._lock:
            record = self._nodes.get(name)
        try:
            leases = self.client(name).list_leases(timeout=5.0)
        except (AgentError, FuzzError):
            leases = []
        if record is not None and sum(len(lease.cpus) for lease in leases) >= record.cores:
            return
        with self._lock:
            if self._refused.pop(name, None) is not None:
                self._changed.add(name)

    def client(self, name: str) -> AgentClient:
        """A client for node ``name``'s agent (kept open and shared); FuzzError once
        this orchestrator no longer surely leads (see :mod:`fuzz.orchestrate.leadership`)."""
        if self._acting is not None and not self._acting():
            raise FuzzError("this orchestrator no longer surely leads: it calls no agent")
        with self._lock:
            client = self._clients.get(name)
            if client is None:
                record = self._nodes.get(name)
                if record is None:
                    raise FuzzError(f"node {name!r} is not registered")
                token = self._sealer.unseal(record.agent_token).decode()
                client = AgentClient(record.endpoint, token, tls=self._tls_for(name),
                                     metadata=self._epoch_metadata)
                self._clients[name] = client
            return client

    def capacities(self) -> list[NodeCapacity]:
        """The whole of every registered node."""
        return [capacity_of(record) for record in self.records()]

    def view(self, name: str, use: NodeUse) -> NodeView | None:
        """What the scheduler sees of node ``name``: its capacity minus what ``use`` holds
        there (nothing free while it holds an exclusive attempt); None when it is not
        registered."""
        with self._lock:
            record = self._nodes.get(name)
            open_ = record is not None and not (
                name in self._draining or name in self._silent_since or name in self._lost
                or name in self._refused)
        return None if record is None else self._view(record, use, open_)

    def take_changed(self) -> set[str]:
        """The nodes whose registration, state (drained, silent, lost, refusing) or
        reachability changed since the last call: the scheduler's kept rooms look at
        these again (:meth:`view`), not at every node."""
        now = self._clock()
        with self._lock:
            while self._beats:  # the nodes not heard from within HEARTBEAT_TIMEOUT
                oldest = next(iter(self._beats))
                record = self._nodes.get(oldest)
                if record is not None and now - record.last_seen <= HEARTBEAT_TIMEOUT:
                    break
                del self._beats[oldest]
                self._changed.add(oldest)
            changed, self._changed = self._changed, set()
        return changed

    def _view(self, record: NodeRecord, use: NodeUse, open_: bool) -> NodeView:
        free_cores = 0 if use.exclusive else record.cores - use.cores
        free_memory = 0 if use.exclusive else record.memory_bytes - use.memory_bytes
        return NodeView(
            name=record.name,
            capacity=self._capacity(record),
            free_cores=free_cores,
            free_memory_bytes=free_memory,
            free_devices={
                kind: 0 if use.exclusive else count - use.devices.get(kind, 0)
                for kind, count in record.devices.items()
            },
            lease_count=use.tasks,
            schedulable=self.reachable(record) and open_,
        )

    def _capacity(self, record: NodeRecord) -> NodeCapacity:
        """:func:`capacity_of` ``record``, made again only when the record or its labels
        changed (a heartbeat may change the labels)."""
        cached = self._capacities.get(record.name)
        if cached is not None and cached[0] is record and cached[1].labels == record.labels:
            return cached[1]
        capacity = capacity_of(record)
        self._capacities[record.name] = (record, capacity)
        return capacity

    def close(self) -> None:
        """Close every agent client."""
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
            clients += [client for _, client in self._retired]
            self._retired = []
        for client in clients:
            client.close()


def capacity_of(record: NodeRecord) -> NodeCapacity:
    """A node record as a capacity for validation and scheduling."""
    return NodeCapacity(
        name=record.name, cores=record.cores, memory_bytes=record.memory_bytes,
        devices=dict(record.devices), architecture=record.architecture,
        labels=dict(record.labels), sockets=record.sockets,
        threads_per_core=record.threads_per_core,
    )
