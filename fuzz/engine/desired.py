"""Desired state: the nodes a cluster spec asks for, given each elastic pool's membership.

An elastic pool's desired nodes are an explicit *membership*: address → offering.
Without orchestrator input (``fuzz plan`` / ``fuzz apply``) it is the pool's
recorded members, topped up to ``min`` and trimmed to ``max``
(:func:`recorded_membership`), so a CI apply keeps the nodes the orchestrator
added. The orchestrator passes its own membership (recorded members, plus the
nodes it adds, minus the ones it drains).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from fuzz.engine.gcpause import gc_paused
from fuzz.engine.model import EMPTY, DesiredNode, RecordedNode, node_address
from fuzz.spec.cluster import ClusterSpec, PoolSpec
from fuzz.substrate.monitor.jobnet import NETWORK_LABEL

Membership = Mapping[str, str | None]
"""An elastic pool's members: address → offering (None: the provider's default)."""

SPOT_ATTRIBUTES: Mapping[str, bool] = MappingProxyType({"spot": True})
"""The node attributes of a pool with ``spot: true`` (shared by all its nodes)."""


def pool_bounds(pool: PoolSpec) -> tuple[int, int]:
    """The (min, max) node count of an elastic pool; ``max`` defaults to ``min``."""
    return pool.min, pool.max if pool.max is not None else pool.min


def node_index(address: str) -> int:
    """The index of an elastic pool's node address (``pool.cpu.node[3]`` → 3)."""
    return int(address[address.rindex("[") + 1:-1])


def free_addresses(pool_name: str, taken: Iterable[str], count: int) -> list[str]:
    """The ``count`` lowest addresses of ``pool_name`` that ``taken`` does not hold."""
    used = {node_index(address) for address in taken}
    found: list[str] = []
    index = 0
    while len(found) < count:
        if index not in used:
            found.append(node_address(pool_name, index))
        index += 1
    return found


def bounded(pool_name: str, pool: PoolSpec, members: Mapping[str, str | None]) -> dict[
        str, str | None]:
    """``members`` topped up to the pool's ``min`` (lowest free indexes, first offering)
    and trimmed to its ``max`` (highest indexes go first)."""
    low, high = pool_bounds(pool)
    result = dict(members)
    if len(result) < low:
        first = pool.offerings[0] if pool.offerings else None
        for address in free_addresses(pool_name, result, low - len(result)):
            result[address] = first
    elif len(result) > high:
        for address in sorted(result, key=node_index)[high:]:
            del result[address]
    return result


def recorded_membership(pool_name: str, pool: PoolSpec,
                        recorded: Iterable[RecordedNode]) -> dict[str, str | None]:
    """Rule for ``fuzz plan``/``apply``: the pool's recorded members, bounded by min and max.

    A member keeps its recorded offering while the pool still allows it; a member
    whose offering the pool no longer lists wants the pool's first offering (a
    replacement the plan explains).
    """
    allowed = set(pool.offerings)
    first = pool.offerings[0] if pool.offerings else None
    members = {
        node.address: node.offering if not allowed or node.offering in allowed else first
        for node in recorded if node.pool == pool_name
    }
    return bounded(pool_name, pool, members)


@gc_paused
def desired_nodes(
    spec: ClusterSpec,
    recorded: Mapping[str, RecordedNode] = EMPTY,
    membership: Mapping[str, Membership] | None = None,
) -> dict[str, DesiredNode]:
    """Return the desired nodes by address.

    A static pool wants each listed machine. An elastic pool wants the members
    ``membership[pool]`` names (bounded by min and max), or, when it is not given,
    its ``recorded`` members bounded the same way (:func:`recorded_membership`).
    Addresses are stable: ``pool.<name>.node[<i>]`` for elastic pools,
    ``pool.<name>.node[<machine>]`` for static ones.
    """
    given = membership or {}
    by_pool: dict[str, list[RecordedNode]] = {}
    for node in recorded.values():
        by_pool.setdefault(node.pool, []).append(node)
    nodes: dict[str, DesiredNode] = {}
    for pool_name, pool in spec.pools.items():
        kind = spec.provider_kind(pool.provider)
        labels = dict(pool.labels)
        if pool.network == "host":
            labels[NETWORK_LABEL] = "host"  # the agent reads it: jobs keep the node's network
        if pool.nodes is not None:
            for machine in pool.nodes:
                address = node_address(pool_name, machine.name)
                nodes[address] = DesiredNode(
                    address, pool_name, pool.provider, kind,
                    attributes={"name": machine.name, **machine.provider_attributes()},
                    labels=labels,
                )
            continue
        if pool_name in given:
            members = bounded(pool_name, pool, given[pool_name])
        else:
            members = recorded_membership(pool_name, pool, by_pool.get(pool_name, ()))
        attributes = SPOT_ATTRIBUTES if pool.spot else EMPTY
        for address in members:
            nodes[address] = DesiredNode(address, pool_name, pool.provider, kind,
                                         offering=members[address], attributes=attributes,
                                         labels=labels)
    return nodes
