"""Benchmark: a service's endpoint through the orchestrator's HTTPS gateway against the
service's port reached directly from its node.

A one-node local cluster runs a service (busybox httpd serving a small page and a
100 MB file under its endpoint's path) with a ``user``-scoped path endpoint. The
client signs its requests with the owner's bearer token and keeps one HTTPS
connection to the gateway alive; the gateway relays each request through the agent's
PortForward into the service's network namespace (busybox httpd closes after every
answer, so each request is a new connection to it, by either path). Directly, the
bench connects to the service's port in its network namespace from a thread that
entered it (as the agent does). In the same run, alternately:

- latency: 300 sequential GETs of the small page, p50 of each way, and the gateway's
  added milliseconds (its p50 less the direct p50);
- requests per second: 8 client threads for 4 s each way;
- download: one GET of the 100 MB file (3 times each way, the median kept).

Needs root and Debian's runc, skopeo, umoci, busybox-static, docker-registry.
"""

from __future__ import annotations

import http.client
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

from port_forward import job_pid

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
TRANSFERS = 3
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


class Gateway:
    """Keep-alive HTTPS connections to the gateway, with the owner's token."""

    def __init__(self, port: int, ca: Path, token: str) -> None:
        self.port = port
        self.context = ssl.create_default_context(cafile=str(ca))
        self.headers = {"Authorization": f"Bearer {token}"}

    def connection(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context,
                                           timeout=120)

    def get(self, connection: http.client.HTTPSConnection, path: str) -> int:
        """GET ``path`` on ``connection``; the bytes of the body."""
        connection.request("GET", path, headers=self.headers)
        response = connection.getresponse()
        received = 0
        while chunk := response.read(RECV_BYTES):
            received += len(chunk)
        if response.status != 200:
            raise SystemExit(f"the gateway answered {response.status} for {path}")
        return received


def direct_get(pid: int, path: str) -> int:
    """GET ``path`` from the service's port in its network namespace; the bytes received."""
    sock = connect_in_netns(pid, PORT, 60, "the service")
    buffer = bytearray(RECV_BYTES)
    with sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        received = 0
        while count := sock.recv_into(buffer):
            received += count
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


def wait_until_served(pid: int, path: str, timeout: float = 180) -> None:
    """Wait until the service's httpd answers with the whole file (it writes it first)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if direct_get(pid, path) > FILE_MB * 10**6:
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
            connection = state.get("connection")
            if not isinstance(connection, http.client.HTTPSConnection):
                connection = state["connection"] = gateway.connection()
            gateway.get(connection, small)

        def direct_one(state: dict[str, object]) -> None:
            direct_get(pid, small)

        rps_through = requests_per_second(through_one)
        rps_direct = requests_per_second(direct_one)
        downloads_through, downloads_direct = [], []
        for _ in range(TRANSFERS):
            connection = gateway.connection()
            started = time.perf_counter()
            gateway.get(connection, big)
            downloads_through.append(time.perf_counter() - started)
            connection.close()
            started = time.perf_counter()
            direct_get(pid, big)
            downloads_direct.append(time.perf_counter() - started)
        return {
            "p50_through_ms": statistics.median(through) * 1e3,
            "p50_direct_ms": statistics.median(direct) * 1e3,
            "rps_through": rps_through, "rps_direct": rps_direct,
            "download_through_s": statistics.median(downloads_through),
            "download_direct_s": statistics.median(downloads_direct),
        }
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
    print(f"BENCH endpoint_added_ms_p50={added:.2f} ms target<3")
    print(f"BENCH endpoint_rps_ratio_vs_direct={rps_ratio:.2f} x target>=0.3")
    print(f"BENCH endpoint_download_ratio_vs_direct={download_ratio:.2f} x target>=0.3")
    return 0


if __name__ == "__main__":
    sys.exit(main())
