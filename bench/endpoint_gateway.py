"""Benchmark: the endpoint gateway alone sending one large download, its send path with
one thread against two (:mod:`fuzz.orchestrate.endpoints.browsertls`), in turns.

This process runs the real gateway (real TLS) with a real hand-off listener standing for
the agent (:mod:`fuzz.substrate.rpc.handoff`): each download's service socket is handed
over as on the agent's host. The service (a plain HTTP answer of ``--mb`` MB written from
one buffer) and the client (TLS offered as Chromium offers it, ``recv_into`` one buffer)
are processes of their own, so
this process's CPU time is the gateway's. Each round downloads once each way, alternately:
``sslsocket`` (the browser's TLS an ``ssl.SSLSocket``, as before session 13),
``one-thread`` (memory BIOs, the records encrypted and sent by the connection's thread)
and ``two-threads`` (encrypted there, sent by a sender thread); the medians of
``--rounds``; and, each way, 300 small requests in a row on one connection (the
service closes after each, as busybox httpd does): their p50 and the gateway's CPU
milliseconds a request.
Prints MB/s and CPU-s per 100 MB of the gateway, the client and the service, and
``/proc/loadavg`` at the start and the end (the machine is shared: compare the two ways
of the same run, and CPU per byte rather than one rate).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

from fuzz.crypto import pki
from fuzz.errors import FuzzError
from fuzz.orchestrate.endpoints.gateway import Gateway, GatewayTls
from fuzz.orchestrate.endpoints.handoff import HandedOffConnection
from fuzz.orchestrate.endpoints.proxy import (
    Connection,
    EndpointNotFoundError,
    EndpointUnavailableError,
    GatewayParts,
    Route,
)
from fuzz.orchestrate.endpoints.sessions import SignIns
from fuzz.spec.endpoint_urls import EndpointAddress
from fuzz.substrate.rpc.direct import Grant, TicketBook
from fuzz.substrate.rpc.handoff import HandoffListener
from fuzz.testing.oci import free_port

ADDRESS = EndpointAddress("olive", "nb", "svc", "web")
SMALL_REQUESTS = 300

SERVICE = textwrap.dedent("""
    import socket, sys, resource
    size = int(sys.argv[1]); block = bytes(1 << 20)
    server = socket.create_server(("127.0.0.1", 0)); print(server.getsockname()[1], flush=True)
    while True:
        conn, _ = server.accept()
        request = b""
        while b"\\r\\n\\r\\n" not in request:
            request += conn.recv(65536)
        if b"/cpu" in request:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            body = str(usage.ru_utime + usage.ru_stime).encode()
            conn.sendall(b"HTTP/1.0 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(body) + body)
        else:
            conn.sendall(b"HTTP/1.0 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n" % size)
            view = memoryview(block); left = size
            while left:
                left -= conn.send(view[:min(left, len(block))])
        conn.close()
""")

# what the clients offer: TLS 1.3's suites in Chromium's order (bench/chromium_tls.py)
OFFER_AS_CHROMIUM = textwrap.dedent(f"""
    import sys
    sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
    from chromium_tls import offer_as_chromium
""")

CLIENT = OFFER_AS_CHROMIUM + textwrap.dedent("""
    import socket, ssl, sys, time, resource
    port, ca, size = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    context = ssl.create_default_context(cafile=ca)
    offer_as_chromium(context)
    raw = socket.create_connection(("127.0.0.1", port))
    sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
    buffer = bytearray(1 << 20); view = memoryview(buffer)
    start_cpu = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    sock.sendall(("GET %s HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n\\r\\n" % sys.argv[4]).encode())
    head = b""
    while b"\\r\\n\\r\\n" not in head:
        head += sock.recv(65536)
    got = len(head.partition(b"\\r\\n\\r\\n")[2])
    while got < size:
        n = sock.recv_into(buffer)
        assert n, got
        got += n
    elapsed = time.perf_counter() - start
    end_cpu = resource.getrusage(resource.RUSAGE_SELF)
    cpu = end_cpu.ru_utime + end_cpu.ru_stime - start_cpu.ru_utime - start_cpu.ru_stime
    print(elapsed, cpu)
""")


SMALL_CLIENT = OFFER_AS_CHROMIUM + textwrap.dedent("""
    import socket, ssl, sys, time, statistics
    port, ca, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    context = ssl.create_default_context(cafile=ca)
    offer_as_chromium(context)
    sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port)),
                               server_hostname="127.0.0.1")
    request = ("GET %s HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n\\r\\n" % sys.argv[4]).encode()
    times = []
    for _ in range(count):
        start = time.perf_counter()
        sock.sendall(request)
        answer = b""
        while b"\\r\\n\\r\\n" not in answer:
            answer += sock.recv(65536)
        head, _, body = answer.partition(b"\\r\\n\\r\\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\\r\\n")[0])
        while len(body) < length:
            body += sock.recv(65536)
        times.append(time.perf_counter() - start)
    print(statistics.median(times) * 1000)
""")


class Resolver:
    """The bench's one endpoint, its service socket handed over by the listener."""

    def __init__(self, direct_port: int, book: TicketBook, service_port: int) -> None:
        self._direct_port = direct_port
        self._book = book
        self._service_port = service_port

    def route(self, address: EndpointAddress) -> Route:
        """The one public endpoint."""
        if address != ADDRESS:
            raise EndpointNotFoundError("no such endpoint")
        return Route(address, "public", "", self._service_port)

    def connect(self, route: Route) -> HandedOffConnection:
        """A single-use ticket, presented to the hand-off listener."""
        ticket = os.urandom(32)
        self._book.grant(hashlib.sha256(ticket).digest(), "c", route.port, "bench", 10.0,
                         False)
        handed = HandedOffConnection.open(self._direct_port, ticket)
        if handed is None:
            raise EndpointUnavailableError("no hand-off")
        return handed


def _serve_over_sslsocket(gateway: Gateway, sock: socket.socket, peer: str) -> None:
    """The gateway's ``_serve`` as it was before session 13: an ``ssl.SSLSocket``."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert gateway._context is not None and gateway._parts is not None
        Connection(gateway._parts, gateway._context.wrap_socket(sock, server_side=True),
                   peer).serve()
    finally:
        gateway._slots.release()


class _Refusing:
    """No tokens: the endpoint is public."""

    def authenticate(self, token: str) -> object:
        raise FuzzError("no tokens here")

    def login(self, code: str, ttl: float = 0.0) -> tuple[str, str, float]:
        raise FuzzError("no codes here")


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


@contextlib.contextmanager
def _process(source: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    child = subprocess.Popen([sys.executable, "-c", source, *args], stdout=subprocess.PIPE,
                             text=True)
    try:
        yield child
    finally:
        child.kill()
        child.wait()


def _service_cpu(port: int) -> float:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /cpu HTTP/1.0\r\n\r\n")
        answer = b""
        while data := sock.recv(4096):
            answer += data
    return float(answer.partition(b"\r\n\r\n")[2])


def main() -> None:
    """Run the rounds and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", help="run this way alone (for a profiler)")
    options = parser.parse_args()
    size = options.mb * 10**6
    print("loadavg at start:", Path("/proc/loadavg").read_text().strip())
    with tempfile.TemporaryDirectory() as scratch, \
            _process(SERVICE, str(size)) as service:
        assert service.stdout is not None
        service_port = int(service.stdout.readline())
        authority = pki.CertificateAuthority.create("bench")
        key = pki.new_key()
        cert, key_file, ca = (Path(scratch) / name for name in ("g.crt", "g.key", "ca.crt"))
        cert.write_bytes(pki.cert_pem(authority.issue(key.public_key(), "g", ["127.0.0.1"])))
        key_file.write_bytes(pki.key_pem(key))
        ca.write_bytes(authority.cert_pem)
        book = TicketBook()
        direct_port = free_port()

        def connect(grant: Grant) -> socket.socket:
            return socket.create_connection(("127.0.0.1", grant.port))

        listener = HandoffListener(direct_port, book, connect)
        listener.start()
        gateway = Gateway("127.0.0.1:0", GatewayTls(cert, key_file))
        gateway.start(GatewayParts(Resolver(direct_port, book, service_port), _Refusing(),
                                   SignIns(60.0), "", lambda _: False,
                                   lambda *_: None))
        two_threads = Connection._sending_behind
        memory_bio = Gateway._serve
        one_thread = (memory_bio, lambda self, large: contextlib.nullcontext())
        ways = {"sslsocket": (_serve_over_sslsocket, one_thread[1]), "one-thread": one_thread,
                "two-threads": (memory_bio, two_threads)}
        if options.only:
            ways = {options.only: ways[options.only]}
        figures: dict[str, list[tuple[float, float, float, float]]] = {w: [] for w in ways}
        small: dict[str, list[tuple[float, float]]] = {w: [] for w in ways}
        try:
            for _ in range(options.rounds):
                for way, (serve, sending) in ways.items():
                    Gateway._serve = serve  # type: ignore[method-assign]
                    Connection._sending_behind = sending  # type: ignore[method-assign]
                    before, service_before = _cpu(), _service_cpu(service_port)
                    run = subprocess.run(
                        [sys.executable, "-c", CLIENT, str(gateway.port), str(ca), str(size),
                         ADDRESS.path_prefix + "big"],
                        capture_output=True, text=True, check=True)
                    elapsed, client_cpu = (float(v) for v in run.stdout.split())
                    per = 100e6 / size
                    figures[way].append((size / elapsed / 1e6, (_cpu() - before) * per,
                                         client_cpu * per,
                                         (_service_cpu(service_port) - service_before) * per))
                    before = _cpu()
                    run = subprocess.run(
                        [sys.executable, "-c", SMALL_CLIENT, str(gateway.port), str(ca),
                         str(SMALL_REQUESTS), ADDRESS.path_prefix + "cpu"],
                        capture_output=True, text=True, check=True)
                    small[way].append((float(run.stdout),
                                       (_cpu() - before) * 1000 / SMALL_REQUESTS))
        finally:
            Connection._sending_behind = two_threads  # type: ignore[method-assign]
            Gateway._serve = memory_bio  # type: ignore[method-assign]
            gateway.stop()
            listener.close()
    print("loadavg at end:", Path("/proc/loadavg").read_text().strip())
    for way, rows in figures.items():
        rate, gateway_cpu, client_cpu, service_cpu = (
            statistics.median(column) for column in zip(*rows, strict=True))
        print(f"{way}: {rate:.0f} MB/s (runs: {', '.join(f'{r[0]:.0f}' for r in rows)}); "
              f"CPU-s per 100 MB: gateway {gateway_cpu:.3f}, client {client_cpu:.3f}, "
              f"service {service_cpu:.3f}; small requests: p50 "
              f"{statistics.median(r[0] for r in small[way]):.2f} ms, gateway CPU "
              f"{statistics.median(r[1] for r in small[way]):.2f} ms a request")
    if not options.only:
        before, two = (statistics.median(r[0] for r in figures[w])
                       for w in ("sslsocket", "two-threads"))
        print(f"BENCH gateway_download_two_threads_vs_sslsocket={two / before:.2f} x")


if __name__ == "__main__":
    main()
