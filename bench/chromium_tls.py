"""A bench client's TLS offered as Chromium offers it.

Chromium (and Firefox) offer TLS 1.3's suites in the order :data:`CHROMIUM_SUITES`
(AES-128-GCM first; ChaCha20 first only on CPUs without AES instructions); Python's
client context offers OpenSSL's default order, AES-256-GCM first. A bench that stands
for a browser offers what the browser does, so that the server agrees on what a browser
would get: the endpoint gateway takes the client's first choice
(:mod:`fuzz.orchestrate.endpoints.gateway`). That order is the one fuzz's own TLS ends
already set (:mod:`fuzz.rpc.tls13`), so it is set the same way.
"""

from __future__ import annotations

import ssl

from fuzz.rpc.tls13 import AES_128_FIRST, prefer_aes128_gcm

CHROMIUM_SUITES = tuple(AES_128_FIRST.decode().split(":"))


def offer_as_chromium(context: ssl.SSLContext) -> None:
    """Make ``context`` offer TLS 1.3's suites in Chromium's order (SystemExit if it
    could not be done on this Python)."""
    if not prefer_aes128_gcm(context):
        raise SystemExit("could not set the bench client's TLS 1.3 suites")
    offered = tuple(cipher["name"] for cipher in context.get_ciphers())
    if offered[:len(CHROMIUM_SUITES)] != CHROMIUM_SUITES:
        raise SystemExit(f"the bench client offers {offered[:3]}, not Chromium's order")
