"""A base class for provider plugins that answer for one kind.

Subclass :class:`ProviderPlugin`, set ``kind`` and ``config_schema``, override the
operations you support, and publish an instance through the ``fuzz.providers``
entry point (``mycloud = "fuzz_mycloud.provider:plugin"``). The hook
implementations here answer only for ``kind`` and return None otherwise, as the
first-result hooks of :mod:`fuzz.hookspecs` require. An operation left as is
returns None, which fuzz reports as "does not implement …".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from fuzz.errors import ConfigError
from fuzz.hookspecs import hookimpl
from fuzz.provider_api import (
    JoinInfo,
    NodeObservation,
    NodeRequest,
    Offering,
    ProviderContext,
)

ConfigT = TypeVar("ConfigT", bound=BaseModel)


class ProviderPlugin:
    """Dispatches the provider hooks of one ``kind`` to overridable methods."""

    kind: ClassVar[str] = ""
    config_schema: ClassVar[type[Any] | None] = None

    # --- operations: override the ones this provider supports ----------------------

    def offerings(self, ctx: ProviderContext) -> list[Offering] | None:
        """The node types this provider block can create."""
        return None

    def bootstrap_payload(
        self, ctx: ProviderContext, node: NodeRequest, join: JoinInfo
    ) -> str | None:
        """The payload that starts the agent on a new node."""
        return None

    def create_node(self, ctx: ProviderContext, node: NodeRequest) -> NodeObservation | None:
        """Create a node, idempotently by ``node.client_token``."""
        return None

    def read_nodes(self, ctx: ProviderContext) -> list[NodeObservation] | None:
        """Every node this provider block holds for ``ctx.cluster``."""
        return None

    def delete_node(self, ctx: ProviderContext, node: NodeObservation) -> bool | None:
        """Delete a node; True once it is gone or going."""
        return None

    # --- hook implementations: kind dispatch -------------------------------------

    @hookimpl
    def fuzz_provider_kinds(self) -> list[str]:
        """This plugin's one kind."""
        return [self.kind]

    @hookimpl
    def fuzz_provider_config_schema(self, kind: str) -> type[Any] | None:
        """The schema of this kind's provider blocks."""
        return self.config_schema if kind == self.kind else None

    @hookimpl
    def fuzz_provider_offerings(self, ctx: ProviderContext) -> list[Offering] | None:
        """See :meth:`offerings`."""
        return self.offerings(ctx) if ctx.kind == self.kind else None

    @hookimpl
    def fuzz_provider_bootstrap_payload(
        self, ctx: ProviderContext, node: NodeRequest, join: JoinInfo
    ) -> str | None:
        """See :meth:`bootstrap_payload`."""
        return self.bootstrap_payload(ctx, node, join) if ctx.kind == self.kind else None

    @hookimpl
    def fuzz_provider_create_node(
        self, ctx: ProviderContext, node: NodeRequest
    ) -> NodeObservation | None:
        """See :meth:`create_node`."""
        return self.create_node(ctx, node) if ctx.kind == self.kind else None

    @hookimpl
    def fuzz_provider_read_nodes(self, ctx: ProviderContext) -> list[NodeObservation] | None:
        """See :meth:`read_nodes`."""
        return self.read_nodes(ctx) if ctx.kind == self.kind else None

    @hookimpl
    def fuzz_provider_delete_node(self, ctx: ProviderContext, node: NodeObservation) -> bool | None:
        """See :meth:`delete_node`."""
        return self.delete_node(ctx, node) if ctx.kind == self.kind else None


def validated_config(schema: type[ConfigT], ctx: ProviderContext) -> ConfigT:
    """``ctx.config`` as a ``schema`` instance: as is when already validated, else validated now.

    The gateway hands plugins validated configs; a context built by hand (a test, the
    conformance kit) may carry a plain mapping. Invalid config raises one-line ConfigError.
    """
    if isinstance(ctx.config, schema):
        return ctx.config
    try:
        return schema.model_validate(ctx.config if ctx.config is not None else {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'config'}: {error['msg']}"
            for error in exc.errors()
        )
        raise ConfigError(f"{ctx.kind} provider '{ctx.name}': {problems}") from None


def priced_offering(ctx: ProviderContext, node: NodeRequest, prices: Mapping[str, float]) -> str:
    """The node's offering, which must be one the provider block prices (else ConfigError).

    For cloud providers whose offerings are the instance types listed under ``prices``.
    """
    priced = ", ".join(sorted(prices))
    if not node.offering:
        raise ConfigError(
            f"{ctx.kind} provider '{ctx.name}': pool {node.pool} names no offering; list one "
            f"of the priced types under the pool's offerings ({priced})"
        )
    if node.offering not in prices:
        raise ConfigError(
            f"{ctx.kind} provider '{ctx.name}': offering {node.offering} has no price; add it "
            f"under prices (priced: {priced})"
        )
    return node.offering


class NodeOperations(Protocol):
    """A cloud's node operations, as :class:`CloudInitProvider` delegates them."""

    def offerings(self, ctx: ProviderContext) -> list[Offering]:
        """The node types the provider block can create."""

    def create_node(self, ctx: ProviderContext, node: NodeRequest) -> NodeObservation:
        """Create a node, idempotently by its client token."""

    def read_nodes(self, ctx: ProviderContext) -> list[NodeObservation]:
        """Every node the provider block holds for the cluster."""

    def delete_node(self, ctx: ProviderContext, node: NodeObservation) -> bool:
        """Delete a node; True once it is gone or going."""


class CloudInitProvider(ProviderPlugin):
    """A cloud provider: nodes boot from cloud-init user-data, operations load on first use.

    Every fuzz command loads every installed provider plugin, and cloud SDKs take
    seconds to import; a subclass keeps its module light (the config schema only)
    and imports its SDK in :meth:`load_operations`, which runs on the first hook
    call for its kind. ``config_schema`` must have a ``bootstrap`` field
    (:class:`fuzz.bootstrap.BootstrapSettings`).
    """

    _operations: NodeOperations | None = None

    def load_operations(self) -> NodeOperations:
        """Import the SDK and return the node operations (called once)."""
        raise NotImplementedError

    def operations(self) -> NodeOperations:
        """The node operations, loaded on first use."""
        if self._operations is None:
            self._operations = self.load_operations()
        return self._operations

    def offerings(self, ctx: ProviderContext) -> list[Offering] | None:
        """The node types the provider block prices."""
        return self.operations().offerings(ctx)

    def bootstrap_payload(
        self, ctx: ProviderContext, node: NodeRequest, join: JoinInfo
    ) -> str | None:
        """The cloud-init script (:func:`fuzz.bootstrap.cloud_init_script`) for the node."""
        from fuzz.bootstrap import cloud_init_script

        assert self.config_schema is not None, f"provider {self.kind} has no config schema"
        settings = validated_config(self.config_schema, ctx).bootstrap
        return cloud_init_script(node, join, settings)

    def create_node(self, ctx: ProviderContext, node: NodeRequest) -> NodeObservation | None:
        """Create the node (or adopt the one an earlier try made)."""
        return self.operations().create_node(ctx, node)

    def read_nodes(self, ctx: ProviderContext) -> list[NodeObservation] | None:
        """The nodes tagged with this cluster and provider block."""
        return self.operations().read_nodes(ctx)

    def delete_node(self, ctx: ProviderContext, node: NodeObservation) -> bool | None:
        """Delete the node; True once deleting or gone."""
        return self.operations().delete_node(ctx, node)
