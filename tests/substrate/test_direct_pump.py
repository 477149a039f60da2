"""The direct path's pump against a far end written by hand: chunks cut anywhere, ends.

Each test runs twice: with the pump in C (:mod:`fuzz.rpc.native_pump`, which must serve
here: ``make setup`` builds it) and with the one in Python. One pump between a local
socket pair and a real TLS 1.3 connection on 127.0.0.1 (a node certificate of a fresh
CA); the test plays the far end of the TLS connection with blocking writes of its own
choosing, so that a chunk's length and body arrive in any cut of TLS records the wire
format allows.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import cast

import pytest

from fuzz.crypto import pki
from fuzz.rpc import native_pump
from fuzz.rpc.direct import BUFFER_BYTES, client_context, pump_in_python, server_context
from tests.support.nodecerts import write_node_certificate

NODE = "node-a"
HEADER = struct.Struct("!I")
Pump = Callable[[ssl.SSLSocket, socket.socket], tuple[int, int]]


def pump_in_c(tls: ssl.SSLSocket, plain: socket.socket) -> tuple[int, int]:
    """The C pump, which must take ``tls`` (no fallback to Python here)."""
    moved = native_pump.pump(tls, plain, BUFFER_BYTES)
    assert moved is not None, "the C pump did not take the connection (make setup?)"
    return moved


@pytest.fixture(params=[pump_in_c, pump_in_python], ids=["in C", "in Python"])
def pump(request: pytest.FixtureRequest) -> Pump:
    """Each pump in turn."""
    return cast(Pump, request.param)


def chunk(payload: bytes) -> bytes:
    """``payload`` as one chunk of the wire format (empty: the end of a direction)."""
    return HEADER.pack(len(payload)) + payload


@contextmanager
def pumped(tmp_path: Path, pump: Pump) -> Iterator[tuple[ssl.SSLSocket, socket.socket,
                                              Future[tuple[int, int]]]]:
    """A pump running between a TLS connection and a socket pair: yields the far TLS
    end (blocking), the far plain end, and the pump's outcome."""
    ca_pem = write_node_certificate(tmp_path, NODE)
    with socket.create_server(("127.0.0.1", 0)) as server:
        raw = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
    far_tls_holder: list[ssl.SSLSocket] = []
    handshake = threading.Thread(target=lambda: far_tls_holder.append(
        server_context(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")).wrap_socket(
            accepted, server_side=True)))
    handshake.start()
    tls = client_context(ca_pem).wrap_socket(raw, server_hostname=pki.node_dns_name(NODE))
    handshake.join(timeout=30)
    far_tls = far_tls_holder[0]
    far_tls.settimeout(30)
    local, far_plain = socket.socketpair()
    far_plain.settimeout(30)
    outcome: Future[tuple[int, int]] = Future()

    def run() -> None:
        try:
            outcome.set_result(pump(tls, local))
        except BaseException as exc:  # handed to the test
            outcome.set_exception(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield far_tls, far_plain, outcome
    finally:
        for sock in (far_tls, far_plain, tls, local):
            sock.close()
        thread.join(timeout=30)


def read_all(sock: socket.socket) -> bytes:
    """Everything ``sock`` yields up to its end."""
    received = bytearray()
    while data := sock.recv(65536):
        received.extend(data)
    return bytes(received)


def read_chunks(tls: ssl.SSLSocket) -> bytes:
    """The payloads of the chunks ``tls`` carries, up to the end mark."""
    received = bytearray()
    while True:
        (size,) = HEADER.unpack(_exactly(tls, HEADER.size))
        if size == 0:
            return bytes(received)
        received.extend(_exactly(tls, size))


def _exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        got = sock.recv(size - len(data))
        assert got, "the pump ended its TLS side inside a chunk"
        data.extend(got)
    return bytes(data)


BIG = bytes(range(256)) * 4096  # 1 MiB: many TLS records, more than the pump's buffer
CUTS: dict[str, Callable[[], list[bytes]]] = {
    # each: the TLS writes (one record or more each) that carry b"hello" + BIG + b"!"
    "a length cut in two records": lambda: [chunk(b"hello")[:2], chunk(b"hello")[2:],
                                            chunk(BIG), chunk(b"!")],
    "several chunks in one record": lambda: [chunk(b"hello") + chunk(BIG[:7]),
                                             chunk(BIG[7:]) + chunk(b"!")],
    "a body over many writes": lambda: [chunk(b"hello"), HEADER.pack(len(BIG)),
                                        *(BIG[at:at + 1000] for at in range(0, len(BIG), 1000)),
                                        chunk(b"!")],
    "a length with its body's start": lambda: [chunk(b"hello")[:6], chunk(b"hello")[6:],
                                               chunk(BIG + b"!")],
}


@pytest.mark.parametrize("cut", CUTS)
def test_chunks_cut_anywhere_come_out_whole_and_both_ends_cross(tmp_path: Path, pump: Pump,
                                                                 cut: str) -> None:
    with pumped(tmp_path, pump) as (far_tls, far_plain, outcome):
        inward = threading.Thread(target=lambda: [far_tls.sendall(piece) for piece in
                                                  [*CUTS[cut](), chunk(b"")]])
        inward.start()
        assert read_all(far_plain) == b"hello" + BIG + b"!"  # then the half-close
        inward.join(timeout=30)
        far_plain.sendall(b"back" + BIG)
        far_plain.shutdown(socket.SHUT_WR)
        assert read_chunks(far_tls) == b"back" + BIG
        assert outcome.result(timeout=30) == (4 + len(BIG), 6 + len(BIG))


def test_small_messages_cross_one_by_one(tmp_path: Path, pump: Pump) -> None:
    with pumped(tmp_path, pump) as (far_tls, far_plain, outcome):
        for number in range(200):
            message = b"%03d" % number * 21
            far_plain.sendall(message)
            assert _exactly(far_tls, HEADER.size + len(message)) == chunk(message)
            far_tls.sendall(chunk(message[::-1]))
            assert _exactly(far_plain, len(message)) == message[::-1]
        far_plain.shutdown(socket.SHUT_WR)
        assert read_chunks(far_tls) == b""
        far_tls.sendall(chunk(b""))
        assert read_all(far_plain) == b""
        assert outcome.result(timeout=30) == (200 * 63, 200 * 63)


@pytest.mark.parametrize("ending", ["TCP's close inside TLS", "TLS's close_notify"])
def test_a_tls_side_that_ends_without_its_end_mark_is_an_error(tmp_path: Path, pump: Pump,
                                                               ending: str) -> None:
    with pumped(tmp_path, pump) as (far_tls, far_plain, outcome):
        far_tls.sendall(chunk(b"partial"))
        assert _exactly(far_plain, 7) == b"partial"
        if ending == "TLS's close_notify":
            far_tls.setblocking(False)  # sends close_notify, does not wait for the pump's
            with contextlib.suppress(ssl.SSLWantReadError):
                far_tls.unwrap()
        else:
            far_tls.shutdown(socket.SHUT_RDWR)
        with pytest.raises(OSError):
            outcome.result(timeout=30)


def test_the_direct_path_negotiates_aes_128_gcm(tmp_path: Path, pump: Pump) -> None:
    with pumped(tmp_path, pump) as (far_tls, far_plain, outcome):
        cipher = far_tls.cipher()
        assert cipher is not None
        assert cipher[0] == "TLS_AES_128_GCM_SHA256"  # not OpenSSL's AES-256 first
        far_plain.shutdown(socket.SHUT_WR)
        assert read_chunks(far_tls) == b""
        far_tls.sendall(chunk(b""))
        assert outcome.result(timeout=30) == (0, 0)


def test_the_c_pump_leaves_a_connection_it_cannot_check_to_the_python_one(
        tmp_path: Path) -> None:
    ca_pem = write_node_certificate(tmp_path, NODE)
    unconnected = client_context(ca_pem).wrap_socket(socket.socket(),
                                                      server_hostname=pki.node_dns_name(NODE))
    local, far_plain = socket.socketpair()
    with unconnected, local, far_plain:  # no OpenSSL connection under it yet
        assert native_pump.ssl_pointer(unconnected) is None
        assert native_pump.pump(unconnected, local, BUFFER_BYTES) is None


def counting_pump_in_c(counts: list[native_pump.PumpCounts], spin_when_busy: bool = True
                       ) -> Pump:
    """The C pump, its :class:`~fuzz.rpc.native_pump.PumpCounts` appended to ``counts``;
    by default spinning whatever the machine's load (so the tests' outcome does not
    depend on the other work of the machine)."""
    def run(tls: ssl.SSLSocket, plain: socket.socket) -> tuple[int, int]:
        counted = native_pump.counted_pump(tls, plain, BUFFER_BYTES, spin_when_busy)
        assert counted is not None, "the C pump did not take the connection (make setup?)"
        counts.append(counted)
        return counted.outward, counted.inward
    return run


def end_both_ways(far_tls: ssl.SSLSocket, far_plain: socket.socket) -> None:
    """End both directions of a pump from its far ends."""
    far_plain.shutdown(socket.SHUT_WR)
    assert read_chunks(far_tls) == b""
    far_tls.sendall(chunk(b""))
    assert read_all(far_plain) == b""


def ping_pong(far_tls: ssl.SSLSocket, far_plain: socket.socket, count: int) -> None:
    """``count`` round trips of a few bytes through the pump, from its far ends."""
    for _ in range(count):
        far_plain.sendall(b"ping")
        assert _exactly(far_tls, HEADER.size + 4) == chunk(b"ping")
        far_tls.sendall(chunk(b"pong"))
        assert _exactly(far_plain, 4) == b"pong"


def test_the_c_pump_takes_round_trips_as_interactive(tmp_path: Path) -> None:
    counts: list[native_pump.PumpCounts] = []
    with pumped(tmp_path, counting_pump_in_c(counts)) as (far_tls, far_plain, outcome):
        ping_pong(far_tls, far_plain, 100)
        end_both_ways(far_tls, far_plain)
        outcome.result(timeout=30)
    # each message's wake-up is followed by a wait that spins, never past its budget (100
    # µs; 1 ms allows for the thread's preemption on a busy machine)
    assert counts[0].interactive_waits >= 200
    assert 0 < counts[0].spun_ns <= counts[0].interactive_waits * 1_000_000


def test_the_c_pump_does_not_spin_during_a_transfer(tmp_path: Path) -> None:
    counts: list[native_pump.PumpCounts] = []
    payload = BIG * 32  # 32 MiB each way, at once
    with pumped(tmp_path, counting_pump_in_c(counts)) as (far_tls, far_plain, outcome):
        received: Future[bytes] = Future()
        reader = threading.Thread(target=lambda: received.set_result(read_all(far_plain)))
        reader.start()
        writer = threading.Thread(target=lambda: (far_plain.sendall(payload),
                                                  far_plain.shutdown(socket.SHUT_WR)))
        writer.start()
        far_tls.sendall(chunk(payload) + chunk(b""))
        assert read_chunks(far_tls) == payload
        writer.join(timeout=30)
        assert received.result(timeout=30) == payload
        outcome.result(timeout=30)
    assert counts[0].waits > 50
    assert counts[0].interactive_waits <= 3  # the first and last few bytes at most


def test_an_idle_connection_costs_the_c_pump_no_cpu(tmp_path: Path) -> None:
    counts: list[native_pump.PumpCounts] = []
    with pumped(tmp_path, counting_pump_in_c(counts)) as (far_tls, far_plain, outcome):
        ping_pong(far_tls, far_plain, 20)  # the spin's budget at its most
        started = time.process_time()  # the pump's thread included; this one sleeps
        time.sleep(1)
        idle_cpu = time.process_time() - started
        end_both_ways(far_tls, far_plain)
        outcome.result(timeout=30)
    assert idle_cpu < 0.02
