"""Resource leases: which cores, memory and devices of this node a job may use, and until when.

:func:`allocate` is pure: given the machine, the leases held and a request, it
picks the CPUs and devices or says exactly what is short. :class:`LeaseBook` holds
the leases of one agent behind a lock (no overcommit, however many requests race),
drops those whose holder stopped renewing them, and keeps them in a JSON file so
that they survive an agent restart.

Packing rules (``affinity``):

``NONE`` / ``CORE``
    any free cores, lowest ids first.
``NUMA`` / ``SOCKET``
    as few NUMA domains (sockets) as possible: the smallest single one with enough
    free cores (one with enough free GPUs first, when GPUs are asked for), else the
    domains with the most free cores, the last one being the smallest that covers
    the rest.

``threads`` takes whole cores: every hardware (SMT) thread of each core, and only
cores whose threads are all free; ``cores`` then counts cores, not logical CPUs.
``sockets: N`` takes the cores from exactly N sockets, split as evenly as possible
(the first sockets get one more when they do not divide): each share goes to the
socket with the fewest free cores that holds it (one with enough free GPUs first,
when GPUs are asked for), lowest ids first within it; the affinity does not apply.

GPUs (``nvidia.com/gpu``) on the lease's NUMA domains are preferred. Memory is
counted against the node's total. ``exclusive`` takes the whole node: every CPU
and all memory (and the devices asked for), and only when no other lease exists.

The search is hand-written rather than left to a solver: the groups are few (NUMA
domains or sockets), the greedy rule is provably minimal in the number of groups,
and the agent must stay light to import.
"""

from __future__ import annotations

import builtins
import json
import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fuzz.errors import FuzzError
from fuzz.fsutil import write_json_atomic
from fuzz.substrate.capacity.inventory import GpuInfo, MachineInventory
from fuzz.units import format_bytes

AFFINITIES = ("NONE", "CORE", "SOCKET", "NUMA")
GPU = "nvidia.com/gpu"
DEVICE_KINDS = (GPU,)
DEFAULT_TTL = 60.0
FILE_VERSION = 1


class LeaseError(FuzzError):
    """A lease cannot be granted, found or kept."""


class LeaseExhausted(LeaseError):
    """The node lacks what the request asks for; the message says what is short."""


class LeaseRequestError(LeaseError):
    """The request itself is invalid (negative amounts, unknown affinity or device kind)."""


class LeaseNotFound(LeaseError):
    """No lease has that id: it never existed, was released, or expired."""


class LeaseStateError(LeaseError):
    """The leases file cannot be read or written."""


@dataclass(frozen=True)
class LeaseRequest:
    """What a job asks of the node; ``ttl_seconds`` is how long the lease lives unrenewed."""

    cores: int
    affinity: str = "NONE"
    memory_bytes: int = 0
    devices: Mapping[str, int] = field(default_factory=dict)
    exclusive: bool = False
    holder: str = ""
    ttl_seconds: float = DEFAULT_TTL
    allow_root: bool = False
    sockets: int = 0
    threads: bool = False


@dataclass(frozen=True)
class Grant:
    """What :func:`allocate` picked: logical CPUs, the real CPUs behind them, memory, devices."""

    affinity: str
    cpus: tuple[int, ...]
    host_cpus: tuple[int, ...]
    numa_nodes: tuple[int, ...]
    memory_bytes: int
    devices: Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class Lease:
    """A granted lease: the exact CPUs (and the real ``host_cpus`` for a cgroup cpuset),
    memory and device ids, held by ``holder`` until ``expires_at`` (seconds since the epoch).
    """

    id: str
    cpus: tuple[int, ...]
    host_cpus: tuple[int, ...]
    numa_nodes: tuple[int, ...]
    memory_bytes: int
    devices: Mapping[str, tuple[str, ...]]
    exclusive: bool
    holder: str
    created_at: float
    expires_at: float
    affinity: str = "NONE"
    allow_root: bool = False

    def to_json(self) -> dict[str, Any]:
        """The lease as a JSON-ready dict (see :meth:`from_json`)."""
        return {
            "id": self.id,
            "cpus": list(self.cpus),
            "host_cpus": list(self.host_cpus),
            "numa_nodes": list(self.numa_nodes),
            "memory_bytes": self.memory_bytes,
            "devices": {kind: list(ids) for kind, ids in self.devices.items()},
            "exclusive": self.exclusive,
            "holder": self.holder,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "affinity": self.affinity,
            "allow_root": self.allow_root,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Lease:
        """Rebuild a lease written by :meth:`to_json`; raises ValueError when malformed."""
        try:
            devices = data["devices"]
            if not isinstance(devices, dict):
                raise ValueError("devices must be an object")
            return cls(
                id=_typed(data["id"], str),
                cpus=tuple(_typed(cpu, int) for cpu in data["cpus"]),
                host_cpus=tuple(_typed(cpu, int) for cpu in data["host_cpus"]),
                numa_nodes=tuple(_typed(node, int) for node in data["numa_nodes"]),
                memory_bytes=_typed(data["memory_bytes"], int),
                devices={
                    _typed(kind, str): tuple(_typed(i, str) for i in ids)
                    for kind, ids in devices.items()
                },
                exclusive=_typed(data["exclusive"], bool),
                holder=_typed(data["holder"], str),
                created_at=float(_typed(data["created_at"], int | float)),
                expires_at=float(_typed(data["expires_at"], int | float)),
                affinity=_typed(data.get("affinity", "NONE"), str),
                allow_root=_typed(data.get("allow_root", False), bool),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"missing or malformed field {exc}") from None


def _typed(value: Any, kind: Any) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"unexpected value {value!r}")
    return value


# --- the pure allocator ----------------------------------------------------------------


def validate_request(request: LeaseRequest) -> str:
    """Check ``request``; return its affinity in upper case or raise LeaseRequestError."""
    for name, value in (("cores", request.cores), ("memory_bytes", request.memory_bytes),
                        ("sockets", request.sockets)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise LeaseRequestError(f"{name} must be a non-negative integer, got {value!r}")
    affinity = str(request.affinity).upper() if request.affinity else "NONE"
    if affinity not in AFFINITIES:
        raise LeaseRequestError(
            f"unknown affinity {request.affinity!r}: expected one of {', '.join(AFFINITIES)}"
        )
    for kind, count in request.devices.items():
        if kind not in DEVICE_KINDS:
            raise LeaseRequestError(
                f"unknown device kind {kind!r}: this agent knows {', '.join(DEVICE_KINDS)}"
            )
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise LeaseRequestError(f"{kind} must be a non-negative integer, got {count!r}")
    _check_ttl(request.ttl_seconds)
    asks_something = request.cores or request.memory_bytes or any(request.devices.values())
    if not asks_something and not request.exclusive:
        raise LeaseRequestError("a lease must ask for cores, memory, a device or exclusive")
    return affinity


def _check_ttl(ttl: object) -> None:
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl) or (
        ttl <= 0
    ):
        raise LeaseRequestError(f"ttl_seconds must be a positive number, got {ttl!r}")


def allocate(
    machine: MachineInventory, held: Iterable[Lease], request: LeaseRequest
) -> Grant:
    """Pick what ``request`` gets on ``machine`` beside the ``held`` leases.

    Raises LeaseRequestError for an invalid request and LeaseExhausted, naming
    every shortage, when the node cannot grant it now.
    """
    affinity = validate_request(request)
    leases = list(held)
    for lease in leases:
        if lease.exclusive:
            owner = f" (holder {lease.holder})" if lease.holder else ""
            raise LeaseExhausted(f"node is held exclusively by lease {lease.id}{owner}")
    if request.exclusive and leases:
        raise LeaseExhausted(
            f"node is not free for an exclusive lease: {len(leases)} lease(s) held"
        )
    free = _Free.of(machine, leases)
    short = free.shortages(request, affinity)
    if short:
        raise LeaseExhausted("; ".join(short))
    if request.exclusive:
        cpus = sorted(free.cpus)
    elif request.sockets or request.threads:
        cpus = free.place(request, affinity)
    elif affinity in ("NUMA", "SOCKET"):
        cpus = free.pack(request.cores, affinity, request.devices.get(GPU, 0))
    else:
        cpus = sorted(free.cpus)[: request.cores]
    numa_nodes = sorted({free.numa_of[cpu] for cpu in cpus})
    gpus_wanted = request.devices.get(GPU, 0)
    gpus = sorted(free.gpus, key=lambda gpu: (gpu.numa_node not in numa_nodes, gpu.index))
    host_of = {cpu.id: cpu.host_cpu for cpu in machine.cpus}
    devices = {GPU: tuple(str(gpu.index) for gpu in gpus[:gpus_wanted])} if gpus_wanted else {}
    return Grant(
        affinity=affinity,
        cpus=tuple(cpus),
        host_cpus=tuple(sorted({host_of[cpu] for cpu in cpus})),
        numa_nodes=tuple(numa_nodes),
        memory_bytes=machine.memory_bytes if request.exclusive else request.memory_bytes,
        devices=devices,
    )


@dataclass(frozen=True)
class _Free:
    """What the held leases leave free on a machine, and where each CPU sits."""

    total_cpus: int
    cpus: frozenset[int]
    memory_bytes: int
    gpus: tuple[GpuInfo, ...]
    numa_of: Mapping[int, int]
    socket_of: Mapping[int, int]
    core_of: Mapping[int, tuple[int, int]]
    sockets: int

    @classmethod
    def of(cls, machine: MachineInventory, leases: Iterable[Lease]) -> _Free:
        held = list(leases)
        taken_gpus = {gpu for lease in held for gpu in lease.devices.get(GPU, ())}
        return cls(
            total_cpus=len(machine.cpus),
            cpus=frozenset(cpu.id for cpu in machine.cpus).difference(
                *(lease.cpus for lease in held)
            ),
            memory_bytes=machine.memory_bytes - sum(lease.memory_bytes for lease in held),
            gpus=tuple(gpu for gpu in machine.gpus if str(gpu.index) not in taken_gpus),
            numa_of={cpu.id: cpu.numa_node for cpu in machine.cpus},
            socket_of={cpu.id: cpu.socket for cpu in machine.cpus},
            core_of={cpu.id: (cpu.socket, cpu.core) for cpu in machine.cpus},
            sockets=machine.sockets,
        )

    def groups(self, affinity: str) -> dict[int, list[int]]:
        """The free CPUs by NUMA domain (``NUMA``) or socket (``SOCKET``), lowest ids first."""
        group_of = self.numa_of if affinity == "NUMA" else self.socket_of
        groups: dict[int, list[int]] = {}
        for cpu in sorted(self.cpus):
            groups.setdefault(group_of[cpu], []).append(cpu)
        return groups

    def shortages(self, request: LeaseRequest, affinity: str) -> list[str]:
        """One line per resource the request asks more of than is free."""
        short: list[str] = []
        if request.sockets or request.threads:
            short += self.unit_shortages(request)
        elif request.cores > len(self.cpus):
            detail = ""
            if affinity in ("NUMA", "SOCKET"):
                most = max((len(c) for c in self.groups(affinity).values()), default=0)
                noun = "domain" if affinity == "NUMA" else "socket"
                detail = f" ({affinity} affinity: at most {most} in one {noun})"
            short.append(
                f"not enough free cores: asked {request.cores}, free {len(self.cpus)} "
                f"of {self.total_cpus}{detail}"
            )
        if request.memory_bytes > self.memory_bytes:
            short.append(
                f"not enough memory: asked {format_bytes(request.memory_bytes)}, "
                f"free {format_bytes(max(self.memory_bytes, 0))}"
            )
        gpus_wanted = request.devices.get(GPU, 0)
        if gpus_wanted > len(self.gpus):
            short.append(f"no free {GPU}: asked {gpus_wanted}, free {len(self.gpus)}")
        return short

    def units(self, threads: bool) -> list[tuple[int, ...]]:
        """What a request's cores are counted in, lowest first: each free logical CPU, or
        (``threads``) the CPUs of each core whose threads are all free."""
        if not threads:
            return [(cpu,) for cpu in sorted(self.cpus)]
        cores: dict[tuple[int, int], list[int]] = {}
        for cpu, core in self.core_of.items():
            cores.setdefault(core, []).append(cpu)
        whole = [tuple(sorted(cpus)) for cpus in cores.values() if self.cpus.issuperset(cpus)]
        return sorted(whole)

    def by_socket(self, threads: bool) -> dict[int, list[tuple[int, ...]]]:
        """The free units (:meth:`units`) of each socket."""
        sockets: dict[int, list[tuple[int, ...]]] = {}
        for unit in self.units(threads):
            sockets.setdefault(self.socket_of[unit[0]], []).append(unit)
        return sockets

    @staticmethod
    def shares(request: LeaseRequest) -> list[int]:
        """The cores each of the ``sockets`` gives, largest first."""
        base, extra = divmod(request.cores, request.sockets)
        return [base + 1] * extra + [base] * (request.sockets - extra)

    def unit_shortages(self, request: LeaseRequest) -> list[str]:
        """What is short for a request with ``sockets`` or ``threads``."""
        unit = "whole free cores with their hardware threads" if request.threads \
            else "free cores"
        if not request.sockets:
            have = len(self.units(True))
            if request.cores > have:
                total = len(set(self.core_of.values()))
                return [f"not enough {unit}: asked {request.cores}, free {have} (of {total})"]
            return []
        if request.sockets > self.sockets:
            return [f"asked for {request.sockets} sockets; this node has {self.sockets}"]
        free = sorted((len(units) for units in self.by_socket(request.threads).values()),
                      reverse=True)[: request.sockets]
        free += [0] * (request.sockets - len(free))
        shares = self.shares(request)
        if all(have >= need for have, need in zip(free, shares, strict=True)):
            return []
        share = f"{shares[0]} or {shares[-1]}" if shares[0] != shares[-1] else str(shares[0])
        counts = " and ".join(str(count) for count in free)
        return [f"not enough {unit} on {request.sockets} sockets: each of {request.sockets}"
                f" sockets must give {share}, the freest give {counts}"]

    def place(self, request: LeaseRequest, affinity: str) -> list[int]:
        """The CPUs of a request with ``sockets`` or ``threads`` (the caller checked that
        enough are free): see the module documentation."""
        gpus_wanted = request.devices.get(GPU, 0)
        if not request.sockets:
            units = {unit[0]: unit for unit in self.units(request.threads)}
            if affinity in ("NUMA", "SOCKET"):
                group_of = self.numa_of if affinity == "NUMA" else self.socket_of
                groups: dict[int, list[int]] = {}
                for first in units:
                    groups.setdefault(group_of[first], []).append(first)
                gpus_in = self.gpus_in(group_of)
                chosen = _pack(groups, request.cores, lambda g: 0 < gpus_wanted <= gpus_in[g])
            else:
                chosen = sorted(units)[: request.cores]
            return sorted(cpu for first in chosen for cpu in units[first])
        sockets = self.by_socket(request.threads)
        gpus_on = self.gpus_in(self.socket_of)
        cpus: list[int] = []
        for need in self.shares(request):
            socket = min((s for s, units in sockets.items() if len(units) >= need),
                         key=lambda s: (not 0 < gpus_wanted <= gpus_on[s], len(sockets[s]), s))
            cpus += [cpu for unit in sockets.pop(socket)[:need] for cpu in unit]
        return sorted(cpus)

    def pack(self, cores: int, affinity: str, gpus_wanted: int) -> list[int]:
        """``cores`` free CPUs in as few groups as possible, near ``gpus_wanted`` free GPUs."""
        groups = self.groups(affinity)
        gpus_in = self.gpus_in(self.numa_of if affinity == "NUMA" else self.socket_of)
        return _pack(groups, cores, lambda group: 0 < gpus_wanted <= gpus_in[group])

    def gpus_in(self, group_of: Mapping[int, int]) -> Counter[int | None]:
        """How many free GPUs sit in each group (NUMA domain or socket) of ``group_of``."""
        group_of_numa = {self.numa_of[cpu]: group for cpu, group in group_of.items()}
        return Counter(group_of_numa.get(gpu.numa_node) for gpu in self.gpus)


def _pack(
    groups: Mapping[int, list[int]], count: int, preferred: Callable[[int], bool]
) -> list[int]:
    """Take ``count`` CPUs from as few groups as possible (the caller checked there are enough).

    A single group is best-fit (a ``preferred`` one first, then the smallest that
    holds ``count``). Otherwise taking the largest groups first needs the fewest
    groups; the last group is then the smallest that still covers what is left,
    which keeps the large groups whole for later requests.
    """
    if count == 0:
        return []
    fitting = [group for group, cpus in groups.items() if len(cpus) >= count]
    if fitting:
        best = min(fitting, key=lambda g: (not preferred(g), len(groups[g]), g))
        return groups[best][:count]
    order = sorted(groups, key=lambda g: (-len(groups[g]), g))
    chosen: list[int] = []
    for position, group in enumerate(order):
        rest = count - len(chosen)
        if len(groups[group]) >= rest:
            last = min(
                (g for g in order[position:] if len(groups[g]) >= rest),
                key=lambda g: (len(groups[g]), g),
            )
            return sorted(chosen + groups[last][:rest])
        chosen.extend(groups[group])
    raise AssertionError("caller must check that enough CPUs are free")  # pragma: no cover


# --- the book ----------------------------------------------------------------------------


class LeaseBook:
    """The leases of one node: granted without overcommit, expired lazily, kept in ``path``.

    Every public method takes one lock, first drops the leases whose TTL has run
    out, and writes ``path`` atomically whenever the set of leases changed, so that
    a restarted agent (which loads ``path``) sees exactly what was granted. With
    ``path`` None the book lives in memory only. (Annotations say ``builtins.list``
    because the ``list`` method shadows the builtin inside the class.)
    """

    def __init__(
        self,
        machine: MachineInventory,
        path: Path | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Hold leases of ``machine``; load ``path`` when it exists (raises LeaseStateError)."""
        self.machine = machine
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._leases: dict[str, Lease] = {}
        if path is not None:
            self._leases = {lease.id: lease for lease in _load(path)}
            if self._drop_expired():
                self._save()

    def acquire(self, request: LeaseRequest) -> Lease:
        """Grant ``request`` or raise LeaseExhausted (what is short) or LeaseRequestError."""
        with self._lock:
            self._sweep()
            grant = allocate(self.machine, self._leases.values(), request)
            now = self._clock()
            lease = Lease(
                id=uuid.uuid4().hex,
                cpus=grant.cpus,
                host_cpus=grant.host_cpus,
                numa_nodes=grant.numa_nodes,
                memory_bytes=grant.memory_bytes,
                devices=dict(grant.devices),
                exclusive=request.exclusive,
                holder=request.holder,
                created_at=now,
                expires_at=now + float(request.ttl_seconds),
                affinity=grant.affinity,
                allow_root=request.allow_root,
            )
            self._leases[lease.id] = lease
            self._save(undo=lambda: self._leases.pop(lease.id, None))
            return lease

    def renew(self, lease_id: str, ttl_seconds: float = DEFAULT_TTL) -> Lease:
        """Extend a live lease to ``ttl_seconds`` from now; LeaseNotFound when it is gone."""
        _check_ttl(ttl_seconds)
        with self._lock:
            self._sweep()
            old = self._leases.get(lease_id)
            if old is None:
                raise LeaseNotFound(f"no lease {lease_id!r} on this node (released or expired)")
            renewed = replace(old, expires_at=self._clock() + float(ttl_seconds))
            self._leases[lease_id] = renewed

            def undo() -> None:
                self._leases[lease_id] = old

            self._save(undo=undo)
            return renewed

    def release(self, lease_id: str) -> None:
        """Give a lease back; releasing one that is gone (or never was) does nothing."""
        with self._lock:
            changed = self._drop_expired()
            gone = self._leases.pop(lease_id, None)
            if gone is not None or changed:
                self._save()

    def get(self, lease_id: str) -> Lease | None:
        """The live lease ``lease_id``, or None."""
        with self._lock:
            self._sweep()
            return self._leases.get(lease_id)

    def list(self) -> builtins.list[Lease]:
        """The live leases, oldest first (in the order granted when the clock ties)."""
        with self._lock:
            self._sweep()
            # the dict keeps the order of grants (and the file keeps it across restarts)
            return sorted(self._leases.values(), key=lambda lease: lease.created_at)

    def expire(self) -> builtins.list[Lease]:
        """Drop the leases whose TTL has run out now; return them."""
        with self._lock:
            dropped = self._drop_expired()
            if dropped:
                self._save()
            return dropped

    # --- under the lock ---

    def _drop_expired(self) -> builtins.list[Lease]:
        now = self._clock()
        dropped = [lease for lease in self._leases.values() if lease.expires_at <= now]
        for lease in dropped:
            del self._leases[lease.id]
        return dropped

    def _sweep(self) -> None:
        if self._drop_expired():
            self._save()

    def _save(self, undo: Callable[[], object] | None = None) -> None:
        if self.path is None:
            return
        data = {
            "version": FILE_VERSION,
            "leases": [lease.to_json() for lease in self._leases.values()],
        }
        try:
            # Atomic but not flushed to disk: leases must outlive the agent process,
            # not the node; a node that crashes loses its jobs and so their leases.
            write_json_atomic(self.path, data, durable=False)
        except OSError as exc:
            if undo is not None:
                undo()  # what is not on disk is not granted
            raise LeaseStateError(
                f"cannot write leases file {self.path}: {exc.strerror or exc}"
            ) from exc


def _load(path: Path) -> list[Lease]:
    """The leases in ``path`` (none when it does not exist); raises LeaseStateError."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise LeaseStateError(f"cannot read leases file {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise LeaseStateError(f"leases file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("version") != FILE_VERSION:
        raise LeaseStateError(
            f"leases file {path} is not a version {FILE_VERSION} leases file"
        )
    records = data.get("leases")
    if not isinstance(records, list):
        raise LeaseStateError(f"leases file {path}: 'leases' must be a list")
    leases = []
    for number, record in enumerate(records):
        if not isinstance(record, dict):
            raise LeaseStateError(f"leases file {path}: lease #{number} is not an object")
        try:
            leases.append(Lease.from_json(record))
        except ValueError as exc:
            raise LeaseStateError(f"leases file {path}: lease #{number}: {exc}") from None
    return leases
