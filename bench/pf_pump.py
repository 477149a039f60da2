"""Benchmark: what the port-forward's copy loop costs per 64-byte round trip: the pump in C
(what the CLI and the agent run), the pump in Python, and the least a Python relay can do.

The port-forward's latency is the sum of its processes' wake-ups: a round trip wakes
the CLI's pump and the agent's twice each. This measures the pump alone, without
clusters or containers: two :func:`fuzz.rpc.direct.pump` loops (the CLI's and the
agent's; in C, and :func:`fuzz.rpc.direct.pump_in_python`) joined by TLS 1.3 on
loopback, a local socket on one end and an echo on the other, all in one process (so its
CPU time is theirs). Against it, in the same run and
alternately, the same chain with two stand-ins:

- *bare*: per wake-up one ``poll``, one read, one ``sendall``: no chunk framing, no
  half-close, no non-blocking bookkeeping (the floor of any Python relay on the same
  sockets and TLS);
- *framed*: the bare relay plus the pump's framing (a length before each chunk, read
  apart from its body), so that the difference between the three shows where the
  pump's time goes: framing, or the rest of the loop.

Prints CPU and wall microseconds per round trip (the minimum and median of the rounds)
and the ratios of the pumps' CPU to the bare relay's. The process's CPU includes the
test's own client and echo threads (Python) around the two relays. The stand-ins end on the first
empty read and leave the half-close aside: they are references, not relays to use.
"""

from __future__ import annotations

import select
import socket
import ssl
import statistics
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from fuzz.crypto import pki
from fuzz.rpc.direct import (
    BUFFER_BYTES,
    client_context,
    pump,
    pump_in_python,
    server_context,
)

ROUNDS = 8
ROUND_TRIPS = 2000
MESSAGE = b"x" * 64
NODE = "bench"
_HEADER = struct.Struct("!I")

Relay = Callable[[ssl.SSLSocket, socket.socket], object]


def _relay_setup(tls: ssl.SSLSocket, plain: socket.socket) -> tuple[
        bytearray, bytearray, memoryview, memoryview, select.poll, int]:
    """A relay's two buffers (outward, inward), their views, a poll set waiting to read
    either socket, and the plain socket's descriptor."""
    outward, inward = bytearray(BUFFER_BYTES), bytearray(BUFFER_BYTES)
    poller = select.poll()
    poller.register(tls.fileno(), select.POLLIN)
    poller.register(plain.fileno(), select.POLLIN)
    return outward, inward, memoryview(outward), memoryview(inward), poller, plain.fileno()


def bare(tls: ssl.SSLSocket, plain: socket.socket) -> None:
    """Copy both ways with the least Python per wake-up, until either side's end."""
    outward, inward, out_view, in_view, poller, plain_fd = _relay_setup(tls, plain)
    while True:
        for fd, _ in poller.poll():
            source, sink, buffer, view = ((plain, tls, outward, out_view) if fd == plain_fd
                                          else (tls, plain, inward, in_view))
            count = source.recv_into(buffer)
            if not count:
                return
            sink.sendall(view[:count])


def framed(tls: ssl.SSLSocket, plain: socket.socket) -> None:
    """:func:`bare` with the pump's framing: a length before each chunk into TLS; out of
    it, the length read apart from the body."""
    outward, _, out_view, in_view, poller, plain_fd = _relay_setup(tls, plain)
    header = bytearray(_HEADER.size)
    while True:
        for fd, _ in poller.poll():
            if fd == plain_fd:
                count = plain.recv_into(out_view[_HEADER.size:])
                if not count:
                    return
                _HEADER.pack_into(outward, 0, count)
                tls.sendall(out_view[:_HEADER.size + count])
                continue
            if not tls.recv_into(header):
                return
            (size,) = _HEADER.unpack(header)
            got = 0
            while got < size:
                got += tls.recv_into(in_view[got:size])
            tls.pending()  # as the pump asks, to know whether to poll
            plain.sendall(in_view[:size])


def _echo(sock: socket.socket) -> None:
    with sock:
        while data := sock.recv(65536):
            sock.sendall(data)


def measure(relay: Relay, certs: Path, ca_pem: bytes) -> tuple[float, float]:
    """CPU and wall microseconds per round trip through two ``relay`` loops."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        raw = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
    for sock in (raw, accepted):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    agent_side = server_context(str(certs / "cert.pem"), str(certs / "key.pem"))
    threads: list[threading.Thread] = []

    def agent() -> None:
        with agent_side.wrap_socket(accepted, server_side=True) as tls:
            inner, echo = socket.socketpair()
            threads.append(threading.Thread(target=_echo, args=(echo,), daemon=True))
            threads[-1].start()
            with inner:
                relay(tls, inner)

    agent_thread = threading.Thread(target=agent, daemon=True)
    agent_thread.start()
    tls = client_context(ca_pem).wrap_socket(raw, server_hostname=pki.node_dns_name(NODE))
    local, client = socket.socketpair()

    def cli() -> None:
        with tls, local:  # closed after: the stand-ins' end reaches the agent's as EOF
            relay(tls, local)

    cli_thread = threading.Thread(target=cli, daemon=True)
    cli_thread.start()
    with client:
        _round_trip(client)  # the first one wakes everything: not timed
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(ROUND_TRIPS):
            _round_trip(client)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        client.shutdown(socket.SHUT_WR)
        while client.recv(65536):
            pass
    for thread in (cli_thread, agent_thread, *threads):
        thread.join(timeout=30)
    return cpu / ROUND_TRIPS * 1e6, wall / ROUND_TRIPS * 1e6


def _round_trip(sock: socket.socket) -> None:
    sock.sendall(MESSAGE)
    got = 0
    while got < len(MESSAGE):
        got += len(sock.recv(len(MESSAGE) - got))


def main() -> int:
    """Run every relay ``ROUNDS`` times, alternately; print the figures."""
    relays: dict[str, Relay] = {"fuzz pump": pump, "in Python": pump_in_python,
                                "framed": framed, "bare": bare}
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in relays}
    with tempfile.TemporaryDirectory(prefix="fuzz-bench-pump-") as folder:
        certs = Path(folder)
        ca = pki.CertificateAuthority.create("bench")
        key = pki.new_key()
        (certs / "cert.pem").write_bytes(pki.cert_pem(
            ca.issue(key.public_key(), pki.node_dns_name(NODE), [pki.node_dns_name(NODE)])))
        (certs / "key.pem").write_bytes(pki.key_pem(key))
        for _ in range(ROUNDS):
            for name, relay in relays.items():
                figures[name].append(measure(relay, certs, ca.cert_pem))
    with open("/proc/loadavg", encoding="ascii") as loadavg:
        load = loadavg.read().split()[0]
    print(f"{ROUND_TRIPS} round trips of {len(MESSAGE)} bytes through two relays and TLS, "
          f"{ROUNDS} rounds (load average {load}); us per round trip, min / median:")
    cpu: dict[str, float] = {}
    for name, runs in figures.items():
        cpu[name] = min(run[0] for run in runs)
        print(f"  {name:10s} CPU {cpu[name]:6.1f} / {statistics.median(r[0] for r in runs):6.1f}"
              f"   wall {min(r[1] for r in runs):6.1f} / "
              f"{statistics.median(r[1] for r in runs):6.1f}")
    print(f"BENCH pf_pump_cpu_us={cpu['fuzz pump']:.1f} us in_python={cpu['in Python']:.1f} "
          f"framed={cpu['framed']:.1f} bare={cpu['bare']:.1f}")
    print(f"BENCH pf_pump_cpu_ratio_vs_bare={cpu['fuzz pump'] / cpu['bare']:.2f} x "
          f"in_python={cpu['in Python'] / cpu['bare']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
