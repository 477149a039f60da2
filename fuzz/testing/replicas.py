"""A local cluster whose orchestrator runs as replicas on one PostgreSQL store.

For the failover tests and ``bench/failover.py``: the spec's orchestrator (the first
replica, started by :func:`fuzz.testing.cluster.cluster_up`) and further replicas, each
set up as README's "Replicas" says (a data dir holding the first one's CA, CA key,
master key and admin token) and started with ``fuzz server --detach``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fuzz.clients.orchestrator import OrchestratorClient
from fuzz.orchestrate.connect import CA_FILE, INFO_FILE, TOKEN_FILE, read_ca_file
from fuzz.orchestrate.datadir import CA_KEY_FILE
from fuzz.orchestrate.server import KEY_FILE
from fuzz.rpc.client import ClientTls
from fuzz.testing.cluster import LocalCluster, local_cluster
from fuzz.testing.oci import free_port

SHARED_FILES = (CA_FILE, CA_KEY_FILE, KEY_FILE, TOKEN_FILE)  # what replicas share
FAILOVER_TIMEOUT = 60.0
MARKS_VOLUME = "replica-marks"  # the persistent volume marking_tasks' jobs write to


def marking_tasks(image: str, count: int, seconds: float) -> str:
    """A Fuzzfile of ``count`` independent jobs ``t000``…; each appends ``started`` to a
    file of its own in the persistent volume ``MARKS_VOLUME`` (a job started twice
    leaves two lines), then sleeps ``seconds``."""
    jobs = "".join(f"""\
  t{index:03d}:
    image: {{uri: {image}}}
    script: echo started >> /marks/t{index:03d}; sleep {seconds:g}
    mounts: {{marks: {{location: /marks}}}}
""" for index in range(count))
    return f"""\
version: v1
volumes:
  marks: {{reference: volume://user/persistent/{MARKS_VOLUME}}}
jobs:
{jobs}"""


def marks(cluster: LocalCluster) -> Path:
    """Where ``marking_tasks``' jobs (started by the admin) leave their marks."""
    return cluster.volume_root / "persistent" / "admin" / MARKS_VOLUME


def started(cluster: LocalCluster) -> int:
    """How many of ``marking_tasks``' jobs have started."""
    found = marks(cluster)
    return len(list(found.iterdir())) if found.is_dir() else 0


@dataclass(frozen=True)
class Replicated:
    """A local cluster whose orchestrator runs as two replicas (the first leads)."""

    cluster: LocalCluster
    standby_dir: Path  # the second replica's data dir
    standby: str  # the second replica's HOST:PORT


@contextlib.contextmanager
def replicated_cluster(directory: Path, registries: list[str], store_url: str,
                       nodes: int = 2) -> Iterator[Replicated]:
    """A local cluster of ``nodes`` nodes in ``directory`` whose orchestrator is two
    replicas on the PostgreSQL database ``store_url`` (empty); all stopped after."""
    first, second = free_port(), free_port()
    spec = {"store": store_url, "volume_root": ".fuzz/server-volumes",
            "replicas": [f"127.0.0.1:{first}", f"127.0.0.1:{second}"]}
    with local_cluster(directory, registries, first, nodes=nodes, cluster="replicas",
                       orchestrator=spec) as cluster:
        standby_dir = cluster.directory / ".fuzz" / "server-b"
        try:
            add_replica(cluster, standby_dir, second)
            yield Replicated(cluster, standby_dir, f"127.0.0.1:{second}")
        finally:
            stop_replica(cluster, standby_dir)


def add_replica(cluster: LocalCluster, data_dir: Path, port: int) -> None:
    """Set up ``data_dir`` for another replica of ``cluster``'s orchestrator (README's
    "Replicas": the first one's shared files) and start it on 127.0.0.1:``port``."""
    data_dir.mkdir(mode=0o700, parents=True)
    for file in SHARED_FILES:
        shutil.copy2(cluster.data_dir / file, data_dir / file)
    cluster.must("server", "--detach", "--listen", f"127.0.0.1:{port}",
                 "--data-dir", str(data_dir))


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
    """``fuzz server --stop`` on a replica's data dir (clean-up; a dead or never started
    one is fine)."""
    if data_dir.exists():
        cluster.run("server", "--stop", "--data-dir", str(data_dir))
