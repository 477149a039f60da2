"""What a job asks for and what a node holds, shared by validation, scheduling and elasticity.

A :class:`ResourceRequest` is one node's worth of a job's ``resource:`` block (a
multinode job asks for it on each of its nodes). A :class:`NodeCapacity` is the
whole of one node, or of one offering a pool could create. :func:`shortfall` says
in words why a request can never fit a capacity, so that "needs 64 cores; the
largest node has 16" reaches the user before anything runs.

Placement keys (docs/fuzzfile.md, "Placement: annotations, sockets, threads"): a
request's ``labels`` (its ``resource.annotations``) match a node when every key is
among the node's labels with an exactly equal value (extra node labels are ignored);
``sockets`` needs that many sockets, each holding its even share of the cores;
``threads`` takes every hardware thread of each core, so a core is
``threads_per_core`` logical CPUs. Cores are otherwise logical CPUs, as the node
agent counts them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from fuzz.units import format_bytes

Affinity = Literal["CORE", "SOCKET", "NUMA", "NONE"]
GPU_DEVICE = "nvidia.com/gpu"
"""The device kind of GPUs, in requests (``devices: {nvidia.com/gpu: 1}``) and capacities."""
MACHINE_LABEL = "fuzz.io/machine"
"""The node label an agent that shares its machine with other agents (``fuzz substrate
--share-cpus-with``: the local provider's nodes) reports, the same for all of them: an MPI
job whose nodes all carry one value runs as ranks of one node (workflows/mpi.py)."""


@dataclass(frozen=True)
class ResourceRequest:
    """One node's share of a job: cores with an affinity, memory, devices, exclusivity,
    and where it may go: ``labels`` the node must have, ``sockets`` (0: any) the cores
    come from, ``threads`` (each core with all its hardware threads)."""

    cores: int = 1
    affinity: Affinity = "CORE"
    memory_bytes: int = 0
    devices: Mapping[str, int] = field(default_factory=dict)
    exclusive: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    sockets: int = 0
    threads: bool = False


@dataclass(frozen=True)
class NodeCapacity:
    """The whole of one node (or of an offering): what a request is checked against."""

    name: str
    cores: int
    memory_bytes: int
    devices: Mapping[str, int] = field(default_factory=dict)
    architecture: str = "x86_64"
    labels: Mapping[str, str] = field(default_factory=dict)
    sockets: int = 1
    threads_per_core: int = 1
    """``cores`` counts logical CPUs: ``sockets`` x cores per socket x ``threads_per_core``."""


def cpus_taken(request: ResourceRequest, capacity: NodeCapacity) -> int:
    """How many of ``capacity``'s logical CPUs ``request`` takes (all threads of each core
    with ``threads``)."""
    return request.cores * (capacity.threads_per_core if request.threads else 1)


def holds(capacity: NodeCapacity, request: ResourceRequest) -> bool:
    """Whether ``capacity``, empty, could hold ``request`` (:func:`shortages` says what lacks)."""
    return not shortages(request, capacity)


def _cores(count: int) -> str:
    return f"{count} core" if count == 1 else f"{count} cores"


def _cores_text(cores: int, threads: bool) -> str:
    return f"{_cores(cores)} with their hardware threads" if threads else _cores(cores)


def _has_text(cpus: int, capacity: NodeCapacity, threads: bool, per: str = "") -> str:
    """What ``cpus`` logical CPUs of ``capacity`` make, in the words of the request."""
    if threads:
        return f"has {_cores(cpus // capacity.threads_per_core)} of " \
               f"{capacity.threads_per_core} threads{per}"
    return f"has {cpus}{per}"


def label_shortages(wanted: Mapping[str, str], labels: Mapping[str, str]) -> list[str]:
    """The requested labels a node's ``labels`` lack or hold with another value."""
    short = []
    for key, value in sorted(wanted.items()):
        have = labels.get(key)
        if have != value:
            detail = "no such label" if have is None else f"has {have}"
            short.append(f"annotation {key}={value} ({detail})")
    return short


def _topology_gap(request: ResourceRequest, capacity: NodeCapacity) -> tuple[str, str] | None:
    """What ``request``'s cores need of the node's sockets and threads, and what the node
    has (``("3 sockets", "has 2")``); None when the node could give it."""
    need = cpus_taken(request, capacity)
    sockets = request.sockets
    if not sockets:
        if need > capacity.cores:
            return (_cores_text(request.cores, request.threads),
                    _has_text(capacity.cores, capacity, request.threads))
        return None
    if sockets > capacity.sockets:
        return f"{sockets} sockets", f"has {capacity.sockets}"
    share = math.ceil(request.cores / sockets)
    per_socket = capacity.cores // max(capacity.sockets, 1)
    if share * (capacity.threads_per_core if request.threads else 1) <= per_socket:
        return None
    where = "on 1 socket" if sockets == 1 else f"on each of {sockets} sockets"
    shown = request.cores if sockets == 1 else share
    return (f"{_cores_text(shown, request.threads)} {where}",
            _has_text(per_socket, capacity, request.threads, " per socket"))


def topology_shortages(request: ResourceRequest, capacity: NodeCapacity) -> list[str]:
    """What the node's sockets and threads lack for ``request``'s cores."""
    gap = _topology_gap(request, capacity)
    return [] if gap is None else [f"{gap[0]} ({gap[1]})"]


def shortages(request: ResourceRequest, capacity: NodeCapacity) -> list[str]:
    """What ``capacity`` lacks to ever hold ``request``: empty when it could."""
    short = label_shortages(request.labels, capacity.labels)
    short += topology_shortages(request, capacity)
    if request.memory_bytes > capacity.memory_bytes:
        short.append(
            f"{format_bytes(request.memory_bytes)} memory "
            f"(has {format_bytes(capacity.memory_bytes)})"
        )
    for kind, count in sorted(request.devices.items()):
        have = capacity.devices.get(kind, 0)
        if count > have:
            short.append(f"{count} {kind} (has {have})")
    return short


def shortfall(
    request: ResourceRequest, capacities: Iterable[NodeCapacity], largest: str = "the largest node"
) -> str | None:
    """Why no capacity in ``capacities`` could ever hold ``request``; None when one could.

    The reason names the request and the largest capacity on each count it exceeds, e.g.
    ``needs 64 cores; the largest node has 16``; ``largest`` names that capacity
    (``the largest offering in pools gpu-a, gpu-b``).
    """
    known = list(capacities)
    if not known:
        return "no node or pool exists to run it"
    if any(holds(capacity, request) for capacity in known):
        return None
    kind = "pool that may grow" if "offering" in largest else "node"
    reasons = [f"needs annotation {key}={value}; no {kind} has it ({_values(key, known, kind)})"
               for key, value in sorted(request.labels.items())
               if not any(capacity.labels.get(key) == value for capacity in known)]
    if reasons:
        return "; ".join(reasons)
    known = [capacity for capacity in known if not label_shortages(request.labels, capacity.labels)]
    if not known:
        wanted = ", ".join(f"{key}={value}" for key, value in sorted(request.labels.items()))
        return f"needs annotations {wanted} on one {kind}; no {kind} has them all"
    most_sockets = max(capacity.sockets for capacity in known)
    if request.sockets > most_sockets:
        reasons.append(f"needs {request.sockets} sockets; {largest} has {most_sockets}")
    most_cores = max(capacity.cores for capacity in known)
    if request.cores > most_cores:
        reasons.append(f"needs {request.cores} cores; {largest} has {most_cores}")
    most_memory = max(capacity.memory_bytes for capacity in known)
    if request.memory_bytes > most_memory:
        reasons.append(
            f"needs {format_bytes(request.memory_bytes)} memory; "
            f"{largest} has {format_bytes(most_memory)}"
        )
    for kind, count in sorted(request.devices.items()):
        most = max(capacity.devices.get(kind, 0) for capacity in known)
        if count > most:
            reasons.append(f"needs {count} {kind}; {largest} has {most}")
    if not reasons and all(_topology_gap(request, capacity) for capacity in known):
        gap = _topology_gap(request, max(known, key=lambda c: (c.cores, c.sockets)))
        if gap is not None:
            reasons.append(f"needs {gap[0]}; {largest} {gap[1]}")
    if not reasons:
        reasons.append("no single node has all of it at once")
    return "; ".join(reasons)


def _values(key: str, capacities: Iterable[NodeCapacity], kind: str) -> str:
    """The values of label ``key`` that the capacities (of ``kind``) have, for a refusal."""
    values = sorted({capacity.labels[key] for capacity in capacities if key in capacity.labels})
    if not values:
        return f"no {kind} has the label {key}"
    plural = "pools have" if kind.startswith("pool") else "nodes have"
    return f"{plural} {key}: {', '.join(values)}"
