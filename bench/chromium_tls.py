"""A bench client's TLS offered as Chromium offers it.

Chromium (and Firefox) offer TLS 1.3's suites in the order :data:`CHROMIUM_SUITES`
(AES-128-GCM first; ChaCha20 first only on CPUs without AES instructions); Python's
client context offers OpenSSL's default order, AES-256-GCM first. A bench that stands
for a browser offers what the browser does, so that the server agrees on what a browser
would get: the endpoint gateway takes the client's first choice
(:mod:`fuzz.orchestrate.endpoints.gateway`).
"""

from __future__ import annotations

import ctypes
import ssl

CHROMIUM_SUITES = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                   "TLS_CHACHA20_POLY1305_SHA256")


def offer_as_chromium(context: ssl.SSLContext) -> None:
    """Make ``context`` offer TLS 1.3's suites in Chromium's order (SystemExit if it
    could not be done).

    Python 3.11's ssl cannot set TLS 1.3's suites (no ``set_ciphersuites``), and an
    OpenSSL configuration file (``OPENSSL_CONF``) would reach every process the bench
    starts, the orchestrator's gateway among them. So, bench code only: OpenSSL's
    ``SSL_CTX_set_ciphersuites`` through ctypes, on the ``SSL_CTX`` that CPython's
    ``PySSLContext`` holds as its first field after the object's header
    (Modules/_ssl.c); the order is then read back through the ssl module's own
    ``get_ciphers``."""
    libssl = ctypes.CDLL(ssl._ssl.__file__)  # its libssl's symbols resolve through it
    set_suites = libssl.SSL_CTX_set_ciphersuites
    set_suites.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    set_suites.restype = ctypes.c_int
    ssl_ctx = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    if not ssl_ctx or set_suites(ssl_ctx, ":".join(CHROMIUM_SUITES).encode()) != 1:
        raise SystemExit("could not set the bench client's TLS 1.3 suites")
    offered = tuple(cipher["name"] for cipher in context.get_ciphers())
    if offered[:len(CHROMIUM_SUITES)] != CHROMIUM_SUITES:
        raise SystemExit(f"the bench client offers {offered[:3]}, not Chromium's order")
