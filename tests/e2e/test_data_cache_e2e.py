"""End to end: data never moves twice (issue 22, point 4).

A real local cluster (server, agent, runc containers reading the data) with its
ingress cache, and moto's S3 server checking signatures and IAM policies: a rerun of
a workflow whose inputs did not change moves 0 bytes, a changed input moves only
itself, ``fuzz workflow status`` says ``cached``, ``fuzz cache list|prune`` show and
empty the cache, and a user whose own credentials cannot read the bucket never gets
the cached copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from fuzz.testing.oci import PushedImage, free_port
from fuzz.testing.web import serve_handler
from tests.support.cliutil import Result, run_fuzz
from tests.support.countingweb import Served, counting_handler
from tests.support.moto_s3 import MotoS3
from tests.support.orchestratorutil import wait_until
from tests.support.workflowutil import LocalCluster, dump, local_cluster, tasks_by_key

A, B = b"alpha\n" * 1000, b"bravo\n" * 2000
FUZZFILE = """\
version: v1
volumes:
  work:
    reference: volume://user/ephemeral
    ingress:
      - source: {{uri: s3://{bucket}/a.txt, secret: secret://user/s3creds}}
        destination: {{uri: file://in/a.txt}}
      - source: {{uri: s3://{bucket}/b.txt, secret: secret://user/s3creds}}
        destination: {{uri: file://in/b.txt}}
jobs:
  read:
    image: {{uri: {image}}}
    script: |
      wc -c < /work/in/a.txt
      wc -c < /work/in/b.txt
      head -c 6 /work/in/b.txt
    mounts: {{work: {{location: /work}}}}
"""


@pytest.fixture(scope="module")
def web() -> Iterator[tuple[str, Served]]:
    """An HTTP server that counts the bytes it serves (and can serve them slowly)."""
    served = Served()
    with serve_handler(counting_handler(served)) as port:
        yield f"http://127.0.0.1:{port}", served


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, busybox_image: PushedImage,
            moto_s3: MotoS3, web: tuple[str, Served]) -> Iterator[LocalCluster]:
    directory = tmp_path_factory.mktemp("cache-cluster")
    os.chmod(directory, 0o755)
    allow = [moto_s3.endpoint_url.removeprefix("http://"), web[0].removeprefix("http://")]
    with local_cluster(directory, [busybox_image.registry.host], free_port(), nodes=1,
                       orchestrator={"ingress": {"allow": allow},
                                     "cache": {"bytes": "1GiB"}}) as running:
        yield running


def _secret(moto: MotoS3, key_id: str, secret: str) -> str:
    return (f"AWS_ACCESS_KEY_ID={key_id}\nAWS_SECRET_ACCESS_KEY={secret}\n"
            f"AWS_ENDPOINT_URL={moto.endpoint_url}\nAWS_REGION={moto.region}\n")


def _ingress(status: dict[str, Any]) -> list[dict[str, Any]]:
    return [move for move in status["volumes"][0]["transfers"]
            if move["direction"] == "ingress"]


def _fetched(status: dict[str, Any]) -> list[tuple[int, bool]]:
    """Each ingress's bytes fetched from its source, and whether the cache served it."""
    return [(int(move["bytes_fetched"]), move["cached"]) for move in _ingress(status)]


def test_a_rerun_moves_nothing_and_a_changed_input_moves_only_itself(
        cluster: LocalCluster, busybox_image: PushedImage, moto_s3: MotoS3) -> None:
    bucket = moto_s3.new_bucket()
    client = moto_s3.client()
    client.put_object(Bucket=bucket, Key="a.txt", Body=A)
    client.put_object(Bucket=bucket, Key="b.txt", Body=B)
    cluster.ok("secret", "create", "s3creds", "--from-literal",
               _secret(moto_s3, moto_s3.access_key_id, moto_s3.secret_access_key))
    fuzzfile = FUZZFILE.format(bucket=bucket, image=busybox_image.reference)

    cluster.start("gravity", fuzzfile)
    first = cluster.wait("gravity")
    assert first["state"] == "SUCCEEDED", dump(first)
    assert _fetched(first) == [(len(A), False), (len(B), False)]

    cluster.start("gravity", fuzzfile)
    second = cluster.wait("gravity")
    assert second["state"] == "SUCCEEDED", dump(second)
    assert _fetched(second) == [(0, True), (0, True)]  # the rerun moved 0 bytes
    assert cluster.ok("workflow", "log", "gravity", "read").out == \
        f"{len(A)}\n{len(B)}\nbravo\n"  # what the container read
    rows = [line for line in cluster.ok("workflow", "status", "gravity").out.splitlines()
            if line.lstrip().startswith("ingress")]
    assert len(rows) == 2 and all("cached" in row for row in rows), rows

    changed = b"CHANGED\n" * 3000
    client.put_object(Bucket=bucket, Key="b.txt", Body=changed)
    cluster.start("gravity", fuzzfile)
    third = cluster.wait("gravity")
    assert third["state"] == "SUCCEEDED", dump(third)
    assert _fetched(third) == [(0, True), (len(changed), False)]
    assert cluster.ok("workflow", "log", "gravity", "read").out == \
        f"{len(A)}\n{len(changed)}\nCHANGE"

    listed = cluster.ok("cache", "list", "--json").json()
    mine = [entry for entry in listed["entries"] if f"s3://{bucket}/" in entry["source"]]
    assert sorted(int(entry["size"]) for entry in mine) == sorted(
        [len(A), len(B), len(changed)])  # the old b.txt too: its own version
    assert int(listed["bytes"]) >= len(A) + len(B) + len(changed)
    assert int(listed["quota"]) == 1024**3


class User:
    """A second user of the cluster, logged in with a config of their own."""

    def __init__(self, cluster: LocalCluster, name: str, home: Any) -> None:
        self.home = home
        added = cluster.ok("iam", "user", "add", name, "--role", "user", "--json")
        address = json.loads((cluster.data_dir / "server.json").read_text())["endpoint"]
        self.ok("login", address, "--code", added.json()["code"],
                "--ca-file", str(cluster.data_dir / "ca.pem"))

    def fuzz(self, *args: str) -> Result:
        """``fuzz ARGS`` as this user."""
        return run_fuzz(self.home, *args, env={"FUZZ_CONFIG": str(self.home / "config.yaml")})

    def ok(self, *args: str) -> Result:
        """``fuzz ARGS`` as this user; exit 0 required."""
        result = self.fuzz(*args)
        assert result.code == 0, f"fuzz {' '.join(args)}: {result.err}{result.out}"
        return result

    def wait(self, name: str) -> dict[str, Any]:
        """The workflow's final status."""
        ended: dict[str, Any] = {}

        def done() -> bool:
            ended.update(self.ok("workflow", "status", name, "--json").json())
            return ended["state"] in ("SUCCEEDED", "FAILED", "CANCELED")

        wait_until(f"workflow {name} to end", done, timeout=120)
        return ended


def test_a_user_whose_credentials_cannot_read_the_bucket_never_gets_the_cached_copy(
        cluster: LocalCluster, busybox_image: PushedImage, moto_s3: MotoS3,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    bucket, theirs = moto_s3.new_bucket(), moto_s3.new_bucket()
    moto_s3.client().put_object(Bucket=bucket, Key="a.txt", Body=A)
    moto_s3.client().put_object(Bucket=bucket, Key="b.txt", Body=B)
    cluster.ok("secret", "create", "s3creds", "--replace", "--from-literal",
               _secret(moto_s3, moto_s3.access_key_id, moto_s3.secret_access_key))
    fuzzfile = FUZZFILE.format(bucket=bucket, image=busybox_image.reference)
    cluster.start("warm", fuzzfile)
    assert _fetched(cluster.wait("warm")) == [(len(A), False), (len(B), False)]

    def only(name: str) -> dict[str, object]:
        return {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "s3:*",
            "Resource": [f"arn:aws:s3:::{name}", f"arn:aws:s3:::{name}/*"]}]}

    mallory = User(cluster, f"mallory{os.getpid()}", tmp_path_factory.mktemp("mallory"))
    path = mallory.home / "wf.yaml"
    path.write_text(fuzzfile)
    (mallory.home / "s3").write_text(_secret(moto_s3, *moto_s3.new_user(only(theirs))))
    mallory.ok("secret", "create", "s3creds", "--from-file", str(mallory.home / "s3"))
    mallory.ok("workflow", "start", "steal", str(path))
    refused = mallory.wait("steal")
    assert refused["state"] == "FAILED", dump(refused)
    assert "these credentials may not read it" in refused["error"], dump(refused)
    assert f"s3://{bucket}/" in refused["error"]
    assert tasks_by_key(refused)["read"]["state"] == "NOT_RUN"
    assert not any(move["cached"] for move in _ingress(refused))

    # with credentials of their own that may read the bucket, the cache serves them
    (mallory.home / "s3").write_text(_secret(moto_s3, *moto_s3.new_user(only(bucket))))
    mallory.ok("secret", "create", "s3creds", "--replace", "--from-file",
               str(mallory.home / "s3"))
    mallory.ok("workflow", "start", "steal", str(path))
    allowed = mallory.wait("steal")
    assert allowed["state"] == "SUCCEEDED", dump(allowed)
    assert _fetched(allowed) == [(0, True), (0, True)]
    listing = mallory.fuzz("cache", "list")  # every user's sources: not for users
    assert listing.code == 1 and "cache:read" in listing.err, listing


def test_prune_empties_the_cache_and_the_next_run_fetches_again(
        cluster: LocalCluster, busybox_image: PushedImage, moto_s3: MotoS3) -> None:
    bucket = moto_s3.new_bucket()
    moto_s3.client().put_object(Bucket=bucket, Key="a.txt", Body=A)
    moto_s3.client().put_object(Bucket=bucket, Key="b.txt", Body=B)
    cluster.ok("secret", "create", "s3creds", "--replace", "--from-literal",
               _secret(moto_s3, moto_s3.access_key_id, moto_s3.secret_access_key))
    fuzzfile = FUZZFILE.format(bucket=bucket, image=busybox_image.reference)
    cluster.start("pruned", fuzzfile)
    assert cluster.wait("pruned")["state"] == "SUCCEEDED"
    pruned = cluster.ok("cache", "prune", "--json").json()
    assert {f"s3://{bucket}/a.txt", f"s3://{bucket}/b.txt"} <= \
        {entry["source"] for entry in pruned["removed"]}
    assert cluster.ok("cache", "list", "--json").json()["entries"] == []
    assert "no cached" in cluster.ok("cache", "list").out
    cluster.start("pruned", fuzzfile)
    again = cluster.wait("pruned")
    assert _fetched(again) == [(len(A), False), (len(B), False)]


def test_an_orchestrator_killed_mid_download_leaves_no_partial_entry_and_resumes(
        cluster: LocalCluster, busybox_image: PushedImage, web: tuple[str, Served]) -> None:
    url, served = web
    data = os.urandom(8 * 1024 * 1024)
    served.put("big.bin", data)
    served.pause = 0.1  # 32 chunks: about 3 s a copy
    fuzzfile = f"""\
version: v1
volumes:
  work:
    reference: volume://user/ephemeral
    ingress:
      - source: {{uri: {url}/big.bin}}
        destination: {{uri: file://big.bin}}
jobs:
  sum:
    image: {{uri: {busybox_image.reference}}}
    script: sha256sum /work/big.bin
    mounts: {{work: {{location: /work}}}}
"""
    entries = cluster.data_dir / "cache" / "entries"
    before = set(entries.iterdir())
    cluster.start("crash", fuzzfile)
    wait_until("a megabyte served", lambda: served.body_bytes >= 1024 * 1024, timeout=120)
    os.kill(cluster.server_pid(), signal.SIGKILL)
    assert set(entries.iterdir()) == before  # the partial download is not an entry
    served.pause = 0.0
    cluster.ok("server", "--detach")
    status = cluster.wait("crash")
    assert status["state"] == "SUCCEEDED", dump(status)
    assert cluster.ok("workflow", "log", "crash", "sum").out.split()[0] == \
        hashlib.sha256(data).hexdigest()
    [added] = set(entries.iterdir()) - before
    assert (added / "data").read_bytes() == data
    assert list((cluster.data_dir / "cache" / "staging").iterdir()) == []
    gets = served.gets
    cluster.start("crash", fuzzfile)
    assert _fetched(cluster.wait("crash")) == [(0, True)] and served.gets == gets
