"""The 'azure' provider plugin (Azure virtual machines); see :mod:`fuzz_azure.nodes`.

The Azure management SDKs take seconds to import, so this module imports only
the config; the SDKs and the node operations load on the first hook call for
``azure`` (see :class:`fuzz.plugin.kit.CloudInitProvider`). The modules: ``config`` (the
block), ``client`` (the management clients), ``credential`` (a bearer token from a
file), ``nodes`` (create, read, delete), ``offerings`` (priced VM sizes), ``errors``
(Resource Manager failures as typed provider errors), ``sshkey`` (the SSH key Azure
insists on, whose private half nobody keeps).
"""

from __future__ import annotations

from fuzz.plugin import RegisterProvider, hookimpl
from fuzz.plugin.kit import CloudInitProvider, NodeOperations
from fuzz_azure.config import AzureConfig


class AzureProvider(CloudInitProvider):
    """Azure VMs with a NIC in the configured subnet; VM, NIC and OS disk deleted together."""

    kind = "azure"
    config_schema = AzureConfig

    def load_operations(self) -> NodeOperations:
        """The VM operations (imports the Azure management SDKs)."""
        from fuzz_azure.nodes import AzureNodes

        return AzureNodes()


plugin = AzureProvider()
"""The provider of kind ``azure``, as registered."""


@hookimpl
def fuzz_register_providers(register: RegisterProvider) -> None:
    """Register the ``azure`` provider."""
    register(plugin)
