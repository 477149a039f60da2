"""The endpoint gateway's listener: TLS, one thread per connection, a cap on connections.

TLS with a certificate the admin gives (``orchestrator.endpoints.cert``/``key``) or
else one the cluster CA issues for the orchestrator's names, run over memory BIOs
(:class:`~fuzz.orchestrate.endpoints.browsertls.BrowserTls`: a large body is encrypted
and sent by two threads); plain HTTP only on an insecure (plain-text) cluster. Each
accepted connection is handshaken and served in a thread of its own
(:class:`~fuzz.orchestrate.endpoints.proxy.Connection`); past
:data:`MAX_CONNECTIONS` at once, new ones are closed at once.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

from fuzz.errors import FuzzError
from fuzz.orchestrate.endpoints.browsertls import BrowserTls
from fuzz.orchestrate.endpoints.proxy import Connection, GatewayParts
from fuzz.orchestrate.listening import ListenError, listen_on

logger = logging.getLogger(__name__)

MAX_CONNECTIONS = 512
HANDSHAKE_SECONDS = 15.0
BACKLOG = 256
# TLS 1.2's suites: ECDHE key exchange with AES-GCM or ChaCha20-Poly1305 only (Python's
# default also allows CBC with SHA-2 MACs; with the browser choosing, it could get one).
# TLS 1.3's suites are all AEAD: OpenSSL's default three.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


class GatewayStartError(FuzzError):
    """The gateway cannot listen or load its certificate."""


@dataclass(frozen=True)
class GatewayTls:
    """The certificate chain and key the gateway serves (PEM files)."""

    cert: Path
    key: Path

    def context(self) -> ssl.SSLContext:
        """A server TLS context (TLS 1.2 or later) with this certificate, whose cipher is
        the browser's first choice among AEAD suites with forward secrecy (see
        :data:`TLS12_CIPHERS`)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(TLS12_CIPHERS)
        # Python's ssl sets OpenSSL's server preference, whose TLS 1.3 order (which Python
        # 3.11 cannot change: no set_ciphersuites) puts AES-256-GCM first: browsers, which
        # offer AES-128-GCM first (Chromium, Firefox; ChaCha20 first where the CPU lacks
        # AES instructions), got the slower suite. Every suite either version can agree
        # on here is AEAD with forward secrecy, so the browser's choice is as safe.
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
        try:
            context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            raise GatewayStartError(f"the endpoint gateway's certificate {self.cert} and key "
                                    f"{self.key}: {exc}") from None
        context.set_alpn_protocols(["http/1.1"])
        return context


class Gateway:
    """A listening gateway; :meth:`start` serves in the background, :meth:`stop` ends it."""

    def __init__(self, listen: str, tls: GatewayTls | None) -> None:
        """Bind ``listen`` (HOST:PORT; port 0 picks one) now; GatewayStartError if it cannot.
        Nothing is accepted before :meth:`start`."""
        self._parts: GatewayParts | None = None
        self._context = tls.context() if tls is not None else None
        try:
            self._server = listen_on(listen, BACKLOG)
        except ListenError as exc:
            raise GatewayStartError(f"the endpoint gateway cannot listen on {listen}: {exc}"
                                    ) from None
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._stopped = threading.Event()

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._server.getsockname()[1])

    @property
    def scheme(self) -> str:
        """``https``, or ``http`` on a plain-text cluster."""
        return "https" if self._context is not None else "http"

    def start(self, parts: GatewayParts) -> None:
        """Accept connections in a thread of its own, served with ``parts``."""
        self._parts = parts
        threading.Thread(target=self._accept, name="endpoint-gateway", daemon=True).start()

    def stop(self) -> None:
        """Stop accepting (connections under way end with their peers)."""
        self._stopped.set()
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                sock, peer = self._server.accept()
            except OSError:
                if self._stopped.is_set():
                    return
                continue
            if not self._slots.acquire(blocking=False):
                sock.close()
                continue
            threading.Thread(target=self._serve, args=(sock, peer[0]),
                             name="endpoint-connection", daemon=True).start()

    def _serve(self, sock: socket.socket, peer: str) -> None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            browser: socket.socket | BrowserTls = sock
            if self._context is not None:
                sock.settimeout(HANDSHAKE_SECONDS)
                browser = BrowserTls(sock, self._context)
                try:
                    browser.handshake()
                except (OSError, ssl.SSLError):
                    sock.close()
                    return
            assert self._parts is not None  # accepting starts with them
            Connection(self._parts, browser, peer).serve()
        finally:
            self._slots.release()
