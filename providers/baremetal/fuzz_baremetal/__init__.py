"""The 'baremetal' provider plugin (Warewulf machines); see :mod:`fuzz_baremetal.nodes`.

The node operations (and the gRPC client they check agents with) load on the first
hook call for ``baremetal`` (see :class:`fuzz.plugin.kit.CloudInitProvider`). The
modules: ``config`` (the block, the machine inventory), ``client`` (what the
provider asks of Warewulf) with its two back ends ``wwctl`` (subprocesses) and
``rest`` (warewulfd's API), ``nodes`` (create, read, delete), ``offerings`` (the
machine classes), ``errors`` (Warewulf failures as typed provider errors).
"""

from __future__ import annotations

from pathlib import Path

from fuzz.plugin import RegisterProvider, hookimpl
from fuzz.plugin.cloudinit import cloud_init_script
from fuzz.plugin.kit import CloudInitProvider, NodeOperations
from fuzz.plugin.provider import JoinInfo, NodeRequest, ProviderContext
from fuzz_baremetal.config import BaremetalConfig, config_of

OVERLAY_DIR = Path(__file__).with_name("overlay")
"""The ``fuzz`` overlay to install into Warewulf (``cp -r`` it to its overlays dir)."""


class BaremetalProvider(CloudInitProvider):
    """Warewulf bare-metal nodes, booting fuzz's cloud-init script from the ``fuzz`` overlay."""

    kind = "baremetal"
    config_schema = BaremetalConfig

    def load_operations(self) -> NodeOperations:
        """The Warewulf node operations."""
        from fuzz_baremetal.nodes import BaremetalNodes

        return BaremetalNodes()

    def bootstrap_payload(
        self, ctx: ProviderContext, node: NodeRequest, join: JoinInfo
    ) -> str | None:
        """fuzz's cloud-init script, which the ``fuzz`` overlay runs at boot."""
        return cloud_init_script(node, join, config_of(ctx).bootstrap)


plugin = BaremetalProvider()
"""The provider of kind ``baremetal``, as registered."""


@hookimpl
def fuzz_register_providers(register: RegisterProvider) -> None:
    """Register the ``baremetal`` provider."""
    register(plugin)
