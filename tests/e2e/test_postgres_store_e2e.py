"""End to end: a site's orchestrator moved from SQLite to PostgreSQL, and kept there.

One local cluster (real server, real agents, real runc containers) first runs a
workflow on the embedded SQLite store and records a sealed secret and a user; the
server is stopped, ``fuzz server migrate-store`` copies everything into a fresh
PostgreSQL database, the spec's ``orchestrator.store`` names it, and the server started
again shows the same workflows, secrets and users. A second workflow then runs on
PostgreSQL; a third is running when the server is killed with kill -9 and started
again: every status is intact, and the running job is re-adopted, never run twice.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import yaml

from fuzz.orchestrate.records import SecretRecord
from fuzz.orchestrate.store import PostgresTarget, Store
from fuzz.testing.oci import PushedImage, free_port
from tests.support.servers import Postgres
from tests.support.stores import drop_database, fresh_database, postgres_url
from tests.support.workflowutil import LocalCluster, dump, local_cluster

FUZZFILE = """\
version: v1
jobs:
  first:
    image: {{uri: {image}}}
    command: [/bin/sh, -c, "echo {word}"]
  second:
    image: {{uri: {image}}}
    command: [/bin/true]
    requires: [first]
"""
# A job that waits for the test's go, so that the server is killed while it runs.
WAITING = """\
version: v1
volumes:
  marks: {{reference: volume://user/persistent/pg-restart}}
jobs:
  long:
    image: {{uri: {image}}}
    script: |
      echo started >> /marks/long
      until [ -e /marks/go ]; do sleep 0.2; done
      echo done >> /marks/long
    mounts: {{marks: {{location: /marks}}}}
  last:
    image: {{uri: {image}}}
    script: echo ran >> /marks/last
    mounts: {{marks: {{location: /marks}}}}
    requires: [long]
"""


def _seen(cluster: LocalCluster) -> dict[str, Any]:
    """What the running server shows of workflows, secrets and users."""
    return {
        "workflows": sorted((w["name"], w["run"], w["state"])
                            for w in cluster.ok("workflow", "list", "--json").json()),
        "secrets": sorted(s["name"] for s in cluster.ok("secret", "list", "--json").json()),
        "users": sorted(u["name"] for u in cluster.ok("iam", "user", "list", "--json").json()),
    }


def _use_store(cluster: LocalCluster, url: str) -> None:
    spec_path = cluster.directory / "fuzz.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    spec["orchestrator"]["store"] = url
    spec_path.write_text(yaml.safe_dump(spec))


def _kill_and_restart(cluster: LocalCluster) -> None:
    """kill -9 the server (no clean shutdown), then start it again."""
    pid = cluster.server_pid()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists():
        assert time.monotonic() < deadline, f"server {pid} still there"
        time.sleep(0.05)
    cluster.ok("server", "--detach")


def test_a_site_moves_to_postgres_and_runs_there(
        tmp_path: Path, busybox_image: PushedImage, postgres: Postgres) -> None:
    url = postgres_url(postgres, fresh_database(postgres))
    image = busybox_image.reference
    try:
        with local_cluster(tmp_path, [busybox_image.registry.host], free_port(),
                           nodes=1) as cluster:
            cluster.start("before", FUZZFILE.format(image=image, word="sqlite"))
            assert cluster.wait("before")["state"] == "SUCCEEDED"
            made = cluster.fuzz("secret", "create", "token", "--from-file", "-", stdin="s3cret")
            assert made.code == 0, made.err
            cluster.ok("iam", "user", "add", "alice", "--role", "user", "--json")
            before = _seen(cluster)
            status_before = cluster.status("before")

            cluster.ok("server", "--stop")
            moved = cluster.ok("server", "migrate-store", "--to", url, "--json").json()
            assert moved["copied"] is True, moved
            assert (moved["rows"]["workflows"], moved["rows"]["secrets"]) == (1, 1), moved
            assert moved["rows"]["tasks"] == 2 and moved["rows"]["users"] >= 2, moved
            _use_store(cluster, url)
            (cluster.data_dir / "server.db").rename(cluster.data_dir / "server.db.moved")
            cluster.ok("server", "--detach")
            cluster.wait_for_nodes()
            assert _seen(cluster) == before
            assert cluster.status("before") == status_before
            [sealed] = Store(PostgresTarget(url)).load(SecretRecord)
            [original] = Store(cluster.data_dir / "server.db.moved").load(SecretRecord)
            assert sealed == original and b"s3cret" not in sealed.sealed  # still sealed

            cluster.start("after", FUZZFILE.format(image=image, word="postgres"))
            after = cluster.wait("after")
            assert after["state"] == "SUCCEEDED", dump(after)
            cluster.start("waiting", WAITING.format(image=image))
            cluster.wait_for("waiting", "long", "RUNNING")
            _kill_and_restart(cluster)
            assert cluster.status("after") == after
            assert cluster.status("before") == status_before
            marks = cluster.volume_root / "persistent" / "admin" / "pg-restart"
            (marks / "go").touch()  # long ends only after the restart
            waited = cluster.wait("waiting")
            assert waited["state"] == "SUCCEEDED", dump(waited)
            assert [task["attempt"] for task in waited["tasks"]] == [1, 1], dump(waited)
            assert (marks / "long").read_text() == "started\ndone\n"  # re-adopted
            assert (marks / "last").read_text() == "ran\n"
            assert not (cluster.data_dir / "server.db").exists()  # all of it on PostgreSQL
    finally:
        drop_database(postgres, url.rsplit("/", 1)[1])
