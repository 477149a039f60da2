"""Which offerings to add to which elastic pool so that the queued jobs fit, at the lowest price.

:func:`choose_offerings` is one decision of the elastic loop. It takes the jobs
that fit no running node (:class:`QueuedJob`: one node's request, a node count for
multinode jobs, an optional architecture and labels), the elastic pools with the
offerings they may create (:class:`ElasticPool`: prices per hour, current size and
max), the nodes already booting (:class:`BootingNode`: what is free on them) and
what the user's quota still allows (:class:`Quota`). It answers with an
:class:`OfferingChoice`: the nodes to add per pool and offering, their total price
per hour, where each admitted job would run, and why the other jobs wait.

Rules:

* A job that no offering of any pool could ever hold is **unfit** at once, with a
  reason in the words of :func:`fuzz.resources.shortfall`
  (``needs 4 nvidia.com/gpu; the largest offering in pools gpu-a, gpu-b has 2``).
  A pool holds a job when its labels include the job's labels and one of its
  offerings has the job's architecture (``arm64`` means ``aarch64``) and sizes.
* **Booting nodes first**: they are paid for already, so they are filled before any
  node is added.
* **Cheapest mix**: the nodes to add come from :func:`fuzz.scheduler.packing.pack`
  (greedy by price per value packed, then local search; see there for the
  algorithm and why it is near-optimal). A multinode job's nodes are distinct; an
  exclusive job gets a node of its own.
* **Limits**: pools never exceed ``max_size`` and the quota is never exceeded. When
  the limits leave room for only some jobs, the oldest go first: the longest
  prefix of the queue that fits is admitted, and the rest are **deferred** with the
  reason. A job that could not fit even alone does not hold up the jobs behind it.

New nodes are named ``POOL/OFFERING#N`` in :attr:`OfferingChoice.placements`;
booting nodes keep their names. Pure: no I/O, no clocks, same input, same answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from fuzz.plugin.provider import Offering
from fuzz.resources import (
    GPU_DEVICE,
    NodeCapacity,
    ResourceRequest,
    holds,
    label_shortages,
    shortfall,
)
from fuzz.scheduler.bins import UNBOUNDED, BinType, ItemClass, Limits, Packing, Room
from fuzz.scheduler.packing import pack
from fuzz.spec.labels import CPU_ARCHITECTURE_LABEL, gpu_labels

ARCHITECTURE_ALIASES = {"arm64": "aarch64", "amd64": "x86_64", "x64": "x86_64"}
"""Other names of an architecture, mapped to the one the node agent reports."""


@dataclass(frozen=True)
class QueuedJob:
    """A job waiting for nodes: ``nodes`` distinct nodes that each hold ``request``.

    ``architecture`` (None: any) and ``labels`` restrict the pools it may use.
    """

    key: str
    request: ResourceRequest
    nodes: int = 1
    architecture: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Refuse a job that asks for fewer than one node."""
        if self.nodes < 1:
            raise ValueError(f"job {self.key!r} asks for {self.nodes} nodes; at least 1")


@dataclass(frozen=True)
class ElasticPool:
    """An elastic pool: the offerings it may add, its ``labels``, and how far it may grow.

    ``size`` counts the nodes it has now, booting ones included; it never grows past
    ``max_size``.
    """

    name: str
    offerings: Sequence[Offering]
    max_size: int
    size: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def headroom(self) -> int:
        """How many nodes it may still add."""
        return max(self.max_size - self.size, 0)


@dataclass(frozen=True)
class BootingNode:
    """A node added earlier that has not joined yet: its whole ``capacity`` (architecture
    and labels included) and what is still ``free`` on it (None: all of it)."""

    name: str
    capacity: NodeCapacity
    free: NodeCapacity | None = None

    def room(self) -> NodeCapacity:
        """What jobs may still use."""
        return self.free if self.free is not None else self.capacity

    def idle(self) -> bool:
        """Nothing is placed on it yet, so an exclusive job may have it."""
        room = self.room()
        whole = self.capacity
        return (room.cores, room.memory_bytes, dict(room.devices)) == (
            whole.cores, whole.memory_bytes, dict(whole.devices))


@dataclass(frozen=True)
class Quota:
    """What the user may still add, over all pools: None means no limit."""

    nodes: int | None = None
    cores: int | None = None
    gpus: int | None = None
    price_per_hour: float | None = None


@dataclass(frozen=True)
class NewNodes:
    """Add ``count`` nodes of ``offering`` to ``pool``, at ``price_per_hour`` each."""

    pool: str
    offering: str
    count: int
    price_per_hour: float


@dataclass(frozen=True)
class OfferingChoice:
    """One decision.

    ``add``: the nodes to add, by pool and offering; ``price_per_hour``: their total;
    ``placements``: each admitted job's nodes (one name per node); ``unfit``: jobs no
    offering could ever hold, with why; ``deferred``: jobs that must wait for room
    (pool max, quota), with why.
    """

    add: tuple[NewNodes, ...]
    price_per_hour: float
    placements: Mapping[str, tuple[str, ...]]
    unfit: Mapping[str, str]
    deferred: Mapping[str, str]


def offering_capacity(offering: Offering, labels: Mapping[str, str]) -> NodeCapacity:
    """An offering as the capacity of one node of a pool with ``labels``, with the hardware
    labels its node's agent will publish (GPU model and count, CPU architecture) under
    them: the pool's own labels win, as an agent's ``--label`` options do."""
    devices = {GPU_DEVICE: offering.gpus} if offering.gpus else {}
    architecture = normal_architecture(offering.architecture)
    hardware = {CPU_ARCHITECTURE_LABEL: architecture}
    if offering.gpus:
        hardware |= gpu_labels("nvidia", [offering.gpu_model or ""] * offering.gpus, [])
    return NodeCapacity(offering.name, offering.cores, offering.memory_bytes, devices,
                        architecture, {**hardware, **labels})


def normal_architecture(name: str) -> str:
    """``arm64`` → ``aarch64``, ``amd64`` → ``x86_64``; other names as they are."""
    return ARCHITECTURE_ALIASES.get(name, name)


def choose_offerings(
    jobs: Sequence[QueuedJob],
    pools: Sequence[ElasticPool],
    booting: Sequence[BootingNode] = (),
    quota: Quota = Quota(),
) -> OfferingChoice:
    """Decide which nodes to add so that ``jobs`` (in queue order) run, at the lowest price.

    See the module documentation for the rules. Raises ValueError when two jobs or
    two pools share a name.
    """
    for what, names in (("jobs", [j.key for j in jobs]), ("pools", [p.name for p in pools])):
        if len(set(names)) != len(names):
            raise ValueError(f"{what} must have distinct names")
    problem = _Problem(pools, booting, quota)
    unfit = {job.key: reason for job in jobs
             if not problem.may_fit(job) and (reason := never_fits(job, pools)) is not None}
    queue = [job for job in jobs if job.key not in unfit]
    admitted, packing = problem.pack(queue)
    if admitted is not None:
        return OfferingChoice(admitted.add, packing.price(), admitted.placements, unfit, {})
    blocked = {job.key for job in queue if not problem.has_room_for(job)}
    admitted, packing = problem.admit([job for job in queue if job.key not in blocked])
    deferred = {job.key: problem.why_deferred(job, job.key in blocked)
                for job in queue if job.key not in admitted.placements}
    return OfferingChoice(admitted.add, packing.price(), admitted.placements, unfit, deferred)


def never_fits(job: QueuedJob, pools: Sequence[ElasticPool]) -> str | None:
    """Why no pool could ever hold ``job`` (labels, architecture, sizes, node count); None
    when one could."""
    able = [p for p in pools if p.max_size > 0 and _has_labels(p.labels, job.labels)]
    if not able:
        if job.labels:
            return f"needs labels {_format_labels(job.labels)}; no pool that may grow has them"
        return "no elastic pool may grow (every max is 0)"
    labelled = [p for p in able if any(
        not label_shortages(job.request.labels, offering_capacity(o, p.labels).labels)
        for o in p.offerings)]
    if not labelled:  # the words of shortfall: the annotation, and what the pools have
        return shortfall(job.request, [offering_capacity(o, p.labels)
                                       for p in able for o in p.offerings],
                         f"the largest offering in {_pools(able)}")
    able = labelled
    wanted = normal_architecture(job.architecture) if job.architecture else None
    matching = [p for p in able
                if any(_architecture_ok(o, wanted) for o in p.offerings)]
    if not matching:
        offered = sorted({normal_architecture(o.architecture) for p in able for o in p.offerings})
        return (f"needs architecture {wanted}; {_pools(able)} offer "
                f"{', '.join(offered) or 'nothing'}")
    capacities = [offering_capacity(o, p.labels)
                  for p in matching for o in p.offerings if _architecture_ok(o, wanted)]
    reason = shortfall(job.request, capacities, f"the largest offering in {_pools(matching)}")
    if reason is not None or job.nodes == 1:
        return reason
    holding = [p for p in matching if any(
        _architecture_ok(o, wanted) and holds(offering_capacity(o, p.labels), job.request)
        for o in p.offerings)]
    most = sum(p.max_size for p in holding)
    if most < job.nodes:
        return (f"needs {job.nodes} nodes that each hold its request; "
                f"{_pools(holding)} may grow to {most}")
    return None


@dataclass(frozen=True)
class _Admitted:
    add: tuple[NewNodes, ...]
    placements: Mapping[str, tuple[str, ...]]


class _Problem:
    """The bins (pool offerings and booting nodes) and the limits of one decision.

    Bin type ``i`` is ``self.types[i]``; ``self.capacities[i]`` is what it holds (with
    its labels and architecture); ``self.offering_of[i]`` names its (pool, offering),
    or ``self.node_of[i]`` its booting node.
    """

    def __init__(self, pools: Sequence[ElasticPool], booting: Sequence[BootingNode],
                 quota: Quota) -> None:
        self.pools = {pool.name: pool for pool in pools}
        self.quota = quota
        self.types: list[BinType] = []
        self.capacities: list[NodeCapacity] = []
        self.offering_of: dict[int, tuple[str, str]] = {}
        self.node_of: dict[int, str] = {}
        for group, pool in enumerate(pools):
            for offering in pool.offerings:
                self.types.append(BinType(len(self.types), offering.cores, offering.memory_bytes,
                                          offering.gpus, offering.price_per_hour, group))
                self.capacities.append(offering_capacity(offering, pool.labels))
                self.offering_of[len(self.types) - 1] = (pool.name, offering.name)
        for node in booting:
            room = node.room()
            self.types.append(BinType(len(self.types), room.cores, room.memory_bytes,
                                      room.devices.get(GPU_DEVICE, 0), 0.0, fixed=True,
                                      idle=node.idle()))
            self.capacities.append(NodeCapacity(
                node.name, room.cores, room.memory_bytes, dict(room.devices),
                normal_architecture(node.capacity.architecture), dict(node.capacity.labels)))
            self.node_of[len(self.types) - 1] = node.name
        self.max_sizes = [p.max_size for p in pools]
        self.limits = Limits([p.headroom for p in pools], quota.nodes, quota.cores, quota.gpus,
                             quota.price_per_hour)
        self._types_of: dict[tuple[object, ...], frozenset[int]] = {}
        self._types_of_job: dict[str, frozenset[int]] = {}
        self._most_nodes: dict[frozenset[int], int] = {}

    def types_for(self, job: QueuedJob) -> frozenset[int]:
        """The bin types that could hold one node of ``job``.

        A booting node holds only requests whose devices are GPUs (the only devices
        offerings have) and exclusive ones only while it is idle.
        """
        known = self._types_of_job.get(job.key)
        if known is not None:
            return known
        request = job.request
        key = (request.cores, request.memory_bytes, tuple(request.devices.items()),
               request.exclusive, job.architecture, tuple(job.labels.items()),
               tuple(request.labels.items()), request.sockets, request.threads)
        found = self._types_of.get(key)
        if found is None:
            wanted = normal_architecture(job.architecture) if job.architecture else None
            gpus_only = set(request.devices) <= {GPU_DEVICE}
            found = frozenset(
                kind.index for kind, capacity in zip(self.types, self.capacities, strict=True)
                if _has_labels(capacity.labels, job.labels)
                and (wanted is None or capacity.architecture == wanted)
                and holds(capacity, request)
                and (not kind.fixed or (gpus_only and (kind.idle or not request.exclusive))))
            self._types_of[key] = found
        self._types_of_job[job.key] = found
        return found

    def may_fit(self, job: QueuedJob) -> bool:
        """A quick check that some offering holds ``job`` and its pools may grow to its node
        count; when it fails, :func:`never_fits` says why (or finds that it fits after all)."""
        types = self.types_for(job)
        most = self._most_nodes.get(types)
        if most is None:
            groups = {self.types[t].group for t in types if not self.types[t].fixed}
            self._most_nodes[types] = most = sum(self.max_sizes[group] for group in groups)
        return most >= job.nodes

    def has_room_for(self, job: QueuedJob) -> bool:
        """Whether the limits leave room for ``job`` alone (a quick, optimistic check)."""
        room = Room.of(self.limits)
        kinds = [self.types[t] for t in self.types_for(job)]
        per_group: dict[int, int] = {}
        for kind in kinds:
            if not kind.fixed:
                per_group[kind.group] = max(per_group.get(kind.group, 0), room.allows(kind))
        new = sum(per_group.values())
        if room.nodes is not None:
            new = min(new, room.nodes)
        return sum(1 for kind in kinds if kind.fixed) + new >= job.nodes

    def admit(self, queue: Sequence[QueuedJob]) -> tuple[_Admitted, Packing]:
        """Pack the longest prefix of ``queue`` that fits within the limits, by bisection on
        the prefix length."""
        low, high = 0, len(queue) + 1
        best = (_Admitted((), {}), Packing((), ()))
        while high - low > 1:
            middle = (low + high) // 2
            admitted, packing = self.pack(queue[:middle])
            if admitted is None:
                high = middle
            else:
                low, best = middle, (admitted, packing)
        return best

    def pack(self, jobs: Sequence[QueuedJob]) -> tuple[_Admitted | None, Packing]:
        """Pack ``jobs``: the nodes to add and the placements, or None when some job did not
        fit. Single-node jobs of one shape form one item class; each multinode job is a
        class of its own, at most one of its nodes per bin."""
        groups: dict[tuple[object, ...], list[QueuedJob]] = {}
        for job in jobs:
            request = job.request
            key: tuple[object, ...] = (
                ("job", job.key) if job.nodes > 1 else
                (request.cores, request.memory_bytes, request.devices.get(GPU_DEVICE, 0),
                 request.exclusive, self.types_for(job)))
            groups.setdefault(key, []).append(job)
        members = list(groups.values())
        classes = []
        for index, group in enumerate(members):
            first = group[0]
            request = first.request
            classes.append(ItemClass(
                index, request.cores, request.memory_bytes, request.devices.get(GPU_DEVICE, 0),
                sum(job.nodes for job in group), self.types_for(first),
                per_bin=1 if first.nodes > 1 or request.exclusive else UNBOUNDED,
                exclusive=request.exclusive))
        packing = pack(classes, self.types, self.limits)
        if any(packing.unplaced):
            return None, packing
        return self._admitted(packing, members), packing

    def _admitted(self, packing: Packing, members: Sequence[Sequence[QueuedJob]]) -> _Admitted:
        counts: dict[int, int] = {}
        nodes: list[list[str]] = [[] for _ in members]
        for bin_ in packing.bins:
            index = bin_.type.index
            if bin_.type.fixed:
                name = self.node_of[index]
            else:
                number = counts.get(index, 0)
                counts[index] = number + 1
                pool, offering = self.offering_of[index]
                name = f"{pool}/{offering}#{number}"
            for i, count in sorted(bin_.contents.items()):
                nodes[i].extend([name] * count)
        placements: dict[str, tuple[str, ...]] = {}
        for group, names in zip(members, nodes, strict=True):
            start = 0
            for job in group:
                placements[job.key] = tuple(names[start:start + job.nodes])
                start += job.nodes
        add = []
        for t, count in counts.items():
            pool, offering = self.offering_of[t]
            add.append(NewNodes(pool, offering, count, self.types[t].price))
        return _Admitted(tuple(sorted(add, key=lambda n: (n.pool, n.offering))), placements)

    def why_deferred(self, job: QueuedJob, blocked: bool) -> str:
        """Why ``job`` waits: the pools that could hold it are full, the quota is spent, or
        older jobs take the room left."""
        if not blocked:
            return "waiting for room: older queued jobs take what the pool limits and quota allow"
        able = sorted({self.offering_of[t][0] for t in self.types_for(job)
                       if not self.types[t].fixed})
        pools = [self.pools[name] for name in able]
        sizes = ", ".join(f"{p.name} ({p.size} of {p.max_size})" for p in pools)
        headroom = sum(pool.headroom for pool in pools)
        if pools and headroom == 0:
            return f"waiting for room: the pools that could hold it are at their max: {sizes}"
        if headroom < job.nodes:
            return (f"waiting for room: needs {job.nodes} nodes; the pools that could hold it "
                    f"may add {headroom}: {sizes}")
        return f"waiting for room: the quota allows {self._quota_left()}"

    def _quota_left(self) -> str:
        quota = self.quota
        parts = [f"{value} more {unit}" for value, unit in (
            (quota.nodes, "nodes"), (quota.cores, "cores"), (quota.gpus, "GPUs"))
            if value is not None]
        if quota.price_per_hour is not None:
            parts.append(f"{quota.price_per_hour:g} more per hour")
        return ", ".join(parts) or "nothing more"


def _has_labels(have: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    return all(have.get(key) == value for key, value in wanted.items())


def _architecture_ok(offering: Offering, wanted: str | None) -> bool:
    return wanted is None or normal_architecture(offering.architecture) == wanted


def _format_labels(labels: Mapping[str, str]) -> str:
    return ", ".join(f"{key}={value}" for key, value in sorted(labels.items()))


def _pools(pools: Iterable[ElasticPool]) -> str:
    names = [pool.name for pool in pools]
    return f"pool {names[0]}" if len(names) == 1 else f"pools {', '.join(names)}"
