"""The 'aws' provider plugin (Amazon EC2 instances); see :mod:`fuzz_aws.nodes`.

boto3 takes a second to import and to build a client, so this module imports only
the config; boto3 and the node operations load on the first hook call for ``aws``
(see :class:`fuzz.plugin.kit.CloudInitProvider`). The modules: ``config`` (the block,
the price table), ``client`` (one EC2 client per region and profile), ``nodes``
(create, read, delete), ``offerings`` (priced instance types), ``errors`` (EC2
failures as typed provider errors).
"""

from __future__ import annotations

from fuzz.plugin import RegisterProvider, hookimpl
from fuzz.plugin.kit import CloudInitProvider, NodeOperations
from fuzz_aws.config import AwsConfig


class AwsProvider(CloudInitProvider):
    """Amazon EC2 instances: started with a client token, tagged, terminated."""

    kind = "aws"
    config_schema = AwsConfig

    def load_operations(self) -> NodeOperations:
        """The instance operations (imports boto3)."""
        from fuzz_aws.nodes import AwsNodes

        return AwsNodes()


plugin = AwsProvider()
"""The provider of kind ``aws``, as registered."""


@hookimpl
def fuzz_register_providers(register: RegisterProvider) -> None:
    """Register the ``aws`` provider."""
    register(plugin)
