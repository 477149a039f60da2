"""The web UI's listener: uvicorn in a thread of the orchestrator, TLS as the gateway's.

uvicorn (a well-kept ASGI server) serves :func:`fuzz.orchestrate.ui.app.build_app` on
a socket bound here first (so a port the system picks is known at once), with the
certificate the endpoint gateway serves. Its pages call the orchestrator's gRPC API
at ``api_endpoint`` with the signed-in user's token, trusting the cluster CA.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from fuzz.clients.orchestrator import OrchestratorClient
from fuzz.errors import FuzzError
from fuzz.orchestrate.endpoints.gateway import GatewayTls
from fuzz.orchestrate.listening import ListenError, listen_on
from fuzz.orchestrate.ui.access import UiAccess
from fuzz.orchestrate.ui.app import PREFIX, build_app
from fuzz.rpc.client import ClientTls

logger = logging.getLogger(__name__)

STOP_SECONDS = 5.0
BACKLOG = 128
KEPT_CLIENTS = 64


class UiStartError(FuzzError):
    """The web UI cannot listen."""


class ApiAccess:
    """Where the UI's pages reach the orchestrator's API, and the CA it trusts (None:
    a plain-text cluster).

    A signed-in user's client (its gRPC channel, TLS handshaken once) is kept for
    their next pages, the :data:`KEPT_CLIENTS` most recent users' at most; a client
    left out is closed by the garbage collector once no page uses it. Keeping one
    grants nothing: the orchestrator authenticates the token at every call.
    """

    def __init__(self, endpoint: str, ca_pem: bytes | None) -> None:
        """Reach the API at ``endpoint`` (HOST:PORT)."""
        self.endpoint = endpoint
        self.ca_pem = ca_pem
        self._lock = threading.Lock()
        self._clients: OrderedDict[str, OrchestratorClient] = OrderedDict()

    @contextmanager
    def client(self, token: str) -> Iterator[OrchestratorClient]:
        """A client calling as ``token``'s user for the block."""
        with self._lock:
            client = self._clients.pop(token, None)
            if client is None:
                client = OrchestratorClient(self.endpoint, token, tls=ClientTls(self.ca_pem)
                                            if self.ca_pem is not None else None)
            self._clients[token] = client
            while len(self._clients) > KEPT_CLIENTS:
                self._clients.popitem(last=False)
        yield client


class UiServer:
    """The bound web UI; :meth:`start` serves it in the background, :meth:`stop` ends it."""

    def __init__(self, listen: str, tls: GatewayTls | None) -> None:
        """Bind ``listen`` (HOST:PORT; port 0 picks one) now; UiStartError if it cannot."""
        try:
            self._socket = listen_on(listen, BACKLOG)
        except ListenError as exc:
            raise UiStartError(f"the web UI cannot listen on {listen}: {exc}") from None
        self._tls = tls
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._socket.getsockname()[1])

    def url(self, host: str) -> str:
        """Where users open it on ``host``."""
        scheme = "https" if self._tls is not None else "http"
        shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
        return f"{scheme}://{shown}:{self.port}{PREFIX}/"

    def start(self, access: UiAccess, api: ApiAccess) -> None:
        """Serve in a thread of its own."""
        config = uvicorn.Config(
            build_app(access, api.client), log_level="warning", access_log=False,
            ssl_certfile=str(self._tls.cert) if self._tls else None,
            ssl_keyfile=str(self._tls.key) if self._tls else None,
            timeout_graceful_shutdown=int(STOP_SECONDS), lifespan="off")
        self._server = uvicorn.Server(config)
        server = self._server
        self._thread = threading.Thread(
            target=lambda: asyncio.run(server.serve(sockets=[self._socket])),
            name="web-ui", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving (open event streams are closed)."""
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True
        if self._thread is not None:
            self._thread.join(STOP_SECONDS)
        with contextlib.suppress(OSError):
            self._socket.close()
