"""The 'azure' provider plugin (Azure virtual machines); see :mod:`fuzz_azure.nodes`.

Every fuzz command loads every installed provider plugin, and the Azure
management SDKs take seconds to import, so this module imports only the config;
the SDKs and the node operations load on the first hook call for ``azure``.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from fuzz.bootstrap import cloud_init_script
from fuzz.pluginkit import ProviderPlugin, validated_config
from fuzz.provider_api import JoinInfo, NodeObservation, NodeRequest, Offering, ProviderContext
from fuzz_azure.config import AzureConfig

if TYPE_CHECKING:
    from fuzz_azure.nodes import AzureNodes


@functools.cache
def _nodes() -> AzureNodes:
    from fuzz_azure.nodes import AzureNodes  # the SDKs, on first use (see the module docstring)

    return AzureNodes()


class AzureProvider(ProviderPlugin):
    """Azure virtual machines nodes."""

    kind = "azure"
    config_schema = AzureConfig

    def offerings(self, ctx: ProviderContext) -> list[Offering] | None:
        """The location's VM sizes that the provider block prices."""
        return _nodes().offerings(ctx)

    def bootstrap_payload(
        self, ctx: ProviderContext, node: NodeRequest, join: JoinInfo
    ) -> str | None:
        """The cloud-init script (:func:`fuzz.bootstrap.cloud_init_script`) for the node."""
        return cloud_init_script(node, join, validated_config(AzureConfig, ctx).bootstrap)

    def create_node(self, ctx: ProviderContext, node: NodeRequest) -> NodeObservation | None:
        """Create the node's NIC and VM, or return the VM an earlier try made."""
        return _nodes().create_node(ctx, node)

    def read_nodes(self, ctx: ProviderContext) -> list[NodeObservation] | None:
        """The resource group's VMs tagged with this cluster and provider block."""
        return _nodes().read_nodes(ctx)

    def delete_node(self, ctx: ProviderContext, node: NodeObservation) -> bool | None:
        """Delete the VM, then its NIC and OS disk; True once all are gone."""
        return _nodes().delete_node(ctx, node)


plugin = AzureProvider()
"""The instance registered by the ``fuzz.providers`` entry point ``azure``."""
