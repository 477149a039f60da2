"""The 'gcp' provider plugin (Google Compute Engine); see :mod:`fuzz_gcp.nodes`.

Every fuzz command loads every installed provider plugin, and
google-cloud-compute takes seconds to import, so this module imports only the
config; the SDK and the node operations load on the first hook call for ``gcp``.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from fuzz.bootstrap import cloud_init_script
from fuzz.pluginkit import ProviderPlugin, validated_config
from fuzz.provider_api import JoinInfo, NodeObservation, NodeRequest, Offering, ProviderContext
from fuzz_gcp.config import GcpConfig

if TYPE_CHECKING:
    from fuzz_gcp.nodes import GcpNodes


@functools.cache
def _nodes() -> GcpNodes:
    from fuzz_gcp.nodes import GcpNodes  # the SDK, on first use (see the module docstring)

    return GcpNodes()


class GcpProvider(ProviderPlugin):
    """Google Compute Engine nodes."""

    kind = "gcp"
    config_schema = GcpConfig

    def offerings(self, ctx: ProviderContext) -> list[Offering] | None:
        """The zone's machine types that the provider block prices."""
        return _nodes().offerings(ctx)

    def bootstrap_payload(
        self, ctx: ProviderContext, node: NodeRequest, join: JoinInfo
    ) -> str | None:
        """The cloud-init script (:func:`fuzz.bootstrap.cloud_init_script`) for the node."""
        return cloud_init_script(node, join, validated_config(GcpConfig, ctx).bootstrap)

    def create_node(self, ctx: ProviderContext, node: NodeRequest) -> NodeObservation | None:
        """Insert the node's instance (or adopt the one an earlier try made) and wait for it."""
        return _nodes().create_node(ctx, node)

    def read_nodes(self, ctx: ProviderContext) -> list[NodeObservation] | None:
        """The zone's instances labelled with this cluster and provider block."""
        return _nodes().read_nodes(ctx)

    def delete_node(self, ctx: ProviderContext, node: NodeObservation) -> bool | None:
        """Delete the instance (its boot disk goes with it); True once deleting or gone."""
        return _nodes().delete_node(ctx, node)


plugin = GcpProvider()
"""The instance registered by the ``fuzz.providers`` entry point ``gcp``."""
