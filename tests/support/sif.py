"""Real Apptainer SIF images for tests: a busybox squashfs (``mksquashfs``) in a SIF container
written here, pushed to a test registry with ORAS under the media types Apptainer uses.

The SIF layout is written from the format's documentation (all little-endian, packed):
a 128-byte global header, a table of 585-byte descriptors, then the data objects.
:func:`write_sif` places objects as the Apptainer tools do (the descriptor table at
4096, partitions aligned to 4096), so a SIF made here is one ``siftool`` reads.
"""

from __future__ import annotations

import json
import struct
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import oras.provider
import pytest

from fuzz.testing.oci import PushedImage, Registry, fill_busybox_rootfs, require, run_checked

SIF_LAYER_MEDIA_TYPE = "application/vnd.sylabs.sif.layer.v1.sif"
SIF_CONFIG_MEDIA_TYPE = "application/vnd.sylabs.sif.config.v1+json"
SIF_REPO = "fuzz/busybox-sif"

LAUNCH_SCRIPT = b"#!/usr/bin/env run-singularity\n"
ALIGNMENT = 4096
DESCRIPTOR_TABLE_OFFSET = 4096
DESCRIPTOR_SLOTS = 48  # what `siftool new` reserves
_HEADER = struct.Struct("<32s10s3s3s16sqqqqqqqq")
_DESCRIPTOR = struct.Struct("<i?IIIqqqqqqq128s384s")
_PARTITION_EXTRA = struct.Struct("<ii3s")

DATA_DEFFILE = 0x4001
DATA_PARTITION = 0x4004
FS_SQUASHFS, FS_EXT3, FS_ENCRYPTED_SQUASHFS = 1, 2, 5
PART_PRIMARY_SYSTEM, PART_DATA = 2, 3
ARCH_AMD64 = b"02\0"


@dataclass(frozen=True)
class SifObject:
    """One data object of a SIF: its bytes and, for a partition, what filesystem it holds."""

    data: bytes
    data_type: int = DATA_PARTITION
    filesystem: int = FS_SQUASHFS
    partition_type: int = PART_PRIMARY_SYSTEM
    name: str = "rootfs"


def _align(value: int) -> int:
    return -(-value // ALIGNMENT) * ALIGNMENT


def write_sif(path: Path, objects: Sequence[SifObject]) -> Path:
    """Write a SIF file holding ``objects`` (in that order) at ``path``; returns ``path``."""
    now = int(time.time())
    data_offset = DESCRIPTOR_TABLE_OFFSET + DESCRIPTOR_SLOTS * _DESCRIPTOR.size
    descriptors, placed, end = [], [], data_offset
    for number, item in enumerate(objects, start=1):
        offset = _align(end) if item.data_type == DATA_PARTITION else end
        extra = b""
        if item.data_type == DATA_PARTITION:
            extra = _PARTITION_EXTRA.pack(item.filesystem, item.partition_type, ARCH_AMD64)
        descriptors.append(_DESCRIPTOR.pack(
            item.data_type, True, number, 0xF0000001, 0, offset, len(item.data),
            offset + len(item.data) - end, now, now, 0, 0, item.name.encode(), extra))
        placed.append((offset, item.data))
        end = offset + len(item.data)
    header = _HEADER.pack(
        LAUNCH_SCRIPT, b"SIF_MAGIC\0", b"01\0", ARCH_AMD64, uuid.uuid4().bytes, now, now,
        DESCRIPTOR_SLOTS - len(objects), DESCRIPTOR_SLOTS, DESCRIPTOR_TABLE_OFFSET,
        DESCRIPTOR_SLOTS * _DESCRIPTOR.size, data_offset, end - data_offset)
    with open(path, "wb") as out:
        out.write(header)
        out.seek(DESCRIPTOR_TABLE_OFFSET)
        out.write(b"".join(descriptors).ljust(DESCRIPTOR_SLOTS * _DESCRIPTOR.size, b"\0"))
        for offset, data in placed:
            out.seek(offset)
            out.write(data)
        out.truncate(end)
    return path


def busybox_squashfs(workdir: Path, extra_files: Mapping[str, bytes] | None = None) -> bytes:
    """A squashfs (``mksquashfs``) of a busybox root filesystem plus ``extra_files``."""
    mksquashfs = require("mksquashfs", "squashfs-tools")
    rootfs, image = workdir / "sif-rootfs", workdir / "rootfs.squashfs"
    fill_busybox_rootfs(rootfs, extra_files)
    run_checked([mksquashfs, str(rootfs), str(image), "-noappend", "-quiet", "-no-progress",
                 "-all-root"])
    return image.read_bytes()


def build_busybox_sif(workdir: Path, extra_files: Mapping[str, bytes] | None = None) -> Path:
    """``workdir/busybox.sif``: a definition file and the busybox squashfs as root partition."""
    workdir.mkdir(parents=True, exist_ok=True)
    squashfs = busybox_squashfs(workdir, extra_files)
    definition = SifObject(b"Bootstrap: scratch\n", data_type=DATA_DEFFILE, name="deffile")
    return write_sif(workdir / "busybox.sif", [definition, SifObject(squashfs)])


def push_sif(sif: Path, registry: Registry, repository: str = SIF_REPO, tag: str = "latest",
             media_type: str = SIF_LAYER_MEDIA_TYPE) -> PushedImage:
    """Push ``sif`` as an ORAS artifact (config and layer with Apptainer's media types, unless
    ``media_type`` says otherwise); its ``reference`` is ``oras://HOST/REPO:TAG``."""
    client = oras.provider.Registry(hostname=registry.host, insecure=True,
                                    auth_backend="basic")
    if registry.username is not None and registry.password is not None:
        client.auth.set_basic_auth(registry.username, registry.password)
    config = sif.parent / f"{sif.stem}-config.json"
    config.write_text(json.dumps({}))
    response = client.push(
        target=f"{registry.host}/{repository}:{tag}", files=[f"{sif}:{media_type}"],
        manifest_config=f"{config}:{SIF_CONFIG_MEDIA_TYPE}", disable_path_validation=True,
        quiet=True)
    digest = response.headers["Docker-Content-Digest"]
    return PushedImage(f"oras://{registry.host}/{repository}:{tag}", digest, registry)


@pytest.fixture(scope="session")
def busybox_sif(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox SIF file, built once per session."""
    return build_busybox_sif(tmp_path_factory.mktemp("busybox-sif"))


@pytest.fixture(scope="session")
def sif_image(busybox_sif: Path, registry: Registry) -> PushedImage:
    """``oras://HOST/fuzz/busybox-sif:latest`` in the anonymous ``registry``."""
    return push_sif(busybox_sif, registry)
