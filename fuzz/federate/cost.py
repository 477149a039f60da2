"""The cost terms of running a workflow on a member: compute, data movement, queue wait."""

from __future__ import annotations

from collections.abc import Sequence

from fuzz.federate.model import DataDemand, JobDemand, MemberFacts, WorkflowDemand
from fuzz.resources import GPU_DEVICE, NodeCapacity, ResourceRequest, holds
from fuzz.spec.federation import ANY_SITE, EgressPrice, PriceList, RoutingSettings

GIB = 2**30
GB = 10**9
GPU_MODEL_LABEL = "nvidia.com/gpu.model"


def _gpu_price(prices: PriceList, request: ResourceRequest,
               holders: Sequence[NodeCapacity]) -> float:
    """What one of the request's GPUs costs an hour: the model it asks for, else the
    cheapest model among the nodes that could hold it; ``"*"`` for a model the price
    list does not name."""
    def price(model: str | None) -> float:
        return prices.gpu_hour.get(model or "", prices.gpu_hour.get("*", 0.0))

    wanted = request.labels.get(GPU_MODEL_LABEL)
    if wanted is not None:
        return price(wanted)
    models = {node.labels.get(GPU_MODEL_LABEL) for node in holders}
    return min((price(model) for model in models), default=price(None))


def _node_hour(request: ResourceRequest, member: MemberFacts) -> float | None:
    """What an hour of ``request`` costs on a node of ``member`` by its price list; None
    when no node could hold it."""
    holders = [node for node in member.nodes if holds(node, request)]
    if not holders:
        return None
    prices = member.prices
    per_hour = request.cores * prices.core_hour \
        + request.memory_bytes / GIB * prices.memory_gib_hour
    gpus = request.devices.get(GPU_DEVICE, 0)
    if gpus:
        per_hour += gpus * _gpu_price(prices, request, holders)
    return per_hour


def _offering_hour(request: ResourceRequest, member: MemberFacts) -> float | None:
    """What an hour of the cheapest offering that could hold ``request`` costs (a whole
    node); None when none could."""
    return min((o.price_per_hour for o in member.offerings if holds(o.capacity, request)),
               default=None)


def job_cost(job: JobDemand, member: MemberFacts) -> float:
    """What ``job`` costs on ``member``: each of its nodes for its hours, times its tasks,
    on a node it has (by the price list) or one of its offerings, whichever is cheaper."""
    options = [price for price in (_node_hour(job.request, member),
                                   _offering_hour(job.request, member)) if price is not None]
    return min(options, default=0.0) * job.hours * job.nodes * job.tasks


def compute_cost(demand: WorkflowDemand, member: MemberFacts) -> float:
    """Every job's cost on ``member``."""
    return sum(job_cost(job, member) for job in demand.jobs)


def egress_price(table: Sequence[EgressPrice], source: str, destination: str) -> float:
    """What a GB costs from site ``source`` to ``destination``: nothing within a site; else
    the most specific entry (exact, then ``"*"`` as the destination, then as the source,
    then both); nothing without one."""
    if source == destination or not source:
        return 0.0
    for wanted in ((source, destination), (source, ANY_SITE), (ANY_SITE, destination),
                   (ANY_SITE, ANY_SITE)):
        for entry in table:
            if (entry.from_site, entry.to_site) == wanted:
                return entry.per_gb
    return 0.0


def cached_bytes(data: DataDemand, member: MemberFacts) -> int:
    """How much of ``data`` the member's cache holds already (at most its size)."""
    held = sum(member.cached_bytes.get(uri, 0) for uri in data.uris)
    return min(held, data.size)


def egress_cost(demand: WorkflowDemand, member: MemberFacts,
                table: Sequence[EgressPrice]) -> tuple[float, float]:
    """What moving the workflow's ingress data to ``member`` costs, and the GB it need
    not move because its cache holds them."""
    cost = cached = 0.0
    for data in demand.data:
        held = cached_bytes(data, member)
        cached += held / GB
        cost += (data.size - held) / GB * egress_price(table, data.site, member.site)
    return cost, cached


def _fits_now(request: ResourceRequest, member: MemberFacts) -> bool:
    """Whether some node of ``member`` has the request's cores and memory free now, or
    an offering could hold it (a new node: its boot is no queue)."""
    if any(holds(offering.capacity, request) for offering in member.offerings):
        return True
    for node in member.nodes:
        cores, memory = member.free.get(node.name, (0, 0))
        if holds(node, request) and request.cores <= cores and request.memory_bytes <= memory:
            return True
    return False


def wait_hours(demand: WorkflowDemand, member: MemberFacts, settings: RoutingSettings) -> float:
    """The queue wait expected on ``member``: none when every job fits on a node's free
    room now; else each active workflow's ``queue_hours_per_workflow`` shared by its
    nodes."""
    if all(_fits_now(job.request, member) for job in demand.jobs):
        return 0.0
    hours = settings.queue_hours_per_workflow / 3600.0
    return max(member.active_workflows, 1) * hours / max(len(member.nodes), 1)
