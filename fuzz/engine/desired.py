"""Desired state: the nodes a cluster spec asks for, given each pool's wanted size."""

from __future__ import annotations

from collections.abc import Mapping

from fuzz.engine.gcpause import gc_paused
from fuzz.engine.model import DesiredNode, node_address
from fuzz.spec.cluster import ClusterSpec, PoolSpec


def pool_bounds(pool: PoolSpec) -> tuple[int, int]:
    """The (min, max) node count of an elastic pool; ``max`` defaults to ``min``."""
    return pool.min, pool.max if pool.max is not None else pool.min


@gc_paused
def desired_nodes(
    spec: ClusterSpec, pool_sizes: Mapping[str, int] | None = None
) -> dict[str, DesiredNode]:
    """Return the desired nodes by address.

    A static pool wants each listed machine. An elastic pool wants ``pool_sizes[pool]``
    nodes (what pending work asks for), clamped to the pool's min and max, or
    ``min`` when no size is given. Addresses are stable: ``pool.<name>.node[<i>]``
    for elastic pools, ``pool.<name>.node[<machine>]`` for static ones.
    """
    sizes = pool_sizes or {}
    nodes: dict[str, DesiredNode] = {}
    for pool_name, pool in spec.pools.items():
        kind = spec.provider_kind(pool.provider)
        labels = dict(pool.labels)
        if pool.nodes is not None:
            for machine in pool.nodes:
                address = node_address(pool_name, machine.name)
                nodes[address] = DesiredNode(
                    address, pool_name, pool.provider, kind,
                    attributes={"name": machine.name, **machine.provider_attributes()},
                    labels=labels,
                )
            continue
        low, high = pool_bounds(pool)
        count = min(max(sizes.get(pool_name, low), low), high)
        offering = pool.offerings[0] if pool.offerings else None
        for index in range(count):
            address = node_address(pool_name, index)
            nodes[address] = DesiredNode(
                address, pool_name, pool.provider, kind, offering=offering, labels=labels
            )
    return nodes
