"""End to end: a v4 Fuzzfile (mounts keyed by path, volumes chosen by use and name) runs
in real runc containers on a local cluster, and its upgrade from v1 runs the same."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from fuzz.spec.fuzzfile_upgrade import upgrade_text
from fuzz.testing.oci import PushedImage, free_port
from tests.support.workflowutil import LocalCluster, dump, local_cluster, tasks_by_key


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory,
            busybox_image: PushedImage) -> Iterator[LocalCluster]:
    """Two local nodes and their orchestrator, for every test of this module."""
    directory = tmp_path_factory.mktemp("cluster")
    os.chmod(directory, 0o755)  # jobs run as nobody; volumes live under it
    with local_cluster(directory, [busybox_image.registry.host], free_port()) as running:
        yield running


def test_a_v4_workflow_shares_a_volume_between_two_jobs(
        cluster: LocalCluster, busybox_image: PushedImage) -> None:
    image = busybox_image.reference
    fuzzfile = f"""\
version: v4
volumes:
  scratch: {{use: ephemeral}}
  results: {{name: v4-results}}
defaults:
  job:
    mounts:
      /results: {{volume: results}}
jobs:
  write:
    image: {{uri: {image}}}
    script: echo "written by write" > /scratch/note
    mounts:
      /scratch: scratch
  read:
    image: {{uri: {image}}}
    script: cat /shared/note; cat /shared/note > /out/note
    mounts:
      /shared: {{volume: scratch}}
      /out: results
    depends-on: [{{name: write, status: FINISHED}}]
  keep:
    image: {{uri: {image}}}
    script: ls /results > /tmp/listing && mv /tmp/listing /results/listing
    depends-on: [{{name: read}}]
"""
    path = cluster.start("v4share", fuzzfile)
    assert cluster.ok("workflow", "validate", str(path)).out.strip().endswith(
        "valid: 3 jobs, 2 volumes")
    status = cluster.wait("v4share", timeout=240)
    assert status["state"] == "SUCCEEDED", dump(status)
    tasks = tasks_by_key(status)
    assert tasks["read"]["started"] >= tasks["write"]["finished"]
    assert cluster.ok("workflow", "log", "v4share", "read").out == "written by write\n"
    # results: {name: v4-results} is the user's persistent volume v4-results, kept
    results = cluster.volume_root / "persistent" / "admin" / "v4-results"
    assert (results / "note").read_text() == "written by write\n"
    assert (results / "listing").read_text() == "note\n"


def test_an_upgraded_v1_workflow_runs_as_the_v1_one_did(
        cluster: LocalCluster, busybox_image: PushedImage) -> None:
    v1 = f"""\
version: v1
volumes:
  data:
    name: data
    reference: volume://user/ephemeral
jobs:
  first:
    image: {{uri: {busybox_image.reference}}}
    script: echo one > /data/one
    mounts: {{data: {{location: /data}}}}
  second:
    image: {{uri: {busybox_image.reference}}}
    script: cat /in/one
    mounts:
      data:
        location: /in
    requires: [first]
"""
    upgraded = upgrade_text(v1, "up.yaml")
    assert "version: v4" in upgraded and "/in:\n        volume: data" in upgraded
    for name, text in (("up-v1", v1), ("up-v4", upgraded)):
        cluster.start(name, text)
    for name in ("up-v1", "up-v4"):
        status = cluster.wait(name, timeout=240)
        assert status["state"] == "SUCCEEDED", dump(status)
        assert cluster.ok("workflow", "log", name, "second").out == "one\n"


def test_a_v4_volume_holds_at_most_its_size(
        cluster: LocalCluster, busybox_image: PushedImage) -> None:
    cluster.start("sized", f"""\
version: v4
volumes:
  scratch: {{use: ephemeral, size: 1MiB}}
jobs:
  fill:
    image: {{uri: {busybox_image.reference}}}
    script: dd if=/dev/zero of=/scratch/big bs=65536 count=32 2>/dev/null
    mounts: {{/scratch: scratch}}
  after:
    image: {{uri: {busybox_image.reference}}}
    command: ["true"]
    mounts: {{/scratch: scratch}}
    depends-on: [{{name: fill}}]
""")
    status = cluster.wait("sized", timeout=240)
    assert status["state"] == "FAILED", dump(status)
    assert status["error"] == (
        "volume scratch: holds 2.0 MiB (2097152 bytes), over the limit of 1.0 MiB"
        " (volumes.scratch.size)"), dump(status)
    tasks = tasks_by_key(status)
    assert tasks["fill"]["state"] == "SUCCEEDED" and tasks["after"]["state"] == "NOT_RUN"
