"""A local cluster whose orchestrator runs as replicas on one PostgreSQL store.

For the failover tests and ``bench/failover.py``: the spec's orchestrator (the first
replica, started by :func:`fuzz.testing.cluster.cluster_up`) and further replicas, each
set up as README's "Replicas" says (a data dir holding the first one's CA, CA key,
master key and admin token) and started with ``fuzz server --detach``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

from fuzz.clients.orchestrator import OrchestratorClient
from fuzz.orchestrate.connect import CA_FILE, INFO_FILE, TOKEN_FILE, read_ca_file
from fuzz.orchestrate.datadir import CA_KEY_FILE
from fuzz.orchestrate.server import KEY_FILE
from fuzz.rpc.client import ClientTls
from fuzz.testing.cluster import LocalCluster

SHARED_FILES = (CA_FILE, CA_KEY_FILE, KEY_FILE, TOKEN_FILE)  # what replicas share
FAILOVER_TIMEOUT = 60.0


def add_replica(cluster: LocalCluster, name: str, port: int) -> Path:
    """Set up and start (standing by) another replica of ``cluster``'s orchestrator on
    127.0.0.1:``port``; its data dir."""
    data_dir = cluster.directory / ".fuzz" / name
    data_dir.mkdir(mode=0o700, parents=True)
    for file in SHARED_FILES:
        shutil.copy2(cluster.data_dir / file, data_dir / file)
    cluster.must("server", "--detach", "--listen", f"127.0.0.1:{port}",
                 "--data-dir", str(data_dir))
    return data_dir


def server_pid(data_dir: Path) -> int:
    """The pid of the server running on ``data_dir``."""
    return int(json.loads((data_dir / INFO_FILE).read_text())["pid"])


def kill_9(data_dir: Path) -> float:
    """kill -9 the server running on ``data_dir``; the monotonic time of the kill, once
    the process is gone."""
    pid = server_pid(data_dir)
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    while Path(f"/proc/{pid}").exists():
        time.sleep(0.02)
    return killed


def leads(cluster: LocalCluster, endpoint: str, timeout: float = 1.0) -> bool:
    """Whether the replica at ``endpoint`` serves (its health check says SERVING)."""
    tls = ClientTls(read_ca_file(cluster.data_dir / CA_FILE))
    with OrchestratorClient(endpoint, "", tls=tls) as client:
        return client.health(timeout=timeout)


def wait_leading(cluster: LocalCluster, endpoint: str,
                 timeout: float = FAILOVER_TIMEOUT) -> float:
    """Wait until the replica at ``endpoint`` leads; the monotonic time it was seen to."""
    deadline = time.monotonic() + timeout
    while not leads(cluster, endpoint):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the replica at {endpoint} did not lead within {timeout:g}s")
        time.sleep(0.05)
    return time.monotonic()


def stop_replica(cluster: LocalCluster, data_dir: Path) -> None:
    """``fuzz server --stop`` on a replica's data dir (clean-up; a dead one is fine)."""
    cluster.run("server", "--stop", "--data-dir", str(data_dir))
