"""End to end: jobs see filesystems mounted on the node after its agent (and container
monitor) started, and nothing the monitor mounts for its containers shows on the host.

A local node runs a first job (which starts its container monitor); then the test
mounts a tmpfs on the orchestrator's volume root, on the host, as an admin would mount
a parallel filesystem or NFS late; a workflow whose volume lives on that tmpfs must
read and write it. The host's mount namespace must show no container root, job
network namespace or volume bind made for those jobs.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fuzz.testing.oci import PushedImage, free_port
from tests.support.workflowutil import LocalCluster, dump, local_cluster


@pytest.fixture()
def cluster(tmp_path: Path, busybox_image: PushedImage) -> Iterator[LocalCluster]:
    """One local node and its orchestrator, volumes under ``tmp_path/late``."""
    os.chmod(tmp_path, 0o755)  # jobs run as nobody; volumes live under it
    (tmp_path / "late").mkdir(mode=0o755)
    with local_cluster(tmp_path, [busybox_image.registry.host], free_port(), nodes=1,
                       orchestrator={"volume_root": "late",
                                     "disk": {"min_free": "1MiB"}}) as running:
        yield running


@contextlib.contextmanager
def tmpfs_on(path: Path) -> Iterator[None]:
    """A tmpfs mounted on ``path`` in the host's mount namespace, unmounted after."""
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755,size=16m", "late-fs", str(path)],
                   check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=True)


def host_mount_points() -> list[str]:
    """Mount points of the host's (this process's) mount namespace."""
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [line.split()[4] for line in lines]


WRITER = """\
version: v1
volumes:
  results: {{reference: volume://user/persistent/late-results}}
jobs:
  write:
    image: {{uri: {image}}}
    script: echo written-late > /results/out && cat /results/seed
    mounts: {{results: {{location: /results}}}}
"""


def test_a_job_uses_a_filesystem_mounted_after_the_node_started(
        cluster: LocalCluster, busybox_image: PushedImage, tmp_path: Path) -> None:
    cluster.start("before", f"version: v1\njobs:\n  hello:\n    image: {{uri: "
                            f"{busybox_image.reference}}}\n    command: [\"true\"]\n")
    status = cluster.wait("before")
    assert status["state"] == "SUCCEEDED", dump(status)  # the monitor runs now
    late = tmp_path / "late"
    with tmpfs_on(late):
        volume = late / "persistent" / "admin" / "late-results"
        volume.mkdir(parents=True)
        (volume / "seed").write_text("seeded on the host\n")
        os.chown(volume, 200000, 200000)  # the admin's job ids (FIRST_OWNER_ID)
        cluster.start("after", WRITER.format(image=busybox_image.reference))
        status = cluster.wait("after")
        assert status["state"] == "SUCCEEDED", dump(status)
        assert (volume / "out").read_text() == "written-late\n"
        assert "seeded on the host" in cluster.ok("workflow", "log", "after", "write").out
        leaked = [point for point in host_mount_points()
                  if point.startswith(str(tmp_path)) and point != str(late)]
        assert leaked == [], f"the monitor's mounts reached the host: {leaked}"
        lock = next((tmp_path / ".fuzz" / "nodes").rglob("monitor.lock"))
        monitor_mounts = Path(f"/proc/{int(lock.read_text())}/mountinfo").read_text()
        assert f"{lock.parent}/monitor.run " in monitor_mounts  # they are in its own
