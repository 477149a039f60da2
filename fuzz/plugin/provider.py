"""Types that cross the provider boundary: what the engine passes to a provider and gets back.

A provider (see :class:`Provider`, registered through
:func:`fuzz.plugin.hookspecs.fuzz_register_providers`) receives a :class:`ProviderContext`
with its validated configuration, answers with :class:`Offering` and
:class:`NodeObservation` values, and raises :class:`ProviderError` subclasses
so that the engine and the CLI can say what went wrong in one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from fuzz.errors import FuzzError

NodeState = Literal["pending", "running", "stopping", "gone"]

TAG_CLUSTER = "fuzz:cluster"
TAG_ADDRESS = "fuzz:address"
TAG_CLIENT_TOKEN = "fuzz:client-token"


@dataclass(frozen=True)
class ProviderContext:
    """Everything a provider operation needs to act for one provider block of a cluster spec.

    ``kind`` selects the provider (``aws``, ``local`` …); ``name`` is the block's name in
    the spec (two blocks may share a kind, e.g. two AWS regions); ``config`` is the
    block validated by the plugin's own schema; ``base_dir`` is the spec's directory,
    against which relative paths in ``config`` are resolved.
    """

    kind: str
    name: str
    cluster: str
    config: Any
    base_dir: Path


@dataclass(frozen=True)
class Offering:
    """One kind of node a provider can create (an instance type, a machine class)."""

    name: str
    cores: int
    memory_bytes: int
    gpus: int = 0
    gpu_model: str | None = None
    architecture: str = "x86_64"
    price_per_hour: float = 0.0
    region: str | None = None
    zone: str | None = None


@dataclass(frozen=True)
class JoinInfo:
    """How a new node's agent finds and authenticates to its cluster."""

    token: str
    orchestrator: str | None = None
    ca_pem: str | None = None


@dataclass(frozen=True)
class NodeRequest:
    """A request to create one node, idempotent by ``client_token``.

    Providers must tag the node with ``tags`` (cluster, address and client token)
    so that :meth:`Provider.read_nodes` can find it again,
    also after a crash between the create call and the state write.
    """

    address: str
    pool: str
    client_token: str
    offering: str | None
    labels: Mapping[str, str]
    attributes: Mapping[str, Any]
    tags: Mapping[str, str]
    join: JoinInfo
    bootstrap: str = ""


@dataclass(frozen=True)
class NodeObservation:
    """What a provider sees of one node it manages for a cluster."""

    provider_id: str
    address: str
    client_token: str
    state: NodeState
    endpoint: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)


class ProviderError(FuzzError):
    """A provider call failed; the message says what and, where possible, what to do."""

    category = "provider"


class QuotaExceededError(ProviderError):
    """The account's quota does not allow the request."""

    category = "quota"


class CapacityUnavailableError(ProviderError):
    """The provider has no capacity of that kind right now."""

    category = "capacity"


class AuthenticationError(ProviderError):
    """Credentials are missing, wrong or lack permission."""

    category = "auth"


class NodeNotFoundError(ProviderError):
    """The node does not exist (any more)."""

    category = "not-found"


class Provider(Protocol):
    """The operations of one provider kind, as registered by ``fuzz_register_providers``.

    fuzz calls a kind's provider only with contexts of that kind. An operation that
    answers None is not implemented, which fuzz reports as "does not implement …".
    """

    @property
    def kind(self) -> str:
        """The kind a cluster spec's provider block names, e.g. ``aws``."""
        ...

    @property
    def config_schema(self) -> type[Any] | None:
        """The pydantic model of this kind's provider blocks (forbidding unknown keys).

        ``fuzz validate`` then reports typos with their file, line and field.
        """
        ...

    def offerings(self, ctx: ProviderContext) -> list[Offering] | None:
        """The node types this provider block can create, with prices per hour.

        ``fuzz plan`` checks each pool's offerings against it; the scheduler picks
        the cheapest fit.
        """
        ...

    def bootstrap_payload(
        self, ctx: ProviderContext, node: NodeRequest, join: JoinInfo
    ) -> str | None:
        """The payload that makes a new machine start the fuzz agent.

        For clouds this is cloud-init user-data; for Warewulf an overlay; for the local
        provider a JSON document. It must carry ``join.token`` so the agent can join.
        The engine passes it back as ``NodeRequest.bootstrap`` to :meth:`create_node`.
        """
        ...

    def create_node(self, ctx: ProviderContext, node: NodeRequest) -> NodeObservation | None:
        """Create one node, idempotently by ``node.client_token``.

        Calling it twice with the same token must leave exactly one node, tagged with
        ``node.tags`` so that :meth:`read_nodes` finds it even after a crash right
        after the create call. Return the node as observed now.
        """
        ...

    def read_nodes(self, ctx: ProviderContext) -> list[NodeObservation] | None:
        """Every node this provider block holds for ``ctx.cluster`` (the engine's refresh).

        A recorded node missing from the answer (or ``gone``) no longer exists; a
        listed node unknown to the state is an orphan unless its token matches a
        pending create.
        """
        ...

    def delete_node(self, ctx: ProviderContext, node: NodeObservation) -> bool | None:
        """Delete one node; True once it is gone or deleting, also when it was gone already."""
        ...
