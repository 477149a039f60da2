"""End to end: a site's orchestrator moved from SQLite to PostgreSQL, and kept there.

One local cluster (real server, real agents, real runc containers) first runs a
workflow on the embedded SQLite store and records a sealed secret and a user; the
server is stopped, ``fuzz server migrate-store`` copies everything into a fresh
PostgreSQL database, the spec's ``orchestrator.store`` names it, and the server started
again shows the same workflows, secrets and users. A second workflow then runs on
PostgreSQL, the server is restarted, and both workflows' status is intact.
"""

from __future__ import annotations

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


def _restart(cluster: LocalCluster) -> None:
    cluster.ok("server", "--stop")
    cluster.ok("server", "--detach")
    cluster.wait_for_nodes()


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
            _restart(cluster)
            assert cluster.status("after") == after
            assert cluster.status("before") == status_before
            assert not (cluster.data_dir / "server.db").exists()  # all of it on PostgreSQL
    finally:
        drop_database(postgres, url.rsplit("/", 1)[1])
