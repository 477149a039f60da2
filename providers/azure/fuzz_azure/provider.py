"""The 'azure' provider (Azure virtual machines): registers its kind.

Node operations are not implemented yet (issue 6); until then fuzz answers any
use of this kind with "provider plugin 'azure' … does not implement …".
"""

from __future__ import annotations

from fuzz.pluginkit import ProviderPlugin


class AzureProvider(ProviderPlugin):
    """Azure virtual machines nodes."""

    kind = "azure"


plugin = AzureProvider()
"""The instance registered by the ``fuzz.providers`` entry point ``azure``."""
