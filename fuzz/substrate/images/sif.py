"""Reading the Singularity Image Format (SIF) of Apptainer images: where the root filesystem is.

Hand-written because no maintained Python library reads SIF (its reference
implementation is Go, the Apptainer project's ``sif`` package); only the global
header and the descriptor table are needed, from the format as that project documents it.

All integers are little-endian and the structures are packed::

    global header (128 bytes): launch script [32], magic "SIF_MAGIC\\0" [10], version [3],
        architecture [3], uuid [16], then eight int64: created, modified, descriptors
        free, descriptors total, descriptors offset, descriptors size, data offset, data size
    descriptor (585 bytes): int32 data type, bool used, uint32 id, group id, linked id,
        int64 offset, size, size with padding, created, modified, uid, gid,
        name [128], extra [384]; a partition's extra starts with int32 filesystem type,
        int32 partition type and its architecture [3]

The root filesystem is the used partition descriptor of type "primary system".
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

SIF_MAGIC = b"SIF_MAGIC\0"
SIF_VERSION = b"01\0"
HEADER = struct.Struct("<32s10s3s3s16s8q")
DESCRIPTOR = struct.Struct("<i?IIIqqqqqqq128s384s")
PARTITION = struct.Struct("<ii3s")
DATA_PARTITION = 0x4004
PART_PRIMARY_SYSTEM = 2
FS_SQUASHFS = 1
FILESYSTEMS = {1: "squashfs", 2: "ext3", 3: "an archive", 4: "raw data",
               5: "encrypted squashfs", 6: "gocryptfs squashfs"}
ENCRYPTED_FILESYSTEMS = (5, 6)
SQUASHFS_MAGIC = b"hsqs"
MAX_DESCRIPTORS = 65536  # far above what any SIF holds (48 by default): a bound on the read


class SifFormatError(ValueError):
    """The file is not a SIF image this node can run; the message says why, in a few words."""


class SifEncryptedError(SifFormatError):
    """The root filesystem is encrypted (decrypting SIF images is not supported)."""


@dataclass(frozen=True)
class Partition:
    """Where a partition's filesystem lies in the SIF file, and what it is."""

    offset: int
    size: int
    filesystem: int
    partition_type: int


def _read_exactly(handle: BinaryIO, offset: int, size: int, what: str) -> bytes:
    handle.seek(offset)
    data = handle.read(size)
    if len(data) != size:
        raise SifFormatError(f"truncated ({what} ends past the end of the file)")
    return data


def _partitions(handle: BinaryIO, file_size: int) -> list[Partition]:
    """The used partition descriptors of the SIF open in ``handle``."""
    header = _read_exactly(handle, 0, HEADER.size, "the global header")
    _, magic, version, _, _, *numbers = HEADER.unpack(header)
    if magic != SIF_MAGIC:
        raise SifFormatError("bad magic (not a SIF file)")
    if version != SIF_VERSION:
        shown = version.rstrip(b"\0").decode(errors="replace")
        raise SifFormatError(f"unsupported SIF version {shown!r}")
    _, _, _, total, table_offset, _, _, _ = numbers
    if not 0 <= total <= MAX_DESCRIPTORS or table_offset < HEADER.size:
        raise SifFormatError("corrupt descriptor table")
    table = _read_exactly(handle, table_offset, total * DESCRIPTOR.size, "the descriptor table")
    found: list[Partition] = []
    for (data_type, used, _, _, _, offset, size, *_rest, extra) in DESCRIPTOR.iter_unpack(table):
        if not used or data_type != DATA_PARTITION:
            continue
        filesystem, partition_type, _ = PARTITION.unpack_from(extra)
        if offset < 0 or size <= 0 or offset + size > file_size:
            raise SifFormatError("truncated (a partition ends past the end of the file)")
        found.append(Partition(offset, size, filesystem, partition_type))
    return found


def root_partition(path: Path) -> Partition:
    """The squashfs root filesystem of the SIF image at ``path``.

    Raises SifEncryptedError for an encrypted one and SifFormatError for anything else
    that is wrong: bad magic, a truncated file, no (or no squashfs) root partition.
    """
    with open(path, "rb") as handle:
        file_size = handle.seek(0, 2)
        partitions = _partitions(handle, file_size)
        primary = [p for p in partitions if p.partition_type == PART_PRIMARY_SYSTEM]
        if not primary:
            raise SifFormatError("no root filesystem partition")
        root = primary[0]
        if root.filesystem in ENCRYPTED_FILESYSTEMS:
            raise SifEncryptedError(
                "its root filesystem is encrypted, and encrypted SIF images are not supported")
        if root.filesystem != FS_SQUASHFS:
            kind = FILESYSTEMS.get(root.filesystem, f"filesystem type {root.filesystem}")
            raise SifFormatError(f"its root filesystem is {kind}, not squashfs")
        if _read_exactly(handle, root.offset, len(SQUASHFS_MAGIC), "the root filesystem") \
                != SQUASHFS_MAGIC:
            raise SifFormatError("its root partition holds no squashfs filesystem")
    return root
