"""The cluster's limits end to end: a local cluster whose spec sets ``orchestrator.limits``
(real server, real agents, real runc containers), driven through the ``fuzz`` CLI."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from fuzz.orchestrate.records import TaskRecord, WorkflowRecord
from fuzz.orchestrate.store import Store
from fuzz.substrate.monitor.logpump import truncation_marker
from fuzz.testing.oci import PushedImage, free_port
from tests.support.workflowutil import LocalCluster, dump, local_cluster, tasks_by_key

MIB = 1024 * 1024
LIMITS = {"tasks_per_workflow": 50, "job_log_bytes": "1MiB", "volume_bytes": "2MiB"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory,
            busybox_image: PushedImage) -> Iterator[LocalCluster]:
    """One local node and its orchestrator, with small limits."""
    directory = tmp_path_factory.mktemp("limits")
    os.chmod(directory, 0o755)  # jobs run as nobody; volumes live under it
    with local_cluster(directory, [busybox_image.registry.host], free_port(), nodes=1,
                       orchestrator={"limits": LIMITS}) as running:
        yield running


def test_a_task_array_bomb_is_refused_by_workflow_start(
        cluster: LocalCluster, busybox_image: PushedImage) -> None:
    path = cluster.directory / "bomb.yaml"
    path.write_text(f"""\
version: v1
jobs:
  bomb:
    image: {{uri: {busybox_image.reference}}}
    command: [/bin/true]
    task-array: {{start: 1, end: 999999999}}
""")
    began = time.monotonic()
    result = cluster.fuzz("workflow", "start", "bomb", str(path))
    assert time.monotonic() - began < 20
    assert result.code == 1
    assert result.err.strip().endswith(
        "bomb.yaml:6:33: jobs.bomb.task-array.end: this workflow would make 999,999,999 "
        "tasks (job 'bomb' makes 999,999,999), over the cluster's limit of 50 tasks per "
        "workflow (orchestrator.limits.tasks_per_workflow)"), result.err
    store = Store(cluster.data_dir / "server.db")
    try:
        assert store.load(WorkflowRecord, name="bomb") == []
        assert store.load(TaskRecord, job="bomb") == []
    finally:
        store.close()


def test_a_loud_job_keeps_running_and_its_log_stays_bounded(
        cluster: LocalCluster, busybox_image: PushedImage) -> None:
    cluster.start("loud", f"""\
version: v1
jobs:
  loud:
    image: {{uri: {busybox_image.reference}}}
    script: |
      dd if=/dev/zero bs=65536 count=64 2>/dev/null
      echo finished >&2
""")
    status = cluster.wait("loud")
    assert status["state"] == "SUCCEEDED", dump(status)
    marker = truncation_marker(MIB)
    # the run's id is OWNER.NAME.RUN: the admin's run 1 of "loud"
    kept = cluster.data_dir / "logs" / f"{status['owner']}.loud.{status['run']}" / "loud.stdout"
    assert kept.stat().st_size == MIB + len(marker)
    assert kept.read_bytes().endswith(marker)
    shown = cluster.ok("workflow", "log", "loud", "loud")
    assert len(shown.out.encode()) == MIB + len(marker)
    assert cluster.ok("workflow", "log", "loud", "loud", "--stderr").out == "finished\n"


def test_a_job_filling_its_volume_past_the_limit_fails_the_workflow(
        cluster: LocalCluster, busybox_image: PushedImage) -> None:
    cluster.start("filler", f"""\
version: v1
volumes:
  scratch: {{reference: volume://user/ephemeral}}
jobs:
  fill:
    image: {{uri: {busybox_image.reference}}}
    script: dd if=/dev/zero of=/scratch/big bs=65536 count=48 2>/dev/null
    mounts: {{scratch: {{location: /scratch}}}}
  after:
    image: {{uri: {busybox_image.reference}}}
    command: [/bin/true]
    requires: [fill]
""")
    status = cluster.wait("filler")
    assert status["state"] == "FAILED", dump(status)
    assert status["error"] == (
        "volume scratch: holds 3.0 MiB (3145728 bytes), over the limit of 2.0 MiB "
        "(orchestrator.limits.volume_bytes)"), dump(status)
    tasks = tasks_by_key(status)
    assert tasks["fill"]["state"] == "SUCCEEDED" and tasks["after"]["state"] == "NOT_RUN"
    assert not list((cluster.volume_root / "ephemeral").glob("*.filler.*"))


def test_a_running_job_writing_past_its_volume_limit_is_stopped_with_the_reason(
        cluster: LocalCluster, busybox_image: PushedImage) -> None:
    cluster.start("runaway", f"""\
version: v1
volumes:
  scratch: {{reference: volume://user/ephemeral}}
  other: {{reference: volume://user/ephemeral}}
jobs:
  runaway:
    image: {{uri: {busybox_image.reference}}}
    script: |
      while true; do dd if=/dev/zero bs=65536 count=8 2>/dev/null >> /scratch/big; sleep 0.2; done
    mounts: {{scratch: {{location: /scratch}}}}
  neighbour:
    image: {{uri: {busybox_image.reference}}}
    script: echo kept > /other/note
    mounts: {{other: {{location: /other}}}}
""")
    status = cluster.wait("runaway", timeout=90)  # before: it wrote on until stopped by hand
    tasks = tasks_by_key(status)
    assert status["state"] == "FAILED", dump(status)
    assert tasks["neighbour"]["state"] == "SUCCEEDED", dump(status)
    error = tasks["runaway"]["error"]
    assert tasks["runaway"]["state"] == "FAILED", dump(status)
    assert error.startswith("stopped: its volume scratch holds "), error
    assert error.endswith(", over the limit of 2.0 MiB (orchestrator.limits.volume_bytes)"), error
    assert status["error"].startswith("volume scratch: holds "), dump(status)
