"""A real endpoint gateway (real TLS, IAM, audit) in front of a test's resolver, and the
HTTP service the gateway tests put behind it: the parts the direct-port and hand-off
tests of the gateway's data path share."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from fuzz.crypto import pki
from fuzz.errors import FuzzError
from fuzz.orchestrate.endpoints.gateway import Gateway, GatewayTls
from fuzz.orchestrate.endpoints.proxy import EndpointNotFoundError, GatewayParts, Resolver, Route
from fuzz.orchestrate.endpoints.sessions import SignIns
from fuzz.orchestrate.iam.audit import AuditLog
from fuzz.orchestrate.iam.directory import IamDirectory
from fuzz.orchestrate.store import Store
from fuzz.spec.endpoint_urls import EndpointAddress
from fuzz.substrate.rpc.direct import Grant
from fuzz.testing.web import serve_handler
from tests.support.endpoints import Browser, ca_context, websocket_echo, websocket_echo_server

BIG = os.urandom(24 * 2**20 + 12345)  # more than many of the tunnel's chunks


class ClosingHandler(http.server.BaseHTTPRequestHandler):
    """HTTP/1.0 answers, the connection closed after each: ``/big`` is :data:`BIG`,
    a POST is answered with the SHA-256 and length of its body."""

    def do_GET(self) -> None:
        body = BIG if self.path.endswith("/big") else b"small\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        data = self.rfile.read(int(self.headers["Content-Length"]))
        body = f"{hashlib.sha256(data).hexdigest()} {len(data)}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@dataclass
class PortRoutes:
    """A test resolver's routes: each endpoint public, on its port of ``ports``."""

    ports: dict[str, int]

    def route(self, address: EndpointAddress) -> Route:
        """The endpoint's route; EndpointNotFoundError for one not in ``ports``."""
        if address.endpoint not in self.ports:
            raise EndpointNotFoundError(f"no endpoint {address.endpoint}")
        return Route(address, "public", "", self.ports[address.endpoint])


class ClosingResolver(Resolver, Protocol):
    """A test's resolver that keeps connections (idle links) to close at the end."""

    def close(self) -> None:
        """Close what it keeps."""


ServicesT = TypeVar("ServicesT", bound=ClosingResolver)


@dataclass
class RunningGateway(Generic[ServicesT]):
    """The gateway, the test's resolver behind it, and the CA its certificate is from."""

    gateway: Gateway
    services: ServicesT
    ca: bytes

    def browser(self) -> Browser:
        """A browser trusting the gateway's CA."""
        return Browser("127.0.0.1", self.gateway.port, ca_context(self.ca))


@contextlib.contextmanager
def running_gateway(tmp_path: Path, services_for: Callable[[dict[str, int]], ServicesT]
                    ) -> Iterator[RunningGateway[ServicesT]]:
    """A gateway on 127.0.0.1 whose resolver is ``services_for({"web": PORT, "ws": PORT})``:
    ``web`` a :class:`ClosingHandler`, ``ws`` a WebSocket echo server; the resolver is
    closed after the gateway stops."""
    authority = pki.CertificateAuthority.create("gateway-test")
    key = pki.new_key()
    cert = tmp_path / "gateway.crt"
    cert.write_bytes(pki.cert_pem(authority.issue(key.public_key(), "gateway", ["127.0.0.1"])))
    key_file = tmp_path / "gateway.key"
    key_file.write_bytes(pki.key_pem(key))
    with serve_handler(ClosingHandler) as http_port, websocket_echo_server() as ws_port:
        services = services_for({"web": http_port, "ws": ws_port})
        audit = AuditLog(tmp_path / "audit.log")
        parts = GatewayParts(services, IamDirectory(Store(tmp_path / "server.db")),
                             SignIns(3600.0), "", is_code=lambda _: False, audit=audit.record)
        gateway = Gateway("127.0.0.1:0", GatewayTls(cert, key_file))
        gateway.start(parts)
        try:
            yield RunningGateway(gateway, services, authority.cert_pem)
        finally:
            gateway.stop()
            services.close()
            audit.close()


def loopback_connector(opened: list[tuple[str, int]]) -> Callable[[Grant], socket.socket]:
    """The agent's port opener for the tests: a grant's port on 127.0.0.1 (its container
    standing for the job's namespace), each (container, port) asked for noted in ``opened``."""
    def connect(grant: Grant) -> socket.socket:
        opened.append((grant.container_id, grant.port))
        try:
            return socket.create_connection(("127.0.0.1", grant.port))
        except OSError as exc:
            raise FuzzError(f"cannot connect to port {grant.port}: {exc.strerror}") from None

    return connect


def endpoint_path(endpoint: str, rest: str) -> str:
    """The gateway path of ``rest`` under endpoint ``endpoint`` of the tests' workflow."""
    return EndpointAddress("olive", "nb", "svc", endpoint).path_prefix + rest


def assert_big_downloads_whole(running: RunningGateway[ServicesT]) -> None:
    """Three downloads of :data:`BIG` on one kept-alive connection arrive byte-exact, and a
    small one after them on a new connection."""
    connection = running.browser().connection()
    for _ in range(3):
        connection.request("GET", endpoint_path("web", "big"))
        response = connection.getresponse()
        data = response.read()
        assert response.status == 200 and not response.will_close
        assert (len(data), hashlib.sha256(data).digest()) == (
            len(BIG), hashlib.sha256(BIG).digest())
    connection.close()
    assert running.browser().request("GET", endpoint_path("web", "small")).body == b"small\n"


def assert_upload_and_websocket_whole(running: RunningGateway[ServicesT]) -> None:
    """A 5 MiB upload reaches the service byte-exact; a WebSocket echoes small messages
    and a large one."""
    body = os.urandom(5 * 2**20 + 7)
    answer = running.browser().request("POST", endpoint_path("web", "upload"), body=body)
    assert (answer.status, answer.body.decode()) == (
        200, f"{hashlib.sha256(body).hexdigest()} {len(body)}")
    raw = socket.create_connection(("127.0.0.1", running.gateway.port))
    with ca_context(running.ca).wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        messages = [f"hello {n}" for n in range(5)] + ["x" * 300_000]
        assert websocket_echo(sock, "127.0.0.1", endpoint_path("ws", ""), messages) == messages


def assert_unlistened_port_is_502(running: RunningGateway[ServicesT],
                                  ports: dict[str, int]) -> None:
    """An endpoint (added to the resolver's ``ports``) whose port nothing listens on is a
    502 carrying the agent's sentence."""
    closed = socket.create_server(("127.0.0.1", 0))
    ports["gone"] = closed.getsockname()[1]
    closed.close()
    answer = running.browser().request("GET", endpoint_path("gone", "x"))
    assert answer.status == 502 and b"cannot connect to port" in answer.body


BLOCK = os.urandom(2**20)


@dataclass
class Streamed:
    """What a :func:`streaming_service` has sent, and whether its browser went away."""

    sent: int = 0
    broken: bool = False


@contextlib.contextmanager
def streaming_service(mebibytes: int, cut_at: int | None = None
                      ) -> Iterator[tuple[int, Streamed]]:
    """An HTTP service on 127.0.0.1 that answers every GET with a ``Content-Length`` body of
    ``mebibytes`` MiB (:data:`BLOCK` repeated), written block by block and counted; with
    ``cut_at``, it closes its connection after that many blocks. Yields (port, counts)."""
    streamed = Streamed()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(mebibytes * len(BLOCK)))
            self.end_headers()
            try:
                for _ in range(mebibytes if cut_at is None else cut_at):
                    self.wfile.write(BLOCK)
                    streamed.sent += len(BLOCK)
            except OSError:
                streamed.broken = True
            self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    with serve_handler(Handler) as port:
        yield port, streamed


def streamed_digest(mebibytes: int) -> bytes:
    """The SHA-256 of a :func:`streaming_service` body of ``mebibytes`` MiB."""
    digest = hashlib.sha256()
    for _ in range(mebibytes):
        digest.update(BLOCK)
    return digest.digest()


@contextlib.contextmanager
def raw_get(running: RunningGateway[ServicesT], target: str, receive_buffer: int = 0
            ) -> Iterator[tuple[socket.socket, bytes]]:
    """A GET of ``target`` on a TLS connection of its own to the gateway (with a receive
    buffer of ``receive_buffer`` bytes when given: a reader that holds little); yields the
    socket and what was read up to and including the end of the response's headers."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    raw.settimeout(60)
    raw.connect(("127.0.0.1", running.gateway.port))
    with ca_context(running.ca).wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            data = sock.recv(65536)
            assert data, "the gateway closed before the answer's headers"
            head += data
        yield sock, head
