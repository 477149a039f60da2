"""The direct path's pump in C (``pump/fuzz-pump.c``, built by ``make setup`` into
``bin/libfuzz-pump.so``), called through ctypes.

Why C: a 64-byte round trip through the port-forward wakes the CLI's pump and the
agent's twice each, and in Python each wake-up costs 5-10 µs of interpreter (and waits
for the GIL behind the process's other threads), where ``ssh -L`` spends a few µs of C
(docs/architecture.md, "The round trip"). The C loop does what :func:`fuzz.rpc.direct.pump`
does, on the same wire format, with the GIL released for the whole call (ctypes does
that for a ``CDLL``'s functions), and with OpenSSL's read-ahead on (one ``read`` per TLS
record instead of two: Python's ssl cannot turn it on). After a wake-up that moved a
message, not a transfer's chunk, it busy-polls for up to 100 µs while the machine has a
CPU to spare (``fuzz-pump.c``'s SPIN_MAX_NS; :class:`PumpCounts` says how it waited).

The TLS connection stays Python's: the handshake, the certificate checks, the ticket and
every other read and write are ``ssl.SSLSocket``'s; the pump borrows the OpenSSL ``SSL``
object under it for its copy, from the one thread that owns the connection. CPython's
``ssl`` does not hand that pointer out, so it is read from the ``_ssl._SSLSocket``
object's C layout (``PyObject_HEAD``, the socket's weakref, ``SSL *ssl``, the context)
and checked before any use: the pointer beside it must be the connection's context, the
``SSL`` object's ``SSL_CTX`` that context's (``_ssl._SSLContext``: ``PyObject_HEAD``,
``SSL_CTX *ctx``), its descriptor the socket's own, and the library built against the
OpenSSL that ``_ssl`` runs on (reached through ``_ssl``'s own library handle:
:func:`libssl`). Anything else (another Python, a library not built) makes :func:`pump`
return None, and :func:`fuzz.rpc.direct.pump` runs the Python pump instead.
"""

from __future__ import annotations

import _ssl
import ctypes
import errno
import os
import ssl
import sys
from functools import cache
from pathlib import Path
from socket import socket
from typing import NamedTuple

LIBRARY = Path(__file__).resolve().parent / "bin" / "libfuzz-pump.so"
_OSERROR, _TLS_ERROR, _NO_END_MARK = 1, 2, 3
_ERROR_BYTES = 512
_POINTER = ctypes.sizeof(ctypes.c_void_p)


class PumpCounts(NamedTuple):
    """What one C pump's run did: the bytes it moved, and how it waited (``fuzz-pump.c``'s
    busy-polling: how many waits there were, how many followed a wake-up that moved a few
    bytes only and so could spin, how many of those the spin caught, the ns spent spinning)."""

    outward: int
    inward: int
    waits: int
    interactive_waits: int
    spin_hits: int
    spun_ns: int


class _Library:
    """The loaded ``libfuzz-pump.so``, its function typed."""

    def __init__(self, path: Path) -> None:
        """Load ``path`` (OSError when it cannot be)."""
        library = ctypes.CDLL(str(path))
        self.pump = library.fuzz_pump
        self.pump.restype = ctypes.c_int
        self.pump.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_size_t,
                              ctypes.c_int,
                              ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_int),
                              ctypes.c_char_p, ctypes.c_size_t]
        self.version = library.fuzz_pump_openssl_version
        self.version.restype = ctypes.c_ulong
        self.version.argtypes = []


class LibSsl:
    """The OpenSSL calls made on ``ssl``'s own objects, from the ``libssl`` that CPython's
    ``_ssl`` module is linked to (resolved through that module's library handle)."""

    def __init__(self, handle: ctypes.CDLL) -> None:
        """Type the functions of ``handle``."""
        self.SSL_get_rfd = handle.SSL_get_rfd
        self.SSL_get_rfd.restype = ctypes.c_int
        self.SSL_get_rfd.argtypes = [ctypes.c_void_p]
        self.SSL_get_SSL_CTX = handle.SSL_get_SSL_CTX
        self.SSL_get_SSL_CTX.restype = ctypes.c_void_p
        self.SSL_get_SSL_CTX.argtypes = [ctypes.c_void_p]
        self.SSL_CTX_set_ciphersuites = handle.SSL_CTX_set_ciphersuites
        self.SSL_CTX_set_ciphersuites.restype = ctypes.c_int
        self.SSL_CTX_set_ciphersuites.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        self.OpenSSL_version_num = handle.OpenSSL_version_num
        self.OpenSSL_version_num.restype = ctypes.c_ulong
        self.OpenSSL_version_num.argtypes = []


@cache
def libssl() -> LibSsl | None:
    """``_ssl``'s OpenSSL, or None where it cannot be reached so (not CPython, a
    statically linked ``_ssl``)."""
    if sys.implementation.name != "cpython":
        return None
    try:
        return LibSsl(ctypes.CDLL(_ssl.__file__))
    except (OSError, AttributeError):
        return None


@cache
def _library() -> _Library | None:
    """The C pump, or None where it cannot serve: not CPython, not built, or built against
    another OpenSSL than the one ``ssl`` runs on."""
    openssl = libssl()
    if openssl is None or not LIBRARY.exists():
        return None
    try:
        library = _Library(LIBRARY)
    except OSError:
        return None
    return library if library.version() == openssl.OpenSSL_version_num() else None


def available() -> bool:
    """Whether :func:`pump` runs in C here."""
    return _library() is not None


def ssl_pointer(tls: ssl.SSLSocket | ssl.SSLObject) -> int | None:
    """The address of the OpenSSL ``SSL`` object under ``tls``, or None when the layout
    is not the expected one (see the module's docstring): the pointer beside it must be
    the connection's context, and the ``SSL`` object's ``SSL_CTX`` that context's."""
    openssl = libssl()
    connection = getattr(tls, "_sslobj", None)
    if openssl is None or connection is None or type(connection).__name__ != "_SSLSocket":
        return None
    context = connection.context
    base = id(connection) + object.__basicsize__  # CPython: id is the object's address
    pointer = ctypes.c_void_p.from_address(base + _POINTER).value
    if not pointer or ctypes.c_void_p.from_address(base + 2 * _POINTER).value != id(context):
        return None
    context_pointer = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    return pointer if openssl.SSL_get_SSL_CTX(pointer) == context_pointer else None


def pump(tls: ssl.SSLSocket, plain: socket, buffer_bytes: int) -> tuple[int, int] | None:
    """:func:`fuzz.rpc.direct.pump` in C: the bytes moved (plain -> tls, tls -> plain), or
    None without copying anything when the C pump cannot serve ``tls``. Raises as the
    Python pump does: OSError for a socket's failure, ``ssl.SSLError`` for TLS's,
    ConnectionResetError for a TLS side that ends without its end mark."""
    counts = counted_pump(tls, plain, buffer_bytes)
    return None if counts is None else (counts.outward, counts.inward)


def counted_pump(tls: ssl.SSLSocket, plain: socket, buffer_bytes: int,
                 spin_when_busy: bool = False) -> PumpCounts | None:
    """:func:`pump`, returning all its :class:`PumpCounts`; ``spin_when_busy``: busy-poll
    after interactive wake-ups even while the machine has no CPU to spare (for tests, whose
    outcome must not depend on the machine's load)."""
    library, openssl = _library(), libssl()
    # held until the call returns: the SSL object lives as long as this Python object, even
    # if another thread closes ``tls`` meanwhile
    connection = getattr(tls, "_sslobj", None)
    pointer = ssl_pointer(tls)
    if library is None or openssl is None or pointer is None \
            or openssl.SSL_get_rfd(pointer) != tls.fileno():
        return None
    tls.setblocking(False)
    plain.setblocking(False)
    counts = (ctypes.c_uint64 * len(PumpCounts._fields))()
    code = ctypes.c_int(0)
    error = ctypes.create_string_buffer(_ERROR_BYTES)
    result = library.pump(pointer, tls.fileno(), plain.fileno(), buffer_bytes,
                          int(spin_when_busy), counts,
                          ctypes.byref(code), error, _ERROR_BYTES)
    del connection  # the call is over
    message = error.value.decode(errors="replace")
    if result == _OSERROR:
        raise OSError(code.value, os.strerror(code.value) if code.value else message)
    if result == _TLS_ERROR:
        raise ssl.SSLError(message)
    if result == _NO_END_MARK:
        raise ConnectionResetError(errno.ECONNRESET, message)
    if result != 0:
        raise MemoryError(message)
    return PumpCounts(*counts)
