"""End to end: a workflow's services (real server, two real agents, runc containers on
job networks): readiness probes, ``depends-on`` RUNNING, ``<service>.svc``, persist,
restarts, and another tenant kept out.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fuzz.testing.oci import PushedImage, free_port
from tests.support.cliutil import Result, run_fuzz
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
      sleep 10
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
    while True:
        probing = tasks_by_key(cluster.status("web"))
        if probing["web"]["probe_error"]:
            break
        assert probing["web"]["readiness"] == "STARTING", dump(probing)
        assert time.monotonic() < deadline, dump(probing)
        time.sleep(0.2)
    assert "8080" in probing["web"]["probe_error"], dump(probing)
    assert probing["client"]["state"] == "WAITING"  # not before the service is READY
    table = cluster.ok("workflow", "status", "web").out
    assert "service" in table and "web" in table
    status = cluster.wait("web", timeout=120)
    assert status["state"] == "SUCCEEDED", dump(status) + cluster.fuzz(
        "workflow", "log", "web", "client", "--stderr").out
    tasks = tasks_by_key(status)
    web, client = tasks["web"], tasks["client"]
    assert client["state"] == "SUCCEEDED", dump(status)
    assert client["started"] >= web["started"] + 9  # it waited for the probe to pass
    # persist: false: stopped once its one dependant ended, and that is no failure
    assert web["state"] == "SUCCEEDED" and "stopped" in web["error"], dump(status)
    assert web["addresses"] and web["addresses"][0], dump(status)
    out = cluster.ok("workflow", "log", "web", "client").out
    run_id = status["id"]
    assert f"wf={run_id} job=client account=admin fuzz=client" in out
    assert "hello-from-web" in out


NEVER_READY = """\
version: v1
services:
  stuck:
    image: {{uri: {image}}}
    command: [sleep, "600"]
    readiness-probe:
      exec: {{command: [cat, /tmp/never-there]}}
      period-seconds: 1
      failure-threshold: 3
"""


def test_a_probe_that_never_passes_fails_the_workflow_saying_why(
        cluster: LocalCluster, busybox_image: PushedImage) -> None:
    cluster.start("stuck", NEVER_READY.format(image=busybox_image.reference))
    status = cluster.wait("stuck", timeout=90)
    stuck = tasks_by_key(status)["stuck"]
    assert status["state"] == "FAILED", dump(status)
    assert stuck["state"] == "FAILED" and stuck["restarts"] == 0, dump(status)
    assert "readiness probe failed 3 times in a row" in stuck["error"], dump(status)
    assert "/tmp/never-there" in stuck["error"] and "exit code 1" in stuck["error"]
    assert "service 'stuck' failed" in status["error"], dump(status)
    # about failure-threshold x period-seconds after it started, not the whole sleep
    assert stuck["finished"] - stuck["started"] < 60, dump(status)


PERSISTENT = """\
version: v1
services:
  db:
    image: {{uri: {image}}}
    script: |
      mkdir -p {marker} && echo "$FB_JOB_NAME" > {marker}/index.html
      exec httpd -f -p 8081 -h {marker}
    persist: true
    network: {{ports: [{{name: http, port: 8081, protocol: tcp}}]}}
    readiness-probe:
      tcp-socket: {{port: 8081}}
      period-seconds: 1
      failure-threshold: 60
jobs:
  use:
    image: {{uri: {image}}}
    command: [wget, -qO-, "http://db.svc:8081/"]
    depends-on: [{{name: db, status: RUNNING}}]
"""

INTRUDER = """\
version: v1
jobs:
  probe:
    image: {{uri: {image}}}
    command: [wget, -T, "5", -qO-, "http://{address}:8081/"]
"""


def _kill_from_outside(marker: str) -> int:
    """SIGKILL the process whose command line holds ``marker`` (a container's init); its pid."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                command = handle.read().split(b"\0")
        except OSError:
            continue
        if marker.encode() in command and command[0].endswith(b"httpd"):
            os.kill(int(entry), signal.SIGKILL)
            return int(entry)
    raise AssertionError(f"no process with {marker} runs")


def test_persist_keeps_a_service_until_stopped_restarts_it_and_keeps_other_tenants_out(
        cluster: LocalCluster, busybox_image: PushedImage,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    marker = f"/tmp/www{os.getpid()}"  # its web root, on its command line: found from outside
    cluster.start("kept", PERSISTENT.format(image=busybox_image.reference, marker=marker))
    cluster.wait_for("kept", "use", "SUCCEEDED", timeout=120)
    db = wait_readiness(cluster, "kept", "db", "READY")  # persist: still up, jobs done
    status = cluster.status("kept")
    assert status["state"] == "RUNNING", dump(status)
    assert "db" in cluster.ok("workflow", "log", "kept", "use").out
    address = db["addresses"][0]
    # another tenant's job cannot reach it, though it knows its address and port
    intruder = _user(cluster, f"mallory{os.getpid()}", tmp_path_factory.mktemp("mallory"))
    path = intruder.home / "intruder.yaml"
    path.write_text(INTRUDER.format(image=busybox_image.reference, address=address))
    intruder.ok("workflow", "start", "intruder", str(path))
    deadline = time.monotonic() + 120
    while (seen := intruder.ok("workflow", "status", "intruder", "--json").json())["state"] \
            in ("PENDING", "RUNNING"):
        assert time.monotonic() < deadline, dump(seen)
        time.sleep(0.3)
    assert seen["state"] == "FAILED", dump(seen)
    # killed from outside: restarted, ready again
    _kill_from_outside(marker)
    deadline = time.monotonic() + 120
    while tasks_by_key(cluster.status("kept"))["db"]["restarts"] < 1:
        assert time.monotonic() < deadline, dump(cluster.status("kept"))
        time.sleep(0.3)
    again = wait_readiness(cluster, "kept", "db", "READY")
    assert again["restarts"] == 1 and again["attempt"] == 2, dump(cluster.status("kept"))
    cluster.ok("workflow", "stop", "kept")
    status = cluster.wait("kept", timeout=90)
    tasks = tasks_by_key(status)
    assert status["state"] == "SUCCEEDED", dump(status)  # its jobs' outcome
    assert tasks["db"]["state"] == "CANCELED" and tasks["use"]["state"] == "SUCCEEDED"


def _user(cluster: LocalCluster, name: str, home: Path) -> User:
    """A new user of ``cluster`` (role user), logged in with a config of their own in ``home``."""
    added = cluster.ok("iam", "user", "add", name, "--role", "user", "--json")
    address = json.loads((cluster.data_dir / "server.json").read_text())["endpoint"]
    user = User(name, home)
    user.ok("login", address, "--code", added.json()["code"],
            "--ca-file", str(cluster.data_dir / "ca.pem"))
    return user


@dataclass
class User:
    """A logged-in user: runs ``fuzz`` with a config of their own."""

    name: str
    home: Path

    def ok(self, *args: str) -> Result:
        """``fuzz ARGS`` as this user; exit 0 required."""
        result = run_fuzz(self.home, *args, env={"FUZZ_CONFIG": str(self.home / "config.yaml")})
        assert result.code == 0, f"{self.name}: fuzz {' '.join(args)}: {result.err}{result.out}"
        return result


ALONE = """\
version: v1
services:
  idle:
    image: {{uri: {image}}}
    command: [sleep, "600"]
"""


def test_a_workflow_of_services_only_runs_until_stopped(
        cluster: LocalCluster, busybox_image: PushedImage) -> None:
    cluster.start("alone", ALONE.format(image=busybox_image.reference))
    idle = wait_readiness(cluster, "alone", "idle", "READY")  # no probe: ready at once
    assert idle["probe_error"] == "" and idle["restarts"] == 0
    described = cluster.ok("workflow", "describe", "alone").out
    assert "service idle: RUNNING READY attempt 1" in described, described
    assert "idle" in cluster.ok("workflow", "exec", "alone", "idle", "--", "sh", "-c",
                                "echo $FB_JOB_NAME").out
    cluster.ok("workflow", "stop", "alone")
    status = cluster.wait("alone", timeout=90)
    assert status["state"] == "CANCELED", dump(status)
    assert tasks_by_key(status)["idle"]["state"] == "CANCELED", dump(status)


ADOPTED = """\
version: v1
services:
  kept:
    image: {{uri: {image}}}
    command: [sleep, "600"]
    readiness-probe:
      exec: {{command: ["true"]}}
      period-seconds: 1
jobs:
  wait:
    image: {{uri: {image}}}
    script: until [ -e /tmp/never ]; do sleep 1; done
    depends-on: [{{name: kept, status: RUNNING}}]
"""


def test_a_restarted_server_adopts_a_ready_service_without_restarting_it(
        cluster: LocalCluster, busybox_image: PushedImage) -> None:
    cluster.start("adopted", ADOPTED.format(image=busybox_image.reference))
    cluster.wait_for("adopted", "wait", "RUNNING", timeout=120)
    before = tasks_by_key(cluster.status("adopted"))["kept"]
    os.kill(cluster.server_pid(), signal.SIGKILL)
    time.sleep(0.5)
    cluster.ok("server", "--detach")
    after = wait_readiness(cluster, "adopted", "kept", "READY")
    assert (after["attempt"], after["restarts"], after["addresses"]) == (
        1, 0, before["addresses"]), dump(cluster.status("adopted"))
    assert tasks_by_key(cluster.status("adopted"))["wait"]["attempt"] == 1
    cluster.ok("workflow", "stop", "adopted")
    status = cluster.wait("adopted", timeout=90)
    assert status["state"] == "CANCELED", dump(status)
