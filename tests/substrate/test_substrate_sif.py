"""SIF images: the SIF reader on real SIF files (ours and ``siftool``'s), and ``oras://`` pulls
into the image store from a real docker-registry, unpacked by the real ``unsquashfs``."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from fuzz.substrate.images.reference import (
    Credentials,
    ImageAuthError,
    ImageError,
    ImageNotFoundError,
    RegistryUnreachableError,
    parse_reference,
)
from fuzz.substrate.images.sif import (
    SifEncryptedError,
    SifFormatError,
    root_partition,
)
from fuzz.substrate.images.store import ImageStore
from fuzz.testing.oci import require
from tests.support.registry import AUTH_PASSWORD, AUTH_USER, PushedImage, Registry, free_port
from tests.support.sif import (
    DATA_DEFFILE,
    FS_ENCRYPTED_SQUASHFS,
    FS_EXT3,
    PART_DATA,
    SifObject,
    build_busybox_sif,
    busybox_squashfs,
    push_sif,
    write_sif,
)

GIB = 1 << 30


@pytest.fixture(scope="module")
def squashfs(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A busybox squashfs, made once for the module."""
    return busybox_squashfs(tmp_path_factory.mktemp("squashfs"))


def store_for(tmp_path: Path, *registries: Registry, resolve_ttl: float = 30.0) -> ImageStore:
    """A store under ``tmp_path`` that reaches ``registries`` over plain HTTP."""
    return ImageStore(tmp_path / "images", 4 * GIB, resolve_ttl=resolve_ttl,
                      insecure_registries=[r.host for r in registries])


# --- the SIF reader ----------------------------------------------------------------


def test_the_root_partition_of_our_sif_is_found_and_siftool_agrees(
        tmp_path: Path, squashfs: bytes) -> None:
    sif = write_sif(tmp_path / "x.sif", [
        SifObject(b"Bootstrap: scratch\n", data_type=DATA_DEFFILE, name="deffile"),
        SifObject(b"hsqs-not-the-root", partition_type=PART_DATA, name="data"),
        SifObject(squashfs)])
    root = root_partition(sif)
    assert root.size == len(squashfs) and root.offset % 4096 == 0
    assert sif.read_bytes()[root.offset:root.offset + root.size] == squashfs
    listed = subprocess.run([require("siftool", "siftool"), "list", str(sif)],
                            capture_output=True, text=True, check=True).stdout
    assert "Def.FILE" in listed and "*System" in listed and "Squashfs" in listed


def test_a_sif_made_by_siftool_is_read(tmp_path: Path, squashfs: bytes) -> None:
    siftool = require("siftool", "siftool")
    sif, part = tmp_path / "tool.sif", tmp_path / "rootfs.squashfs"
    part.write_bytes(squashfs)
    subprocess.run([siftool, "new", str(sif)], check=True, capture_output=True)
    subprocess.run([siftool, "add", str(sif), str(part), "--datatype", "4", "--parttype", "2",
                    "--partfs", "1", "--partarch", "2"], check=True, capture_output=True)
    root = root_partition(sif)
    assert sif.read_bytes()[root.offset:root.offset + root.size] == squashfs


@pytest.mark.parametrize(("objects", "damage", "reason"), [
    ("root", lambda data: data[:32] + b"NOT_MAGIC!" + data[42:], "bad magic"),
    ("root", lambda data: data[:100], "truncated"),
    ("root", lambda data: data[:5000], "truncated"),
    ("root", lambda data: data[:-1000], "truncated"),
    ("deffile", None, "no root filesystem partition"),
    ("ext3", None, "its root filesystem is ext3, not squashfs"),
    ("not-squashfs", None, "its root partition holds no squashfs filesystem"),
])
def test_corrupt_sifs_are_refused_with_one_reason(
        tmp_path: Path, squashfs: bytes, objects: str, damage: object, reason: str) -> None:
    kinds = {
        "root": [SifObject(squashfs)],
        "deffile": [SifObject(b"Bootstrap: scratch\n", data_type=DATA_DEFFILE)],
        "ext3": [SifObject(squashfs, filesystem=FS_EXT3)],
        "not-squashfs": [SifObject(b"\0" * 8192)],
    }
    sif = write_sif(tmp_path / "x.sif", kinds[objects])
    if callable(damage):
        sif.write_bytes(damage(sif.read_bytes()))
    with pytest.raises(SifFormatError) as caught:
        root_partition(sif)
    assert reason in str(caught.value) and "\n" not in str(caught.value)


def test_an_encrypted_root_filesystem_is_refused(tmp_path: Path, squashfs: bytes) -> None:
    sif = write_sif(tmp_path / "x.sif", [SifObject(squashfs, filesystem=FS_ENCRYPTED_SQUASHFS)])
    with pytest.raises(SifEncryptedError, match="encrypted SIF images are not supported"):
        root_partition(sif)


def test_oras_references_are_parsed() -> None:
    ref = parse_reference("oras://127.0.0.1:5000/hpc/solver.sif:2.1")
    assert (ref.scheme, ref.registry, ref.repository, ref.tag) == (
        "oras", "127.0.0.1:5000", "hpc/solver.sif", "2.1")
    assert parse_reference("docker://busybox").scheme == "docker"
    with pytest.raises(ImageError, match="must start with docker:// or oras://"):
        parse_reference("library://sylabs/busybox")


# --- oras:// pulls into the store ----------------------------------------------------


def test_an_oras_image_is_pulled_unsquashed_and_cached_by_digest(
        tmp_path: Path, sif_image: PushedImage) -> None:
    store = store_for(tmp_path, sif_image.registry, resolve_ttl=0.0)  # every pull asks
    messages: list[str] = []
    image = store.pull(sif_image.reference, progress=messages.append)
    assert image.digest == sif_image.digest
    assert os.access(image.rootfs / "bin" / "busybox", os.X_OK)
    assert (image.rootfs / "bin" / "sh").readlink() == Path("busybox")
    assert image.config.env[0].startswith("PATH=/usr/local/sbin:")
    assert any("SIF" in m for m in messages) and any("unpacking" in m for m in messages)
    assert not list((tmp_path / "images" / "tmp").iterdir())  # the SIF itself is not kept
    ran = subprocess.run(["chroot", str(image.rootfs), "/bin/sh", "-c", "echo from the sif"],
                         capture_output=True, text=True, check=True)
    assert ran.stdout == "from the sif\n"
    unpacked = (image.rootfs.stat().st_ino, image.rootfs.stat().st_mtime_ns)
    again: list[str] = []
    second = store.pull(sif_image.reference, progress=again.append)
    assert second.digest == image.digest
    assert (second.rootfs.stat().st_ino, second.rootfs.stat().st_mtime_ns) == unpacked
    assert again[0] == f"resolving {sif_image.reference}"  # asked the registry, fetched nothing
    assert not any("pulling" in m or "unpacking" in m for m in again), again
    reopened = store_for(tmp_path, sif_image.registry)  # an agent restart keeps it
    assert reopened.get(image.digest) is not None


def test_a_docker_image_named_with_oras_is_a_wrong_media_type(
        tmp_path: Path, busybox_image: PushedImage) -> None:
    store = store_for(tmp_path, busybox_image.registry)
    reference = busybox_image.reference.replace("docker://", "oras://")
    with pytest.raises(ImageError) as caught:
        store.pull(reference)
    message = str(caught.value)
    assert message.startswith(f"image {reference} is not a SIF image: its layers are ")
    assert "not one application/vnd.sylabs.sif.layer.v1.sif" in message and "\n" not in message
    assert store.images() == []


def test_a_corrupt_sif_in_the_registry_is_one_clear_error(
        tmp_path: Path, registry: Registry) -> None:
    bad = tmp_path / "bad.sif"
    bad.write_bytes(b"#!/usr/bin/env run-singularity\n" + b"\0" * 200)
    pushed = push_sif(bad, registry, "fuzz/corrupt-sif")
    store = store_for(tmp_path, registry)
    with pytest.raises(ImageError) as caught:
        store.pull(pushed.reference)
    assert str(caught.value) == f"image {pushed.reference} is not a usable SIF: bad magic " \
        "(not a SIF file)"
    assert store.images() == [] and not list((tmp_path / "images" / "tmp").iterdir())


def test_oras_pulls_use_the_request_credentials_only(
        tmp_path: Path, auth_registry: Registry, busybox_sif: Path) -> None:
    pushed = push_sif(busybox_sif, auth_registry)
    store = store_for(tmp_path, auth_registry)
    with pytest.raises(ImageAuthError, match="requires credentials"):
        store.pull(pushed.reference)
    wrong = Credentials(AUTH_USER, "wrong-password")
    with pytest.raises(ImageAuthError, match="refused the credentials") as caught:
        store.pull(pushed.reference, wrong)
    assert "wrong-password" not in str(caught.value)
    image = store.pull(pushed.reference, Credentials(AUTH_USER, AUTH_PASSWORD))
    assert image.digest == pushed.digest and (image.rootfs / "bin" / "busybox").exists()


def test_oras_registry_errors_are_typed(tmp_path: Path, sif_image: PushedImage) -> None:
    store = store_for(tmp_path, sif_image.registry)
    missing = sif_image.reference.replace(":latest", ":nope")
    with pytest.raises(ImageNotFoundError, match="not found in registry"):
        store.pull(missing)
    closed = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(RegistryUnreachableError, match="connection refused"):
        store_for(tmp_path / "other").pull(f"oras://{closed}/x/y:1")
    assert time.monotonic() - started < 30  # no retry rounds on a closed port
    plain = ImageStore(tmp_path / "plain", GIB)  # the registry is not listed insecure
    with pytest.raises(ImageError, match="speaks plain HTTP; list it in insecure_registries"):
        plain.pull(sif_image.reference)


def test_a_sif_with_a_runscript_runs_it_by_default(tmp_path: Path, registry: Registry) -> None:
    sif = build_busybox_sif(tmp_path / "build", {
        "/.singularity.d/runscript": b"#!/bin/sh\necho runscript\n"})
    pushed = push_sif(sif, registry, "fuzz/runscript-sif")
    image = store_for(tmp_path, registry).pull(pushed.reference)
    assert image.config.cmd == ("/.singularity.d/runscript",)
