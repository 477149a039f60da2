"""End to end: a workflow's services (real server, two real agents, runc containers on
job networks): readiness probes, ``depends-on`` RUNNING, ``<service>.svc``, persist,
restarts, and another tenant kept out.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from fuzz.testing.oci import PushedImage, free_port
from tests.support.workflowutil import LocalCluster, dump, local_cluster, tasks_by_key


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, busybox_image: PushedImage
            ) -> Iterator[LocalCluster]:
    """Two local nodes (jobs on isolated job networks) and their orchestrator."""
    directory = tmp_path_factory.mktemp("services")
    os.chmod(directory, 0o755)  # jobs run as nobody; volumes live under it
    with local_cluster(directory, [busybox_image.registry.host], free_port()) as running:
        yield running


def wait_readiness(cluster: LocalCluster, name: str, service: str, readiness: str,
                   timeout: float = 90) -> dict[str, object]:
    """Poll until ``service`` of ``name`` is RUNNING with ``readiness``; its task."""
    deadline = time.monotonic() + timeout
    while True:
        status = cluster.status(name)
        task = tasks_by_key(status)[service]
        if task["state"] == "RUNNING" and task["readiness"] == readiness:
            return task
        assert status["state"] in ("PENDING", "RUNNING"), dump(status)
        assert time.monotonic() < deadline, f"{service} not {readiness}: {dump(status)}"
        time.sleep(0.3)


WEB_AND_CLIENT = """\
version: v1
services:
  web:
    image: {{uri: {image}}}
    script: |
      mkdir -p /tmp/www && echo hello-from-web > /tmp/www/index.html
      sleep 6
      exec httpd -f -p 8080 -h /tmp/www
    network: {{ports: [{{name: http, port: 8080, protocol: tcp}}]}}
    readiness-probe:
      http-get: {{path: /index.html, port: 8080}}
      period-seconds: 1
      failure-threshold: 60
jobs:
  client:
    image: {{uri: {image}}}
    script: |
      echo "wf=$FB_WORKFLOW_ID job=$FB_JOB_NAME account=$FB_ACCOUNT_ID fuzz=$FUZZ_JOB"
      wget -qO- http://web.svc:8080/index.html
    depends-on: [{{name: web, status: RUNNING}}]
"""


def test_a_service_becomes_ready_and_its_dependant_reaches_it_by_name(
        cluster: LocalCluster, busybox_image: PushedImage) -> None:
    cluster.start("web", WEB_AND_CLIENT.format(image=busybox_image.reference))
    starting = wait_readiness(cluster, "web", "web", "STARTING")
    assert starting["kind"] == "service"
    # while httpd is not up yet the probe fails, and status says why
    deadline = time.monotonic() + 60
    while not tasks_by_key(cluster.status("web"))["web"]["probe_error"]:
        assert time.monotonic() < deadline, dump(cluster.status("web"))
        time.sleep(0.2)
    probing = tasks_by_key(cluster.status("web"))
    assert "8080" in probing["web"]["probe_error"], dump(probing)
    assert probing["client"]["state"] == "WAITING"  # not before the service is READY
    table = cluster.ok("workflow", "status", "web").out
    assert "service" in table and "STARTING" in table and "probe:" in table
    status = cluster.wait("web", timeout=120)
    assert status["state"] == "SUCCEEDED", dump(status)
    tasks = tasks_by_key(status)
    web, client = tasks["web"], tasks["client"]
    assert client["state"] == "SUCCEEDED", dump(status)
    assert client["started"] >= web["started"] + 5  # it waited for the probe to pass
    # persist: false: stopped once its one dependant ended, and that is no failure
    assert web["state"] == "SUCCEEDED" and "stopped" in web["error"], dump(status)
    assert web["addresses"] and web["addresses"][0], dump(status)
    out = cluster.ok("workflow", "log", "web", "client").out
    run_id = status["id"]
    assert f"wf={run_id} job=client account=admin fuzz=client" in out
    assert "hello-from-web" in out
