"""Starting a fuzz gRPC server (the node agent's, the orchestrator's): one way for both.

A server gets a thread pool, the bearer-token interceptor, the standard health
service (its Check open to callers without a token, as load balancers and Kubernetes
probes have none; Watch, which holds a worker for as long as it lasts, only with one),
plain text or TLS from PEM files, and a one-line error naming the reason
when it cannot listen. Signal handling for a foreground server lives here too.
"""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn, cast

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from fuzz.errors import FuzzError
from fuzz.rpc.auth import HEALTH_SERVICE, BearerTokenInterceptor, TokenCheck

StatusTable = tuple[tuple[type[FuzzError], grpc.StatusCode], ...]
SignalHandler = Callable[[int, FrameType | None], Any] | int | None
SIGNAL_POLL = 0.5  # how often a server's main thread wakes to act on a signal
GRPC_MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # gRPC's own default for a received message
HEALTH_CHECK_METHOD = f"/{HEALTH_SERVICE}/Check"


class ServerStartError(FuzzError):
    """A server cannot start: its address, TLS files or state are unusable."""


def endpoint_for(listen: str, port: int) -> str:
    """The address clients use for a server bound to ``listen`` on ``port``."""
    host = listen.rpartition(":")[0].strip("[]")
    if host in ("", "0.0.0.0", "::", "localhost"):
        host = "127.0.0.1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_problem(listen: str) -> str:
    """Say why ``listen`` (``host:port``) cannot be bound, as the OS puts it."""
    host, _, port_text = listen.rpartition(":")
    host = host.strip("[]")
    if not host or not port_text.isdigit():
        return "expected HOST:PORT, e.g. 127.0.0.1:0"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, int(port_text), type=socket.SOCK_STREAM
        )[0]
        with socket.socket(family, kind, proto) as probe:
            probe.bind(address)
    except OSError as exc:
        return exc.strerror or str(exc)
    return "the gRPC server could not bind it"


@dataclass(frozen=True)
class TlsFiles:
    """A server's TLS certificate (chain) and key, as PEM files.

    With ``client_ca`` the server requires every client to present a certificate
    that CA issued (mutual TLS).
    """

    cert: Path
    key: Path
    client_ca: Path | None = None

    def server_credentials(self) -> grpc.ServerCredentials:
        """gRPC server credentials from the files, or ServerStartError naming what is wrong."""
        paths = [self.cert, self.key, *([self.client_ca] if self.client_ca else [])]
        try:
            chain, key, *client_ca = (path.read_bytes() for path in paths)
        except OSError as exc:
            raise ServerStartError(
                f"cannot read TLS file {exc.filename}: {exc.strerror}") from exc
        if not all(b"-----BEGIN" in pem for pem in (chain, key, *client_ca)):
            raise ServerStartError(
                f"TLS files {', '.join(str(path) for path in paths)} must be PEM")
        if client_ca:
            return grpc.ssl_server_credentials([(key, chain)], root_certificates=client_ca[0],
                                               require_client_auth=True)
        return grpc.ssl_server_credentials([(key, chain)])


@dataclass
class RunningServer:
    """A started server, its health service, and the endpoint clients should use."""

    server: grpc.Server
    health: health.HealthServicer
    endpoint: str
    service_name: str = ""

    def set_serving(self, serving: bool) -> None:
        """Answer health checks (the server's and its service's) SERVING or NOT_SERVING."""
        status = health_pb2.HealthCheckResponse.SERVING if serving \
            else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", self.service_name):
            self.health.set(name, status)

    @property
    def serving(self) -> bool:
        """Whether health checks are answered SERVING (not before ready, nor once stopping)."""
        # the servicer's own Check: it touches the context only for an unknown service
        reply = self.health.Check(health_pb2.HealthCheckRequest(service=""),
                                  cast(grpc.ServicerContext, None))
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def start_server(
    listen: str,
    authenticate: TokenCheck,
    register: Callable[[grpc.Server], None],
    service_name: str,
    *,
    tls: TlsFiles | None = None,
    max_workers: int = 64,
    open_methods: Iterable[str] = (),
    interceptors: Sequence[grpc.ServerInterceptor[Any, Any]] = (),
    max_message_bytes: int = GRPC_MAX_MESSAGE_BYTES,
    serving: bool = True,
) -> RunningServer:
    """Start a server with ``register`` adding its servicers.

    Every call needs a bearer token ``authenticate`` accepts, except those to
    ``open_methods`` (full method names, ``/package.Service/Method``): they
    authenticate themselves (a node's registration carries a join token or a signed
    proof, a login a one-time code). ``interceptors`` run after the token check, on the
    calls whose token was accepted. A request larger than ``max_message_bytes`` is
    refused by gRPC itself (RESOURCE_EXHAUSTED). Health checks answer SERVING at once,
    or, without ``serving``, NOT_SERVING until :meth:`RunningServer.set_serving`.
    Raises ServerStartError.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers,
                                   thread_name_prefix=service_name.rpartition(".")[2]),
        interceptors=[BearerTokenInterceptor(authenticate, (HEALTH_CHECK_METHOD, *open_methods)),
                      *interceptors],
        options=(("grpc.so_reuseport", 0),
                 ("grpc.max_receive_message_length", max_message_bytes)),
    )
    register(server)
    checker = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    try:
        if tls is None:
            port = server.add_insecure_port(listen)
        else:
            port = server.add_secure_port(listen, tls.server_credentials())
    except RuntimeError:
        port = 0
    if not port:
        raise ServerStartError(f"cannot listen on {listen}: {bind_problem(listen)}")
    server.start()
    running = RunningServer(server, checker, endpoint_for(listen, port), service_name)
    running.set_serving(serving)
    return running


def install_signal_handlers(stop: threading.Event) -> dict[int, SignalHandler]:
    """Make SIGTERM and SIGINT set ``stop`` (main thread only); returns the old handlers."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    return {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}


def wait_for_stop(stop: threading.Event) -> None:
    """Block until ``stop`` is set, waking every :data:`SIGNAL_POLL` seconds.

    The kernel may hand SIGTERM to any thread that does not block it, gRPC's C
    threads included; there it only trips a flag that the main thread acts on the
    next time it runs Python code, so an untimed wait in the main thread would
    never return (an agent was seen sleeping through SIGTERM this way).
    """
    while not stop.wait(SIGNAL_POLL):
        pass


def restore_signal_handlers(previous: dict[int, SignalHandler]) -> None:
    """Put back the handlers :func:`install_signal_handlers` replaced."""
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def status_for(exc: FuzzError, table: StatusTable) -> grpc.StatusCode:
    """The status ``table`` gives ``exc`` (INTERNAL for the unexpected)."""
    for kind, code in table:
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.INTERNAL


def abort_with(context: grpc.ServicerContext, exc: FuzzError, table: StatusTable) -> NoReturn:
    """End the call with the status ``table`` gives ``exc`` (INTERNAL for the unexpected)."""
    context.abort(status_for(exc, table), str(exc))
