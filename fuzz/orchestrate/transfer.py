"""Data ingress and egress: a volume's data in before its first job, out after its last.

Ingress sources: ``http(s)://`` (urllib), ``file:///abs/path`` on the orchestrator
host (inside the admin's ``host_paths`` only), ``s3://bucket/key`` or
``s3://bucket/prefix/`` (boto3). Ingress destinations and egress sources are
``file://relative/path`` inside the volume (never absolute, never ``..``, never
through a symlink that leads out). Egress destinations are ``file:///abs/path``
(inside ``host_paths`` too) and ``s3://``.

Every transfer streams, computes sha256 on the fly and reports progress (at the
start, every 4 MiB and at the end). A directory (or S3 prefix) copies the whole
tree: ``size`` is the total bytes and ``sha256`` the digest of its sorted
``sha256sum`` listing (:func:`~fuzz.orchestrate.transfer_stream.tree_digest`).
Local writes go to a temporary name and are renamed into place, so a failed
transfer never leaves a half-written file. Every failure is a
:class:`TransferError` whose one-line message names the URI and the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fuzz.orchestrate.transfer_http import http_source
from fuzz.orchestrate.transfer_local import (
    Boundary,
    LocalSink,
    host_path,
    local_source,
    path_in_volume,
)
from fuzz.orchestrate.transfer_s3 import (
    S3Credentials,
    S3Sink,
    s3_client,
    s3_credentials_from_secret,
    s3_source,
)
from fuzz.orchestrate.transfer_stream import (
    ByteBudget,
    ProgressCallback,
    Sink,
    Source,
    TransferError,
    TransferResult,
    copy,
)

__all__ = [
    "ByteBudget",
    "ProgressCallback",
    "S3Credentials",
    "TransferError",
    "TransferResult",
    "egress",
    "host_path",
    "ingress",
    "path_in_volume",
    "s3_credentials_from_secret",
]


def ingress(
    source_uri: str,
    destination_uri: str,
    volume_dir: Path,
    *,
    credentials: S3Credentials | None = None,
    progress: ProgressCallback | None = None,
    host_roots: Sequence[Path] = (),
    budget: ByteBudget | None = None,
) -> TransferResult:
    """Copy ``source_uri`` into the volume at ``volume_dir`` as ``destination_uri``.

    ``credentials`` are for ``s3://`` (None: boto3's default chain); ``host_roots``
    are the orchestrator host's directories a ``file:///`` source may be in. A file lands
    at the destination path, or inside it when that is a directory or ends with
    ``/``; a tree (host directory, S3 prefix) is merged into the destination
    directory. ``budget``: the bytes the volume may still take; the transfer fails as
    soon as it would pass them. Raises TransferError.
    """
    target = path_in_volume(volume_dir, destination_uri)
    source = _ingress_source(source_uri, credentials, host_roots)
    sink = LocalSink(target, Boundary.of_volume(volume_dir), destination_uri, source.tree)
    return copy(source, sink, progress, budget)


def egress(
    source_uri: str,
    destination_uri: str,
    volume_dir: Path,
    *,
    credentials: S3Credentials | None = None,
    progress: ProgressCallback | None = None,
    host_roots: Sequence[Path] = (),
) -> TransferResult:
    """Copy ``source_uri`` (a file or directory in the volume) out to ``destination_uri``.

    A file goes to the destination (inside it when that is a directory or ends
    with ``/``); a directory's tree goes under it. A ``file:///`` destination must
    be inside one of ``host_roots``. Raises TransferError.
    """
    path = path_in_volume(volume_dir, source_uri)
    source = local_source(path, Boundary.of_volume(volume_dir), source_uri)
    sink = _egress_sink(destination_uri, credentials, source.tree, host_roots)
    return copy(source, sink, progress)


def _scheme(uri: str) -> str:
    scheme, separator, _ = uri.partition("://")
    return scheme.lower() if separator else ""


def _ingress_source(uri: str, credentials: S3Credentials | None,
                    host_roots: Sequence[Path]) -> Source:
    scheme = _scheme(uri)
    if scheme in ("http", "https"):
        return http_source(uri)
    if scheme == "file":
        return local_source(*host_path(uri, host_roots), uri)
    if scheme == "s3":
        return s3_source(uri, s3_client(credentials))
    raise TransferError(f"{uri}: an ingress source must be http(s)://, file:// or s3://")


def _egress_sink(uri: str, credentials: S3Credentials | None, tree: bool,
                 host_roots: Sequence[Path]) -> Sink:
    scheme = _scheme(uri)
    if scheme == "file":
        return LocalSink(*host_path(uri, host_roots), uri, tree)
    if scheme == "s3":
        return S3Sink(uri, s3_client(credentials), tree)
    raise TransferError(f"{uri}: an egress destination must be file:// or s3://")
