"""Which version of an ingress source a transfer would fetch, asked of the source as the user.

The ingress cache (:mod:`fuzz.orchestrate.transfer.cache`) keys an entry by a
:class:`SourceVersion`. Finding it is also the access check: it is asked with the
workflow owner's own credentials and rights every time, so a user the source refuses
fails here, before the cache is looked at.

* ``s3://bucket/key``: HeadObject (needs ``s3:GetObject``): VersionId where the bucket
  keeps versions, else the ETag, and the size. A prefix: its listing (key, ETag, size
  of each object) and a HeadObject of each. The endpoint is part of the identity.
* ``http(s)://``: a HEAD: a strong ETag, else Last-Modified, and Content-Length. Without
  them (or with a weak ETag only) the source is not cached. The whole URL (its query
  too) is the identity.
* ``file:///`` on the orchestrator host: the sha256 of the file, or of the tree's
  listing, read as the owner.

Each comes with a source pinned to that version: S3 objects are read with ``IfMatch``
of their ETag, an HTTP answer must carry the same validators, a host file must hash
the same, or the transfer fails (the source changed while it was read).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fuzz.orchestrate.transfer.confined import Directory
from fuzz.orchestrate.transfer.http import http_source, http_validators
from fuzz.orchestrate.transfer.ingress_policy import IngressPolicy
from fuzz.orchestrate.transfer.local import local_source
from fuzz.orchestrate.transfer.s3 import (
    PinnedObject,
    is_prefix,
    list_objects,
    parse_s3_uri,
    s3_errors,
    s3_source,
)
from fuzz.orchestrate.transfer.stream import CHUNK, Source, tree_digest

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@dataclass(frozen=True)
class SourceVersion:
    """One version of a source: ``identity`` (what makes it this data) is hashed into the
    cache's key; ``version`` says it in words; ``name`` is a single file's own name."""

    source: str
    version: str
    name: str
    identity: tuple[str, ...]

    @property
    def key(self) -> str:
        """The cache key: sha256 of the identity."""
        return hashlib.sha256(json.dumps(self.identity).encode()).hexdigest()


Versioned = tuple[SourceVersion, Callable[[], Source]]
"""A version and how to open the source pinned to it."""


def s3_version(uri: str, client: S3Client, endpoint: str) -> Versioned:
    """The version of an object or prefix at ``uri``, asked with ``client``'s credentials
    (TransferError when they may not read it)."""
    bucket, key = parse_s3_uri(uri)
    if is_prefix(key):
        objects = list_objects(uri, client, bucket, key)
    else:
        objects = [PinnedObject(key, 0, "")]
    pinned = []
    with s3_errors(uri):
        for entry in objects:
            head = client.head_object(Bucket=bucket, Key=entry.key)
            pinned.append(PinnedObject(entry.key, head["ContentLength"], head["ETag"],
                                       head.get("VersionId") or ""))
    size = sum(entry.size for entry in pinned)
    listing = [part for entry in pinned
               for part in (entry.key, entry.version_id or entry.etag, str(entry.size))]
    words = (f"ETag {pinned[0].etag}" if len(pinned) == 1 and not pinned[0].version_id
             else f"version {pinned[0].version_id}" if len(pinned) == 1
             else f"{len(pinned)} objects")
    version = SourceVersion(uri, f"{words}, {size} bytes", key.rsplit("/", 1)[-1],
                            ("s3", endpoint, bucket, key, *listing))
    return version, lambda: s3_source(uri, client, pinned)


def http_version(uri: str, policy: IngressPolicy | None) -> Versioned | None:
    """The version a HEAD of ``uri`` names, or None when it names none (not cached)."""
    validators = http_validators(uri, policy)
    if validators is None:
        return None
    validator, length = validators
    name = http_source(uri, policy).items[0].relative
    version = SourceVersion(uri, f"{validator}, {length} bytes", name,
                            ("http", uri, validator, str(length)))
    return version, lambda: http_source(uri, policy, expect=validators)


def host_version(uri: str, directory: Directory, relative: str) -> Versioned:
    """The sha256 of the file or tree at ``relative`` in ``directory`` (read as its
    identity, the owner), and the source that must read the same."""
    source = local_source(directory, relative, uri)
    digests = []
    for item in source.items:
        with source.errors(), item.open() as (stream, _):
            digest = hashlib.sha256()
            for chunk in iter(lambda: stream.read(CHUNK), b""):
                digest.update(chunk)
        digests.append((item.relative, digest.hexdigest()))
    sha256 = tree_digest(digests) if source.tree else digests[0][1]
    version = SourceVersion(uri, f"sha256:{sha256[:12]}, {source.total} bytes",
                            source.items[0].relative if not source.tree else "",
                            ("file", uri, sha256))
    return version, lambda: local_source(directory, relative, uri)


def expected_digest(version: SourceVersion) -> str | None:
    """The sha256 a fetch of ``version`` must give (host files), None where not known."""
    return version.identity[2] if version.identity[0] == "file" else None

