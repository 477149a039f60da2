"""Tests for :mod:`fuzz.orchestrate.transfer.ingress_egress` against a real HTTP server,
real files and moto's S3 server."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise
from pathlib import Path

import pytest

from fuzz.errors import ConfigError
from fuzz.orchestrate.transfer.host_roots import HostAccess, HostRoots
from fuzz.orchestrate.transfer.http import http_source
from fuzz.orchestrate.transfer.ingress_egress import (
    S3Credentials,
    TransferError,
    egress,
    ingress,
    s3_credentials_from_secret,
    volume_relative,
)
from fuzz.orchestrate.transfer.ingress_policy import IngressPolicy
from fuzz.orchestrate.transfer.stream import PROGRESS_EVERY, Source
from fuzz.testing.oci import free_port
from tests.support.fakes.tls import self_signed
from tests.support.moto_s3 import MotoS3
from tests.support.workflowutil import safe_host_root

MiB = 1024 * 1024
BIG = bytes(range(256)) * (9 * MiB // 256 + 3)  # over boto3's 8 MiB multipart threshold
SMALL = b"hello, volume\n"
LOCAL = IngressPolicy.from_spec(["127.0.0.1", "127.0.0.2"], None)
"""The tests' servers are on loopback: the admin's allow-list names it."""


class Handler(BaseHTTPRequestHandler):
    """200 for /big.bin and /small.txt, 404, a redirect, and a body cut short."""

    def do_GET(self) -> None:
        if self.path in ("/big.bin", "/small.txt"):
            body = BIG if self.path == "/big.bin" else SMALL
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path.startswith("/elsewhere/"):  # /elsewhere/HOST:PORT/PATH
            self.send_response(302)
            self.send_header("Location", "http://" + self.path.removeprefix("/elsewhere/"))
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/small.txt")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/cut":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            self.close_connection = True
        else:
            self.send_error(404)

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output quiet."""


@contextlib.contextmanager
def serving(host: str, tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """:class:`Handler` on ``host`` (over ``tls`` if given); yields ``host:port``."""
    server = ThreadingHTTPServer((host, 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    with serving("127.0.0.1") as where:
        yield f"http://{where}"


@pytest.fixture(scope="module")
def second_http_host() -> Iterator[str]:
    """The same server on 127.0.0.2 (all of 127/8 is this machine on Linux)."""
    with serving("127.0.0.2") as where:
        yield where


@pytest.fixture(scope="module")
def https_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The same server over TLS on 127.0.0.1, and its (self-signed) certificate."""
    cert, key = self_signed(tmp_path_factory.mktemp("tls"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with serving("127.0.0.1", context) as where:
        yield f"https://{where}", cert


def fetch(source: Source) -> bytes:
    """Read a one-file source the way a transfer does."""
    with source.errors(), source.items[0].open() as (stream, _):
        return stream.read()


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    path = tmp_path / "volume"
    path.mkdir()
    return path


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones too) by relative path."""
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def make_tree(root: Path) -> dict[str, bytes]:
    files = {"a.txt": b"alpha\n", "sub/b.bin": bytes(range(256)) * 10, "sub/deep/c": b""}
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def sha256sum_listing_digest(root: Path) -> str:
    """The tree digest computed by coreutils, as the module documentation says."""
    result = subprocess.run(
        "find . -type f -printf '%P\\0' | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum",
        shell=True, cwd=root, capture_output=True, text=True, check=True)
    return result.stdout.split()[0]


# --- http(s) -------------------------------------------------------------------------------


def test_http_ingress_streams_with_progress_size_and_checksum(http_url: str,
                                                               volume: Path) -> None:
    calls: list[tuple[int, int | None]] = []
    result = ingress(f"{http_url}/big.bin", "file://inputs/", volume, http_policy=LOCAL,
                     progress=lambda done, total: calls.append((done, total)))
    assert (volume / "inputs" / "big.bin").read_bytes() == BIG
    assert result.size == len(BIG) and result.files == 1
    assert result.sha256 == hashlib.sha256(BIG).hexdigest()
    assert result.source == f"{http_url}/big.bin" and result.destination == "file://inputs/"
    assert calls[0] == (0, None) and calls[-1] == (len(BIG), len(BIG))
    done = [d for d, _ in calls]
    assert done == sorted(done) and len(calls) >= 3
    assert max(b - a for a, b in pairwise(done)) <= PROGRESS_EVERY + MiB
    assert tree(volume) == {"inputs/big.bin": BIG}  # no temporary left


def test_http_follows_redirects_to_the_named_file(http_url: str, volume: Path) -> None:
    result = ingress(f"{http_url}/moved", "file://greeting.txt", volume, http_policy=LOCAL)
    assert (volume / "greeting.txt").read_bytes() == SMALL
    assert result.sha256 == hashlib.sha256(SMALL).hexdigest()


@pytest.mark.parametrize(("path", "reason"), [
    ("/missing.tar.gz", "HTTP 404 Not Found"),
    ("/cut", "the stream ended after 10 of 1000 bytes"),
])
def test_http_failures_name_the_uri_and_leave_nothing(http_url: str, volume: Path,
                                                       path: str, reason: str) -> None:
    with pytest.raises(TransferError) as caught:
        ingress(f"{http_url}{path}", "file://data/file", volume, http_policy=LOCAL)
    assert str(caught.value) == f"{http_url}{path}: {reason}"
    assert tree(volume) == {}


def test_http_connection_refused(volume: Path) -> None:
    uri = f"http://127.0.0.1:{free_port()}/x"
    with pytest.raises(TransferError, match=r"^http://127\.0\.0\.1:\d+/x: Connection refused$"):
        ingress(uri, "file://x", volume, http_policy=LOCAL)


def test_refused_addresses_are_refused_even_after_a_redirect(
        http_url: str, second_http_host: str) -> None:
    only_first = IngressPolicy.from_spec(["127.0.0.1"], None)  # 127.0.0.2: an internal service
    assert fetch(http_source(f"{http_url}/small.txt", only_first)) == SMALL
    refused = r"refusing to fetch from 127\.0\.0\.2 port \d+: a loopback address"
    direct = f"http://{second_http_host}/small.txt"
    with pytest.raises(TransferError, match=rf"^{re.escape(direct)}: {refused}"):
        fetch(http_source(direct, only_first))
    redirected = f"{http_url}/elsewhere/{second_http_host}/small.txt"
    with pytest.raises(TransferError, match=rf"^{re.escape(redirected)}: {refused}"):
        fetch(http_source(redirected, only_first))
    assert fetch(http_source(direct, LOCAL)) == SMALL


def test_https_is_checked_before_the_handshake_and_verified_after(
        https_url: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    url, cert = https_url
    with pytest.raises(TransferError, match=r"CERTIFICATE_VERIFY_FAILED"):
        fetch(http_source(f"{url}/small.txt", LOCAL))  # a certificate nobody vouches for
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # OpenSSL's own setting: trust it
    assert fetch(http_source(f"{url}/small.txt", LOCAL)) == SMALL
    with pytest.raises(TransferError, match=r"refusing to fetch from 127\.0\.0\.1"):
        fetch(http_source(f"{url}/small.txt"))


# --- file:// and volume paths ---------------------------------------------------------------


@pytest.fixture
def host() -> Iterator[tuple[Path, HostAccess]]:
    """alice's directory in a host path (root-owned, not under /tmp), and her access to it."""
    with safe_host_root() as root:
        roots = HostRoots.open([root])
        (root / "alice").mkdir(mode=0o700)
        try:
            yield root / "alice", HostAccess(roots, "alice")
        finally:
            roots.close()


def test_a_host_directory_goes_in_and_comes_out_as_the_same_tree(
        host: tuple[Path, HostAccess], volume: Path) -> None:
    mine, access = host
    source = mine / "dataset"
    files = make_tree(source)
    into = ingress(f"file://{source}", "file://data", volume, host=access)
    assert tree(volume / "data") == files
    assert (into.files, into.size) == (3, sum(len(d) for d in files.values()))
    assert into.sha256 == sha256sum_listing_digest(source)

    out = egress("file://data", f"file://{mine}/results", volume, host=access)
    assert tree(mine / "results") == files
    assert (out.sha256, out.size, out.files) == (into.sha256, into.size, into.files)
    assert oct((volume / "data" / "a.txt").stat().st_mode & 0o777) == "0o644"
    assert oct((mine / "results" / "a.txt").stat().st_mode & 0o777) == "0o640"
    assert oct((mine / "results" / "sub").stat().st_mode & 0o777) == "0o750"


def test_a_tree_merges_into_an_existing_directory(host: tuple[Path, HostAccess],
                                                  volume: Path) -> None:
    mine, access = host
    source = mine / "dataset"
    files = make_tree(source)
    (volume / "data").mkdir()
    (volume / "data" / "keep.txt").write_bytes(b"mine")
    (volume / "data" / "a.txt").write_bytes(b"old")
    ingress(f"file://{source}", "file://data", volume, host=access)
    assert tree(volume / "data") == {**files, "keep.txt": b"mine"}


def test_egress_of_one_file_into_a_host_directory(host: tuple[Path, HostAccess],
                                                  volume: Path) -> None:
    mine, access = host
    (volume / "out.txt").write_bytes(SMALL)
    (mine / "results").mkdir()
    result = egress("file://out.txt", f"file://{mine}/results/", volume, host=access)
    assert (mine / "results" / "out.txt").read_bytes() == SMALL
    assert result.sha256 == hashlib.sha256(SMALL).hexdigest()


@pytest.mark.parametrize(("uri", "reason"), [
    ("file://../x", "'..' would leave the volume"),
    ("file://a/../../x", "'..' would leave the volume"),
    ("file:///etc/passwd", "absolute paths are not allowed in a volume; use file://relative/path"),
    ("s3://bucket/x", "a volume path must be file://relative/path"),
])
def test_volume_paths_that_escape_are_rejected(uri: str, reason: str) -> None:
    with pytest.raises(TransferError) as caught:
        volume_relative(uri)
    assert str(caught.value) == f"{uri}: {reason}"


def test_symlinks_in_the_volume_are_refused_both_ways(host: tuple[Path, HostAccess],
                                                      tmp_path: Path, volume: Path) -> None:
    mine, access = host
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"host secret")
    (volume / "link").symlink_to(outside)
    (volume / "results").mkdir()
    (volume / "results" / "leak").symlink_to(outside / "secret")
    (volume / "inside.txt").write_bytes(SMALL)
    (volume / "results" / "ok").symlink_to("../inside.txt")  # inside, but a symlink
    (mine / "inside.txt").write_bytes(SMALL)
    refused = "transfers follow no symlinks in the volume"
    with pytest.raises(TransferError) as caught:
        ingress(f"file://{mine}/inside.txt", "file://link/x", volume, host=access)
    assert str(caught.value) == f"file://link/x: link/x is or passes through a symlink; {refused}"
    for uri in ("file://results/leak", "file://results/ok"):
        with pytest.raises(TransferError, match=rf"^{uri}: .* is or passes through a symlink"):
            egress(uri, f"file://{mine}/copy", volume, host=access)
    with pytest.raises(TransferError) as caught:
        egress("file://results", f"file://{mine}/copy", volume, host=access)
    assert str(caught.value) == f"file://results: leak is a symlink; {refused}"
    dataset = mine / "dataset"
    make_tree(dataset)
    (volume / "data").mkdir()
    (volume / "data" / "sub").symlink_to(outside)  # left by an earlier workflow
    with pytest.raises(TransferError, match=rf"^file://data: .*sub.* symlink; {refused}$"):
        ingress(f"file://{dataset}", "file://data", volume, host=access)
    assert sorted(os.listdir(outside)) == ["secret"] and not (mine / "copy").exists()
    assert [p.name for p in (volume / "data").iterdir()] == ["sub"]  # nothing staged is left


def test_special_files_and_unknown_schemes_are_refused(host: tuple[Path, HostAccess],
                                                       volume: Path) -> None:
    mine, access = host
    (volume / "out").mkdir()
    os.mkfifo(volume / "out" / "pipe")
    with pytest.raises(TransferError, match=r"^file://out: pipe is not a regular file$"):
        egress("file://out", f"file://{mine}/copy", volume, host=access)
    with pytest.raises(TransferError, match=r"^file://out/pipe: not a regular file or dir"):
        egress("file://out/pipe", f"file://{mine}/copy", volume, host=access)
    with pytest.raises(TransferError, match=r"^ftp://h/x: an ingress source must be"):
        ingress("ftp://h/x", "file://x", volume)
    with pytest.raises(TransferError, match=r"^file://relative: a file on the orchestrator host"):
        ingress("file://relative", "file://x", volume, host=access)
    with pytest.raises(TransferError, match=r"^file:///.*/nonexistent: No such file or directory"):
        ingress(f"file://{mine}/nonexistent", "file://x", volume, host=access)


def test_host_paths_outside_the_owners_directory_are_refused(host: tuple[Path, HostAccess],
                                                             volume: Path) -> None:
    mine, access = host
    root = mine.parent
    secret = root / "secret.txt"
    secret.write_bytes(b"host secret")
    (mine / "sneaky").symlink_to(secret)
    (volume / "out.txt").write_bytes(SMALL)
    refused = r"outside the directories workflows of alice may use on the orchestrator host"
    with pytest.raises(TransferError, match=rf"^file://{secret}: outside the directories "
                       r"workflows may use on the orchestrator host \(none; an admin"):
        ingress(f"file://{secret}", "file://x", volume)  # nothing is allowed by default
    for uri in (f"file://{secret}", "file:///etc/passwd", f"file://{root}/bob/x"):
        with pytest.raises(TransferError, match=rf"^{re.escape(uri)}: {refused} \({mine}/;"):
            ingress(uri, "file://x", volume, host=access)
        with pytest.raises(TransferError, match=rf"^{re.escape(uri)}: {refused}"):
            egress("file://out.txt", uri, volume, host=access)
    with pytest.raises(TransferError, match=r"'\.\.' is not allowed"):
        ingress(f"file://{mine}/../secret.txt", "file://x", volume, host=access)
    with pytest.raises(TransferError, match="sneaky is or passes through a symlink"):
        ingress(f"file://{mine}/sneaky", "file://x", volume, host=access)
    assert secret.read_bytes() == b"host secret" and not (volume / "x").exists()
    egress("file://out.txt", f"file://{mine}/out.txt", volume, host=access)
    assert (mine / "out.txt").read_bytes() == SMALL


# --- s3:// ---------------------------------------------------------------------------------


def secret_lines(s3: MotoS3, secret_access_key: str | None = None) -> bytes:
    return (f"# credentials for the test bucket\n"
            f"AWS_ACCESS_KEY_ID={s3.access_key_id}\n"
            f"AWS_SECRET_ACCESS_KEY={secret_access_key or s3.secret_access_key}\n\n"
            f"AWS_REGION={s3.region}\nAWS_ENDPOINT_URL={s3.endpoint_url}\n").encode()


def test_s3_egress_and_ingress_of_a_tree_with_credentials_from_a_secret(
    moto_s3: MotoS3, tmp_path: Path, volume: Path
) -> None:
    bucket = moto_s3.new_bucket()
    credentials = s3_credentials_from_secret(secret_lines(moto_s3))
    files = make_tree(volume / "results")
    (volume / "results" / "big.bin").write_bytes(BIG)
    files["big.bin"] = BIG
    out = egress("file://results", f"s3://{bucket}/run1", volume, credentials=credentials,
                 http_policy=LOCAL)
    listed = moto_s3.client().list_objects_v2(Bucket=bucket)["Contents"]
    assert sorted(entry["Key"] for entry in listed) == sorted(f"run1/{n}" for n in files)
    assert out.sha256 == sha256sum_listing_digest(volume / "results")

    again = tmp_path / "again"
    again.mkdir()
    back = ingress(f"s3://{bucket}/run1/", "file://copy/", again, credentials=credentials,
                   http_policy=LOCAL)
    assert tree(again / "copy") == files
    assert (back.sha256, back.size, back.files) == (out.sha256, out.size, 4)


def test_s3_one_object_each_way_with_a_json_secret(moto_s3: MotoS3, volume: Path) -> None:
    bucket = moto_s3.new_bucket()
    secret = (f'{{"AWS_ACCESS_KEY_ID": "{moto_s3.access_key_id}", '
              f'"AWS_SECRET_ACCESS_KEY": "{moto_s3.secret_access_key}", '
              f'"AWS_ENDPOINT_URL": "{moto_s3.endpoint_url}", "AWS_REGION": "us-east-1"}}')
    credentials = s3_credentials_from_secret(secret.encode())
    (volume / "out.txt").write_bytes(SMALL)
    egress("file://out.txt", f"s3://{bucket}/keep/", volume, credentials=credentials,
           http_policy=LOCAL)
    body = moto_s3.client().get_object(Bucket=bucket, Key="keep/out.txt")["Body"].read()
    assert body == SMALL
    result = ingress(f"s3://{bucket}/keep/out.txt", "file://in.txt", volume,
                     credentials=credentials, http_policy=LOCAL)
    assert (volume / "in.txt").read_bytes() == SMALL
    assert (result.size, result.files) == (len(SMALL), 1)


def test_s3_failures_name_the_uri(moto_s3: MotoS3, volume: Path) -> None:
    bucket = moto_s3.new_bucket()
    good = s3_credentials_from_secret(secret_lines(moto_s3))
    wrong = s3_credentials_from_secret(secret_lines(moto_s3, secret_access_key="wrong"))
    (volume / "out.txt").write_bytes(SMALL)
    uri = f"s3://{bucket}/x"
    with pytest.raises(TransferError, match=rf"^{uri}: SignatureDoesNotMatch: "):
        ingress(uri, "file://x", volume, credentials=wrong, http_policy=LOCAL)
    with pytest.raises(TransferError, match=rf"^{uri}: SignatureDoesNotMatch: "):
        egress("file://out.txt", uri, volume, credentials=wrong, http_policy=LOCAL)
    with pytest.raises(TransferError, match=r"^s3://no-such-bucket-fuzz/x: NoSuchBucket: "):
        egress("file://out.txt", "s3://no-such-bucket-fuzz/x", volume, credentials=good,
               http_policy=LOCAL)
    with pytest.raises(TransferError, match=r"NoSuchKey: .*end the URI with '/'\)$"):
        ingress(f"s3://{bucket}/missing", "file://x", volume, credentials=good, http_policy=LOCAL)
    with pytest.raises(TransferError, match=rf"^s3://{bucket}/none/: no objects under"):
        ingress(f"s3://{bucket}/none/", "file://x", volume, credentials=good, http_policy=LOCAL)
    assert tree(volume) == {"out.txt": SMALL}


def test_s3_keys_that_would_leave_the_volume_are_rejected(moto_s3: MotoS3,
                                                          volume: Path) -> None:
    bucket = moto_s3.new_bucket()
    moto_s3.client().put_object(Bucket=bucket, Key="p/../../escape", Body=b"x")
    credentials = s3_credentials_from_secret(secret_lines(moto_s3))
    with pytest.raises(TransferError, match=rf"^s3://{bucket}/p/: '../../escape' would leave"):
        ingress(f"s3://{bucket}/p/", "file://in/", volume, credentials=credentials,
                http_policy=LOCAL)
    assert tree(volume.parent) == {}


# --- secrets -------------------------------------------------------------------------------


def test_credentials_secrets_are_checked_without_echoing_values() -> None:
    parsed = s3_credentials_from_secret(b"AWS_ACCESS_KEY_ID=AK\nAWS_SECRET_ACCESS_KEY=s3cr3t\n"
                                        b"AWS_SESSION_TOKEN=tok\n")
    assert parsed == S3Credentials("AK", "s3cr3t", "tok", None, None)
    assert "s3cr3t" not in repr(parsed) and "tok" not in repr(parsed)
    for value, message in [
        (b"AWS_ACCESS_KEY_ID=AK\n", "missing AWS_SECRET_ACCESS_KEY"),
        (b"AWS_ACCESS_KEY_ID=AK\nAWS_SECRET_KEY=s3cr3t\n", "unknown key(s) AWS_SECRET_KEY"),
        (b"AWS_ACCESS_KEY_ID AK\n", "line 1 is not KEY=VALUE"),
        (b'{"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": s3cr3t}', "not valid JSON"),
        (b'{"AWS_ACCESS_KEY_ID": 1}', "an object of strings"),
        (b"\xff", "not UTF-8"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)) as caught:
            s3_credentials_from_secret(value)
        assert "s3cr3t" not in str(caught.value)
