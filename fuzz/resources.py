"""What a job asks for and what a node holds, shared by validation, scheduling and elasticity.

A :class:`ResourceRequest` is one node's worth of a job's ``resource:`` block (a
multinode job asks for it on each of its nodes). A :class:`NodeCapacity` is the
whole of one node, or of one offering a pool could create. :func:`shortfall` says
in words why a request can never fit a capacity, so that "needs 64 cores; the
largest node has 16" reaches the user before anything runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from fuzz.units import format_bytes

Affinity = Literal["CORE", "SOCKET", "NUMA", "NONE"]
GPU_DEVICE = "nvidia.com/gpu"
"""The device kind of GPUs, in requests (``devices: {nvidia.com/gpu: 1}``) and capacities."""


@dataclass(frozen=True)
class ResourceRequest:
    """One node's share of a job: cores with an affinity, memory, devices, exclusivity."""

    cores: int = 1
    affinity: Affinity = "CORE"
    memory_bytes: int = 0
    devices: Mapping[str, int] = field(default_factory=dict)
    exclusive: bool = False


@dataclass(frozen=True)
class NodeCapacity:
    """The whole of one node (or of an offering): what a request is checked against."""

    name: str
    cores: int
    memory_bytes: int
    devices: Mapping[str, int] = field(default_factory=dict)
    architecture: str = "x86_64"
    labels: Mapping[str, str] = field(default_factory=dict)


def holds(capacity: NodeCapacity, request: ResourceRequest) -> bool:
    """Whether ``capacity``, empty, could hold ``request`` (:func:`shortages` says what lacks)."""
    return (request.cores <= capacity.cores and request.memory_bytes <= capacity.memory_bytes
            and all(count <= capacity.devices.get(kind, 0)
                    for kind, count in request.devices.items()))


def shortages(request: ResourceRequest, capacity: NodeCapacity) -> list[str]:
    """What ``capacity`` lacks to ever hold ``request``: empty when it could."""
    short = []
    if request.cores > capacity.cores:
        short.append(f"{request.cores} cores (has {capacity.cores})")
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
    reasons = []
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
    if not reasons:
        reasons.append("no single node has all of it at once")
    return "; ".join(reasons)
