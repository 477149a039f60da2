"""A full disk fails only the job that filled it: real server, real agents, real runc jobs.

Each cluster's disk is a small tmpfs the test mounts before the cluster starts: the
volume root alone (the layout fuzz now makes by default, volumes apart from the data
dir), or the whole data dir with the volumes in it (how a cluster of an older fuzz,
or one whose admin put both on one disk, is laid out).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from fuzz.orchestrate.records import TaskRecord
from fuzz.orchestrate.store import Store
from fuzz.testing.oci import PushedImage, free_port
from tests.support.disks import fill_up, tmpfs
from tests.support.orchestratorutil import wait_until
from tests.support.workflowutil import (
    LocalCluster,
    dump,
    local_cluster,
    safe_host_root,
    tasks_by_key,
)


@contextlib.contextmanager
def cluster_on(directory: Path, image: PushedImage,
               orchestrator: Mapping[str, Any]) -> Iterator[LocalCluster]:
    """One local node and its orchestrator in ``directory``."""
    with local_cluster(directory, [image.registry.host], free_port(), nodes=1,
                       orchestrator=orchestrator) as running:
        yield running


def filler(image: PushedImage, loud: bool = False) -> str:
    """A workflow whose job ``fill`` writes 64 MiB into a persistent volume (past the
    disk), beside a job ``calm`` that touches no volume; ``loud``: ``fill`` first
    prints 6 MB, which the orchestrator must copy to its log dir: more than the
    database's reserve, so the copy fails even once the reserve is given back."""
    shout = "head -c 6000000 /dev/zero | tr '\\0' x\n      " if loud else ""
    return f"""\
version: v1
volumes:
  big: {{reference: volume://user/persistent/big}}
jobs:
  fill:
    image: {{uri: {image.reference}}}
    script: |
      {shout}dd if=/dev/zero of=/big/fill bs=65536 count=1024
    mounts: {{big: {{location: /big}}}}
  calm:
    image: {{uri: {image.reference}}}
    command: [/bin/echo, calm]
"""


def whole_node(cluster: LocalCluster, image: PushedImage) -> str:
    """A workflow of one job asking for every core of the node: it starts only when no
    lease is left behind."""
    cores = cluster.ok("node", "list", "--json").json()[0]["cores"]
    return f"""\
version: v1
jobs:
  whole:
    image: {{uri: {image.reference}}}
    command: [/bin/echo, whole]
    resource: {{cpu: {{cores: {cores}}}, memory: {{size: 32MiB}}}}
"""


def assert_the_books_are_kept(cluster: LocalCluster, image: PushedImage, tag: str) -> None:
    """Starts, secrets and users keep working, and no lease was left behind."""
    secret = cluster.directory / "token.secret"
    secret.write_text("s3cr3t")
    cluster.ok("secret", "create", f"after-{tag}", "--from-file", str(secret))
    cluster.ok("iam", "user", "add", f"newcomer-{tag}", "--role", "user", "--json")
    cluster.start(f"whole-{tag}", whole_node(cluster, image))
    status = cluster.wait(f"whole-{tag}", timeout=90)
    assert status["state"] == "SUCCEEDED", dump(status)


def assert_no_task_left_running_after_a_restart(cluster: LocalCluster) -> None:
    """kill -9 the orchestrator, start it again: no task row stays RUNNING or STARTING."""
    pid = cluster.server_pid()
    os.kill(pid, signal.SIGKILL)
    wait_until("the orchestrator is gone", lambda: _dead(pid), timeout=20)
    cluster.ok("server", "--detach")
    cluster.wait_for_nodes()
    wait_until("no task RUNNING, STARTING or QUEUED after the restart",
               lambda: _unfinished_tasks(cluster) == [], timeout=60)


def _unfinished_tasks(cluster: LocalCluster) -> list[tuple[str, str, str]]:
    store = Store(cluster.data_dir / "server.db")
    try:
        return [(t.workflow_id, t.key, t.state) for t in store.load(TaskRecord)
                if t.state in ("RUNNING", "STARTING", "QUEUED")]
    finally:
        store.close()


def _dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z"


def assert_no_traceback(cluster: LocalCluster) -> None:
    """server.log holds no Python traceback."""
    log = (cluster.data_dir / "server.log").read_text(errors="replace")
    assert "Traceback" not in log, log[-4000:]


def test_a_job_filling_its_volume_root_fails_alone_and_the_floor_refuses_new_writes(
        tmp_path: Path, busybox_image: PushedImage) -> None:
    os.chmod(tmp_path, 0o755)  # jobs run as their owner's ids; volumes live under it
    with safe_host_root() as host_root, tmpfs(tmp_path / "vols", "8m"), cluster_on(
            tmp_path, busybox_image,
            {"volume_root": "vols", "disk": {"min_free": "1MiB", "reserve": "1MiB"},
             "host_paths": [str(host_root)]}) as cluster:
        cluster.start("filler", filler(busybox_image))
        status = cluster.wait("filler")
        tasks = tasks_by_key(status)
        assert status["state"] == "FAILED", dump(status)
        assert tasks["fill"]["state"] == "FAILED" and tasks["fill"]["error"] == "exit code 1"
        assert tasks["calm"]["state"] == "SUCCEEDED", dump(status)
        assert "No space left on device" in cluster.ok(
            "workflow", "log", "filler", "fill", "--stderr").out
        assert not list(cluster.data_dir.glob("volumes"))  # volumes are not in the data dir

        cluster.start("more", f"""\
version: v1
volumes:
  scratch: {{reference: volume://user/ephemeral}}
jobs:
  write:
    image: {{uri: {busybox_image.reference}}}
    command: [/bin/true]
    mounts: {{scratch: {{location: /scratch}}}}
""")
        status = cluster.wait("more")
        error = tasks_by_key(status)["write"]["error"]
        assert status["state"] == "FAILED", dump(status)
        assert error.startswith("a job that writes to a volume refused: the volume root's "
                                f"disk ({tmp_path / 'vols'}) has "), error
        assert error.endswith("free, under the floor of 1.0 MiB (orchestrator.disk.min_free); "
                              "free space there or raise the limit"), error

        (host_root / "admin").mkdir()
        (host_root / "admin" / "in.txt").write_text("data\n")
        cluster.start("fetch", f"""\
version: v1
volumes:
  inbox:
    reference: volume://user/ephemeral
    ingress:
      - {{source: {{uri: file://{host_root}/admin/in.txt}}, destination: {{uri: file://in.txt}}}}
jobs:
  read:
    image: {{uri: {busybox_image.reference}}}
    command: [/bin/cat, /inbox/in.txt]
    mounts: {{inbox: {{location: /inbox}}}}
""")
        status = cluster.wait("fetch")
        assert status["state"] == "FAILED", dump(status)
        assert "ingress refused: the volume root's disk" in status["error"], dump(status)
        assert "(orchestrator.disk.min_free)" in status["error"], dump(status)

        assert_the_books_are_kept(cluster, busybox_image, "vols")
        assert_no_traceback(cluster)
        assert_no_task_left_running_after_a_restart(cluster)


def test_a_job_filling_the_data_dirs_disk_leaves_the_books_whole(
        tmp_path: Path, busybox_image: PushedImage) -> None:
    os.chmod(tmp_path, 0o755)
    data_dir = tmp_path / ".fuzz" / "server"
    with tmpfs(data_dir, "24m", mode="0700"), cluster_on(
            tmp_path, busybox_image,
            {"volume_root": ".fuzz/server/volumes",
             "disk": {"min_free": "1MiB", "reserve": "4MiB"}}) as cluster:
        cluster.start("filler", filler(busybox_image, loud=True))
        status = cluster.wait("filler")
        tasks = tasks_by_key(status)
        assert status["state"] == "FAILED", dump(status)
        # the job's own failure, not the orchestrator's log copy
        assert tasks["fill"]["state"] == "FAILED" and tasks["fill"]["error"] == "exit code 1", \
            dump(status)
        assert tasks["calm"]["state"] == "SUCCEEDED", dump(status)
        log = (cluster.data_dir / "server.log").read_text(errors="replace")
        assert "the stdout of task fill of " in log and "No space left on device" in log, log
        assert "is full: gave the database its reserve of 4.0 MiB" in log, log

        assert_the_books_are_kept(cluster, busybox_image, "data")

        hog = fill_up(cluster.data_dir)  # the reserve is spent: nothing is left at all
        secret = cluster.directory / "late.secret"
        secret.write_text("s3cr3t")
        late = cluster.directory / "late.yaml"
        late.write_text(whole_node(cluster, busybox_image))
        for args in (("secret", "create", "late", "--from-file", str(secret)),
                     ("iam", "user", "add", "late", "--role", "user"),
                     ("workflow", "start", "late", str(late))):
            refused = cluster.fuzz(*args)
            assert refused.code == 1, args
            assert refused.err.strip().endswith(
                f"the orchestrator's disk is full: its database {cluster.data_dir / 'server.db'} "
                "cannot be written; free space on that disk"), (args, refused.err)
        hog.unlink()
        cluster.ok("secret", "create", "late", "--from-file", str(secret))
        cluster.ok("iam", "user", "add", "late", "--role", "user")
        cluster.ok("workflow", "start", "late", str(late))
        assert cluster.wait("late")["state"] == "SUCCEEDED"
        assert_no_traceback(cluster)
        assert_no_task_left_running_after_a_restart(cluster)



def test_a_data_dir_with_volumes_of_an_older_fuzz_keeps_using_them(
        tmp_path: Path, busybox_image: PushedImage) -> None:
    os.chmod(tmp_path, 0o755)
    old = tmp_path / ".fuzz" / "server" / "volumes" / "persistent" / "admin" / "kept"
    old.mkdir(parents=True)
    (old / "hello").write_text("from before the upgrade\n")
    with cluster_on(tmp_path, busybox_image, {}) as cluster:
        cluster.start("reader", f"""\
version: v1
volumes:
  kept: {{reference: volume://user/persistent/kept}}
jobs:
  read:
    image: {{uri: {busybox_image.reference}}}
    command: [/bin/cat, /kept/hello]
    mounts: {{kept: {{location: /kept}}}}
""")
        status = cluster.wait("reader")
        assert status["state"] == "SUCCEEDED", dump(status)
        assert cluster.ok("workflow", "log", "reader", "read").out == "from before the upgrade\n"
        assert not cluster.volume_root.exists()  # no second root was made beside it
        log = (cluster.data_dir / "server.log").read_text()
        assert f"volumes stay in {cluster.data_dir / 'volumes'}, inside the data dir" in log
