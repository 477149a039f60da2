"""The image store against a real docker-registry, skopeo and umoci."""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import stat
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from fuzz.errors import FuzzError
from fuzz.fsutil import read_json
from fuzz.substrate.images.layout import ImageConfig
from fuzz.substrate.images.reference import (
    Credentials,
    ImageAuthError,
    ImageError,
    ImageNotFoundError,
    RegistryUnreachableError,
    parse_reference,
)
from fuzz.substrate.images.store import ImageStore
from tests.support.registry import (
    AUTH_PASSWORD,
    AUTH_USER,
    PushedImage,
    Registry,
    build_busybox_layout,
    free_port,
    push_layout,
)

GIB = 1 << 30

WRAPPER = """#!{python}
# Logs each skopeo call (argv, and facts about its auth file) then runs the real skopeo.
import base64, json, os, sys, time
args = sys.argv[1:]
record = {{"argv": args}}
for flag in ("--authfile", "--src-authfile"):
    if flag in args:
        path = args[args.index(flag) + 1]
        info = os.stat(path)
        record["authfile"] = path
        record["authfile_mode"] = info.st_mode & 0o777
        auths = json.load(open(path))["auths"]
        record["authfile_registries"] = sorted(auths)
        record["authfile_has_creds"] = all(
            base64.b64decode(entry["auth"]).decode().startswith({token!r} + ":")
            for entry in auths.values()
        )
with open({log!r}, "a") as out:
    out.write(json.dumps(record) + "\\n")
if "copy" in args:
    time.sleep({delay})
os.execv({real!r}, ["skopeo", *args])
"""


class SkopeoSpy:
    """A skopeo on disk that records how it was called, as ``ps`` would show it."""

    def __init__(self, directory: Path, delay: float = 0.0) -> None:
        self.log = directory / "skopeo-calls.jsonl"
        self.path = directory / "skopeo"
        real = "/usr/bin/skopeo"
        self.path.write_text(
            WRAPPER.format(
                python=sys.executable, log=str(self.log), real=real, delay=delay, token=AUTH_USER
            )
        )
        self.path.chmod(0o755)

    def calls(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def copies(self) -> int:
        return sum(1 for call in self.calls() if "copy" in call["argv"])


@pytest.fixture
def spy(tmp_path: Path) -> SkopeoSpy:
    directory = tmp_path / "bin"
    directory.mkdir()
    return SkopeoSpy(directory)


def open_store(
    root: Path, spy: SkopeoSpy, *registries: Registry, max_bytes: int = GIB
) -> ImageStore:
    return ImageStore(
        root,
        max_bytes,
        insecure_registries=[r.host for r in registries],
        skopeo=str(spy.path),
    )


@pytest.fixture(scope="module")
def variant_image(
    tmp_path_factory: pytest.TempPathFactory, registry: Registry, busybox_image: PushedImage
) -> PushedImage:
    """A second image (busybox plus a file), so the store holds two digests."""
    layout = build_busybox_layout(
        tmp_path_factory.mktemp("variant"), {"etc/variant": b"variant\n" * 1000}
    )
    pushed = push_layout(layout, registry, "fuzz/busybox-variant")
    assert pushed.digest != busybox_image.digest
    return pushed


def test_pull_by_tag_unpacks_rootfs_and_reads_config(
    tmp_path: Path, spy: SkopeoSpy, registry: Registry, busybox_image: PushedImage
) -> None:
    store = open_store(tmp_path / "store", spy, registry)
    messages: list[str] = []
    image = store.pull(busybox_image.reference, progress=messages.append)

    assert image.digest == busybox_image.digest
    assert image.reference == busybox_image.reference
    assert (image.rootfs / "bin" / "busybox").is_file()
    assert os.readlink(image.rootfs / "bin" / "sh") == "busybox"
    assert image.config == ImageConfig(cmd=("/bin/sh",), env=("PATH=/bin",), working_dir="/")
    assert stat.S_IMODE(image.rootfs.stat().st_mode) & 0o022 == 0
    assert image.size_bytes > (image.rootfs / "bin" / "busybox").stat().st_size
    assert ":" not in str(image.rootfs)  # usable as an overlayfs lower dir

    assert messages[0] == f"resolving {busybox_image.reference}"
    assert f"pulling {image.digest} from {registry.host}" in messages
    assert f"unpacking {image.digest}" in messages
    assert any(m.startswith("Copying blob sha256:") for m in messages)
    assert re.fullmatch(rf"ready {image.digest} \(\d+\.\d MiB\)", messages[-1])
    assert store.images() == [image]
    assert list((tmp_path / "store" / "tmp").iterdir()) == []


def test_second_pull_by_digest_copies_nothing(
    tmp_path: Path, spy: SkopeoSpy, registry: Registry, busybox_image: PushedImage
) -> None:
    store = open_store(tmp_path / "store", spy, registry)
    first = store.pull(busybox_image.reference)
    messages: list[str] = []
    again = store.pull(busybox_image.by_digest, progress=messages.append)

    assert spy.copies() == 1
    assert again.digest == first.digest and again.rootfs == first.rootfs
    assert again.reference == busybox_image.by_digest
    assert not any(m.startswith(("pulling", "unpacking")) for m in messages)
    assert messages[-1].startswith(f"ready {first.digest}")


def test_concurrent_pulls_share_one_copy(
    tmp_path: Path, registry: Registry, busybox_image: PushedImage
) -> None:
    slow = SkopeoSpy(tmp_path, delay=0.5)  # every puller resolves before the copy ends
    store = open_store(tmp_path / "store", slow, registry)
    references = [busybox_image.reference, busybox_image.by_digest] * 2
    results: list[Any] = [None] * len(references)

    def pull(index: int) -> None:
        try:
            results[index] = store.pull(references[index])
        except Exception as exc:  # reported below
            results[index] = exc

    threads = [threading.Thread(target=pull, args=(i,)) for i in range(len(references))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(isinstance(result, Exception) for result in results), results
    assert {result.rootfs for result in results} == {results[0].rootfs}
    assert slow.copies() == 1
    assert len(store.images()) == 1


def test_lru_eviction_spares_images_in_use(
    tmp_path: Path,
    spy: SkopeoSpy,
    registry: Registry,
    busybox_image: PushedImage,
    variant_image: PushedImage,
) -> None:
    store = open_store(tmp_path / "store", spy, registry)
    first = store.pull(busybox_image.reference)
    second = store.pull(variant_image.reference)
    store.acquire(first.digest)
    store.release(first.digest)  # busybox is now the more recently used of the two
    store.max_bytes = max(first.size_bytes, second.size_bytes) * 3 // 2  # room for one
    assert store.evict() == [second.digest]
    assert not second.rootfs.exists() and first.rootfs.exists()

    second = store.pull(variant_image.reference)  # each pull evicts too: busybox goes
    assert [image.digest for image in store.images()] == [second.digest]
    assert not first.rootfs.exists()
    assert (second.rootfs / "etc" / "variant").is_file()

    store.acquire(second.digest)
    first = store.pull(busybox_image.reference)  # neither the held one nor the new one goes
    assert {image.digest for image in store.images()} == {first.digest, second.digest}
    assert store.evict() == [first.digest]  # over budget: only the unheld one can go
    assert second.rootfs.exists() and store.in_use(second.digest) == 1
    assert store.total_bytes() <= store.max_bytes

    store.release(second.digest)
    store.max_bytes = 0
    assert store.evict() == [second.digest]
    assert store.images() == []
    assert list((tmp_path / "store" / "rootfs").iterdir()) == []
    assert list((tmp_path / "store" / "oci").iterdir()) == []
    assert spy.copies() == 4


def test_pull_with_acquire_holds_the_image_at_once(
    tmp_path: Path, spy: SkopeoSpy, registry: Registry, busybox_image: PushedImage
) -> None:
    store = open_store(tmp_path / "store", spy, registry, max_bytes=0)
    image = store.pull(busybox_image.reference, acquire=True)
    assert store.evict() == [] and image.rootfs.exists()
    store.release(image.digest)
    with pytest.raises(ImageError, match="not in use"):
        store.release(image.digest)
    assert store.evict() == [image.digest]
    with pytest.raises(ImageError, match="not in the store"):
        store.acquire(image.digest)


def test_unknown_image_is_reported(
    tmp_path: Path, spy: SkopeoSpy, registry: Registry, busybox_image: PushedImage
) -> None:
    store = open_store(tmp_path / "store", spy, registry)
    missing_repo = f"docker://{registry.host}/nope:1"
    with pytest.raises(ImageNotFoundError) as caught:
        store.pull(missing_repo)
    assert str(caught.value) == f"image {missing_repo} not found in registry {registry.host}"

    missing_tag = busybox_image.reference.rsplit(":", 1)[0] + ":nope"
    with pytest.raises(ImageNotFoundError, match="not found in registry"):
        store.pull(missing_tag)
    missing_digest = busybox_image.reference.rsplit(":", 1)[0] + "@sha256:" + "0" * 64
    with pytest.raises(ImageNotFoundError, match="not found in registry"):
        store.pull(missing_digest)
    assert spy.copies() == 0
    assert isinstance(caught.value, FuzzError)


def test_unreachable_registry_is_reported(tmp_path: Path, spy: SkopeoSpy) -> None:
    host = f"127.0.0.1:{free_port()}"
    store = ImageStore(tmp_path / "store", GIB, insecure_registries=[host], skopeo=str(spy.path))
    with pytest.raises(RegistryUnreachableError) as caught:
        store.pull(f"docker://{host}/fuzz/busybox:latest")
    assert str(caught.value) == f"registry {host} is not reachable: connection refused"


def test_plain_http_registry_must_be_listed_insecure(
    tmp_path: Path, spy: SkopeoSpy, busybox_image: PushedImage
) -> None:
    store = open_store(tmp_path / "store", spy)  # no insecure registries
    with pytest.raises(ImageError) as caught:
        store.pull(busybox_image.reference)
    assert type(caught.value) is ImageError
    assert "insecure_registries" in str(caught.value)
    assert "server gave HTTP response to HTTPS client" in str(caught.value)


def test_credentials_are_checked_and_never_leak(
    tmp_path: Path,
    spy: SkopeoSpy,
    auth_registry: Registry,
    auth_busybox_image: PushedImage,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="fuzz.substrate.images")
    root = tmp_path / "store"
    store = open_store(root, spy, auth_registry)
    reference = auth_busybox_image.reference
    creds = Credentials(AUTH_USER, AUTH_PASSWORD)
    seen: list[str] = [repr(creds), str(creds)]

    with pytest.raises(ImageAuthError) as anonymous:
        store.pull(reference, progress=seen.append)
    assert (
        str(anonymous.value)
        == f"registry {auth_registry.host} requires credentials for {reference}"
    )

    wrong = Credentials(AUTH_USER, "wrong-" + AUTH_PASSWORD)
    with pytest.raises(ImageAuthError) as refused:
        store.pull(reference, wrong, progress=seen.append)
    assert str(refused.value) == (
        f"registry {auth_registry.host} refused the credentials for {reference}"
    )

    image = store.pull(reference, creds, progress=seen.append)
    assert image.digest == auth_busybox_image.digest
    with pytest.raises(ImageAuthError) as cached:  # cached, but the request is still checked
        store.pull(reference, wrong, progress=seen.append)
    seen += [str(anonymous.value), str(refused.value), str(cached.value), caplog.text]

    calls = spy.calls()
    seen.append(json.dumps(calls))  # every skopeo command line, as ps shows it
    with_auth = [call for call in calls if "authfile" in call]
    assert len(with_auth) == 4  # resolve+copy with the right password, resolve with each wrong
    for call in with_auth:
        assert call["authfile_mode"] == 0o600 and call["authfile_has_creds"]
        assert call["authfile_registries"] == [auth_registry.host]
        assert not Path(call["authfile"]).exists()
    stored = [path.read_bytes() for path in root.rglob("*") if path.is_file()]
    encoded = base64.b64encode(f"{AUTH_USER}:{AUTH_PASSWORD}".encode())
    for secret in (AUTH_PASSWORD.encode(), encoded):
        assert not any(secret in text.encode() for text in seen)
        assert not any(secret in data for data in stored)


def test_restarted_store_knows_its_images_and_drops_half_ones(
    tmp_path: Path, spy: SkopeoSpy, registry: Registry, busybox_image: PushedImage
) -> None:
    root = tmp_path / "store"
    image = open_store(root, spy, registry).pull(busybox_image.reference)
    half = root / "rootfs" / ("sha256-" + "e" * 64)  # as if a crash struck mid-commit
    (half / "bin").mkdir(parents=True)
    (root / "tmp" / "sha256-x.work" / "rootfs").mkdir(parents=True)

    store = open_store(root, spy, registry)
    assert store.images() == [image]
    assert not half.exists()
    assert list((root / "tmp").iterdir()) == []
    meta = read_json(root / "images.json")
    assert meta is not None and list(meta["images"]) == [image.digest]
    assert store.pull(busybox_image.reference).rootfs == image.rootfs
    assert spy.copies() == 1


def test_references_are_parsed() -> None:
    hub = parse_reference("docker://busybox")
    assert (hub.registry, hub.repository, hub.tag, hub.digest) == (
        "docker.io",
        "library/busybox",
        "latest",
        None,
    )
    digest = "sha256:" + "a" * 64
    local = parse_reference(f"docker://127.0.0.1:5000/fuzz/app@{digest}")
    assert (local.registry, local.repository, local.tag, local.digest) == (
        "127.0.0.1:5000",
        "fuzz/app",
        None,
        digest,
    )
    assert parse_reference("docker://localhost/app:1.0").tag == "1.0"
    for bad in ("busybox", "http://x/y", "docker://", "docker://h:1/app@sha256:xyz"):
        with pytest.raises(ImageError):
            parse_reference(bad)
    assert "s3cret" not in repr(Credentials("u", "s3cret"))


def test_a_recently_resolved_tag_is_not_asked_again_within_the_ttl(
    tmp_path: Path, spy: SkopeoSpy, registry: Registry, busybox_image: PushedImage
) -> None:
    def inspects() -> int:
        return sum(1 for call in spy.calls() if "inspect" in call["argv"])

    store = open_store(tmp_path / "store", spy, registry)
    store.pull(busybox_image.reference)
    store.pull(busybox_image.reference)
    assert inspects() == 1, "one registry round trip within the TTL"
    store.pull(busybox_image.reference, Credentials("someone", "else"))
    assert inspects() == 2, "other credentials are resolved, not served from the cache"
    quick = ImageStore(tmp_path / "store", GIB, insecure_registries=[registry.host],
                       skopeo=str(spy.path), resolve_ttl=0.0)
    quick.pull(busybox_image.reference)
    quick.pull(busybox_image.reference)
    assert inspects() == 4, "resolve_ttl=0 asks every time"
