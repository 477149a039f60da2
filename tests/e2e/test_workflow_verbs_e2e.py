"""End to end: Fuzzball's workflow verbs on a local cluster (real server, agent and runc).

``fuzz workflow start FILE [--name NAME] [--watch]``, workflows named by name or by run
id in every command, ``stop`` with ``cancel`` kept as its alias, and the one-line answers
for a workflow or run that does not exist.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fuzz.testing.oci import PushedImage, free_port
from tests.support.cliutil import fuzz_command
from tests.support.orchestratorutil import wait_until
from tests.support.workflowutil import LocalCluster, dump, local_cluster, tasks_by_key


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory,
            busybox_image: PushedImage) -> Iterator[LocalCluster]:
    """One local node and its orchestrator, for every test of this module."""
    directory = tmp_path_factory.mktemp("verbs")
    os.chmod(directory, 0o755)  # jobs run as nobody
    with local_cluster(directory, [busybox_image.registry.host], free_port(),
                       nodes=1) as running:
        yield running


def _fuzzfile(image: PushedImage, script: str) -> str:
    return f"""\
version: v1
jobs:
  main:
    image: {{uri: {image.reference}}}
    script: {json.dumps(script)}
"""


def _write(cluster: LocalCluster, file_name: str, text: str) -> Path:
    path = cluster.directory / file_name
    path.write_text(text)
    return path


LONG = "trap 'exit 143' TERM; sleep 300 & wait"


def test_start_by_file_names_the_workflow_after_the_file(cluster: LocalCluster,
                                                        busybox_image: PushedImage) -> None:
    path = _write(cluster, "hello.yaml", _fuzzfile(busybox_image, "echo hello"))
    started = cluster.ok("workflow", "start", str(path), "--json").json()
    assert started["name"] == "hello" and started["run"] == 1, dump(started)
    run_id = started["id"]
    assert run_id.endswith(".hello.1"), run_id
    assert cluster.wait("hello")["state"] == "SUCCEEDED"
    by_id = cluster.ok("workflow", "status", run_id, "--json").json()
    assert (by_id["name"], by_id["id"], by_id["state"]) == ("hello", run_id, "SUCCEEDED")
    assert cluster.ok("workflow", "log", run_id, "main").out == "hello\n"
    listing = cluster.ok("workflow", "list", "--json").json()
    assert {w["name"]: w["id"] for w in listing}["hello"] == run_id

    # a stem a name may not hold: its dots become dashes
    dotted = _write(cluster, "sim.v2.yaml", _fuzzfile(busybox_image, "true"))
    text = cluster.ok("workflow", "start", str(dotted)).out
    assert "workflow sim-v2 run 1 started" in text, text
    assert cluster.wait("sim-v2")["state"] == "SUCCEEDED"


def test_start_with_name_and_the_older_name_file_form(cluster: LocalCluster,
                                                      busybox_image: PushedImage) -> None:
    path = _write(cluster, "named.yaml", _fuzzfile(busybox_image, "true"))
    assert cluster.ok("workflow", "start", "--name", "chosen", str(path),
                      "--json").json()["name"] == "chosen"
    assert cluster.wait("chosen")["state"] == "SUCCEEDED"
    assert cluster.fuzz("workflow", "status", "named").code == 1  # not named after the file
    cluster.ok("workflow", "start", "older", str(path))
    assert cluster.wait("older")["state"] == "SUCCEEDED"
    both = cluster.fuzz("workflow", "start", "-n", "x", "y", str(path))
    assert both.code == 1 and both.err.strip().splitlines() == [
        "Error: --name x and the name 'y' both name the workflow: give one"], both.err
    bad = cluster.fuzz("workflow", "start", "--name", "a.b", str(path))
    assert bad.code == 1 and len(bad.err.strip().splitlines()) == 1, bad.err
    assert "--name a.b: invalid workflow name 'a.b'" in bad.err, bad.err


def test_watch_exits_by_the_workflows_end(cluster: LocalCluster,
                                          busybox_image: PushedImage) -> None:
    good = _write(cluster, "watched-ok.yaml", _fuzzfile(busybox_image, "sleep 1"))
    result = cluster.fuzz("workflow", "start", str(good), "--watch")
    assert result.code == 0, result.err + result.out
    assert "SUCCEEDED" in result.out, result.out

    bad = _write(cluster, "watched-bad.yaml", _fuzzfile(busybox_image, "exit 3"))
    result = cluster.fuzz("workflow", "start", str(bad), "--watch")
    assert result.code == 1, result.err + result.out
    assert "workflow watched-bad failed" in result.err, result.err

    cancelled = _write(cluster, "watched-stop.yaml", _fuzzfile(busybox_image, LONG))
    watcher = subprocess.Popen(fuzz_command("workflow", "start", str(cancelled), "--watch"),
                               cwd=cluster.directory, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        wait_until("the watched workflow to start",
                   lambda: cluster.fuzz("workflow", "status", "watched-stop").code == 0, 60)
        cluster.wait_for("watched-stop", "main", "RUNNING")
        cluster.ok("workflow", "stop", "watched-stop")
        _, err = watcher.communicate(timeout=60)
    finally:
        watcher.kill()
        watcher.wait()
    assert watcher.returncode == 1 and "workflow watched-stop canceled" in err, err


def test_stop_by_run_id_and_cancel_by_name(cluster: LocalCluster,
                                           busybox_image: PushedImage) -> None:
    path = _write(cluster, "stopped.yaml", _fuzzfile(busybox_image, LONG))
    run_id = cluster.ok("workflow", "start", str(path), "--json").json()["id"]
    cluster.wait_for("stopped", "main", "RUNNING")
    text = cluster.ok("workflow", "stop", run_id).out
    assert f"workflow stopped run 1 ({run_id}): stopping" in text, text
    status = cluster.wait("stopped", timeout=60)
    assert status["state"] == "CANCELED", dump(status)

    # a second run of the name: its id is new, the first run's id still names the first
    second = cluster.ok("workflow", "start", str(path), "--json").json()
    assert second["run"] == 2 and second["id"] != run_id
    cluster.wait_for("stopped", "main", "RUNNING")
    old = cluster.ok("workflow", "stop", run_id).out
    assert "has ended already: CANCELED" in old, old
    assert tasks_by_key(cluster.status(second["id"]))["main"]["state"] == "RUNNING"
    assert cluster.ok("workflow", "exec", second["id"], "main", "--", "echo", "in").out == "in\n"
    old_exec = cluster.fuzz("workflow", "exec", run_id, "main", "--", "true")
    assert old_exec.code == 1 and "is not running (CANCELED)" in old_exec.err, old_exec.err
    assert cluster.ok("workflow", "status", run_id, "--json").json()["run"] == 1
    cluster.ok("workflow", "cancel", "stopped")  # fuzz's verb before `stop`, kept as its alias
    assert cluster.wait("stopped", timeout=60)["state"] == "CANCELED"


def test_unknown_workflows_and_runs_are_one_line(cluster: LocalCluster) -> None:
    for args, line in (
            (("status", "nosuch"), "Error: no workflow 'nosuch'"),
            (("stop", "nosuch"), "Error: no workflow 'nosuch'"),
            (("status", "admin.nosuch.7"), "Error: no workflow run 'admin.nosuch.7'"),
            (("log", "admin.nosuch.7", "main"), "Error: no workflow run 'admin.nosuch.7'"),
            (("status", "not a name"),
             "Error: 'not a name' is neither a workflow name ([OWNER/]NAME: 1-64 letters, "
             "digits, '_' or '-') nor a run id (OWNER.NAME.RUN, as `fuzz workflow list` "
             "shows)"),
            (("exec", "x.y", "main", "true"),
             "Error: 'x.y' is neither a workflow name ([OWNER/]NAME: 1-64 letters, "
             "digits, '_' or '-') nor a run id (OWNER.NAME.RUN, as `fuzz workflow list` "
             "shows)")):
        result = cluster.fuzz("workflow", *args)
        assert result.code == 1, (args, result.out, result.err)
        assert result.err.strip().splitlines() == [line], (args, result.err)
