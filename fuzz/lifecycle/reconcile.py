"""One pass of the reconcile loop: refresh, plan, apply. Shared by the CLI and the orchestrator.

    desired  = spec (+ the elastic pools' membership the orchestrator decides)
    recorded = the state store
    observed = the providers (refresh)
    plan     = diff(desired, recorded, observed)      # pure
    apply    → provider operations → new recorded state (locked, serial + 1 per step)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from fuzz.engine.apply import ApplyEvent, ApplyResult, apply_plan
from fuzz.engine.desired import Membership, desired_nodes
from fuzz.engine.gcpause import gc_paused
from fuzz.engine.model import Plan, State
from fuzz.engine.planner import make_plan
from fuzz.engine.refresh import Refreshed, refresh
from fuzz.lifecycle.drain import DrainingOperations, DrainSettings, nodes_to_drain
from fuzz.lifecycle.gateway import ProviderGateway
from fuzz.lifecycle.statestore import StateStore
from fuzz.spec.cluster import ClusterSpec


@dataclass(frozen=True)
class PlanRequest:
    """What to plan: the options of ``fuzz plan``, ``fuzz apply`` and ``fuzz destroy``."""

    do_refresh: bool = True
    targets: Collection[str] = ()
    replace: Collection[str] = ()
    destroy: bool = False
    membership: Mapping[str, Membership] | None = None  # None: rule of recorded members


def refresh_state(state: State, gateway: ProviderGateway, do_refresh: bool) -> Refreshed:
    """Ask every provider block in use what it holds, and merge that into ``state``."""
    if not do_refresh:
        return refresh(state, {}, gateway.kinds())
    in_use = set(gateway.contexts) | {r.provider for r in state.resources.values()}
    return refresh(state, gateway.observe(sorted(in_use)), gateway.kinds())


def plan_changes(spec: ClusterSpec, refreshed: Refreshed, request: PlanRequest) -> Plan:
    """The pure part: desired state from the spec, diffed against refreshed state."""
    return make_plan(
        desired_nodes(spec, refreshed.state.resources, request.membership), refreshed,
        targets=request.targets, replace=request.replace, destroy=request.destroy,
    )


@gc_paused
def refresh_and_plan(
    spec: ClusterSpec,
    gateway: ProviderGateway,
    store: StateStore,
    request: PlanRequest,
    persist_refresh: bool,
) -> tuple[Plan, State]:
    """Read state, refresh it, optionally record what refresh learnt, and plan.

    Returns the plan and the state it was made against. With ``persist_refresh``
    (apply) the refreshed state is written first, so the plan's serial is the
    one apply will start from; without it (plan) nothing is written.
    """
    return refresh_and_decide(spec, gateway, store, lambda _: request, persist_refresh,
                              do_refresh=request.do_refresh)


@gc_paused
def refresh_and_decide(
    spec: ClusterSpec,
    gateway: ProviderGateway,
    store: StateStore,
    decide: Callable[[State], PlanRequest],
    persist_refresh: bool,
    do_refresh: bool = True,
) -> tuple[Plan, State]:
    """As :func:`refresh_and_plan`, with the request decided from the refreshed state.

    The orchestrator's elastic loop decides its pools' membership from what refresh found.
    """
    state = store.read_or_create(spec.cluster)
    refreshed = refresh_state(state, gateway, do_refresh)
    if persist_refresh:
        refreshed.state = store.write(refreshed.state)
    request = decide(refreshed.state)
    return plan_changes(spec, refreshed, request), refreshed.state


def apply_changes(
    plan: Plan,
    state: State,
    gateway: ProviderGateway,
    store: StateStore,
    parallelism: int,
    on_event: Callable[[ApplyEvent], None],
    cancel: threading.Event | None = None,
    drain: DrainSettings | None = None,
) -> ApplyResult:
    """Carry out ``plan`` through the providers, writing state after every step.

    With ``drain`` (an orchestrator runs), the nodes the plan deletes or replaces
    are drained first (see :mod:`fuzz.lifecycle.drain`).
    """
    if drain is None:
        return apply_plan(plan, state, gateway, store.write, parallelism=parallelism,
                          on_event=on_event, cancel=cancel)
    with DrainingOperations(gateway, drain, nodes_to_drain(plan)) as operations:
        return apply_plan(plan, state, operations, store.write, parallelism=parallelism,
                          on_event=on_event, cancel=cancel)
