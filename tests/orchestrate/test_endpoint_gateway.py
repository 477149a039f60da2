"""The endpoint gateway on 127.0.0.1: real TLS (a cluster CA's certificate), real IAM
users, tokens and login codes in a real store, real HTTP and WebSocket services behind
it. Only the last hop differs from the orchestrator's: a TCP connection to the service
on 127.0.0.1 instead of the agent's PortForward (tests/e2e/test_endpoints_e2e.py runs that
hop through real containers).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from fuzz.crypto import pki
from fuzz.orchestrate.endpoints.gateway import Gateway, GatewayTls
from fuzz.orchestrate.endpoints.proxy import (
    EndpointNotFoundError,
    EndpointUnavailableError,
    GatewayParts,
    Route,
)
from fuzz.orchestrate.endpoints.sessions import COOKIE_NAME, SignIns
from fuzz.orchestrate.iam.audit import AuditLog
from fuzz.orchestrate.iam.directory import CODE_PREFIX, IamDirectory
from fuzz.orchestrate.store import Store
from fuzz.spec.endpoint_urls import EndpointAddress
from fuzz.testing.browser import headless_chromium
from fuzz.testing.web import serve_handler
from tests.support.endpoints import Browser, ca_context, websocket_echo, websocket_echo_server

OWNER, MEMBER, OTHER = "olive", "mona", "otto"
ACCOUNT = "lab"
WORKFLOW = "nb"
DOMAIN = "fuzz.test"
SCOPES = ("user", "group", "organization", "public")
CHUNKS = [b"first chunk\n", b"second chunk\n", b"last chunk\n"]
# TLS 1.3's suites as Chromium (and Firefox) offers them: AES-128-GCM first
CHROMIUM_SUITES = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
BIG = bytes(range(256)) * (3 * 2**20 // 256) + b"tail"  # more than one read of the service


class ServiceHandler(http.server.BaseHTTPRequestHandler):
    """The service: echoes what it was sent as JSON; ``.../chunked`` answers in chunks,
    the second only once the test has read the first."""

    protocol_version = "HTTP/1.1"
    release = threading.Event()
    peers: ClassVar[list[int]] = []  # the gateway's port of each request's service connection

    def do_GET(self) -> None:
        ServiceHandler.peers.append(self.client_address[1])
        if self.path.endswith("/big"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(BIG)))
            self.end_headers()
            self.wfile.write(BIG)
            return
        if self.path.endswith("/chunked"):
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            for number, chunk in enumerate(CHUNKS):
                if number == 1:
                    assert ServiceHandler.release.wait(30)
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            return
        self._echo(b"")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self._echo(self.rfile.read(length))

    def _echo(self, body: bytes) -> None:
        data = json.dumps({"path": self.path, "body": body.decode(),
                           "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Set-Cookie", f"{COOKIE_NAME}=forged; Path=/")
        self.send_header("Set-Cookie", "app=1; Path=/")
        if self.path.endswith("/close"):  # as busybox httpd does after every answer
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@dataclass
class SocketBackend:
    """A TCP connection to the service (the orchestrator's is an agent tunnel)."""

    sock: socket.socket
    error: str | None = None

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self) -> bytes:
        return self.sock.recv(1 << 20)

    def socket(self) -> socket.socket:
        return self.sock

    def close(self) -> None:
        self.sock.close()

    def finish(self) -> None:
        self.close()


class Services:
    """The test's resolver: one endpoint per scope on ``http_port``, ``ws`` on ``ws_port``."""

    def __init__(self, http_port: int, ws_port: int) -> None:
        closed = socket.create_server(("127.0.0.1", 0))
        nothing_listens = closed.getsockname()[1]
        closed.close()
        self.ports = {scope: http_port for scope in SCOPES} | {
            "ws": ws_port, "refused": nothing_listens, "stopped": 0}

    def route(self, address: EndpointAddress) -> Route:
        if (address.owner, address.workflow, address.service) != (OWNER, WORKFLOW, "svc") \
                or address.endpoint not in self.ports:
            raise EndpointNotFoundError(f"no endpoint {address.endpoint}")
        scope = address.endpoint if address.endpoint in SCOPES else "group"
        return Route(address, scope, ACCOUNT, self.ports[address.endpoint])

    def connect(self, route: Route) -> SocketBackend:
        if route.port == 0:
            raise EndpointUnavailableError("service svc of workflow olive/nb is not running")
        return SocketBackend(socket.create_connection(("127.0.0.1", route.port)))


@dataclass
class Running:
    gateway: Gateway
    iam: IamDirectory
    tokens: dict[str, str]
    ca: bytes
    audit: Path

    def decisions(self) -> list[tuple[str, str, str, bool]]:
        lines = [json.loads(line) for line in self.audit.read_text().splitlines()]
        return [(d["who"], d["action"], d["resource"], d["allowed"]) for d in lines]

    def browser(self) -> Browser:
        return Browser("127.0.0.1", self.gateway.port, ca_context(self.ca))


def _path(endpoint: str, rest: str = "") -> str:
    return EndpointAddress(OWNER, WORKFLOW, "svc", endpoint).path_prefix + rest


def _token(iam: IamDirectory, user: str) -> str:
    code, _ = iam.issue_code(user)
    return iam.login(code)[0]


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    iam = IamDirectory(Store(tmp_path / "server.db"))
    iam.put_group(ACCOUNT, [])
    iam.put_user(OWNER, ["user"], [ACCOUNT])
    iam.put_user(MEMBER, ["user"], [ACCOUNT])
    iam.put_user(OTHER, ["user"], [])
    tokens = {user: _token(iam, user) for user in (OWNER, MEMBER, OTHER)}
    authority = pki.CertificateAuthority.create("endpoints-test")
    key = pki.new_key()
    cert = tmp_path / "gateway.crt"
    cert.write_bytes(pki.cert_pem(authority.issue(key.public_key(), "gateway", ["127.0.0.1"])))
    key_file = tmp_path / "gateway.key"
    key_file.write_bytes(pki.key_pem(key))
    ServiceHandler.release.clear()
    with serve_handler(ServiceHandler) as http_port, websocket_echo_server() as ws_port:
        audit = AuditLog(tmp_path / "audit.log")
        parts = GatewayParts(Services(http_port, ws_port), iam, SignIns(3600.0), DOMAIN,
                             is_code=lambda text: text.startswith(CODE_PREFIX),
                             audit=audit.record)
        gateway = Gateway("127.0.0.1:0", GatewayTls(cert, key_file))
        gateway.start(parts)
        try:
            yield Running(gateway, iam, tokens, authority.cert_pem, tmp_path / "audit.log")
        finally:
            gateway.stop()
            audit.close()


EXPECTED = {  # viewer -> status per scope (user, group, organization, public)
    OWNER: (200, 200, 200, 200),
    MEMBER: (403, 200, 200, 200),
    OTHER: (403, 403, 200, 200),
    None: (302, 302, 302, 200),
}


def test_scope_matrix_for_browsers_signed_in_with_a_token_or_a_login_code(
        running: Running) -> None:
    """Owner, group member, other user (each signed in through the form: the owner with
    a token, the others with a one-time login code) and anonymous, against each scope."""
    for viewer, expected in EXPECTED.items():
        browser = running.browser()
        if viewer is not None:
            credential = running.tokens[viewer] if viewer == OWNER else \
                running.iam.issue_code(viewer)[0]
            landed = browser.sign_in(_path("organization", "page"), credential)
            assert landed.status == 303, landed.body
            assert landed.headers["Location"] == _path("organization", "page")
        got = tuple(browser.request("GET", _path(scope, "page")).status for scope in SCOPES)
        assert got == expected, f"{viewer}: {got}"
    decisions = running.decisions()
    resource = f"endpoint/{OWNER}/{WORKFLOW}/svc/user"
    assert (OWNER, "endpoint:open", resource, True) in decisions
    assert (OTHER, "endpoint:open", resource, False) in decisions
    assert ("-", "endpoint:open", resource, False) in decisions
    assert not [d for d in decisions if d[2].endswith("/public")], "public: no decision"
    assert not [line for line in running.audit.read_text().splitlines()
                if any(token in line for token in running.tokens.values())]


def test_api_clients_with_a_bearer_token_and_a_bad_token(running: Running) -> None:
    browser = running.browser()
    for viewer, expected in EXPECTED.items():
        if viewer is None:
            continue
        headers = {"Authorization": f"Bearer {running.tokens[viewer]}"}
        got = tuple(browser.request("GET", _path(scope, "page"), headers=headers).status
                    for scope in SCOPES)
        assert got == expected, f"{viewer}: {got}"
    refused = browser.request("GET", _path("user", "page"),
                              headers={"Authorization": "Bearer fzt_not-a-token"})
    assert refused.status == 401 and b"invalid bearer token" in refused.body


def test_the_cookie_is_secure_httponly_opaque_and_never_reaches_the_service(
        running: Running) -> None:
    browser = running.browser()
    token = running.tokens[MEMBER]
    assert browser.sign_in(_path("group"), token).status == 303
    header = next(h for h in browser.set_cookie_headers if h.startswith(COOKIE_NAME))
    assert {"Secure", "HttpOnly", "SameSite=Lax"} <= {p.strip() for p in header.split(";")}
    assert "Max-Age=" in header
    value = browser.cookies[COOKIE_NAME]
    assert token not in header and token[4:12] not in value
    browser.cookies["app"] = "kept"
    seen = browser.request("GET", _path("group", "page?q=1"),
                           headers={"X-Fuzzball-Account-ID": "forged"}).json()
    headers = seen["headers"]
    assert isinstance(headers, dict)
    assert seen["path"] == _path("group", "page?q=1")  # the whole path: the service's base URL
    assert headers["cookie"] == "app=kept"
    assert "authorization" not in headers
    assert headers["x-fuzzball-account-id"] == ACCOUNT
    assert headers["x-fuzzball-user"] == MEMBER
    assert headers["x-forwarded-proto"] == "https"
    # the service cannot replace the gateway's cookie
    assert browser.cookies[COOKIE_NAME] == value
    # a revoked token signs the browser out at once
    running.iam.revoke_user(MEMBER)
    assert browser.request("GET", _path("group", "page")).status == 302


def test_sign_in_refuses_bad_credentials_and_open_redirects(running: Running) -> None:
    browser = running.browser()
    bad = browser.request("POST", "/_fuzz/sign-in", body=b"credential=fzt_nope&next=/x",
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert bad.status == 401 and b"invalid bearer token" in bad.body
    assert COOKIE_NAME not in browser.cookies
    body = f"credential={running.tokens[OWNER]}&next=//evil.example/".encode()
    away = browser.request("POST", "/_fuzz/sign-in", body=body,
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert away.status == 303 and away.headers["Location"] == "/"


def test_a_chunked_answer_streams_chunk_by_chunk(running: Running) -> None:
    connection = running.browser().connection()
    connection.request("GET", _path("public", "chunked"))
    response = connection.getresponse()
    assert response.status == 200
    assert response.headers["Transfer-Encoding"] == "chunked"
    # the second chunk is written only once the first has come through the gateway
    assert response.read1(len(CHUNKS[0])) == CHUNKS[0]
    ServiceHandler.release.set()
    assert response.read() == b"".join(CHUNKS[1:])
    connection.close()


def test_keep_alive_requests_to_different_endpoints_and_a_body(running: Running) -> None:
    """One connection: a relayed POST whose service closes its connection after answering
    (the browser's stays open), a refused one (its body read past), a relayed one."""
    connection = running.browser().connection()
    for scope, body in (("public", b"one"), ("organization", b"two"), ("public", b"three")):
        connection.request("POST", _path(scope, "close"), body=body)
        response = connection.getresponse()
        data = response.read()
        assert not response.will_close
        if scope == "public":
            assert (response.status, json.loads(data)["body"]) == (200, body.decode())
        else:
            assert response.status == 302
    connection.close()


def test_large_answers_then_a_small_one_on_one_kept_service_connection(
        running: Running) -> None:
    """A Content-Length body larger than the service connection's reads passes unparsed,
    byte-exact, and the service's kept connection then serves the next request."""
    ServiceHandler.peers.clear()
    connection = running.browser().connection()
    for target in (_path("public", "big"), _path("public", "big"), _path("public", "x")):
        connection.request("GET", target)
        response = connection.getresponse()
        data = response.read()
        assert response.status == 200
        if target.endswith("big"):
            assert data == BIG
        else:
            assert json.loads(data)["path"] == target
    connection.close()
    assert len(ServiceHandler.peers) == 3 and len(set(ServiceHandler.peers)) == 1


def test_unknown_endpoints_and_the_bare_prefix(running: Running) -> None:
    browser = running.browser()
    assert browser.request("GET", "/endpoints/olive/nb/svc/nope/").status == 404
    assert browser.request("GET", "/elsewhere").status == 404
    bare = browser.request("GET", _path("public").rstrip("/") + "?a=b")
    assert bare.status == 308 and bare.headers["Location"] == _path("public", "?a=b")


def test_subdomain_endpoints_are_routed_by_host(running: Running) -> None:
    browser = running.browser()
    host = EndpointAddress(OWNER, WORKFLOW, "svc", "public").host(DOMAIN)
    seen = browser.request("GET", "/some/page", headers={"Host": f"{host}:443"}).json()
    assert seen["path"] == "/some/page"
    anonymous = browser.request("GET", "/", headers={"Host": host.replace("public", "user", 1)})
    assert anonymous.status == 302


def test_a_websocket_echo_through_an_endpoint(running: Running) -> None:
    context = ca_context(running.ca)
    raw = socket.create_connection(("127.0.0.1", running.gateway.port))
    with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        messages = [f"hello {n}" for n in range(5)] + ["x" * 200_000]
        echoed = websocket_echo(sock, "127.0.0.1", _path("ws"), messages, headers=[
            ("Authorization", f"Bearer {running.tokens[MEMBER]}")])
    assert echoed == messages


def test_a_client_that_expects_100_continue_gets_it_then_the_answer(running: Running) -> None:
    """As curl does for large uploads: the gateway asks for the body itself."""
    raw = socket.create_connection(("127.0.0.1", running.gateway.port), timeout=30)
    with ca_context(running.ca).wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.sendall((f"POST {_path('public', 'upload')} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      "Content-Length: 5\r\nExpect: 100-continue\r\n\r\n").encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 100 ")
        sock.sendall(b"hello")
        answer = b""
        while b'"body": "hello"' not in answer:
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b'"expect"' not in answer  # the service was not asked to say 100 again


def test_a_service_not_running_is_503_and_one_that_refuses_is_502(running: Running) -> None:
    browser = running.browser()
    headers = {"Authorization": f"Bearer {running.tokens[OWNER]}"}
    stopped = browser.request("GET", _path("stopped", "x"), headers=headers)
    assert (stopped.status, stopped.body) == (
        503, b"service svc of workflow olive/nb is not running\n")
    refused = browser.request("GET", _path("refused", "x"), headers=headers)
    assert refused.status == 502
    assert refused.body.startswith(b"endpoint refused of olive/nb: the service did not answer")


def _agreed_cipher(port: int, *offer: str) -> str:
    """The cipher the gateway agrees on with a real TLS client (``openssl s_client``)
    offering ``offer``; '' when the handshake fails."""
    run = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-brief",
                          *offer], input="", capture_output=True, text=True, timeout=60)
    for line in (run.stdout + run.stderr).splitlines():
        if line.startswith("Ciphersuite:"):
            return line.split(":", 1)[1].strip()
    return ""


def test_tls13_gets_the_browsers_first_choice_aes_128_gcm_from_chromiums_offer(
        running: Running) -> None:
    """Browsers offer AES-128-GCM first (it costs less a byte than AES-256-GCM, which
    OpenSSL's server order puts first); the gateway takes the browser's choice."""
    port = running.gateway.port
    assert _agreed_cipher(port, "-ciphersuites", CHROMIUM_SUITES) == "TLS_AES_128_GCM_SHA256"
    assert _agreed_cipher(port, "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256:"
                          "TLS_AES_128_GCM_SHA256") == "TLS_CHACHA20_POLY1305_SHA256"


def test_tls12_is_aead_with_forward_secrecy_only(running: Running) -> None:
    """With the browser choosing, TLS 1.2 offers it nothing but ECDHE with an AEAD."""
    port = running.gateway.port
    assert _agreed_cipher(port, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA256") == ""
    assert _agreed_cipher(port, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA256:"
                          "ECDHE-ECDSA-AES128-GCM-SHA256") == "ECDHE-ECDSA-AES128-GCM-SHA256"


def test_chromium_and_the_gateways_tls_agree_on_aes_128_gcm(tmp_path: Path,
                                                              running: Running) -> None:
    """Real headless Chromium opens a page of a server with the gateway's TLS context:
    they agree on Chromium's first choice (OpenSSL's server order gave it AES-256-GCM)."""
    context = GatewayTls(tmp_path / "gateway.crt", tmp_path / "gateway.key").context()
    agreed: list[str] = []
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                sock, _ = server.accept()
            except OSError:
                return
            with sock, contextlib.suppress(OSError, ssl.SSLError), \
                    context.wrap_socket(sock, server_side=True) as tls:
                agreed.append(str((tls.cipher() or ("",))[0]))
                tls.recv(65536)
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                            b"Content-Length: 2\r\nConnection: close\r\n\r\nok")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with headless_chromium(trusted=((tmp_path / "gateway.crt").read_text(),)) as browser:
            browser.driver.get(f"https://127.0.0.1:{server.getsockname()[1]}/")
            assert "ok" in browser.driver.page_source
    finally:
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_RDWR)
        server.close()
        thread.join(10)
    assert agreed and set(agreed) == {"TLS_AES_128_GCM_SHA256"}, agreed
