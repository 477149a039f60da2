"""http(s) ingress cannot probe the inside: internal addresses, redirects, proxies.

Through the real transfer code (:func:`fuzz.orchestrate.transfer.ingress_egress.ingress`) against
real HTTP servers on 127.0.0.1, which stand in for the services an attacker would
aim at (loopback is as internal as it gets). Each server counts the connections it
accepts, so a test can say that a refused fetch never even connected.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fuzz.orchestrate.transfer.ingress_egress import S3Credentials, TransferError, egress, ingress
from fuzz.orchestrate.transfer.ingress_policy import IngressPolicy
from fuzz.spec.allowlist import AllowEntry
from fuzz.spec.loader import load_cluster_spec
from fuzz.spec.problems import SpecError
from tests.support.moto_s3 import MotoS3

SECRET = b"internal: the admin token\n"
VIA_PROXY = b"answered by the proxy\n"


@dataclass
class Server:
    """A server on 127.0.0.1: its port, and every request line it received."""

    port: int
    requests: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"


class _Handler(BaseHTTPRequestHandler):
    """``/secret``: SECRET; ``/to/URL``: a 302 to URL; ``/loop``: a 302 to itself; a
    proxy's request: VIA_PROXY."""

    server: _Recording

    def do_GET(self) -> None:
        self.server.record.requests.append(self.requestline)
        if self.path == "/secret":
            body = SECRET
        elif self.path.startswith("/to/") or self.path == "/loop":
            self.send_response(302)
            self.send_header("Location", self.path.removeprefix("/to/"))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        elif self.path.startswith("http://"):  # absolute form: asked as a proxy
            body = VIA_PROXY
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_CONNECT(self) -> None:
        self.server.record.requests.append(self.requestline)
        self.send_error(502)

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output quiet."""


class _Recording(ThreadingHTTPServer):
    record: Server

    def get_request(self) -> tuple[socket.socket, object]:
        accepted = super().get_request()
        self.record.requests.append("(connected)")
        return accepted


@contextlib.contextmanager
def serving() -> Iterator[Server]:
    """A :class:`_Handler` server on 127.0.0.1 (any free port)."""
    server = _Recording(("127.0.0.1", 0), _Handler)
    server.record = Server(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.record
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def internal() -> Iterator[Server]:
    """The service an attacker aims at."""
    with serving() as server:
        yield server


@pytest.fixture
def other() -> Iterator[Server]:
    """A second server (an allowed one, or a proxy)."""
    with serving() as server:
        yield server


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    path = tmp_path / "volume"
    path.mkdir()
    return path


def allowing(*entries: str, proxy: str | None = None) -> IngressPolicy:
    """A policy with the admin's allow-list ``entries``."""
    return IngressPolicy.from_spec(entries, proxy)


def refused(uri: str, volume: Path, policy: IngressPolicy | None = None,
            credentials: S3Credentials | None = None) -> str:
    """The reason ingress of ``uri`` fails (it must), without its leading URI."""
    with pytest.raises(TransferError) as caught:
        ingress(uri, "file://refused", volume, http_policy=policy, credentials=credentials)
    message = str(caught.value)
    assert message.startswith(f"{uri}: "), message
    assert not (volume / "refused").exists()
    return message.removeprefix(f"{uri}: ")


# --- by default: nothing internal ------------------------------------------------------------


def test_loopback_is_refused_by_default_before_connecting(internal: Server,
                                                          volume: Path) -> None:
    reason = refused(f"{internal.url}/secret", volume)
    assert reason == (f"refusing to fetch from 127.0.0.1 port {internal.port}: a loopback "
                      "address (an admin may allow it under orchestrator.ingress.allow, "
                      "naming that one address)")
    assert internal.requests == []  # not even a connection: no port-scan oracle


def test_a_name_that_resolves_to_loopback_is_refused(internal: Server, volume: Path) -> None:
    reason = refused(f"http://localhost:{internal.port}/secret", volume)
    assert re.fullmatch(r"refusing to fetch from (127\.0\.0\.1|::1) port \d+: a loopback .*",
                        reason)
    assert internal.requests == []


@pytest.mark.parametrize(("address", "kind"), [
    ("127.0.0.1", "a loopback address"),
    ("127.9.9.9", "a loopback address"),
    ("::1", "a loopback address"),
    ("10.1.2.3", "a private (RFC 1918) address"),
    ("172.16.0.1", "a private (RFC 1918) address"),
    ("192.168.1.1", "a private (RFC 1918) address"),
    ("100.64.0.1", "a shared (CGNAT, 100.64.0.0/10) address"),
    ("169.254.169.254", "a link-local address (where cloud metadata services answer)"),
    ("fe80::1", "a link-local address (where cloud metadata services answer)"),
    ("224.0.0.1", "a multicast address"),
    ("ff02::1", "a multicast address"),
    ("0.0.0.0", "the unspecified address"),
    ("::", "the unspecified address"),
    ("255.255.255.255", "the broadcast address"),
    ("fd00:ec2::254", "a unique local (fc00::/7) address"),
    ("fec0::1", "a site-local address"),
    ("192.0.2.1", "not a public address"),
    ("::ffff:169.254.169.254", "a link-local address (where cloud metadata services answer)"),
    ("::ffff:10.0.0.1", "a private (RFC 1918) address"),
    ("::10.0.0.1", "a private (RFC 1918) address"),
    ("64:ff9b::a9fe:a9fe", "a link-local address (where cloud metadata services answer)"),
    ("2002:7f00:1::1", "a loopback address"),
])
def test_internal_addresses_and_their_ipv6_disguises_are_refused(address: str,
                                                                kind: str) -> None:
    reason = IngressPolicy().refusal(ipaddress.ip_address(address), 80)
    assert reason is not None and f": {kind} (an admin may allow it" in reason, reason


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1::1"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert IngressPolicy().refusal(ipaddress.ip_address(address), 443) is None


# --- the admin's allow-list ------------------------------------------------------------------


def test_an_allow_listed_address_and_port_is_fetched(internal: Server, other: Server,
                                                     volume: Path) -> None:
    policy = allowing(f"127.0.0.1:{internal.port}")
    ingress(f"{internal.url}/secret", "file://got", volume, http_policy=policy)
    assert (volume / "got").read_bytes() == SECRET
    # the entry names one port: the next port on the same address stays closed
    assert "a loopback address" in refused(f"{other.url}/secret", volume, policy)
    assert other.requests == []


def test_a_wide_network_does_not_open_the_cluster_itself(internal: Server,
                                                         volume: Path) -> None:
    # 127.0.0.1 is an address of the orchestrator's host: only an entry naming it opens it
    assert "naming that one address" in refused(f"{internal.url}/secret", volume,
                                                 allowing("127.0.0.0/8"))
    ingress(f"{internal.url}/secret", "file://got", volume, http_policy=allowing("127.0.0.1"))
    assert (volume / "got").read_bytes() == SECRET


def test_the_orchestrators_and_agents_ports_are_never_fetched(internal: Server,
                                                             volume: Path) -> None:
    endpoint = f"127.0.0.1:{internal.port}"
    policy = IngressPolicy((AllowEntry.parse(endpoint),),
                           cluster_endpoints=lambda: ["127.0.0.1:7400", endpoint])
    assert refused(f"{internal.url}/secret", volume, policy) == (
        f"refusing to fetch from 127.0.0.1 port {internal.port}: the orchestrator's or a "
        "node agent's port")
    anywhere = IngressPolicy((AllowEntry.parse("127.0.0.1"),),
                             cluster_endpoints=lambda: [f"0.0.0.0:{internal.port}"])
    assert "node agent's port" in refused(f"{internal.url}/secret", volume, anywhere)
    assert internal.requests == []


# --- redirects -------------------------------------------------------------------------------


def test_a_redirect_from_an_allowed_server_to_loopback_is_refused(
        internal: Server, other: Server, volume: Path) -> None:
    policy = allowing(f"127.0.0.1:{other.port}")
    uri = f"{other.url}/to/{internal.url}/secret"
    assert refused(uri, volume, policy).startswith(
        f"refusing to fetch from 127.0.0.1 port {internal.port}: a loopback address")
    assert internal.requests == []
    assert len(other.requests) == 2  # connected, and answered the redirect


def test_a_redirect_to_ftp_is_refused_naming_it(volume: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as ftp, serving() as web:
        ftp.settimeout(0.5)
        target = f"ftp://127.0.0.1:{ftp.getsockname()[1]}/etc/passwd"
        reason = refused(f"{web.url}/to/{target}", volume, allowing(f"127.0.0.1:{web.port}"))
        assert reason == f"redirected to {target}: only http:// and https:// redirects are followed"
        with pytest.raises(TimeoutError):
            ftp.accept()  # nobody connected


@pytest.mark.parametrize("target", ["file:///etc/passwd", "data:,secret"])
def test_a_redirect_to_another_scheme_is_refused(target: str, other: Server,
                                                 volume: Path) -> None:
    reason = refused(f"{other.url}/to/{target}", volume, allowing(f"127.0.0.1:{other.port}"))
    assert (target in reason and "not allowed" in reason) or "only http://" in reason, reason


def test_redirects_are_bounded(other: Server, volume: Path) -> None:
    policy = allowing(f"127.0.0.1:{other.port}")
    five = other.url + "".join(f"/to/{other.url}" for _ in range(5)) + "/secret"
    ingress(five, "file://got", volume, http_policy=policy)
    assert (volume / "got").read_bytes() == SECRET
    six = other.url + "".join(f"/to/{other.url}" for _ in range(6)) + "/secret"
    assert refused(six, volume, policy) == (
        f"more than 5 redirects (the last to {other.url}/secret)")
    assert refused(f"{other.url}/loop", volume, policy) == (
        f"more than 5 redirects (the last to {other.url}/loop)")


# --- proxies ---------------------------------------------------------------------------------


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"])
def test_a_proxy_in_the_environment_is_ignored(internal: Server, other: Server, volume: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               variable: str) -> None:
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, other.url)
    ingress(f"{internal.url}/secret", "file://got", volume,
            http_policy=allowing(f"127.0.0.1:{internal.port}"))
    assert (volume / "got").read_bytes() == SECRET
    assert other.requests == []  # the "proxy" never saw a connection
    # nor does the environment's proxy move the check to the proxy's address
    assert "a loopback address" in refused(f"{internal.url}/secret", volume)
    assert other.requests == []


def test_the_configured_proxy_is_used_and_the_destination_still_checked(
        internal: Server, other: Server, volume: Path) -> None:
    proxy = other.url  # a proxy the admin configured; it answers every request itself
    policy = allowing(f"127.0.0.1:{internal.port}", proxy=proxy)
    ingress(f"{internal.url}/secret", "file://got", volume, http_policy=policy)
    assert (volume / "got").read_bytes() == VIA_PROXY
    assert other.requests[-1] == f"GET {internal.url}/secret HTTP/1.1"
    assert internal.requests == []
    asked = len(other.requests)
    # a destination the policy refuses never reaches the proxy
    no_allow = allowing(proxy=proxy)
    assert refused(f"{internal.url}/secret", volume, no_allow).startswith(
        f"refusing to fetch from 127.0.0.1 port {internal.port}: a loopback address")
    assert refused(f"https://127.0.0.1:{internal.port}/secret", volume, no_allow).startswith(
        f"refusing to fetch from 127.0.0.1 port {internal.port}: a loopback address")
    assert refused(f"http://localhost:{internal.port}/secret", volume, no_allow).startswith(
        "refusing to fetch from ")
    assert len(other.requests) == asked and internal.requests == []


# --- S3 endpoints a secret names ------------------------------------------------------------


def s3_credentials(moto_s3: MotoS3, endpoint: str | None = None) -> S3Credentials:
    """What a user's S3 secret holds, with its own endpoint (default: moto's)."""
    return S3Credentials(moto_s3.access_key_id, moto_s3.secret_access_key,
                         region=moto_s3.region, endpoint_url=endpoint or moto_s3.endpoint_url)


def test_an_s3_endpoint_on_an_internal_address_is_refused(moto_s3: MotoS3, internal: Server,
                                                          volume: Path) -> None:
    # the metadata-service trick: path-style s3://latest/meta-data/... at an internal host
    bucket = moto_s3.new_bucket()
    moto_s3.client().put_object(Bucket=bucket, Key="data.txt", Body=SECRET)
    uri = f"s3://{bucket}/data.txt"
    credentials = s3_credentials(moto_s3)
    reason = refused(uri, volume, None, credentials)
    assert reason == (f"endpoint {moto_s3.endpoint_url}: refusing to fetch from 127.0.0.1 "
                      f"port {moto_s3.endpoint_url.rpartition(':')[2]}: a loopback address (an "
                      "admin may allow it under orchestrator.ingress.allow, naming that one "
                      "address)")
    (volume / "out.txt").write_bytes(b"overwrite")
    with pytest.raises(TransferError, match=rf"^{uri}: endpoint .*: refusing to fetch"):
        egress("file://out.txt", uri, volume, credentials=credentials)
    assert moto_s3.client().get_object(Bucket=bucket, Key="data.txt")["Body"].read() == SECRET
    assert refused(uri, volume, None, s3_credentials(moto_s3, "file:///etc/passwd")) == (
        "endpoint file:///etc/passwd: not an http:// or https:// URL")
    policy = allowing(moto_s3.endpoint_url.removeprefix("http://"))
    ingress(uri, "file://got", volume, credentials=credentials, http_policy=policy)
    assert (volume / "got").read_bytes() == SECRET


def test_s3_ignores_the_proxy_in_the_environment(moto_s3: MotoS3, other: Server, volume: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = moto_s3.new_bucket()
    moto_s3.client().put_object(Bucket=bucket, Key="data.txt", Body=SECRET)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, other.url)
    policy = allowing(moto_s3.endpoint_url.removeprefix("http://"))
    ingress(f"s3://{bucket}/data.txt", "file://got", volume,
            credentials=s3_credentials(moto_s3), http_policy=policy)
    assert (volume / "got").read_bytes() == SECRET
    assert other.requests == []


# --- the cluster spec ------------------------------------------------------------------------


def test_the_spec_block_is_validated_with_positions(tmp_path: Path) -> None:
    spec = tmp_path / "fuzz.yaml"
    spec.write_text(
        "version: 1\ncluster: demo\norchestrator:\n  ingress:\n"
        "    allow: [127.0.0.1:8000, 10.0.0.0/8, '[::1]:80', fd00::/8, files.lan, 1.2.3.4:0]\n"
        "    proxy: https://proxy.lan:3128\n")
    with pytest.raises(SpecError) as caught:
        load_cluster_spec(spec, "fuzz.yaml")
    assert [str(problem) for problem in caught.value.problems] == [
        "fuzz.yaml:5:63: orchestrator.ingress.allow[4]: 'files.lan' is not an address, a CIDR "
        "network or ADDRESS:PORT (host names are not allowed: the check is on the address "
        "connected to)",
        "fuzz.yaml:5:74: orchestrator.ingress.allow[5]: '1.2.3.4:0': the port must be a "
        "number from 1 to 65535",
        "fuzz.yaml:6:12: orchestrator.ingress.proxy: 'https://proxy.lan:3128': write the "
        "proxy as http://HOST:PORT",
    ]


def test_the_spec_block_becomes_the_policy(tmp_path: Path) -> None:
    spec = tmp_path / "fuzz.yaml"
    spec.write_text("version: 1\ncluster: demo\norchestrator:\n  ingress:\n"
                    "    allow: ['[::1]:80', 10.0.0.0/8]\n    proxy: http://proxy.lan:3128\n")
    block = load_cluster_spec(spec, "fuzz.yaml").spec.orchestrator
    assert block is not None
    policy = IngressPolicy.from_spec(block.ingress.allow, block.ingress.proxy)
    assert policy.allow == (AllowEntry(ipaddress.ip_network("::1/128"), 80),
                            AllowEntry(ipaddress.ip_network("10.0.0.0/8")))
    assert policy.proxy == "http://proxy.lan:3128"
    assert policy.refusal(ipaddress.ip_address("10.9.8.7"), 443) is None
