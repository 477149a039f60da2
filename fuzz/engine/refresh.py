"""Refresh: merge the providers' observations into recorded state. Pure; no I/O."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

from fuzz.engine.gcpause import gc_paused
from fuzz.engine.model import RecordedNode, State
from fuzz.plugin.provider import NodeObservation


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


@gc_paused
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
    index = {name: _Index(obs) for name, obs in observations.items()}
    for address, record in state.resources.items():
        seen = index.get(record.provider)
        if seen is None:
            continue
        obs = seen.claim(record)
        if obs is None or obs.state == "gone":
            if record.status == "created" or obs is not None:
                result.gone.add(address)
            continue
        updated = _observed(record, obs)
        if updated is not record:
            result.state.resources[address] = updated
        if record.status == "pending_create":
            result.adopted.add(address)
    for name, seen in index.items():
        result.orphans.extend(
            Orphan(name, kinds.get(name, name), obs)
            for obs in seen.unclaimed() if obs.state != "gone"
        )
    return result


class _Index:
    """One provider's observations; claiming one takes it out, what is left are orphans."""

    def __init__(self, observations: Collection[NodeObservation]) -> None:
        self.observations = observations
        self.by_id = {obs.provider_id: obs for obs in observations}
        self._by_token: dict[str, NodeObservation] | None = None

    def claim(self, record: RecordedNode) -> NodeObservation | None:
        """Take the observation of a recorded node: by its provider id, else its client token.

        A node with a provider id is looked up by id alone: an idempotent create never
        gives one client token two ids. The token index is built only when a pending
        create (no id yet) needs it.
        """
        if record.provider_id:
            return self.by_id.pop(record.provider_id, None)
        if self._by_token is None:
            self._by_token = {o.client_token: o for o in self.observations if o.client_token}
        found = self._by_token.pop(record.client_token, None)
        if found is not None:
            self.by_id.pop(found.provider_id, None)
        return found

    def unclaimed(self) -> Collection[NodeObservation]:
        """The observations no recorded node claimed."""
        return self.by_id.values()


def _observed(record: RecordedNode, obs: NodeObservation) -> RecordedNode:
    observed = observed_attributes(obs)
    if (record.status == "created" and record.provider_id == obs.provider_id
            and record.observed == observed):
        return record
    return replace(record, status="created", provider_id=obs.provider_id, observed=observed)
