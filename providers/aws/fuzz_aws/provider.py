"""The 'aws' provider (Amazon EC2): registers its kind.

Node operations are not implemented yet (issue 5); until then fuzz answers any
use of this kind with "provider plugin 'aws' … does not implement …".
"""

from __future__ import annotations

from fuzz.pluginkit import ProviderPlugin


class AwsProvider(ProviderPlugin):
    """Amazon EC2 nodes."""

    kind = "aws"


plugin = AwsProvider()
"""The instance registered by the ``fuzz.providers`` entry point ``aws``."""
