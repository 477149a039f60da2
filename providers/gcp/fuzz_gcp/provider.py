"""The 'gcp' provider (Google Compute Engine): registers its kind.

Node operations are not implemented yet (issue 6); until then fuzz answers any
use of this kind with "provider plugin 'gcp' … does not implement …".
"""

from __future__ import annotations

from fuzz.pluginkit import ProviderPlugin


class GcpProvider(ProviderPlugin):
    """Google Compute Engine nodes."""

    kind = "gcp"


plugin = GcpProvider()
"""The instance registered by the ``fuzz.providers`` entry point ``gcp``."""
