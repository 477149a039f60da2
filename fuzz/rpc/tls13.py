"""TLS 1.3 cipher suites for connections whose two ends are both fuzz: AES-128-GCM first.

TLS 1.3 here negotiates OpenSSL's default first suite, AES-256-GCM; AES-128-GCM (TLS
1.3's mandatory suite, what ``ssh -L`` is measured with) costs less per byte. Python
3.11's ``ssl`` cannot choose TLS 1.3 suites (``SSLContext.set_ciphers`` sets TLS 1.2's
only); OpenSSL's ``SSL_CTX_set_ciphersuites`` can, and is called here on the context's
OpenSSL object, through ctypes, from the very ``libssl`` that ``_ssl`` is linked to
(looked up through ``_ssl``'s own library handle). CPython does not hand out the
``SSL_CTX`` pointer; it is read from the ``_ssl._SSLContext`` object's C layout
(``PyObject_HEAD`` then ``SSL_CTX *ctx``) and checked against the ``SSL_CTX`` of an
``SSL`` object made from that context (:func:`fuzz.rpc.native_pump.ssl_pointer`)
before use; afterwards ``get_ciphers()`` must list AES-128-GCM first. Where any of this
does not hold (another Python), the context keeps OpenSSL's default order: both suites
are AES-GCM, and only CPU per byte differs.

The server's order decides (Python sets ``OP_CIPHER_SERVER_PREFERENCE``), and every TLS
1.3 implementation offers AES-128-GCM, so calling this on the agent's context is enough;
calling it on the client's too makes the client's preference the same.
"""

from __future__ import annotations

import ctypes
import ssl

from fuzz.rpc import native_pump

AES_128_FIRST = b"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
_PREFERRED = "TLS_AES_128_GCM_SHA256"


def prefer_aes128_gcm(context: ssl.SSLContext) -> bool:
    """Put AES-128-GCM first among ``context``'s TLS 1.3 suites; whether it could be."""
    libssl = native_pump.libssl()
    probe = context.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(),
                             server_side=context.protocol == ssl.PROTOCOL_TLS_SERVER,
                             server_hostname=None if context.protocol ==
                             ssl.PROTOCOL_TLS_SERVER else "probe")
    ssl_object = native_pump.ssl_pointer(probe)
    if libssl is None or ssl_object is None:
        return False
    context_pointer = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    if not context_pointer or libssl.SSL_get_SSL_CTX(ssl_object) != context_pointer:
        return False
    if libssl.SSL_CTX_set_ciphersuites(context_pointer, AES_128_FIRST) != 1:
        return False
    return context.get_ciphers()[0]["name"] == _PREFERRED
