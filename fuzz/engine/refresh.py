"""Refresh: merge the providers' observations into recorded state. Pure; no I/O."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

from fuzz.engine.model import RecordedNode, State
from fuzz.provider_api import NodeObservation


@dataclass(frozen=True)
class Orphan:
    """A node a provider holds for this cluster that recorded state does not know."""

    provider: str
    kind: str
    observation: NodeObservation


@dataclass
class Refreshed:
    """Recorded state after refresh, with what refresh found out of line.

    ``gone`` holds the addresses whose node no longer exists (drift); ``orphans``
    the provider nodes nobody recorded; ``adopted`` the pending creates that turned
    out to exist (found by client token) and are now recorded as created.
    """

    state: State
    gone: set[str] = field(default_factory=set)
    orphans: list[Orphan] = field(default_factory=list)
    adopted: set[str] = field(default_factory=set)


def observed_attributes(obs: NodeObservation) -> dict[str, object]:
    """What state records of an observation: its endpoint, state and provider attributes."""
    return {"state": obs.state, "endpoint": obs.endpoint, **obs.attributes}


def refresh(
    state: State,
    observations: Mapping[str, Sequence[NodeObservation]],
    kinds: Mapping[str, str],
) -> Refreshed:
    """Reconcile recorded state with what each provider block reports.

    ``observations`` maps a provider block name to every node it holds for the
    cluster; only recorded nodes of those providers are checked, so refreshing a
    subset (or none, for ``--no-refresh``) leaves the others as recorded.
    ``kinds`` maps provider block names to their plugin kind, for orphans.
    """
    result = Refreshed(state.copy())
    claimed: set[tuple[str, str]] = set()
    index = {name: _index(obs) for name, obs in observations.items()}
    for address, record in state.resources.items():
        by_key = index.get(record.provider)
        if by_key is None:
            continue
        obs = by_key.get(record.provider_id or "") or by_key.get(_token_key(record))
        if obs is None or obs.state == "gone":
            if record.status == "created" or obs is not None:
                result.gone.add(address)
            if obs is not None:
                claimed.add((record.provider, obs.provider_id))
            continue
        claimed.add((record.provider, obs.provider_id))
        result.state.resources[address] = _observed(record, obs)
        if record.status == "pending_create":
            result.adopted.add(address)
    for name, seen in observations.items():
        result.orphans.extend(
            Orphan(name, kinds.get(name, name), obs)
            for obs in seen
            if obs.state != "gone" and (name, obs.provider_id) not in claimed
        )
    return result


def _token_key(record: RecordedNode) -> str:
    return "token:" + record.client_token


def _index(observations: Collection[NodeObservation]) -> dict[str, NodeObservation]:
    by_key: dict[str, NodeObservation] = {}
    for obs in observations:
        by_key[obs.provider_id] = obs
        if obs.client_token:
            by_key["token:" + obs.client_token] = obs
    return by_key


def _observed(record: RecordedNode, obs: NodeObservation) -> RecordedNode:
    observed = observed_attributes(obs)
    if (record.status == "created" and record.provider_id == obs.provider_id
            and record.observed == observed):
        return record
    return replace(
        record,
        status="created",
        provider_id=obs.provider_id,
        observed=observed,
    )
