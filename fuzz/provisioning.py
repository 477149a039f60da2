"""The provider gateway: the engine's node operations, carried out through plugin hooks.

This is where the pure engine meets I/O. It builds each provider block's
:class:`~fuzz.provider_api.ProviderContext` from the validated spec, calls the
plugin hooks, and turns a hook that nobody answers into a clear PluginError.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from fuzz.engine.model import DesiredNode, RecordedNode
from fuzz.errors import ConfigError, PluginError
from fuzz.plugins import PluginSet
from fuzz.provider_api import (
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


def provider_contexts(loaded: LoadedSpec, plugins: PluginSet) -> dict[str, ProviderContext]:
    """Validate every provider block of the spec with its plugin's schema.

    Raises PluginError when a block's kind has no (working) plugin, and SpecError
    (with file:line:col) when a block does not match the plugin's schema.
    """
    spec = loaded.spec
    contexts = {}
    for name, block in spec.providers.items():
        kind = spec.provider_kind(name)
        plugins.require_provider(kind)
        schema = plugins.manager.hook.fuzz_provider_config_schema(kind=kind)
        config: Any = block.provider_config()
        if schema is not None:
            config = validate_block(loaded, ("providers", name), schema, config)
        contexts[name] = ProviderContext(kind, name, spec.cluster, config, loaded.base_dir)
    return contexts


class ProviderGateway:
    """Node operations for the engine, dispatched to the plugin of each provider block."""

    def __init__(self, plugins: PluginSet, contexts: dict[str, ProviderContext]) -> None:
        self.plugins = plugins
        self.contexts = contexts

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

    def answer(self, hook: str, ctx: ProviderContext, **kwargs: Any) -> Any:
        """Call provider ``hook`` for ``ctx``; a plugin that does not answer is a PluginError."""
        result = getattr(self.plugins.manager.hook, hook)(ctx=ctx, **kwargs)
        if result is None:
            plugin = self.plugins.require_provider(ctx.kind)
            raise PluginError(
                f"provider plugin '{ctx.kind}' ({plugin.distribution} {plugin.version}) "
                f"does not implement {hook} yet"
            )
        return result

    def observe(self, providers: Iterable[str]) -> dict[str, list[NodeObservation]]:
        """Every node each named provider block holds for the cluster (refresh)."""
        return {
            name: list(self.answer("fuzz_provider_read_nodes", self.context(name)))
            for name in providers
        }

    def offerings(self, provider: str) -> list[Offering]:
        """The offerings of one provider block."""
        return list(self.answer("fuzz_provider_offerings", self.context(provider)))

    def create(self, node: DesiredNode, token: str) -> NodeObservation:
        """Create ``node`` through its provider, idempotently by ``token``."""
        ctx = self.context(node.provider)
        join = JoinInfo(token=secrets.token_urlsafe(32))
        request = NodeRequest(
            address=node.address, pool=node.pool, client_token=token, offering=node.offering,
            labels=dict(node.labels), attributes=dict(node.attributes),
            tags={TAG_CLUSTER: ctx.cluster, TAG_ADDRESS: node.address, TAG_CLIENT_TOKEN: token},
            join=join,
        )
        payload = self.answer("fuzz_provider_bootstrap_payload", ctx, node=request, join=join)
        request = replace(request, bootstrap=payload)
        result: NodeObservation = self.answer("fuzz_provider_create_node", ctx, node=request)
        return result

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
            self.answer("fuzz_provider_delete_node", ctx, node=obs)
