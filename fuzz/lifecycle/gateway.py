"""The provider gateway: the engine's node operations, carried out by the registered providers.

This is where the pure engine meets I/O. It builds each provider block's
:class:`~fuzz.plugin.provider.ProviderContext` from the validated spec, calls the
provider registered for the block's kind, and turns an operation the provider does
not implement (it answers None) into a clear PluginError.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any, TypeVar

from fuzz.engine.model import DesiredNode, RecordedNode
from fuzz.errors import ConfigError, PluginError
from fuzz.plugin.loader import PluginSet
from fuzz.plugin.provider import (
    TAG_ADDRESS,
    TAG_CLIENT_TOKEN,
    TAG_CLUSTER,
    JoinInfo,
    NodeObservation,
    NodeRequest,
    Offering,
    ProviderContext,
)
from fuzz.spec.loader import LoadedSpec, validate_block

T = TypeVar("T")


def provider_contexts(loaded: LoadedSpec, plugins: PluginSet) -> dict[str, ProviderContext]:
    """Validate every provider block of the spec with its plugin's schema.

    Raises PluginError when a block's kind has no (working) plugin, and SpecError
    (with file:line:col) when a block does not match the plugin's schema.
    """
    spec = loaded.spec
    contexts = {}
    for name, block in spec.providers.items():
        kind = spec.provider_kind(name)
        schema = plugins.require_provider(kind).impl.config_schema
        config: Any = block.provider_config()
        if schema is not None:
            config = validate_block(loaded, ("providers", name), schema, config)
        contexts[name] = ProviderContext(kind, name, spec.cluster, config, loaded.base_dir)
    return contexts


class ProviderGateway:
    """Node operations for the engine, dispatched to the plugin of each provider block."""

    def __init__(
        self, plugins: PluginSet, contexts: dict[str, ProviderContext],
        join: Callable[[str], JoinInfo] | None = None,
    ) -> None:
        """Dispatch to ``plugins``; ``join`` gives a new node (by address) its join info.

        Without ``join`` (a cluster with no orchestrator) a node gets a token of its
        own and joins nothing.
        """
        self.plugins = plugins
        self.contexts = contexts
        self._join = join

    def kinds(self) -> dict[str, str]:
        """Provider block name → plugin kind."""
        return {name: ctx.kind for name, ctx in self.contexts.items()}

    def context(self, provider: str) -> ProviderContext:
        """The context of a provider block, or a ConfigError if the spec no longer has it."""
        try:
            return self.contexts[provider]
        except KeyError:
            raise ConfigError(
                f"state records nodes of provider '{provider}', which the spec no longer "
                f"declares; restore its block under providers:, or forget those nodes with "
                f"fuzz state rm"
            ) from None

    def _answered(self, ctx: ProviderContext, operation: str, result: T | None) -> T:
        """``result``, unless the provider answered None: it does not implement ``operation``."""
        if result is None:
            plugin = self.plugins.require_provider(ctx.kind).plugin
            raise PluginError(
                f"provider plugin '{ctx.kind}' ({plugin.distribution} {plugin.version}) "
                f"does not implement {operation} yet"
            )
        return result

    def offerings_of(self, ctx: ProviderContext) -> list[Offering]:
        """The node types the provider block of ``ctx`` can create."""
        provider = self.plugins.require_provider(ctx.kind).impl
        return list(self._answered(ctx, "offerings", provider.offerings(ctx)))

    def bootstrap_payload(self, ctx: ProviderContext, node: NodeRequest, join: JoinInfo) -> str:
        """The payload that starts the agent on ``node``."""
        provider = self.plugins.require_provider(ctx.kind).impl
        payload = provider.bootstrap_payload(ctx, node, join)
        return self._answered(ctx, "bootstrap_payload", payload)

    def create_node(self, ctx: ProviderContext, node: NodeRequest) -> NodeObservation:
        """Create ``node``, idempotently by its client token."""
        provider = self.plugins.require_provider(ctx.kind).impl
        return self._answered(ctx, "create_node", provider.create_node(ctx, node))

    def read_nodes(self, ctx: ProviderContext) -> list[NodeObservation]:
        """Every node the provider block of ``ctx`` holds for its cluster."""
        provider = self.plugins.require_provider(ctx.kind).impl
        return list(self._answered(ctx, "read_nodes", provider.read_nodes(ctx)))

    def delete_node(self, ctx: ProviderContext, node: NodeObservation) -> bool:
        """Delete ``node``; True once it is gone or going."""
        provider = self.plugins.require_provider(ctx.kind).impl
        return self._answered(ctx, "delete_node", provider.delete_node(ctx, node))

    def observe(self, providers: Iterable[str]) -> dict[str, list[NodeObservation]]:
        """Every node each named provider block holds for the cluster (refresh)."""
        return {name: self.read_nodes(self.context(name)) for name in providers}

    def offerings(self, provider: str) -> list[Offering]:
        """The offerings of one provider block."""
        return self.offerings_of(self.context(provider))

    def create(self, node: DesiredNode, token: str) -> NodeObservation:
        """Create ``node`` through its provider, idempotently by ``token``."""
        ctx = self.context(node.provider)
        join = self._join(node.address) if self._join else JoinInfo(secrets.token_urlsafe(32))
        request = NodeRequest(
            address=node.address, pool=node.pool, client_token=token, offering=node.offering,
            labels=dict(node.labels), attributes=dict(node.attributes),
            tags={TAG_CLUSTER: ctx.cluster, TAG_ADDRESS: node.address, TAG_CLIENT_TOKEN: token},
            join=join,
        )
        request = replace(request, bootstrap=self.bootstrap_payload(ctx, request, join))
        return self.create_node(ctx, request)

    def delete(self, record: RecordedNode) -> None:
        """Delete a recorded node; one whose create never finished is looked up by token."""
        ctx = self.context(record.provider)
        if record.provider_id is None:
            matches = [o for o in self.observe([record.provider])[record.provider]
                       if o.client_token == record.client_token]
        else:
            matches = [NodeObservation(record.provider_id, record.address, record.client_token,
                                       "running", record.observed.get("endpoint"),
                                       dict(record.observed))]
        for obs in matches:
            self.delete_node(ctx, obs)
