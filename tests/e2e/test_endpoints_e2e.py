"""End to end: a service's endpoints opened through the orchestrator's HTTPS gateway, the
real CLI, agent and runc containers.

The service runs busybox httpd (a page under its path prefix, FB_ENDPOINT_PATH_PAGE)
and websocat echoing WebSocket messages, in its own network namespace. The gateway,
on the agent's host, relays over the service's socket the agent hands it; another
user's job cannot reach the service.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request

from fuzz.testing.oci import PushedImage, Registry, build_busybox_layout, free_port, push_layout
from tests.support.cliutil import fuzz_command
from tests.support.endpoints import Browser, ca_context, websocat_files, websocket_echo
from tests.support.orchestratorutil import wait_until
from tests.support.workflowutil import LocalCluster, local_cluster, tasks_by_key

SERVICE = "web"
PAGE = "<h1>served through an endpoint</h1>"
FUZZFILE = """\
version: v1
services:
  web:
    image: {{uri: {image}}}
    persist: true
    script: |
      mkdir -p "/tmp/www$FB_ENDPOINT_PATH_PAGE"
      echo '{page}' > "/tmp/www$FB_ENDPOINT_PATH_PAGE/index.html"
      echo "$FB_ENDPOINT_URL_PAGE" > /tmp/www$FB_ENDPOINT_PATH_PAGE/url.txt
      websocat -t -E -B 1048576 ws-l:0.0.0.0:8081 mirror: &
      exec httpd -f -p 8080 -h /tmp/www
    resource: {{cpu: {{cores: 1}}, memory: {{size: 256MiB}}}}
    network:
      ports:
        - {{name: http, port: 8080}}
        - {{name: ws, port: 8081}}
      endpoints:
        - {{name: page, port-name: http, type: path, scope: user}}
        - {{name: echo, port-name: ws, type: path, scope: public}}
    readiness-probe:
      tcp-socket: {{port: 8080}}
      period-seconds: 1
"""


@dataclass
class Served:
    """The running service's workflow and how to reach the gateway."""

    cluster: LocalCluster
    name: str
    endpoints: dict[str, dict[str, object]]
    gateway_port: int
    admin_token: str

    def browser(self) -> Browser:
        return Browser("127.0.0.1", self.gateway_port,
                       ca_context(self.cluster.data_dir / "ca.pem"))

    def path(self, endpoint: str) -> str:
        return urllib.parse.urlsplit(str(self.endpoints[endpoint]["url"])).path


@pytest.fixture(scope="module")
def websocat_image(tmp_path_factory: pytest.TempPathFactory, registry: Registry) -> PushedImage:
    layout = build_busybox_layout(tmp_path_factory.mktemp("websocat-image"), websocat_files())
    return push_layout(layout, registry, "fuzz/websocat")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory,
           websocat_image: PushedImage) -> Iterator[Served]:
    directory = tmp_path_factory.mktemp("endpoints")
    os.chmod(directory, 0o755)
    with local_cluster(directory, [websocat_image.registry.host], free_port(),
                       nodes=1) as cluster:
        name = f"svc{os.getpid()}"
        cluster.start(name, FUZZFILE.format(image=websocat_image.reference, page=PAGE))
        def ready() -> bool:
            task = tasks_by_key(cluster.status(name))[SERVICE]
            assert task["state"] in ("WAITING", "QUEUED", "STARTING", "RUNNING"), task
            return bool(task.get("readiness") == "READY")

        wait_until("the service ready", ready, timeout=120)
        listed = cluster.ok("workflow", "endpoints", name, "--json").json()
        base = json.loads((cluster.data_dir / "server.json").read_text())["endpoints_url"]
        try:
            yield Served(cluster, name, {e["name"]: e for e in listed},
                         int(base.rpartition(":")[2]),
                         (cluster.data_dir / "admin.token").read_text().strip())
        finally:
            cluster.fuzz("workflow", "stop", name)
            cluster.wait(name)


def test_endpoints_are_listed_with_their_urls(served: Served) -> None:
    page = served.endpoints["page"]
    assert page["url"] == (f"https://127.0.0.1:{served.gateway_port}/endpoints/admin/"
                           f"{served.name}/web/page/")
    assert (page["scope"], page["type"], page["service"]) == ("user", "path", SERVICE)
    status = served.cluster.ok("workflow", "status", served.name).out
    assert "web/page" in status and "(scope user)" in status and "(scope public)" in status
    urls = [e["url"] for e in served.cluster.status(served.name)["endpoints"]]
    assert urls == [page["url"], served.endpoints["echo"]["url"]]
    described = served.cluster.ok("workflow", "describe", served.name).out
    assert "endpoint web/echo (path, http, port 8081): " in described


def test_the_owner_opens_the_page_and_anonymous_is_sent_to_sign_in(served: Served) -> None:
    browser = served.browser()
    anonymous = browser.request("GET", served.path("page"))
    assert anonymous.status == 302
    assert anonymous.headers["Location"].startswith("/_fuzz/sign-in?next=")
    page = browser.request("GET", served.path("page"),
                           headers={"Authorization": f"Bearer {served.admin_token}"})
    assert page.status == 200 and page.body.decode().strip() == PAGE
    url = browser.request("GET", served.path("page") + "url.txt",
                          headers={"Authorization": f"Bearer {served.admin_token}"})
    assert url.body.decode().strip() == served.endpoints["page"]["url"]


def test_a_new_user_signs_in_with_a_login_code_and_is_refused_a_user_endpoint(
        served: Served) -> None:
    added = served.cluster.ok("iam", "user", "add", "dora", "--role", "user", "--json").json()
    browser = served.browser()
    assert browser.sign_in(served.path("page"), added["code"]).status == 303
    assert browser.request("GET", served.path("page")).status == 403


def test_a_websocket_echo_through_the_service_endpoint(served: Served) -> None:
    raw = socket.create_connection(("127.0.0.1", served.gateway_port), timeout=60)
    context = ca_context(served.cluster.data_dir / "ca.pem")
    with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        messages = ["ping", "two words", "z" * 100_000]
        assert websocket_echo(sock, "127.0.0.1", served.path("echo"), messages) == messages


def test_connect_opens_the_endpoint_on_localhost(served: Served) -> None:
    process = subprocess.Popen(
        fuzz_command("workflow", "connect", served.name, SERVICE, "--endpoint", "page",
                     "--json"), cwd=served.cluster.directory, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        first = json.loads(process.stdout.readline())
        assert first["event"] == "listening", first
        port = int(str(first["address"]).rpartition(":")[2])
        with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
            conn.sendall(f"GET {served.path('page')} HTTP/1.0\r\n\r\n".encode())
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.") and PAGE.encode() in answer
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_another_users_job_cannot_reach_the_service_but_the_endpoint_can(
        served: Served, tmp_path: Path, websocat_image: PushedImage) -> None:
    addresses = tasks_by_key(served.cluster.status(served.name))[SERVICE]["addresses"]
    assert addresses, "the service has a network address of its own"
    added = served.cluster.ok("iam", "user", "add", "eve", "--role", "user", "--json").json()
    env = {**os.environ, "FUZZ_CONFIG": str(tmp_path / "config.yaml")}
    endpoint = json.loads((served.cluster.data_dir / "server.json").read_text())["endpoint"]
    login = subprocess.run(fuzz_command("login", endpoint, "--code", added["code"],
                                        "--ca-file", str(served.cluster.data_dir / "ca.pem")),
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert login.returncode == 0, login.stderr
    probe = tmp_path / "probe.yaml"
    probe.write_text(f"""\
version: v1
jobs:
  probe:
    image: {{uri: {websocat_image.reference}}}
    script: |
      if wget -q -T 3 -O /dev/null http://{addresses[0]}:8080/; then echo reached; \
else echo unreachable; fi
    resource: {{cpu: {{cores: 1}}, memory: {{size: 64MiB}}}}
""")
    def fuzz_as_eve(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(fuzz_command(*args), cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
    started = fuzz_as_eve("workflow", "start", "probe", str(probe))
    assert started.returncode == 0, started.stderr
    wait_until("eve's probe ended", lambda: json.loads(fuzz_as_eve(
        "workflow", "status", "probe", "--json").stdout)["state"] in ("SUCCEEDED", "FAILED"),
        timeout=120)
    output = fuzz_as_eve("workflow", "log", "probe", "probe").stdout
    assert output.strip() == "unreachable", output
    browser = served.browser()
    page = browser.request("GET", served.path("page"),
                           headers={"Authorization": f"Bearer {served.admin_token}"})
    assert page.status == 200


def test_endpoint_and_connect_refusals_are_one_line(served: Served) -> None:
    unknown = served.cluster.fuzz("workflow", "endpoints", served.name, "nosuch")
    assert unknown.code == 1 and "Traceback" not in unknown.err
    assert (f"workflow {served.name} has no endpoint of service nosuch (its endpoints: "
            "web/page, web/echo)") in unknown.err
    several = served.cluster.fuzz("workflow", "connect", served.name, SERVICE)
    assert several.code == 1 and "Traceback" not in several.err
    assert "service web has several endpoints (page, echo): choose one with --endpoint NAME" \
        in several.err


def _service_pid(cluster: LocalCluster) -> int:
    """The host pid of the cluster's one running container (the service's)."""
    pids: list[int] = []

    def running() -> bool:
        for path in cluster.directory.glob(".fuzz/nodes/*/*/containers/*/status.json"):
            with contextlib.suppress(OSError, ValueError):
                status = json.loads(path.read_text())
                if status.get("state") == "running" and isinstance(status.get("pid"), int):
                    pids.append(int(status["pid"]))
        return bool(pids)

    wait_until("the service's container running", running, timeout=60)
    return pids[0]


def _socket_inodes(pid: int) -> set[str]:
    """The inodes of the sockets process ``pid`` holds open."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    return inodes


def _connections_to(pid: int, port: int) -> set[str]:
    """The inodes of the TCP connections to ``port`` in process ``pid``'s network
    namespace (its /proc net tables)."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[2].rpartition(":")[2], 16) == port:  # the remote address's port
                inodes.add(fields[9])
    return inodes


def test_the_gateway_on_the_agents_host_holds_the_service_connection_itself(
        served: Served) -> None:
    """The agent hands the gateway (on its host) the socket it opened in the service's
    network namespace: while a WebSocket is open through the endpoint, the
    orchestrator's process holds the service's connection, and the agent is off the
    data path (no TLS hop between them)."""
    service_pid = _service_pid(served.cluster)
    raw = socket.create_connection(("127.0.0.1", served.gateway_port), timeout=60)
    context = ca_context(served.cluster.data_dir / "ca.pem")
    with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        ws = WSConnection(ConnectionType.CLIENT)
        sock.sendall(ws.send(Request(host="127.0.0.1", target=served.path("echo"))))
        while not any(isinstance(event, AcceptConnection) for event in ws.events()):
            data = sock.recv(65536)
            assert data, "the gateway closed the connection before the upgrade"
            ws.receive_data(data)
        held = _socket_inodes(served.cluster.server_pid()) & _connections_to(service_pid, 8081)
        assert held, "the orchestrator holds no connection to the service's port"
