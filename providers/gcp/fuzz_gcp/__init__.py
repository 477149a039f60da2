"""The 'gcp' provider plugin (Google Compute Engine); see :mod:`fuzz_gcp.nodes`.

google-cloud-compute takes seconds to import, so this module imports only the
config; the SDK and the node operations load on the first hook call for ``gcp``
(see :class:`fuzz.plugin.kit.CloudInitProvider`). The modules: ``config`` (the
block), ``client`` (the REST clients, waiting for operations), ``nodes`` (create,
read, delete), ``offerings`` (priced machine types), ``errors`` (Compute Engine
failures as typed provider errors), ``labels`` (fuzz's tags as labels and back).
"""

from __future__ import annotations

from fuzz.plugin import RegisterProvider, hookimpl
from fuzz.plugin.kit import CloudInitProvider, NodeOperations
from fuzz_gcp.config import GcpConfig


class GcpProvider(CloudInitProvider):
    """Google Compute Engine instances: inserted with a request id, labelled, deleted."""

    kind = "gcp"
    config_schema = GcpConfig

    def load_operations(self) -> NodeOperations:
        """The instance operations (imports google-cloud-compute)."""
        from fuzz_gcp.nodes import GcpNodes

        return GcpNodes()


plugin = GcpProvider()
"""The provider of kind ``gcp``, as registered."""


@hookimpl
def fuzz_register_providers(register: RegisterProvider) -> None:
    """Register the ``gcp`` provider."""
    register(plugin)
