"""A base class for provider plugins that answer for one kind.

Subclass :class:`ProviderPlugin`, set ``kind`` and ``config_schema``, override the
operations you support, and publish an instance through the ``fuzz.providers``
entry point (``mycloud = "fuzz_mycloud.provider:plugin"``). The hook
implementations here answer only for ``kind`` and return None otherwise, as the
first-result hooks of :mod:`fuzz.hookspecs` require. An operation left as is
returns None, which fuzz reports as "does not implement …".
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ValidationError

from fuzz.hookspecs import hookimpl
from fuzz.provider_api import (
    JoinInfo,
    NodeObservation,
    NodeRequest,
    Offering,
    ProviderContext,
    ProviderError,
)

ConfigT = TypeVar("ConfigT", bound=BaseModel)


def provider_config(ctx: ProviderContext, schema: type[ConfigT]) -> ConfigT:
    """``ctx.config`` as a ``schema`` model: as it is when fuzz's loader validated it
    already, else validated now (a ProviderError lists the problems in one line)."""
    if isinstance(ctx.config, schema):
        return ctx.config
    try:
        return schema.model_validate(ctx.config if ctx.config is not None else {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}"
                             for e in exc.errors())
        raise ProviderError(f"{ctx.kind} provider '{ctx.name}': {problems}") from None


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
