"""The ingress cache (issue 22, point 4): data never moves twice.

Real parts only: moto's S3 server checking signatures and IAM policies, HTTP servers on
127.0.0.1 that count the bytes they serve, real files, a real process killed with
SIGKILL in the middle of a download.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fuzz.orchestrate.transfer.cache import IngressCache
from fuzz.orchestrate.transfer.confined import Identity
from fuzz.orchestrate.transfer.host_roots import HostAccess, HostRoots
from fuzz.orchestrate.transfer.ingress_egress import (
    S3Credentials,
    TransferError,
    ingress,
)
from fuzz.orchestrate.transfer.ingress_policy import IngressPolicy
from fuzz.testing.web import serve_handler
from tests.support.countingweb import Served, counting_handler
from tests.support.moto_s3 import MotoS3
from tests.support.orchestratorutil import wait_until
from tests.support.workflowutil import safe_host_root

LOCAL = IngressPolicy.from_spec(["127.0.0.1"], None)
OWNER = Identity(200777, 200777)
MiB = 1024 * 1024


@pytest.fixture
def web() -> Iterator[tuple[str, Served]]:
    served = Served()
    with serve_handler(counting_handler(served)) as port:
        yield f"http://127.0.0.1:{port}", served


@pytest.fixture
def cache(tmp_path: Path) -> IngressCache:
    return IngressCache(tmp_path / "data" / "cache", quota=1024**3)


def _volume(tmp_path: Path, name: str) -> Path:
    path = tmp_path / "volumes" / name
    path.mkdir(parents=True)
    os.chown(path, *OWNER)
    path.chmod(0o700)
    return path


def _credentials(moto: MotoS3, key_id: str | None = None, secret: str | None = None
                 ) -> S3Credentials:
    return S3Credentials(key_id or moto.access_key_id, secret or moto.secret_access_key,
                         region=moto.region, endpoint_url=moto.endpoint_url)


def _user_for_bucket(moto: MotoS3, bucket: str) -> S3Credentials:
    """A new IAM user who may use ``bucket`` only."""
    key_id, secret = moto.new_user({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "s3:*",
        "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]}]})
    return _credentials(moto, key_id, secret)


def test_an_unchanged_s3_object_is_fetched_once_and_linked_read_only(
        moto_s3: MotoS3, cache: IngressCache, tmp_path: Path) -> None:
    bucket = moto_s3.new_bucket()
    data = os.urandom(3 * MiB)
    moto_s3.client().put_object(Bucket=bucket, Key="in/data.bin", Body=data)
    uri = f"s3://{bucket}/in/data.bin"
    first_volume, second_volume = _volume(tmp_path, "one"), _volume(tmp_path, "two")

    first = ingress(uri, "file://data.bin", first_volume, credentials=_credentials(moto_s3),
                    http_policy=LOCAL, identity=OWNER, cache=cache)
    second = ingress(uri, "file://copy/data.bin", second_volume,
                     credentials=_credentials(moto_s3), http_policy=LOCAL, identity=OWNER,
                     cache=cache)

    assert (first.fetched, first.cached) == (len(data), False)
    assert (second.fetched, second.cached) == (0, True)
    assert second.sha256 == first.sha256 and second.size == len(data)
    placed = second_volume / "copy" / "data.bin"
    assert placed.read_bytes() == data
    [entry] = cache.entries()
    assert (entry.source, entry.size, entry.uses) == (uri, len(data), 2)
    # no copy: the volume's file is the cache's (a hard link), and no one may write it
    assert placed.stat().st_ino == (first_volume / "data.bin").stat().st_ino
    assert placed.stat().st_nlink == 3 and placed.stat().st_mode & 0o777 == 0o444
    assert placed.stat().st_uid == 0
    job = subprocess.run(["setpriv", f"--reuid={OWNER.uid}", f"--regid={OWNER.gid}",
                          "--clear-groups", "sh", "-c",
                          "echo x >> data.bin; echo changed > new && mv -f new data.bin "
                          "&& cat data.bin"],
                         capture_output=True, text=True, cwd=placed.parent)
    assert "Permission denied" in job.stderr and job.stdout == "changed\n", job
    assert (first_volume / "data.bin").read_bytes() == data  # the cache and the other volume
    assert cache.entries()[0].size == len(data)


def test_a_changed_object_is_fetched_again_and_only_that_one(
        moto_s3: MotoS3, cache: IngressCache, tmp_path: Path) -> None:
    bucket = moto_s3.new_bucket()
    client = moto_s3.client()
    client.put_object(Bucket=bucket, Key="a.txt", Body=b"a" * 1000)
    client.put_object(Bucket=bucket, Key="b.txt", Body=b"b" * 2000)
    creds = _credentials(moto_s3)

    def run(volume: Path) -> list[int]:
        return [ingress(f"s3://{bucket}/{name}", f"file://{name}", volume, credentials=creds,
                        http_policy=LOCAL, identity=OWNER, cache=cache).fetched
                for name in ("a.txt", "b.txt")]

    assert run(_volume(tmp_path, "1")) == [1000, 2000]
    assert run(_volume(tmp_path, "2")) == [0, 0]
    client.put_object(Bucket=bucket, Key="b.txt", Body=b"B" * 2500)
    third = _volume(tmp_path, "3")
    assert run(third) == [0, 2500]
    assert (third / "b.txt").read_bytes() == b"B" * 2500
    assert sorted(e.size for e in cache.entries()) == [1000, 2000, 2500]


def test_a_prefix_is_cached_as_one_tree(moto_s3: MotoS3, cache: IngressCache,
                                         tmp_path: Path) -> None:
    bucket = moto_s3.new_bucket()
    for name in ("set/x.txt", "set/deep/y.txt"):
        moto_s3.client().put_object(Bucket=bucket, Key=name, Body=name.encode())
    creds = _credentials(moto_s3)
    first = ingress(f"s3://{bucket}/set/", "file://set", _volume(tmp_path, "1"),
                    credentials=creds, http_policy=LOCAL, identity=OWNER, cache=cache)
    volume = _volume(tmp_path, "2")
    second = ingress(f"s3://{bucket}/set/", "file://set", volume, credentials=creds,
                     http_policy=LOCAL, identity=OWNER, cache=cache)
    assert (first.fetched, second.fetched, second.cached) == (len("set/x.txt") * 2 + 5, 0, True)
    assert (volume / "set" / "deep" / "y.txt").read_bytes() == b"set/deep/y.txt"
    assert second.sha256 == first.sha256 and second.files == 2


def test_a_user_without_access_to_the_bucket_never_gets_the_cached_copy(
        moto_s3: MotoS3, cache: IngressCache, tmp_path: Path) -> None:
    bucket, elsewhere = moto_s3.new_bucket(), moto_s3.new_bucket()
    moto_s3.client().put_object(Bucket=bucket, Key="secret.txt", Body=b"for owners only\n")
    uri = f"s3://{bucket}/secret.txt"
    ingress(uri, "file://secret.txt", _volume(tmp_path, "owner"),
            credentials=_credentials(moto_s3), http_policy=LOCAL, identity=OWNER, cache=cache)
    outsider = _user_for_bucket(moto_s3, elsewhere)
    volume = _volume(tmp_path, "outsider")
    with pytest.raises(TransferError, match=f"{uri}: .*(AccessDenied|403)"):
        ingress(uri, "file://secret.txt", volume, credentials=outsider, http_policy=LOCAL,
                identity=OWNER, cache=cache)
    assert list(volume.iterdir()) == []
    # their own bucket works, and a user with access to this one gets the cached copy
    moto_s3.client().put_object(Bucket=elsewhere, Key="mine.txt", Body=b"mine\n")
    ingress(f"s3://{elsewhere}/mine.txt", "file://mine.txt", volume, credentials=outsider,
            http_policy=LOCAL, identity=OWNER, cache=cache)
    insider = _user_for_bucket(moto_s3, bucket)
    shared = ingress(uri, "file://secret.txt", _volume(tmp_path, "insider"),
                     credentials=insider, http_policy=LOCAL, identity=OWNER, cache=cache)
    assert shared.cached


def test_http_sources_are_cached_by_etag_and_size(web: tuple[str, Served],
                                                   cache: IngressCache,
                                                   tmp_path: Path) -> None:
    url, served = web
    served.put("a.bin", os.urandom(MiB))
    for index in range(3):
        ingress(f"{url}/a.bin", "file://a.bin", _volume(tmp_path, str(index)),
                http_policy=LOCAL, identity=OWNER, cache=cache)
    assert (served.gets, served.body_bytes) == (1, MiB)  # counted by the server itself
    served.put("a.bin", os.urandom(MiB))  # a new version: a new ETag
    volume = _volume(tmp_path, "new")
    result = ingress(f"{url}/a.bin", "file://a.bin", volume, http_policy=LOCAL,
                     identity=OWNER, cache=cache)
    assert (served.gets, result.fetched) == (2, MiB)
    assert (volume / "a.bin").read_bytes() == served.files["a.bin"]


def test_two_ingresses_of_one_object_at_once_fetch_it_once(web: tuple[str, Served],
                                                           cache: IngressCache,
                                                           tmp_path: Path) -> None:
    url, served = web
    served.put("slow.bin", os.urandom(2 * MiB))
    served.pause = 0.05  # about half a second per copy: the two overlap
    results: dict[int, int] = {}

    def fetch(index: int) -> None:
        results[index] = ingress(f"{url}/slow.bin", "file://slow.bin",
                                 _volume(tmp_path, f"v{index}"), http_policy=LOCAL,
                                 identity=OWNER, cache=cache).fetched

    threads = [threading.Thread(target=fetch, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(results.values()) == [0, 2 * MiB]
    assert served.gets == 1


KILLED_FETCH = """
import sys
from pathlib import Path
from fuzz.orchestrate.transfer.cache import IngressCache
from fuzz.orchestrate.transfer.ingress_egress import ingress
from fuzz.orchestrate.transfer.ingress_policy import IngressPolicy
ingress(sys.argv[1], "file://big.bin", Path(sys.argv[3]), cache=IngressCache(Path(sys.argv[2]),
        quota=1 << 30), http_policy=IngressPolicy.from_spec(["127.0.0.1"], None))
"""


def test_a_download_killed_midway_never_enters_the_cache(web: tuple[str, Served],
                                                          tmp_path: Path) -> None:
    url, served = web
    served.put("big.bin", os.urandom(8 * MiB))
    served.pause = 0.2
    root = tmp_path / "cache"
    volume = tmp_path / "killed"
    volume.mkdir()
    process = subprocess.Popen([sys.executable, "-c", KILLED_FETCH, f"{url}/big.bin",
                                str(root), str(volume)])
    try:
        wait_until("a megabyte served", lambda: served.body_bytes >= MiB, timeout=60)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    served.pause = 0.0
    cache = IngressCache(root, quota=1 << 30)  # what a restarted server sees
    assert cache.entries() == []
    assert not any(p.is_file() for p in root.rglob("*") if "lock" not in p.name)
    fresh = _volume(tmp_path, "after")
    result = ingress(f"{url}/big.bin", "file://big.bin", fresh, http_policy=LOCAL,
                     identity=OWNER, cache=cache)
    assert result.fetched == 8 * MiB and (fresh / "big.bin").read_bytes() == \
        served.files["big.bin"]


def test_the_quota_evicts_the_least_recently_used(web: tuple[str, Served],
                                                  tmp_path: Path) -> None:
    url, served = web
    cache = IngressCache(tmp_path / "cache", quota=5 * MiB)
    for name in ("a", "b", "c"):
        served.put(name, os.urandom(2 * MiB))
    ingress(f"{url}/a", "file://a", _volume(tmp_path, "1"), http_policy=LOCAL,
            identity=OWNER, cache=cache)
    ingress(f"{url}/b", "file://b", _volume(tmp_path, "2"), http_policy=LOCAL,
            identity=OWNER, cache=cache)
    ingress(f"{url}/a", "file://a", _volume(tmp_path, "3"), http_policy=LOCAL,
            identity=OWNER, cache=cache)  # a is now used more recently than b
    ingress(f"{url}/c", "file://c", _volume(tmp_path, "4"), http_policy=LOCAL,
            identity=OWNER, cache=cache)
    assert sorted(e.source.rsplit("/", 1)[1] for e in cache.entries()) == ["a", "c"]
    assert sum(e.size for e in cache.entries()) <= 5 * MiB
    removed = cache.prune()
    assert sorted(e.source.rsplit("/", 1)[1] for e in removed) == ["a", "c"]
    assert cache.entries() == []


def test_host_files_are_keyed_by_their_sha256(tmp_path: Path) -> None:
    cache = IngressCache(tmp_path / "cache", quota=1 << 30)
    with safe_host_root() as root:
        owner_dir = root / "alice"
        owner_dir.mkdir()
        os.chown(owner_dir, *OWNER)
        (owner_dir / "in.txt").write_bytes(b"first\n")
        host = HostAccess(HostRoots.open([root]), "alice")
        uri = f"file://{owner_dir}/in.txt"
        first = ingress(uri, "file://in.txt", _volume(tmp_path, "1"), host=host,
                        identity=OWNER, cache=cache)
        second = ingress(uri, "file://in.txt", _volume(tmp_path, "2"), host=host,
                         identity=OWNER, cache=cache)
        (owner_dir / "in.txt").write_bytes(b"other\n")  # same size, same second
        volume = _volume(tmp_path, "3")
        third = ingress(uri, "file://in.txt", volume, host=host, identity=OWNER, cache=cache)
    assert (first.cached, second.cached, third.cached) == (False, True, False)
    assert (volume / "in.txt").read_bytes() == b"other\n"


def test_placement_by_copy_gives_the_owner_a_writable_file_of_their_own(
        web: tuple[str, Served], cache: IngressCache, tmp_path: Path) -> None:
    url, served = web
    served.put("c.txt", b"original\n")
    ingress(f"{url}/c.txt", "file://c.txt", _volume(tmp_path, "1"), http_policy=LOCAL,
            identity=OWNER, cache=cache)
    volume = _volume(tmp_path, "2")
    result = ingress(f"{url}/c.txt", "file://c.txt", volume, http_policy=LOCAL,
                     identity=OWNER, cache=cache, hard_links=False)
    placed = volume / "c.txt"
    assert (result.cached, served.gets) == (True, 1)
    assert (placed.stat().st_uid, placed.stat().st_nlink) == (OWNER.uid, 1)
    job = subprocess.run(["setpriv", f"--reuid={OWNER.uid}", f"--regid={OWNER.gid}",
                          "--clear-groups", "sh", "-c", "echo more >> c.txt && cat c.txt"],
                         capture_output=True, text=True, cwd=volume)
    assert job.stdout == "original\nmore\n", job
    again = _volume(tmp_path, "3")
    ingress(f"{url}/c.txt", "file://c.txt", again, http_policy=LOCAL, identity=OWNER,
            cache=cache)
    assert (again / "c.txt").read_bytes() == b"original\n"  # the cache did not change


def test_a_url_that_refuses_head_is_fetched_as_before_and_not_cached(
        web: tuple[str, Served], cache: IngressCache, tmp_path: Path) -> None:
    url, served = web
    served.put("signed.bin", b"signed for GET only\n")
    served.refuse_head = True  # as a URL presigned for GET answers a HEAD: 403
    for index in range(2):
        volume = _volume(tmp_path, str(index))
        result = ingress(f"{url}/signed.bin", "file://s.bin", volume, http_policy=LOCAL,
                         identity=OWNER, cache=cache)
        assert (volume / "s.bin").read_bytes() == b"signed for GET only\n"
        assert not result.cached
    assert served.gets == 2 and cache.entries() == []
