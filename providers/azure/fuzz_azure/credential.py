"""A bearer token read from a file, as an azure-core token credential.

azure-core and azure-identity offer no credential for a token that already
exists, so this small class implements the ``TokenCredential`` protocol. The file
is read on every call so that whoever renews the token (a cron job, a test) only
has to rewrite it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

TOKEN_LIFETIME = 300
"""The lifetime reported for the token: azure-core renews tokens that expire within
300 s, so it asks again (and the file is read again) before every request."""


class FileTokenCredential:
    """Hands the SDK the bearer token stored in ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        """The token in the file (ClientAuthenticationError when unreadable or empty)."""
        try:
            token = self.path.read_text().strip()
        except OSError as exc:
            raise ClientAuthenticationError(f"cannot read access_token_file {self.path}: "
                                            f"{exc.strerror}") from exc
        if not token:
            raise ClientAuthenticationError(f"access_token_file {self.path} is empty")
        return AccessToken(token, int(time.time()) + TOKEN_LIFETIME)
