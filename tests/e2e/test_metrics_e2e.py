"""End to end: a real Prometheus (Debian's ``prometheus``) scrapes a local cluster.

The orchestrator and both agents serve ``/metrics`` on loopback ports they picked
(``server.json`` and ``agent.json`` say which); Prometheus scrapes them every second
while a small workflow runs, and the test reads the series back through Prometheus's
HTTP API (``/api/v1/query``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from fuzz.testing.oci import PushedImage, free_port
from fuzz.testing.web import DIRECT, plain_get
from tests.support.orchestratorutil import wait_until
from tests.support.workflowutil import LocalCluster, dump, local_cluster

PROMETHEUS = "/usr/bin/prometheus"  # Debian's package (APT_PACKAGES)
JOBS = 3
WORKFLOW = "metrics-private-name"


@dataclass
class Prometheus:
    """A running Prometheus and where its HTTP API is."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def query(self, expression: str) -> list[dict[str, Any]]:
        """The instant vector ``expression`` gives now (``/api/v1/query``)."""
        address = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
        with DIRECT.open(address, timeout=10) as reply:
            body = json.load(reply)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, expression: str) -> float | None:
        """The single value of ``expression``, None while it has none."""
        found = self.query(expression)
        return float(found[0]["value"][1]) if found else None




@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory,
            busybox_image: PushedImage) -> Iterator[LocalCluster]:
    """Two local nodes and their orchestrator, metrics on by default."""
    directory = tmp_path_factory.mktemp("cluster")
    os.chmod(directory, 0o755)  # jobs run as nobody
    with local_cluster(directory, [busybox_image.registry.host], free_port()) as running:
        yield running


def _targets(cluster: LocalCluster) -> tuple[str, list[str]]:
    """The orchestrator's metrics address and the agents', from their info files."""
    server = json.loads((cluster.data_dir / "server.json").read_text())
    agents = sorted(json.loads(path.read_text())["metrics"]
                    for path in (cluster.directory / ".fuzz").rglob("agent.json"))
    return server["metrics"], agents


@pytest.fixture(scope="module")
def prometheus(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Prometheus]:
    """Prometheus scraping the cluster every second, with storage of its own."""
    assert shutil.which(PROMETHEUS) or os.path.exists(PROMETHEUS), \
        "Debian's prometheus is missing: scripts/install-system-packages.sh prometheus"
    home = tmp_path_factory.mktemp("prometheus")
    orchestrator, agents = _targets(cluster)
    assert len(agents) == cluster.nodes, agents
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "fuzz-orchestrator", "static_configs": [{"targets": [orchestrator]}]},
            {"job_name": "fuzz-agent", "static_configs": [{"targets": agents}]},
        ],
    }
    (home / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = home / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={home / 'prometheus.yml'}",
             f"--storage.tsdb.path={home / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    running = Prometheus(proc, f"http://127.0.0.1:{port}", log)
    try:
        wait_until("prometheus to be ready", lambda: proc.poll() is not None
                   or plain_get(f"{running.url}/-/ready")[0] == 200, timeout=60)
        assert proc.poll() is None, log.read_text()
        yield running
    finally:
        proc.terminate()
        proc.wait(30)


def test_prometheus_scrapes_the_orchestrator_and_every_agent(
        cluster: LocalCluster, prometheus: Prometheus, busybox_image: PushedImage) -> None:
    jobs = "\n".join(f"""\
  job-{n}:
    image: {{uri: {busybox_image.reference}}}
    command: [sh, -c, "echo {n}"]
    resource: {{cpu: {{cores: 1}}, memory: {{size: 16MiB}}}}""" for n in range(JOBS))
    cluster.start(WORKFLOW, f"version: v1\njobs:\n{jobs}\n")
    status = cluster.wait(WORKFLOW)
    assert status["state"] == "SUCCEEDED", dump(status)

    # every target is up: the orchestrator and both agents
    wait_until("all three targets up", lambda: prometheus.value("sum(up)") == 1 + cluster.nodes,
               timeout=60)
    wait_until(f"{JOBS} task ends by SUCCEEDED", lambda: (prometheus.value(
        'fuzz_task_ends_total{state="SUCCEEDED",job="fuzz-orchestrator"}') or 0) >= JOBS,
        timeout=60)
    assert (prometheus.value("fuzz_task_starts_total") or 0) >= JOBS
    assert (prometheus.value("fuzz_queue_wait_seconds_count") or 0) >= JOBS
    assert (prometheus.value("fuzz_scheduling_round_seconds_count") or 0) >= 1
    assert prometheus.value('fuzz_nodes{state="READY"}') == cluster.nodes
    assert prometheus.value("fuzz_leader") == 1
    assert prometheus.value("fuzz_queue_depth") == 0
    wait_until("the start's RPC latency", lambda: (prometheus.value(
        'sum(fuzz_rpc_duration_seconds_count{job="fuzz-orchestrator",'
        'method="/fuzz.orchestrator.v1.Orchestrator/StartWorkflow",code="OK"})') or 0) >= 1,
        timeout=30)
    # the agents: containers were started through their API (a call per start, or a node's
    # starts asked together in one StartContainers), the image fetched once each at most,
    # and both report their leases and containers
    start_calls = prometheus.value('sum(fuzz_rpc_duration_seconds_count{job="fuzz-agent",'
                                   'method=~"/fuzz.substrate.v1.Substrate/StartContainers?"})')
    assert 1 <= (start_calls or 0) <= JOBS
    assert 1 <= (prometheus.value("sum(fuzz_agent_image_pulls_total)") or 0) <= cluster.nodes
    assert len(prometheus.query("fuzz_agent_leases")) == cluster.nodes


def test_metrics_name_no_workflow_and_health_paths_answer(cluster: LocalCluster) -> None:
    orchestrator, agents = _targets(cluster)
    for target in (orchestrator, *agents):
        code, text = plain_get(f"http://{target}/metrics")
        assert code == 200
        assert "fuzz_rpc_duration_seconds" in text
        assert WORKFLOW not in text and "job-0" not in text  # tenants' data stays out
        assert plain_get(f"http://{target}/healthz") == (200, "ok\n")
        assert plain_get(f"http://{target}/readyz") == (200, "ready\n")
        assert plain_get(f"http://{target}/anything")[0] == 404
