"""Benchmark: a service's endpoint through the orchestrator's HTTPS gateway against the
service's port reached directly from its node.

A one-node local cluster runs a service (busybox httpd serving a small page and a
100 MB file under its endpoint's path) with a ``user``-scoped path endpoint. The
client offers TLS 1.3's suites in Chromium's order (:mod:`chromium_tls`), signs its
requests with the owner's bearer token and keeps one HTTPS connection to the gateway
alive; the gateway relays each request to the service's
port in its network namespace: on this one host, over the socket the agent opened
there and handed to the gateway (:mod:`fuzz.rpc.handoff`: the agent is off the data
path, its CPU column near 0), where the agent is elsewhere over TLS to its direct port
(busybox httpd closes after every answer, so each request is a new connection to it,
by either path). Directly, the
bench connects to the service's port in its network namespace from a thread that
entered it (as the agent does). In the same run, alternately:

- latency: 300 sequential GETs of the small page, p50 of each way, and the gateway's
  added milliseconds (its p50 less the direct p50);
- requests per second: 8 client threads for 4 s each way;
- download: one GET of the 100 MB file (5 times each way, the median kept), and the CPU
  seconds each process on the way spent on it (the gateway's orchestrator, the agent,
  the client, the service): what bounds the ratio when the cores are few; and, in the
  same rounds, the same hops done bare (:mod:`peers.tls_relay`): what this design
  reaches in Python and OpenSSL on these cores, for reference.

Needs root and Debian's runc, skopeo, umoci, busybox-static, docker-registry.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import ssl
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import cast

from chromium_tls import offer_as_chromium
from peers.tls_relay import Chain, relay_chain
from port_forward import cluster_pids, job_pid, process_cpu_seconds

from fuzz.substrate.runtime.netns import PortUnreachableError, connect_in_netns
from fuzz.testing.cluster import LocalCluster, local_cluster
from fuzz.testing.oci import (
    BUSYBOX_REPO,
    build_busybox_layout,
    free_port,
    push_layout,
    serve_registry,
)

FILE_MB = 100
SMALL_REQUESTS = 300
RPS_THREADS = 8
RPS_SECONDS = 4.0
TRANSFERS = 5
CPU_NAMES = ("gateway", "agent", "client", "service")
BARE_CPU_NAMES = ("relay_b", "relay_a", "client", "source")  # in the places of CPU_NAMES
RECV_BYTES = 1024 * 1024
PORT = 8080
FUZZFILE = """\
version: v1
services:
  web:
    image: {{uri: {image}}}
    persist: true
    script: |
      mkdir -p "/tmp/www$FB_ENDPOINT_PATH_SITE"
      echo small > "/tmp/www$FB_ENDPOINT_PATH_SITE/small"
      dd if=/dev/urandom of="/tmp/www$FB_ENDPOINT_PATH_SITE/big" bs=1000000 count={mb} \
2>/dev/null
      exec httpd -f -p {port} -h /tmp/www
    resource: {{cpu: {{cores: 1}}, memory: {{size: {memory}MiB}}}}
    network:
      ports: [{{name: http, port: {port}}}]
      endpoints: [{{name: site, port-name: http, type: path, scope: user}}]
"""


def read_response(sock: socket.socket, buffer: memoryview) -> tuple[int, int]:
    """Read one HTTP/1.x response from ``sock`` (plain or TLS): (its status, the bytes of
    its body). The body, framed by its Content-Length (else read until the close), is
    counted, not kept: each read overwrites ``buffer``.

    Hand-written rather than http.client, whose reads go through a buffered file and
    return a new bytes object each: the bench measures the relay, so both ways are read
    by this one cheap reader, ``recv_into`` one preallocated buffer."""
    head = bytearray()
    while (end := head.find(b"\r\n\r\n")) < 0:
        count = sock.recv_into(buffer)
        if count == 0:
            raise ConnectionError("the connection closed before the response's headers")
        head += buffer[:count]
    lines = bytes(head[:end]).decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = dict(line.lower().split(":", 1) for line in lines[1:] if ":" in line)
    received = len(head) - end - 4
    length = int(fields["content-length"]) if "content-length" in fields else None
    while length is None or received < length:
        count = sock.recv_into(buffer)
        if count == 0:
            if length is None:
                break
            raise ConnectionError("the connection closed before the response's end")
        received += count
    return status, received


class Gateway:
    """Keep-alive HTTPS connections to the gateway, with the owner's token."""

    def __init__(self, port: int, ca: Path, token: str) -> None:
        self.port = port
        self.context = ssl.create_default_context(cafile=str(ca))
        offer_as_chromium(self.context)  # the browser's suites, in its order
        self.token = token
        self.buffer = memoryview(bytearray(RECV_BYTES))
        self.cipher = ""  # the TLS suite the gateway agreed on

    def connection(self) -> ssl.SSLSocket:
        """A new TLS connection to the gateway."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=120)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection = self.context.wrap_socket(sock, server_hostname="127.0.0.1")
        self.cipher = str((connection.cipher() or ("",))[0])
        return connection

    def get(self, connection: ssl.SSLSocket, path: str,
            buffer: memoryview | None = None) -> int:
        """GET ``path`` on ``connection``; the bytes of the body (``buffer``: where they are
        read, one of the gateway's own unless given: one per thread)."""
        connection.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                           f"Authorization: Bearer {self.token}\r\n\r\n".encode())
        status, received = read_response(connection, buffer or self.buffer)
        if status != 200:
            raise SystemExit(f"the gateway answered {status} for {path}")
        return received


def direct_get(pid: int, path: str, buffer: memoryview | None = None) -> int:
    """GET ``path`` from the service's port in its network namespace; the bytes of the
    body (``buffer``: as for :meth:`Gateway.get`)."""
    sock = connect_in_netns(pid, PORT, 60, "the service")
    with sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        status, received = read_response(sock, buffer or memoryview(bytearray(RECV_BYTES)))
    if status != 200:
        raise SystemExit(f"the service answered {status} for {path}")
    return received


def latencies(gateway: Gateway, pid: int, path: str) -> tuple[list[float], list[float]]:
    """Seconds of each small GET, through the gateway and directly, alternately."""
    through, direct = [], []
    connection = gateway.connection()
    gateway.get(connection, path)  # the TLS handshake: not timed
    for _ in range(SMALL_REQUESTS):
        started = time.perf_counter()
        gateway.get(connection, path)
        through.append(time.perf_counter() - started)
        started = time.perf_counter()
        direct_get(pid, path)
        direct.append(time.perf_counter() - started)
    connection.close()
    return through, direct


def requests_per_second(fetch_one: Callable[[dict[str, object]], None]) -> float:
    """How many requests ``RPS_THREADS`` threads calling ``fetch_one(state)`` complete per
    second over ``RPS_SECONDS`` (``state``: one dict per thread)."""
    counts = [0] * RPS_THREADS
    deadline = time.monotonic() + RPS_SECONDS

    def run(slot: int) -> None:
        state: dict[str, object] = {}
        while time.monotonic() < deadline:
            fetch_one(state)
            counts[slot] += 1

    threads = [threading.Thread(target=run, args=(slot,)) for slot in range(RPS_THREADS)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.monotonic() - started)


def bare_get(connect: Callable[[], socket.socket]) -> int:
    """GET the file from the bare relay chain (:mod:`peers.tls_relay`), through
    ``connect``'s connection; the bytes of its body."""
    with connect() as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        return read_response(sock, memoryview(bytearray(RECV_BYTES)))[1]


def bare_meters(chain: Chain) -> dict[str, Callable[[], float]]:
    """CPU seconds so far of each process of the bare chain, by name (as
    :data:`BARE_CPU_NAMES`)."""
    return {name: time.process_time if name == "client"
            else functools.partial(process_cpu_seconds, {chain.pids[name]})
            for name in BARE_CPU_NAMES}


def cpu_meters(cluster: LocalCluster, service_pid: int) -> dict[str, Callable[[], float]]:
    """CPU seconds so far of each process on the way, by name: the orchestrator (the
    gateway is in it), the agent, this client (the process: no other thread of it runs
    while a download is timed) and the service (its container's cgroup: its httpd
    serves each connection in a child of its own)."""
    server = int(json.loads((cluster.data_dir / "server.json").read_text())["pid"])
    agents = cluster_pids(cluster) - {server}
    return {"gateway": lambda: process_cpu_seconds({server}),
            "agent": lambda: process_cpu_seconds(agents),
            "client": time.process_time,
            "service": lambda: cgroup_cpu_seconds(service_pid)}


def cgroup_cpu_seconds(pid: int) -> float:
    """CPU seconds the processes of ``pid``'s cgroup have spent, all of them (its v1
    cpuacct cgroup where that controller is mounted, else its v2 cgroup)."""
    paths = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else ["unified"]:
            paths[controller] = path.lstrip("/")
    if "cpuacct" in paths:
        usage = Path("/sys/fs/cgroup/cpuacct", paths["cpuacct"], "cpuacct.usage")
        return int(usage.read_text()) / 1e9
    stat = Path("/sys/fs/cgroup", paths["unified"], "cpu.stat").read_text()
    fields = dict(line.split() for line in stat.splitlines())
    return int(fields["usage_usec"]) / 1e6


def timed(fetch: Callable[[], object], meters: dict[str, Callable[[], float]]
          ) -> tuple[float, ...]:
    """Seconds ``fetch()`` takes, then the CPU seconds each of ``meters`` spent meanwhile."""
    before = [meter() for meter in meters.values()]
    started = time.perf_counter()
    fetch()
    elapsed = time.perf_counter() - started
    return (elapsed, *(meter() - then for meter, then in zip(meters.values(), before,
                                                               strict=True)))


def wait_until_served(pid: int, path: str, timeout: float = 180) -> None:
    """Wait until the service's httpd answers with the whole file (it writes it first)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if direct_get(pid, path) >= FILE_MB * 10**6:
                return
        except (OSError, PortUnreachableError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit("the service's httpd never answered")
        time.sleep(0.5)


def measure(cluster: LocalCluster, image: str) -> dict[str, float]:
    """Start the service, then every figure, gateway and direct alternately."""
    workflow = f"epbench{os.getpid()}"  # runc's container ids are host-wide
    fuzzfile = cluster.directory / "service.yaml"
    fuzzfile.write_text(FUZZFILE.format(image=image, mb=FILE_MB, port=PORT,
                                        memory=FILE_MB + 256))
    cluster.must("workflow", "start", workflow, str(fuzzfile))
    try:
        listed = json.loads(cluster.must("workflow", "endpoints", workflow, "--json").stdout)
        url = urllib.parse.urlsplit(listed[0]["url"])
        pid = job_pid(cluster)
        small, big = url.path + "small", url.path + "big"
        wait_until_served(pid, big)
        gateway = Gateway(int(url.port or 443), cluster.data_dir / "ca.pem",
                          (cluster.data_dir / "admin.token").read_text().strip())
        through, direct = latencies(gateway, pid, small)

        def through_one(state: dict[str, object]) -> None:
            if "connection" not in state:
                state["connection"] = gateway.connection()
                state["buffer"] = memoryview(bytearray(RECV_BYTES))
            gateway.get(cast(ssl.SSLSocket, state["connection"]), small,
                        cast(memoryview, state["buffer"]))

        def direct_one(state: dict[str, object]) -> None:
            if "buffer" not in state:
                state["buffer"] = memoryview(bytearray(RECV_BYTES))
            direct_get(pid, small, cast(memoryview, state["buffer"]))

        def through_big() -> None:
            with gateway.connection() as connection:  # the handshake counted, as the connect is
                gateway.get(connection, big)

        rps_through = requests_per_second(through_one)
        rps_direct = requests_per_second(direct_one)
        meters = cpu_meters(cluster, pid)
        downloads_through, downloads_direct, bare_through, bare_direct = [], [], [], []
        with relay_chain(cluster.data_dir / "server.crt", cluster.data_dir / "server.key",
                         cluster.data_dir / "ca.pem", "127.0.0.1", FILE_MB * 10**6) as chain:
            for _ in range(TRANSFERS):
                downloads_through.append(timed(through_big, meters))
                downloads_direct.append(timed(lambda: direct_get(pid, big), meters))
                bare_through.append(timed(lambda: bare_get(chain.through), bare_meters(chain)))
                bare_direct.append(timed(lambda: bare_get(chain.direct), {}))
        print(f"the gateway's TLS with the client's Chromium offer: {gateway.cipher}")
        figures = {
            "p50_through_ms": statistics.median(through) * 1e3,
            "p50_direct_ms": statistics.median(direct) * 1e3,
            "rps_through": rps_through, "rps_direct": rps_direct,
            "download_through_s": statistics.median(t[0] for t in downloads_through),
            "download_direct_s": statistics.median(t[0] for t in downloads_direct),
            "bare_through_s": statistics.median(t[0] for t in bare_through),
            "bare_direct_s": statistics.median(t[0] for t in bare_direct),
        }
        for index, name in enumerate(BARE_CPU_NAMES, start=1):
            figures[f"cpu_bare_{name}_s"] = statistics.median(t[index] for t in bare_through)
        for way, runs in (("through", downloads_through), ("direct", downloads_direct)):
            for index, name in enumerate(meters, start=1):
                figures[f"cpu_{way}_{name}_s"] = statistics.median(t[index] for t in runs)
        return figures
    finally:  # stopped before the node goes, so that its container is cleaned up
        cluster.run("workflow", "stop", workflow)
        cluster.run("workflow", "status", workflow, "--watch")


def main() -> int:
    """Run it and print the figures, ending with the BENCH lines."""
    if os.geteuid() != 0:
        raise SystemExit("run as root: runc needs it")
    workdir = Path(tempfile.mkdtemp(prefix="fuzz-bench-ep-"))
    os.chmod(workdir, 0o755)
    try:
        for part in ("registry", "image", "cluster"):
            (workdir / part).mkdir()
        with serve_registry(workdir / "registry") as registry:
            image = push_layout(build_busybox_layout(workdir / "image"), registry, BUSYBOX_REPO)
            with local_cluster(workdir / "cluster", [registry.host], free_port(), nodes=1,
                               cluster="bench") as cluster:
                figures = measure(cluster, image.reference)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    added = figures["p50_through_ms"] - figures["p50_direct_ms"]
    rps_ratio = figures["rps_through"] / figures["rps_direct"]
    download_ratio = figures["download_direct_s"] / figures["download_through_s"]
    megabytes = FILE_MB
    print(f"small GETs ({SMALL_REQUESTS}, sequential), p50: endpoint "
          f"{figures['p50_through_ms']:.2f} ms, direct {figures['p50_direct_ms']:.2f} ms")
    print(f"requests per second ({RPS_THREADS} threads, {RPS_SECONDS:g} s): endpoint "
          f"{figures['rps_through']:.0f}, direct {figures['rps_direct']:.0f}")
    print(f"one {FILE_MB} MB download (median of {TRANSFERS}): endpoint "
          f"{megabytes / figures['download_through_s']:.0f} MB/s, direct "
          f"{megabytes / figures['download_direct_s']:.0f} MB/s")
    print(f"CPU seconds per {FILE_MB} MB download (median): endpoint: " + ", ".join(
        f"{name} {figures[f'cpu_through_{name}_s']:.3f}" for name in CPU_NAMES) +
        f" (sum {sum(figures[f'cpu_through_{name}_s'] for name in CPU_NAMES):.3f}); "
        "direct: " + ", ".join(f"{name} {figures[f'cpu_direct_{name}_s']:.3f}"
                               for name in ("client", "service")))
    print(f"the same hops bare (bench/peers/tls_relay.py: a plain source, two relay "
          f"processes, TLS after the first): {megabytes / figures['bare_through_s']:.0f} "
          f"MB/s, its source directly {megabytes / figures['bare_direct_s']:.0f} MB/s, "
          f"ratio {figures['bare_direct_s'] / figures['bare_through_s']:.2f}; CPU seconds: "
          + ", ".join(f"{name.replace('_', ' ')} {figures[f'cpu_bare_{name}_s']:.3f}"
                      for name in BARE_CPU_NAMES))
    print(f"BENCH endpoint_added_ms_p50={added:.2f} ms target<3")
    print(f"BENCH endpoint_rps_ratio_vs_direct={rps_ratio:.2f} x target>=0.3")
    print(f"BENCH endpoint_download_ratio_vs_direct={download_ratio:.2f} x target>=0.3")
    return 0


if __name__ == "__main__":
    sys.exit(main())
