"""Who is signed in to the web UI: the endpoint gateway's sign-ins, shared.

The gateway (:mod:`fuzz.orchestrate.endpoints`) is an h11 relay of its own, which
cannot host an ASGI app, so the UI listens on a port of its own. Cookies are scoped to
a host, not to a port: the gateway's session cookie (Secure, HttpOnly, SameSite=Lax)
reaches both, and both look it up in the one in-memory :class:`SignIns`, so signing
in on either signs in to both, and signing out of either ends both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fuzz.errors import FuzzError
from fuzz.orchestrate.endpoints.proxy import Authenticator
from fuzz.orchestrate.endpoints.sessions import COOKIE_NAME, SignIns

SIGN_IN_ACTION = "ui:sign-in"


@dataclass(frozen=True)
class Signed:
    """A signed-in browser: whose token it stands for."""

    user: str
    token: str


@dataclass
class UiAccess:
    """Sign-ins shared with the gateway, and the IAM directory that checks them."""

    sign_ins: SignIns
    iam: Authenticator
    is_code: Callable[[str], bool]  # a login code (spent for a token) rather than a token
    audit: Callable[[str, str, str, bool, str], None]

    def signed(self, cookies: dict[str, str]) -> Signed | None:
        """The browser's user (None: not signed in, or its token revoked or expired since)."""
        value = cookies.get(COOKIE_NAME)
        token = self.sign_ins.token(value) if value else None
        if token is None:
            return None
        try:
            return Signed(self.iam.authenticate(token).user, token)
        except FuzzError:
            return None

    def sign_in(self, credential: str) -> tuple[str, int]:
        """A session for a token or a login code: the cookie's value and max-age.
        FuzzError (one sentence) when the credential is refused."""
        try:
            if self.is_code(credential):
                token, _, expires = self.iam.login(credential)
            else:
                token, expires = credential, self.iam.authenticate(credential).expires
        except FuzzError as exc:
            self.audit("-", SIGN_IN_ACTION, "-", False, str(exc))
            raise
        return self.sign_ins.open(token, expires)

    def sign_out(self, cookies: dict[str, str]) -> None:
        """End the browser's session."""
        value = cookies.get(COOKIE_NAME)
        if value:
            self.sign_ins.close(value)
