"""Benchmark: port-forward throughput and round-trip latency against a direct loopback connection.

A one-node local cluster runs a job that serves a 200 MiB file with busybox httpd
and echoes with ``nc -e cat``. ``fuzz workflow port-forward`` (the real CLI, as a
subprocess) tunnels each port: CLI -> orchestrator -> agent -> the job's network
namespace. The same client then measures, in the same run and alternately:

- throughput: one GET of the 200 MiB file (3 times each way, the median kept);
- latency: 1,000 round trips of 64 bytes on one connection to the echo server;

through the tunnel and directly to the job's ports on 127.0.0.1 in the job's own
network namespace (the bench connects from a thread that entered it, as the
agent's end of the tunnel does). Prints both and the ratios, and for the transfers
the CPU time the whole machine spent (``/proc/stat``): the tunnel's processes
share the machine's cores, so its throughput is bounded by its CPU per byte.

Needs root and Debian's runc, skopeo, umoci, busybox-static, docker-registry.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fuzz.substrate.runtime.netns import PortUnreachableError, connect_in_netns
from fuzz.testing.cluster import LocalCluster, fuzz_argv, local_cluster
from fuzz.testing.oci import (
    BUSYBOX_REPO,
    build_busybox_layout,
    free_port,
    push_layout,
    serve_registry,
)

FILE_MIB = 200
TRANSFERS = 3
ROUND_TRIPS = 1000
MESSAGE = b"x" * 63 + b"\n"
RECV_BYTES = 1024 * 1024
JOB = "service"
FUZZFILE = """\
version: v1
jobs:
  service:
    image: {{uri: {image}}}
    script: |
      mkdir -p /tmp/www
      dd if=/dev/urandom of=/tmp/www/big bs=1M count={mib} 2>/dev/null
      nc -ll -p {echo_port} -e cat &
      exec httpd -f -p 127.0.0.1:{http_port} -h /tmp/www
    resource: {{cpu: {{cores: 1}}, memory: {{size: {memory}MiB}}}}
"""


def _connect(port: int, job_pid: int | None = None) -> socket.socket:
    """A connection to 127.0.0.1:``port``: the node's, or inside ``job_pid``'s namespace."""
    if job_pid is None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    else:
        sock = connect_in_netns(job_pid, port, 60, "the job")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def job_pid(cluster: LocalCluster, timeout: float = 120) -> int:
    """The host pid of the one running container of the cluster (the service job)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in cluster.directory.glob(".fuzz/nodes/*/*/containers/*/status.json"):
            with contextlib.suppress(OSError, ValueError):
                status = json.loads(path.read_text())
                if status.get("state") == "running" and isinstance(status.get("pid"), int):
                    return int(status["pid"])
        time.sleep(0.2)
    raise SystemExit("the service job never ran")


def busy_cpu_seconds() -> float:
    """CPU seconds all cores have spent busy since boot: /proc/stat's first line, less idle
    and iowait (guest time is counted in user already)."""
    with open("/proc/stat", encoding="ascii") as stat:
        jiffies = [int(value) for value in stat.readline().split()[1:9]]
    return (sum(jiffies) - jiffies[3] - jiffies[4]) / os.sysconf("SC_CLK_TCK")


def timed_fetch(port: int, pid: int | None = None) -> tuple[float, float]:
    """Seconds to GET the whole file from 127.0.0.1:``port`` (raw socket, 1 MiB reads),
    and the CPU seconds the machine spent meanwhile (``pid``: see :func:`_connect`)."""
    buffer = bytearray(RECV_BYTES)
    busy = busy_cpu_seconds()
    started = time.perf_counter()
    with _connect(port, pid) as sock:
        sock.sendall(b"GET /big HTTP/1.0\r\n\r\n")
        received = 0
        while count := sock.recv_into(buffer):
            received += count
    seconds = time.perf_counter() - started
    cpu = busy_cpu_seconds() - busy
    if received < FILE_MIB * 2**20:
        raise SystemExit(f"port {port}: got {received} bytes, expected the {FILE_MIB} MiB file")
    return seconds, cpu


def round_trip_seconds(port: int, pid: int | None = None) -> float:
    """Mean seconds of one 64-byte round trip to the echo server at 127.0.0.1:``port``."""
    with _connect(port, pid) as sock:
        sock.sendall(MESSAGE)  # the first one opens the way (nc starts cat); not timed
        _receive(sock, len(MESSAGE))
        started = time.perf_counter()
        for _ in range(ROUND_TRIPS):
            sock.sendall(MESSAGE)
            _receive(sock, len(MESSAGE))
        return (time.perf_counter() - started) / ROUND_TRIPS


def _receive(sock: socket.socket, size: int) -> None:
    got = 0
    while got < size:
        chunk = sock.recv(size - got)
        if not chunk:
            raise SystemExit("the echo server closed the connection")
        got += len(chunk)


@contextmanager
def port_forward(cluster: LocalCluster, workflow: str, remote: int) -> Iterator[int]:
    """``fuzz workflow port-forward`` to ``remote`` while inside; yields its local port."""
    process = subprocess.Popen(
        fuzz_argv("workflow", "port-forward", workflow, JOB, f"0:{remote}", "--json"),
        cwd=cluster.directory, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise SystemExit("fuzz workflow port-forward did not start")
        yield int(json.loads(line)["address"].rpartition(":")[2])
    finally:
        process.terminate()
        process.wait()


def wait_until_served(port: int, pid: int, timeout: float = 120) -> None:
    """Wait until the job's httpd answers (it writes the file first)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with _connect(port, pid):
                return
        except (OSError, PortUnreachableError):
            if time.monotonic() > deadline:
                raise SystemExit("the job's httpd never answered") from None
            time.sleep(0.5)


def measure(cluster: LocalCluster, image: str) -> dict[str, float]:
    """Start the job, then every figure, tunnel and direct alternately."""
    workflow = f"pfbench{os.getpid()}"  # runc's container ids are host-wide
    http_port, echo_port = free_port(), free_port()
    fuzzfile = cluster.directory / "service.yaml"
    fuzzfile.write_text(FUZZFILE.format(image=image, mib=FILE_MIB, http_port=http_port,
                                        echo_port=echo_port, memory=FILE_MIB + 256))
    cluster.must("workflow", "start", workflow, str(fuzzfile))
    try:
        pid = job_pid(cluster)
        wait_until_served(http_port, pid)
        with port_forward(cluster, workflow, http_port) as web, \
                port_forward(cluster, workflow, echo_port) as echo:
            tunnel, direct = [], []
            for _ in range(TRANSFERS):
                tunnel.append(timed_fetch(web))
                direct.append(timed_fetch(http_port, pid))
            return {
                "tunnel_s": statistics.median(seconds for seconds, _ in tunnel),
                "direct_s": statistics.median(seconds for seconds, _ in direct),
                "tunnel_cpu": statistics.median(cpu for _, cpu in tunnel),
                "direct_cpu": statistics.median(cpu for _, cpu in direct),
                "tunnel_rtt": round_trip_seconds(echo),
                "direct_rtt": round_trip_seconds(echo_port, pid),
            }
    finally:  # stopped before the node goes, so that its container is cleaned up
        cluster.run("workflow", "cancel", workflow)
        cluster.run("workflow", "status", workflow, "--watch")


def main() -> int:
    """Run it and print the figures, ending with the BENCH line."""
    if os.geteuid() != 0:
        raise SystemExit("run as root: runc needs it")
    workdir = Path(tempfile.mkdtemp(prefix="fuzz-bench-pf-"))
    os.chmod(workdir, 0o755)
    try:
        (workdir / "registry").mkdir()
        (workdir / "image").mkdir()
        (workdir / "cluster").mkdir()
        with serve_registry(workdir / "registry") as registry:
            image = push_layout(build_busybox_layout(workdir / "image"), registry, BUSYBOX_REPO)
            with local_cluster(workdir / "cluster", [registry.host], free_port(), nodes=1,
                               cluster="bench") as cluster:
                figures = measure(cluster, image.reference)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    megabytes = FILE_MIB * 2**20 / 1e6
    tunnel_rate, direct_rate = megabytes / figures["tunnel_s"], megabytes / figures["direct_s"]
    ratio = tunnel_rate / direct_rate
    cores = os.cpu_count() or 1
    tunnel_cpu, direct_cpu = figures["tunnel_cpu"], figures["direct_cpu"]
    print(f"throughput, one {FILE_MIB} MiB transfer (median of {TRANSFERS}), and the CPU the "
          f"machine spent on it:")
    print(f"  direct loopback TCP: {direct_rate:8.1f} MB/s   {direct_cpu:.2f} CPU s "
          f"({direct_cpu / figures['direct_s']:.1f} of {cores} cores busy)")
    print(f"  port-forward:        {tunnel_rate:8.1f} MB/s   {tunnel_cpu:.2f} CPU s "
          f"({tunnel_cpu / figures['tunnel_s']:.1f} of {cores} cores busy)   ratio {ratio:.2f}")
    tunnel_us, direct_us = figures["tunnel_rtt"] * 1e6, figures["direct_rtt"] * 1e6
    print(f"latency, {ROUND_TRIPS} round trips of {len(MESSAGE)} bytes:")
    print(f"  direct loopback TCP: {direct_us:8.1f} us")
    print(f"  port-forward:        {tunnel_us:8.1f} us   ratio {tunnel_us / direct_us:.1f}x")
    print(f"BENCH pf_cpu_s_per_transfer={tunnel_cpu:.2f} s direct={direct_cpu:.2f} "
          f"cores={cores}")
    print(f"BENCH pf_roundtrip_us={tunnel_us:.0f} us direct={direct_us:.0f}")
    print(f"BENCH pf_throughput_ratio={ratio:.2f} x target>=0.3")
    return 0


if __name__ == "__main__":
    sys.exit(main())
