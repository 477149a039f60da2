"""Building blocks for plugins: a provider base class and the state backend registration.

Subclass :class:`ProviderPlugin`, set ``kind`` and ``config_schema``, override the
operations you support, and register an instance from your plugin's
``fuzz_register_providers`` hook. An operation left as is returns None, which fuzz
reports as "does not implement …". A state backend registers a
:class:`StateBackendPlugin` from ``fuzz_register_state_backends``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from fuzz.errors import ConfigError
from fuzz.plugin.provider import (
    JoinInfo,
    NodeObservation,
    NodeRequest,
    Offering,
    ProviderContext,
)
from fuzz.plugin.state import StateBackend

ConfigT = TypeVar("ConfigT", bound=BaseModel)


class ProviderPlugin:
    """A :class:`~fuzz.plugin.provider.Provider` of one ``kind`` whose operations default to None.

    None means "not implemented"; override the operations the provider supports.
    """

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
    and imports its SDK in :meth:`load_operations`, which runs on the first operation
    call for its kind. ``config_schema`` must have a ``bootstrap`` field
    (:class:`fuzz.plugin.cloudinit.BootstrapSettings`).
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
        """The cloud-init script (:func:`fuzz.plugin.cloudinit.cloud_init_script`) for the node."""
        from fuzz.plugin.cloudinit import cloud_init_script

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


@dataclass(frozen=True)
class StateBackendPlugin:
    """One state backend as a plugin registers it: its kind, its config schema, how to open it.

    ``config_schema`` validates the ``state:`` block without its ``backend`` and
    ``encryption`` keys (fuzz handles encryption itself, so a backend only ever sees
    ciphertext); it should forbid unknown keys, so errors point at the spec's line.
    ``open(config, base_dir)`` builds the backend from that block; relative paths in
    it are relative to ``base_dir``, the spec's directory. It raises ConfigError for
    bad keys.
    """

    kind: str
    config_schema: type[Any] | None
    open: Callable[[Mapping[str, Any], Path], StateBackend]
