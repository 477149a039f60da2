"""Plan: the pure diff of desired state against refreshed recorded state."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping

from fuzz.engine.gcpause import gc_paused
from fuzz.engine.model import Action, Change, DesiredNode, Plan, RecordedNode
from fuzz.engine.refresh import Refreshed
from fuzz.errors import ConfigError

_ADDRESS = re.compile(r"^pool\.([^.\[]+)\.node\[([^\]]+)\]$")


def address_sort_key(address: str) -> tuple[str, int, str]:
    """Sort addresses by pool, then numerically by index (node[2] before node[10]).

    Addresses of other shapes sort first, by name.
    """
    match = _ADDRESS.match(address)
    if not match:
        return ("", -1, address)
    pool, index = match.groups()
    return (pool, int(index), "") if index.isdigit() else (pool, -1, index)


@gc_paused
def make_plan(
    desired: Mapping[str, DesiredNode],
    refreshed: Refreshed,
    *,
    targets: Collection[str] = (),
    replace: Collection[str] = (),
    destroy: bool = False,
) -> Plan:
    """Diff ``desired`` against ``refreshed`` recorded state into an ordered plan.

    ``targets`` limits the plan to those addresses (or pools: ``pool.cpu``);
    ``replace`` forces replacement of recorded nodes; ``destroy`` plans the
    deletion of everything recorded and every orphan.
    """
    state = refreshed.state
    recorded = state.resources
    wanted: Mapping[str, DesiredNode] = {} if destroy else desired
    if replace:
        _check_addresses("--replace", replace, recorded)
    if targets:
        _check_addresses("--target", targets, {**recorded, **wanted}, prefixes=True)
    gone = refreshed.gone
    changes: list[Change] = []
    # Diff in any order and sort only the changes: a plan of a large, mostly
    # unchanged cluster then costs O(n) rather than O(n log n).
    for address, want in wanted.items():
        change = _diff_one(address, want, recorded.get(address), address in gone,
                           address in replace)
        if change is not None:
            changes.append(change)
    for address, have in recorded.items():
        if address not in wanted:
            changes.append(_delete(address, have, address in gone, destroy))
    for orphan in refreshed.orphans:
        obs = orphan.observation
        record = RecordedNode(
            address=obs.address or f"orphan[{obs.provider_id}]", pool="", provider=orphan.provider,
            kind=orphan.kind, status="created", generation=0, client_token=obs.client_token,
            provider_id=obs.provider_id, observed={"state": obs.state, "endpoint": obs.endpoint},
        )
        changes.append(Change(
            record.address, Action.DELETE,
            f"orphan: {orphan.provider} holds {obs.provider_id} for this cluster "
            "but state does not record it", before=record, orphan=True,
        ))
    changes.sort(key=lambda c: address_sort_key(c.address))
    if targets:
        changes = [c for c in changes if _targeted(c.address, targets)]
    return Plan(state.lineage, state.serial, tuple(changes))


def _delete(address: str, have: RecordedNode, gone: bool, destroy: bool) -> Change:
    reason = "destroy" if destroy else f"no longer wanted by pool {have.pool} of the spec"
    if gone:
        reason += "; the node is already gone, only its record is removed"
    return Change(address, Action.DELETE, reason, before=have)


def _diff_one(
    address: str,
    want: DesiredNode,
    have: RecordedNode | None,
    gone: bool,
    force_replace: bool,
) -> Change | None:
    if have is None:
        return Change(address, Action.CREATE, f"new node in pool {want.pool}",
                      after=want, generation=1)
    if gone:
        return Change(address, Action.CREATE,
                      "the recorded node no longer exists (drift); creating it again",
                      before=have, after=want, generation=have.generation + 1)
    if have.status == "pending_create":
        return Change(address, Action.CREATE,
                      "an earlier create was interrupted; resuming it with the same client token",
                      before=have, after=want, generation=have.generation)
    if force_replace:
        return Change(address, Action.REPLACE, "replacement requested with --replace",
                      before=have, after=want, generation=have.generation + 1)
    same_node = (want.offering == have.offering and want.provider == have.provider
                 and want.kind == have.kind and want.attributes == have.attributes)
    forcing = [] if same_node else _forcing_differences(want, have)
    if forcing:
        return Change(address, Action.REPLACE, f"{'; '.join(forcing)} (forces replacement)",
                      before=have, after=want, generation=have.generation + 1)
    if want.labels != have.labels:
        return Change(address, Action.UPDATE,
                      "labels change: " + _label_diff(have.labels, want.labels),
                      before=have, after=want)
    return None


def _forcing_differences(want: DesiredNode, have: RecordedNode) -> list[str]:
    differences = []
    if want.provider != have.provider or want.kind != have.kind:
        differences.append(f"provider {have.provider} -> {want.provider}")
    if want.offering != have.offering:
        differences.append(f"offering {have.offering or '(default)'} -> "
                           f"{want.offering or '(default)'}")
    if want.attributes != have.attributes:
        keys = sorted(set(want.attributes) | set(have.attributes))
        changed = [k for k in keys if want.attributes.get(k) != have.attributes.get(k)]
        differences.append("attributes change: " + ", ".join(changed))
    return differences


def _label_diff(before: Mapping[str, str], after: Mapping[str, str]) -> str:
    parts = [f"+{k}={v}" for k, v in sorted(after.items()) if before.get(k) != v]
    parts += [f"-{k}" for k in sorted(before) if k not in after]
    return ", ".join(parts)


def _targeted(address: str, targets: Iterable[str]) -> bool:
    return any(address == t or address.startswith(t + ".") for t in targets)


def _check_addresses(
    flag: str, given: Collection[str], known: Mapping[str, object], prefixes: bool = False
) -> None:
    for address in given:
        if address in known or (prefixes and any(_targeted(k, [address]) for k in known)):
            continue
        raise ConfigError(f"{flag} {address}: no such resource in the spec or in state")
