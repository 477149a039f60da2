"""The engine's data: desired nodes, recorded state, and plans. Pure data, no I/O."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

from fuzz.errors import StateError

STATE_FORMAT_VERSION = 1

RecordStatus = Literal["created", "pending_create"]

# One shared, read-only empty mapping: most nodes have no attributes, and a large
# cluster should not allocate an empty dict per node.
EMPTY: Mapping[str, Any] = MappingProxyType({})


def _mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A stored mapping, sharing one empty mapping for the (common) empty case."""
    return dict(value) if value else EMPTY


def node_address(pool: str, index: int | str) -> str:
    """The stable address of a pool's node: ``pool.cpu.node[3]`` or ``pool.metal.node[n01]``."""
    return f"pool.{pool}.node[{index}]"


def client_token(lineage: str, address: str, generation: int) -> str:
    """The idempotency token for one create of ``address``: same inputs, same token.

    ``generation`` counts the creates of that address, so a node that is replaced
    gets a new token (cloud APIs remember tokens of terminated instances for hours).
    """
    digest = hashlib.sha256(f"{lineage}\0{address}\0{generation}".encode()).hexdigest()
    return digest[:32]


class DesiredNode(NamedTuple):
    """A node the cluster spec (plus pending work) asks for.

    ``attributes`` force a replacement when they change (offering, static machine
    settings); ``labels`` are updated in place. A NamedTuple rather than a frozen
    dataclass: desired state is rebuilt on every plan, and a large cluster's plan
    time is dominated by building these (about 2.5x cheaper as a tuple).
    """

    address: str
    pool: str
    provider: str
    kind: str
    offering: str | None = None
    attributes: Mapping[str, Any] = EMPTY
    labels: Mapping[str, str] = EMPTY


@dataclass(frozen=True, slots=True)
class RecordedNode:
    """A node as recorded in state: what fuzz created (or is creating) and the provider's id."""

    address: str
    pool: str
    provider: str
    kind: str
    status: RecordStatus
    generation: int
    client_token: str
    provider_id: str | None = None
    offering: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=lambda: EMPTY)
    labels: Mapping[str, str] = field(default_factory=lambda: EMPTY)
    observed: Mapping[str, Any] = field(default_factory=lambda: EMPTY)

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form stored in state."""
        return {
            "address": self.address,
            "pool": self.pool,
            "provider": self.provider,
            "kind": self.kind,
            "status": self.status,
            "generation": self.generation,
            "client_token": self.client_token,
            "provider_id": self.provider_id,
            "offering": self.offering,
            "attributes": dict(self.attributes),
            "labels": dict(self.labels),
            "observed": dict(self.observed),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RecordedNode:
        """Parse the JSON form; raises StateError naming the missing field."""
        try:
            status = data["status"]
            if status not in ("created", "pending_create"):
                raise StateError(f"resource {data.get('address')}: unknown status {status!r}")
            return cls(
                address=str(data["address"]),
                pool=str(data["pool"]),
                provider=str(data["provider"]),
                kind=str(data["kind"]),
                status=status,
                generation=int(data["generation"]),
                client_token=str(data["client_token"]),
                provider_id=data.get("provider_id"),
                offering=data.get("offering"),
                attributes=_mapping(data.get("attributes")),
                labels=_mapping(data.get("labels")),
                observed=_mapping(data.get("observed")),
            )
        except KeyError as exc:
            raise StateError(
                f"resource {data.get('address', '?')}: missing field {exc.args[0]!r}"
            ) from None


@dataclass(slots=True)
class State:
    """Recorded state: a lineage, a serial that grows with every change, and the resources."""

    lineage: str
    serial: int = 0
    cluster: str = ""
    resources: dict[str, RecordedNode] = field(default_factory=dict)

    @classmethod
    def new(cls, cluster: str = "") -> State:
        """An empty state with a fresh lineage."""
        return cls(lineage=str(uuid.uuid4()), serial=0, cluster=cluster)

    def copy(self) -> State:
        """A copy whose resource map can be changed without touching this one."""
        return replace(self, resources=dict(self.resources))

    def content_json(self) -> dict[str, Any]:
        """The JSON form without the serial: two states with equal content are equal here."""
        return {
            "format_version": STATE_FORMAT_VERSION,
            "lineage": self.lineage,
            "cluster": self.cluster,
            "resources": {a: r.to_json() for a, r in sorted(self.resources.items())},
        }

    def to_json(self) -> dict[str, Any]:
        """The full JSON form stored by a backend."""
        data = self.content_json()
        data["serial"] = self.serial
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> State:
        """Parse stored state, refusing unknown format versions."""
        if not isinstance(data, Mapping):
            raise StateError("state is not a JSON object")
        version = data.get("format_version")
        if version != STATE_FORMAT_VERSION:
            raise StateError(
                f"state format_version {version!r} is not supported "
                f"(this fuzz reads version {STATE_FORMAT_VERSION})"
            )
        try:
            lineage = str(data["lineage"])
            serial = int(data["serial"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"state is missing a valid {exc}") from None
        resources = {
            address: RecordedNode.from_json(raw)
            for address, raw in (data.get("resources") or {}).items()
        }
        return cls(lineage, serial, str(data.get("cluster") or ""), resources)


class Action(StrEnum):
    """What apply will do to one resource."""

    CREATE = "create"
    UPDATE = "update"
    REPLACE = "replace"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Change:
    """One planned action on one address, with the reason shown to the user.

    ``before`` is the recorded node (absent for new creates); ``after`` the desired
    node (absent for deletes). Orphans are deletes with ``before`` built from the
    provider's observation. ``generation`` is the create generation a create or
    replace will use: the same as ``before`` when resuming an interrupted create
    (same client token), one more when the node is new, gone or replaced.
    """

    address: str
    action: Action
    reason: str
    before: RecordedNode | None = None
    after: DesiredNode | None = None
    orphan: bool = False
    generation: int = 0

    def to_json(self) -> dict[str, Any]:
        """The JSON form used by ``fuzz plan --json`` and plan files."""
        return {
            "address": self.address,
            "action": self.action.value,
            "reason": self.reason,
            "orphan": self.orphan,
            "generation": self.generation,
            "before": self.before.to_json() if self.before else None,
            "after": desired_to_json(self.after) if self.after else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Change:
        """Parse the JSON form of :meth:`to_json`."""
        before, after = data.get("before"), data.get("after")
        return cls(
            address=str(data["address"]),
            action=Action(data["action"]),
            reason=str(data["reason"]),
            orphan=bool(data.get("orphan", False)),
            generation=int(data.get("generation", 0)),
            before=RecordedNode.from_json(before) if before else None,
            after=desired_from_json(after) if after else None,
        )


def desired_to_json(node: DesiredNode) -> dict[str, Any]:
    """The JSON form of a desired node."""
    return {
        "address": node.address,
        "pool": node.pool,
        "provider": node.provider,
        "kind": node.kind,
        "offering": node.offering,
        "attributes": dict(node.attributes),
        "labels": dict(node.labels),
    }


def desired_from_json(data: Mapping[str, Any]) -> DesiredNode:
    """Parse :func:`desired_to_json` output."""
    return DesiredNode(
        address=str(data["address"]),
        pool=str(data["pool"]),
        provider=str(data["provider"]),
        kind=str(data["kind"]),
        offering=data.get("offering"),
        attributes=dict(data.get("attributes") or {}),
        labels=dict(data.get("labels") or {}),
    )


@dataclass(frozen=True, slots=True)
class Plan:
    """The changes that take recorded state (lineage, serial) to the desired state."""

    lineage: str
    serial: int
    changes: tuple[Change, ...]

    @property
    def has_changes(self) -> bool:
        """True when apply would change anything."""
        return bool(self.changes)

    def counts(self) -> dict[str, int]:
        """Number of changes per action, for the summary line."""
        counts = {a.value: 0 for a in Action}
        for change in self.changes:
            counts[change.action.value] += 1
        return counts

    def to_json(self) -> dict[str, Any]:
        """The JSON form used by ``fuzz plan --json`` and plan files."""
        return {
            "lineage": self.lineage,
            "serial": self.serial,
            "summary": self.counts(),
            "changes": [c.to_json() for c in self.changes],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Plan:
        """Parse :meth:`to_json` output."""
        return cls(
            lineage=str(data["lineage"]),
            serial=int(data["serial"]),
            changes=tuple(Change.from_json(c) for c in data.get("changes", [])),
        )
