"""The 'baremetal' provider (Warewulf bare-metal): registers its kind.

Node operations are not implemented yet (issue 6); until then fuzz answers any
use of this kind with "provider plugin 'baremetal' … does not implement …".
"""

from __future__ import annotations

from fuzz.pluginkit import ProviderPlugin


class BaremetalProvider(ProviderPlugin):
    """Warewulf bare-metal nodes."""

    kind = "baremetal"


plugin = BaremetalProvider()
"""The instance registered by the ``fuzz.providers`` entry point ``baremetal``."""
