"""Benchmark: port-forward and exec against ``ssh -L`` / ``ssh HOST cat`` and a direct connection.

A one-node local cluster runs a job that serves a 200 MiB file with busybox httpd
and echoes with ``nc -e cat``. ``fuzz workflow port-forward`` (the real CLI, as a
subprocess) tunnels each port: CLI -> orchestrator -> agent -> the job's network
namespace. The same client then measures, in the same run and alternately:

- throughput: one GET of the 200 MiB file (3 times each way, the median kept);
- latency: 1,000 round trips of 64 bytes on one connection to the echo server, each
  way's connection open at once and the ways taking turns in blocks of 100 (the mean
  kept);

through the tunnel, through ``ssh -N -L`` with aes128-gcm (``bench/peers/ssh.py``: an
sshd and the ssh client in the job's network namespace, on its loopback, torn down
after), and directly to the job's ports on 127.0.0.1 in the job's own network
namespace (the bench connects from a thread that entered it, as the agent's end of
the tunnel does). Then exec's stdout bandwidth: ``fuzz workflow exec ... -- cat`` of
the same file against ``ssh root@127.0.0.1 cat`` of it (through /proc/PID/root).
Prints all and the ratios, and for the transfers the CPU time the whole machine
spent (``/proc/stat``): the processes share the machine's cores, so throughput is
bounded by CPU per byte. Whatever else runs on the machine runs during both: the
figures are comparable within one run only.

Needs root and Debian's runc, skopeo, umoci, busybox-static, docker-registry;
installs openssh-server on first use.
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from peers.ssh import SshPeer, sshd

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
ROUND_TRIP_TURNS = 10  # blocks of ROUND_TRIPS / 10, each way in turn
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


def process_cpu_seconds(pids: set[int], descendants: bool = False) -> float:
    """CPU seconds (user and system, all threads) the processes ``pids`` (and, with
    ``descendants``, every live process below them) have spent."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                stats[int(entry.name)] = (int(fields[1]),
                                          (int(fields[11]) + int(fields[12])) /
                                          os.sysconf("SC_CLK_TCK"))
    chosen = set(pids)
    while descendants:
        below = {pid for pid, (parent, _) in stats.items() if parent in chosen} - chosen
        if not below:
            break
        chosen |= below
    return sum(stats[pid][1] for pid in chosen if pid in stats)


Meter = Callable[[], float]


def timed_fetch(port: int, pid: int | None = None, meter: Meter | None = None
                ) -> tuple[float, float, float]:
    """Seconds to GET the whole file from 127.0.0.1:``port`` (raw socket, 1 MiB reads),
    the CPU seconds the machine spent meanwhile, and those ``meter`` counts (the
    forwarding processes') (``pid``: see :func:`_connect`)."""
    buffer = bytearray(RECV_BYTES)
    own = meter() if meter else 0.0
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
    return seconds, cpu, (meter() - own) if meter else 0.0


def round_trip_seconds(ports: dict[str, tuple[int, int | None]]
                       ) -> dict[str, tuple[float, float]]:
    """Mean and median seconds of one 64-byte round trip to each echo server of ``ports``
    (name: (port at 127.0.0.1, the pid whose network namespace it is in)), taken in
    turns: ``ROUND_TRIP_TURNS`` blocks each, one way after the other, so that a moment
    of load on these two cores falls on every way alike instead of on one way's run."""
    times: dict[str, list[float]] = {name: [] for name in ports}
    with contextlib.ExitStack() as stack:
        socks = {name: stack.enter_context(_connect(port, pid))
                 for name, (port, pid) in ports.items()}
        for sock in socks.values():
            sock.sendall(MESSAGE)  # the first one opens the way (nc starts cat); not timed
            _receive(sock, len(MESSAGE))
        for _ in range(ROUND_TRIP_TURNS):
            for name, sock in socks.items():
                for _ in range(ROUND_TRIPS // ROUND_TRIP_TURNS):
                    started = time.perf_counter()
                    sock.sendall(MESSAGE)
                    _receive(sock, len(MESSAGE))
                    times[name].append(time.perf_counter() - started)
    return {name: (statistics.fmean(spent), statistics.median(spent))
            for name, spent in times.items()}


def _receive(sock: socket.socket, size: int) -> None:
    got = 0
    while got < size:
        chunk = sock.recv(size - got)
        if not chunk:
            raise SystemExit("the echo server closed the connection")
        got += len(chunk)


@contextmanager
def port_forward(cluster: LocalCluster, workflow: str, remote: int
                 ) -> Iterator[tuple[int, int]]:
    """``fuzz workflow port-forward`` to ``remote`` while inside; yields its local port
    and its pid."""
    process = subprocess.Popen(
        fuzz_argv("workflow", "port-forward", workflow, JOB, f"0:{remote}", "--json"),
        cwd=cluster.directory, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise SystemExit("fuzz workflow port-forward did not start")
        yield int(json.loads(line)["address"].rpartition(":")[2]), process.pid
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


def timed_read(argv: list[str], cwd: Path | None = None) -> tuple[float, float, float]:
    """Seconds for ``argv``'s stdout to yield the whole file (1 MiB reads), and the CPU
    seconds the machine spent meanwhile."""
    buffer = bytearray(RECV_BYTES)
    busy = busy_cpu_seconds()
    started = time.perf_counter()
    process = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, bufsize=0)
    assert process.stdout is not None
    received = 0
    while count := process.stdout.readinto(buffer):  # type: ignore[attr-defined]
        received += count
    process.wait()
    seconds = time.perf_counter() - started
    cpu = busy_cpu_seconds() - busy
    if process.returncode != 0 or received < FILE_MIB * 2**20:
        raise SystemExit(f"{argv[:3]}...: exit {process.returncode}, {received} bytes")
    return seconds, cpu, 0.0


def _median(pairs: list[tuple[float, float, float]], index: int) -> float:
    return statistics.median(pair[index] for pair in pairs)


def measure(cluster: LocalCluster, image: str) -> dict[str, float]:
    """Start the job, then every figure, tunnel, ssh and direct alternately."""
    workflow = f"pfbench{os.getpid()}"  # runc's container ids are host-wide
    http_port, echo_port = free_port(), free_port()
    fuzzfile = cluster.directory / "service.yaml"
    fuzzfile.write_text(FUZZFILE.format(image=image, mib=FILE_MIB, http_port=http_port,
                                        echo_port=echo_port, memory=FILE_MIB + 256))
    cluster.must("workflow", "start", workflow, str(fuzzfile))
    try:
        pid = job_pid(cluster)
        wait_until_served(http_port, pid)
        with port_forward(cluster, workflow, http_port) as (web, cli), \
                port_forward(cluster, workflow, echo_port) as (echo, _), \
                sshd(pid) as peer, peer.forward(http_port) as (ssh_web, ssh_client), \
                peer.forward(echo_port) as (ssh_echo, _):
            fuzz_pids = {cli, *cluster_pids(cluster)}
            tunnel, ssh, direct = [], [], []
            for _ in range(TRANSFERS):
                tunnel.append(timed_fetch(web, meter=lambda: process_cpu_seconds(fuzz_pids)))
                ssh.append(timed_fetch(ssh_web, pid, lambda: process_cpu_seconds(
                    {ssh_client, peer.pid}, descendants=True)))
                direct.append(timed_fetch(http_port, pid))
            figures = {
                "tunnel_s": _median(tunnel, 0), "tunnel_cpu": _median(tunnel, 1),
                "tunnel_own_cpu": _median(tunnel, 2),
                "ssh_s": _median(ssh, 0), "ssh_cpu": _median(ssh, 1),
                "ssh_own_cpu": _median(ssh, 2),
                "direct_s": _median(direct, 0), "direct_cpu": _median(direct, 1),
            }
            trips = round_trip_seconds({"tunnel": (echo, None), "ssh": (ssh_echo, pid),
                                        "direct": (echo_port, pid)})
            for key, (mean, median) in trips.items():
                figures[f"{key}_rtt"], figures[f"{key}_rtt_median"] = mean, median
            figures.update(measure_exec(cluster, workflow, pid, peer))
            return figures
    finally:  # stopped before the node goes, so that its container is cleaned up
        cluster.run("workflow", "cancel", workflow)
        cluster.run("workflow", "status", workflow, "--watch")


def cluster_pids(cluster: LocalCluster) -> set[int]:
    """The orchestrator's and the agents' pids (not their jobs')."""
    infos = [cluster.data_dir / "server.json",
             *cluster.directory.glob(".fuzz/nodes/*/*/agent.json")]
    return {int(json.loads(path.read_text())["pid"]) for path in infos}


def measure_exec(cluster: LocalCluster, workflow: str, pid: int, peer: SshPeer
                 ) -> dict[str, float]:
    """``cat`` of the file through ``fuzz workflow exec`` and through ``ssh``, alternately."""
    fuzz_cat = fuzz_argv("workflow", "exec", workflow, JOB, "--", "cat", "/tmp/www/big")
    ssh_cat = peer.ssh("root@127.0.0.1", "cat", f"/proc/{pid}/root/tmp/www/big")
    fuzz, ssh = [], []
    for _ in range(TRANSFERS):
        fuzz.append(timed_read(fuzz_cat, cluster.directory))
        ssh.append(timed_read(ssh_cat))
    return {"exec_s": _median(fuzz, 0), "exec_cpu": _median(fuzz, 1),
            "ssh_exec_s": _median(ssh, 0), "ssh_exec_cpu": _median(ssh, 1)}


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
    report(figures)
    return 0


def report(figures: dict[str, float]) -> None:
    """Print every figure, ending with the BENCH lines."""
    megabytes = FILE_MIB * 2**20 / 1e6
    cores = os.cpu_count() or 1
    print(f"throughput, one {FILE_MIB} MiB transfer (median of {TRANSFERS}), and the CPU the "
          f"machine spent on it (load average now: {os.getloadavg()[0]:.1f}):")
    for label, key in (("direct loopback TCP", "direct"), ("ssh -L (aes128-gcm)", "ssh"),
                       ("fuzz port-forward", "tunnel"), ("ssh HOST cat", "ssh_exec"),
                       ("fuzz workflow exec cat", "exec")):
        seconds, cpu = figures[f"{key}_s"], figures[f"{key}_cpu"]
        print(f"  {label:24s} {megabytes / seconds:8.1f} MB/s   {cpu:.2f} CPU s "
              f"({cpu / seconds:.1f} of {cores} cores busy)")
    print(f"latency, {ROUND_TRIPS} round trips of {len(MESSAGE)} bytes (the figure: the mean):")
    for label, key in (("direct loopback TCP", "direct"), ("ssh -L (aes128-gcm)", "ssh"),
                       ("fuzz port-forward", "tunnel")):
        print(f"  {label:24s} {figures[f'{key}_rtt'] * 1e6:8.1f} us mean, "
              f"{figures[f'{key}_rtt_median'] * 1e6:.1f} us median")
    print(f"CPU seconds of the forwarding processes per transfer (theirs alone, whatever else "
          f"runs): fuzz (CLI, agent, orchestrator) {figures['tunnel_own_cpu']:.2f}, "
          f"ssh -L (ssh, sshd) {figures['ssh_own_cpu']:.2f}")
    print(f"BENCH pf_process_cpu_ratio_vs_ssh="
          f"{figures['tunnel_own_cpu'] / figures['ssh_own_cpu']:.2f} x target<=1.0")
    print(f"BENCH pf_cpu_s_per_transfer={figures['tunnel_cpu']:.2f} s "
          f"ssh={figures['ssh_cpu']:.2f} direct={figures['direct_cpu']:.2f} cores={cores}")
    print(f"BENCH pf_roundtrip_us={figures['tunnel_rtt'] * 1e6:.0f} us "
          f"ssh={figures['ssh_rtt'] * 1e6:.0f} direct={figures['direct_rtt'] * 1e6:.0f}")
    print(f"BENCH pf_throughput_ratio={figures['direct_s'] / figures['tunnel_s']:.2f} x "
          f"target>=0.3")
    print(f"BENCH pf_throughput_ratio_vs_ssh={figures['ssh_s'] / figures['tunnel_s']:.2f} x "
          f"target>=1.0")
    print(f"BENCH pf_roundtrip_ratio_vs_ssh={figures['tunnel_rtt'] / figures['ssh_rtt']:.2f} x "
          f"target<=1.0")
    print(f"BENCH pf_cpu_ratio_vs_ssh={figures['tunnel_cpu'] / figures['ssh_cpu']:.2f} x "
          f"target<=1.0")
    print(f"BENCH exec_throughput_ratio_vs_ssh={figures['ssh_exec_s'] / figures['exec_s']:.2f} x "
          f"target>=1.0")


if __name__ == "__main__":
    sys.exit(main())
