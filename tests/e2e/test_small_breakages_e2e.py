"""End to end: the small breakages of issue 20, each through the real CLI, orchestrator,
agent and runc containers of one local node.

port-forward to a task that is not running fails at once; a workflow whose image was
already on the node shows it READY; a failed ingress leaves no ephemeral volume
behind; ``FUZZ_SERVER`` with ``FUZZ_TOKEN_FILE`` reach the server as the README says;
``server.log`` tells what a restarted orchestrator re-adopts and requeues.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fuzz.testing.oci import PushedImage, free_port
from fuzz.testing.web import serve_directory
from tests.support.cliutil import fuzz_command, run_fuzz
from tests.support.orchestratorutil import wait_until
from tests.support.workflowutil import LocalCluster, dump, local_cluster, tasks_by_key

# A refused port-forward fails at once (the bar was 2 s with the CLI's start-up).
PORT_FORWARD_REFUSAL_MARGIN = 1.5
"""Seconds a refused port-forward may take beyond `fuzz workflow status` of the same
workflow, timed just before it: the CLI's start-up is in both, a refusal adds one call
and never waits for the task (a loaded machine starts Python slowly)."""


@pytest.fixture(scope="module")
def missing_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 serving an empty directory: every path is a 404."""
    with serve_directory(tmp_path_factory.mktemp("empty-www")) as url:
        yield url


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, busybox_image: PushedImage,
            missing_files: str) -> Iterator[LocalCluster]:
    """One local node and its orchestrator, whose ingress may reach ``missing_files``."""
    directory = tmp_path_factory.mktemp("small")
    os.chmod(directory, 0o755)  # jobs run as nobody; volumes live under it
    allow = [missing_files.removeprefix("http://")]
    with local_cluster(directory, [busybox_image.registry.host], free_port(), nodes=1,
                       orchestrator={"ingress": {"allow": allow}}) as running:
        yield running


def _quick_job(image: PushedImage) -> str:
    return f"""\
version: v1
jobs:
  hello:
    image: {{uri: {image.reference}}}
    command: [echo, hello]
"""


def test_port_forward_to_a_finished_task_fails_at_once(
        cluster: LocalCluster, busybox_image: PushedImage) -> None:
    cluster.start("pfdone", _quick_job(busybox_image))
    assert cluster.wait("pfdone")["state"] == "SUCCEEDED"
    began = time.monotonic()
    subprocess.run(fuzz_command("workflow", "status", "pfdone"), cwd=cluster.directory,
                   capture_output=True, check=True, timeout=60)
    baseline = time.monotonic() - began
    began = time.monotonic()
    done = subprocess.run(fuzz_command("workflow", "port-forward", "pfdone", "hello", "0:8080"),
                          cwd=cluster.directory, capture_output=True, text=True, timeout=60)
    took = time.monotonic() - began
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stderr.strip() == (
        "Error: task hello of workflow pfdone is not running (SUCCEEDED): "
        "nothing to forward to"), done.stderr
    assert "forwarding" not in done.stdout  # it never listened
    assert took < baseline + PORT_FORWARD_REFUSAL_MARGIN, \
        f"the refusal took {took:.2f}s, a status {baseline:.2f}s"


def test_port_forward_stops_once_its_task_has_ended(
        cluster: LocalCluster, busybox_image: PushedImage) -> None:
    cluster.start("pfends", f"""\
version: v1
jobs:
  brief:
    image: {{uri: {busybox_image.reference}}}
    command: [sleep, "20"]
""")
    cluster.wait_for("pfends", "brief", "RUNNING")  # the CLI starts well within its 20 s
    forward = subprocess.Popen(
        fuzz_command("workflow", "port-forward", "pfends", "brief", "0:8080", "--json"),
        cwd=cluster.directory, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert forward.stdout is not None
        listening = json.loads(forward.stdout.readline())
        assert listening["event"] == "listening", listening
        assert cluster.wait("pfends")["state"] == "SUCCEEDED"
        port = int(str(listening["address"]).rpartition(":")[2])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            assert conn.recv(10) == b""  # refused: the task is gone
        assert forward.wait(timeout=30) == 1
        assert forward.stderr is not None
        assert forward.stderr.read().strip() == (
            "Error: task brief of workflow pfends is not running (SUCCEEDED): "
            "nothing to forward to")
    finally:
        forward.kill()
        forward.wait()


def test_an_image_already_on_the_node_is_ready_in_the_next_workflow(
        cluster: LocalCluster, busybox_image: PushedImage) -> None:
    for name in ("imgfirst", "imgsecond"):
        cluster.start(name, _quick_job(busybox_image))
        status = cluster.wait(name)
        assert status["state"] == "SUCCEEDED", dump(status)
        [image] = status["images"]
        assert image["state"] == "READY" and image["digest"].startswith("sha256:"), dump(status)


def test_a_404_ingress_fails_the_workflow_and_leaves_no_volume_behind(
        cluster: LocalCluster, busybox_image: PushedImage, missing_files: str) -> None:
    ephemeral = cluster.volume_root / "ephemeral"
    before = set(ephemeral.iterdir()) if ephemeral.exists() else set()
    cluster.start("gone", f"""\
version: v1
volumes:
  data:
    reference: volume://user/ephemeral
    ingress:
      - source: {{uri: {missing_files}/no-such-file.tar}}
        destination: {{uri: file://input.tar}}
jobs:
  use:
    image: {{uri: {busybox_image.reference}}}
    command: [ls, /data]
    mounts: {{data: {{location: /data}}}}
""")
    status = cluster.wait("gone")
    assert status["state"] == "FAILED" and "404" in status["error"], dump(status)
    [volume] = status["volumes"]  # gone, and said so; why it failed is kept
    assert volume["state"] == "DELETED" and "404" in volume["error"], dump(status)
    left = set(ephemeral.iterdir()) - before if ephemeral.exists() else set()
    assert not left, f"left behind: {sorted(map(str, left))}"


def test_fuzz_server_and_fuzz_token_file_reach_the_server_as_the_readme_says(
        cluster: LocalCluster, tmp_path: Path) -> None:
    endpoint = json.loads((cluster.data_dir / "server.json").read_text())["endpoint"]
    env = {"FUZZ_SERVER": endpoint, "FUZZ_TOKEN_FILE": str(cluster.data_dir / "admin.token"),
           "FUZZ_CONFIG": str(tmp_path / "config.yaml")}
    # next to the cluster spec: verified against the cluster's CA in its data dir
    beside = run_fuzz(cluster.directory, "workflow", "list", "--json", env=env)
    assert beside.code == 0, beside.err
    assert "pfdone" in beside.out
    # anywhere else: with FUZZ_CA_FILE
    elsewhere = run_fuzz(tmp_path, "workflow", "list", "--json",
                         env={**env, "FUZZ_CA_FILE": str(cluster.data_dir / "ca.pem")})
    assert elsewhere.code == 0, elsewhere.err
    assert "pfdone" in elsewhere.out
    # without any CA to verify it by: one line that says how to give one
    blind = run_fuzz(tmp_path, "workflow", "list", env=env)
    assert blind.code == 1
    assert blind.err.strip() == (
        f"Error: --server {endpoint}: no cluster CA to verify it against: pass --ca-file "
        f"(or set FUZZ_CA_FILE), or log in to it once with `fuzz login {endpoint} --ca-file "
        "CA`"), blind.err
    # once logged in to that server (as anyone), its context's CA verifies it
    added = cluster.ok("iam", "user", "add", f"carol{os.getpid()}", "--role", "user", "--json")
    logged_in = run_fuzz(tmp_path, "login", endpoint, "--code", added.json()["code"],
                         "--ca-file", str(cluster.data_dir / "ca.pem"), env=env)
    assert logged_in.code == 0, logged_in.err
    known = run_fuzz(tmp_path, "workflow", "list", "--json", env=env)
    assert known.code == 0, known.err
    assert "pfdone" in known.out  # the admin's token, FUZZ_TOKEN_FILE's, was the one used


def test_server_log_tells_what_a_restarted_orchestrator_re_adopts_and_requeues(
        cluster: LocalCluster, busybox_image: PushedImage) -> None:
    whole_node = "resource: {cpu: {cores: 1}, exclusive: true}"
    cluster.start("readopt", f"""\
version: v1
jobs:
  first:
    image: {{uri: {busybox_image.reference}}}
    command: [sleep, "600"]
    {whole_node}
  second:
    image: {{uri: {busybox_image.reference}}}
    command: [sleep, "600"]
    {whole_node}
""")

    def one_running_one_queued() -> bool:
        states = sorted(t["state"] for t in cluster.status("readopt")["tasks"])
        return states == ["QUEUED", "RUNNING"]

    wait_until("one task running, the other queued behind it", one_running_one_queued, 120)
    tasks = tasks_by_key(cluster.status("readopt"))
    running = next(t for t in tasks.values() if t["state"] == "RUNNING")
    queued = next(t for t in tasks.values() if t["state"] == "QUEUED")
    log = cluster.data_dir / "server.log"
    size = log.stat().st_size
    os.kill(cluster.server_pid(), signal.SIGKILL)
    time.sleep(0.5)  # let the kernel release its lock and port
    cluster.ok("server", "--detach")
    try:
        def after_restart() -> str:
            with open(log, errors="replace") as handle:
                handle.seek(size)
                return handle.read()

        wait_until("the restart logged the re-adoption",
                   lambda: "re-adopted" in after_restart(), 60)
        text = after_restart()
        workflow = "admin.readopt.1"
        assert f"resuming 1 unfinished workflow(s): {workflow}" in text, text
        assert (f"workflow {workflow}: re-adopting 1 task(s) in flight, requeuing 1 queued "
                "task(s), restarting 0 interrupted transfer(s)") in text, text
        container = re.escape(f"{workflow}.{running['key']}.{running['attempt']}.0")
        assert re.search(f"workflow {re.escape(workflow)}: task {running['key']} re-adopted: "
                         f"its container \\S+-{container} still runs on "
                         f"{re.escape(running['nodes'][0])}", text), text
        assert f"workflow {workflow}: task {queued['key']} requeued" in text, text
        assert "Traceback" not in text, text
    finally:
        cluster.ok("workflow", "cancel", "readopt")
        cluster.wait("readopt")
