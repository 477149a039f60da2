"""Data ingress and egress: a volume's data in before its first job, out after its last.

Ingress sources: ``file://KEY``, an entry of the Fuzzfile's top-level ``files``
(its text, from memory), ``http(s)://`` (urllib; never to an internal address unless the
admin allows it, see :mod:`fuzz.orchestrate.transfer.ingress_policy`), ``file:///abs/path`` on the
orchestrator host (only in the workflow owner's subtree ``<root>/<owner>/`` of a root of the
admin's ``host_paths``: :mod:`fuzz.orchestrate.transfer.host_roots`), ``s3://bucket/key`` or
``s3://bucket/prefix/`` (boto3). Ingress destinations and egress sources are
``file://relative/path`` inside the volume (never absolute, never ``..``, never
through a symlink). Egress destinations are ``file:///abs/path`` (in the owner's
subtree too) and ``s3://``. Files are opened relative to open directories, refusing
every symlink, as the owner's uid and gid (:mod:`fuzz.orchestrate.transfer.confined`).

Every transfer streams, computes sha256 on the fly and reports progress (at the
start, every 4 MiB and at the end). A directory (or S3 prefix) copies the whole
tree: ``size`` is the total bytes and ``sha256`` the digest of its sorted
``sha256sum`` listing (:func:`~fuzz.orchestrate.transfer.stream.tree_digest`).
Local writes go to a temporary name and are renamed into place, so a failed
transfer never leaves a half-written file. Every failure is a
:class:`TransferError` whose one-line message names the URI and the reason.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path

from fuzz.orchestrate.transfer.cache import DATA, IngressCache
from fuzz.orchestrate.transfer.confined import Directory, Identity
from fuzz.orchestrate.transfer.host_roots import HostAccess
from fuzz.orchestrate.transfer.http import http_source
from fuzz.orchestrate.transfer.ingress_policy import IngressPolicy
from fuzz.orchestrate.transfer.local import (
    CACHE_MODES,
    HOST_MODES,
    VOLUME_MODES,
    LocalSink,
    local_source,
    volume_relative,
)
from fuzz.orchestrate.transfer.s3 import (
    S3Credentials,
    S3Sink,
    s3_client,
    s3_credentials_from_secret,
    s3_source,
)
from fuzz.orchestrate.transfer.stream import (
    ByteBudget,
    Item,
    ProgressCallback,
    Sink,
    Source,
    TransferError,
    TransferResult,
    copy,
)
from fuzz.orchestrate.transfer.versions import (
    Versioned,
    expected_digest,
    host_version,
    http_version,
    s3_version,
)

__all__ = [
    "ByteBudget",
    "ProgressCallback",
    "S3Credentials",
    "TransferError",
    "TransferResult",
    "egress",
    "ingress",
    "s3_credentials_from_secret",
    "volume_relative",
]


def ingress(
    source_uri: str,
    destination_uri: str,
    volume_dir: Path,
    *,
    credentials: S3Credentials | None = None,
    progress: ProgressCallback | None = None,
    host: HostAccess | None = None,
    identity: Identity | None = None,
    http_policy: IngressPolicy | None = None,
    budget: ByteBudget | None = None,
    inline_files: Mapping[str, str] | None = None,
    cache: IngressCache | None = None,
    hard_links: bool = True,
) -> TransferResult:
    """Copy ``source_uri`` into the volume at ``volume_dir`` as ``destination_uri``.

    ``inline_files``: the Fuzzfile's top-level ``files``, which ``file://KEY`` names.

    ``credentials`` are for ``s3://`` (None: boto3's default chain); ``host`` is what a
    ``file:///`` source may be (none without it); ``http_policy`` says where an
    ``http(s)://`` source, or the S3 endpoint a secret names, may connect (None: the
    defaults, no internal address). Files are read and written as ``identity`` (None: as
    this process). A file lands at the destination path, or inside it when that is a
    directory or ends with ``/``; a tree (host directory, S3 prefix) is merged into the
    destination directory. ``budget``: the bytes the volume may still take; the transfer
    fails as soon as it would pass them.

    With ``cache``, a source whose version can be known (see
    :mod:`~fuzz.orchestrate.transfer.versions`; asked with these credentials and this
    identity, which is the access check) is fetched into the cache once and placed in the
    volume from there: hard links with ``hard_links`` (read-only files), else copies.
    Raises TransferError.
    """
    target = volume_relative(destination_uri)
    with ExitStack() as stack:
        inline = _inline_key(source_uri, inline_files or {})
        if inline is not None:
            source = _inline_source(source_uri, inline, (inline_files or {})[inline])
        else:
            versioned = None if cache is None else _versioned(
                source_uri, credentials, host, identity, http_policy, stack)
            if cache is not None and versioned is not None:
                volume = stack.enter_context(_open_volume(volume_dir, identity,
                                                          destination_uri))
                return _from_cache(cache, versioned, Placement(
                    volume, target, destination_uri, hard_links), progress, budget)
            source = _ingress_source(source_uri, credentials, host, identity, http_policy,
                                     stack)
        volume = stack.enter_context(_open_volume(volume_dir, identity, destination_uri))
        sink = LocalSink(volume, target, destination_uri, source.tree, VOLUME_MODES)
        return copy(source, sink, progress, budget)


@dataclass(frozen=True)
class Placement:
    """Where a cached entry goes: ``target`` in the open ``volume`` (``uri`` names it),
    as hard links or as copies."""

    volume: Directory
    target: str
    uri: str
    hard_links: bool


def _from_cache(cache: IngressCache, versioned: Versioned, placement: Placement,
                progress: ProgressCallback | None, budget: ByteBudget | None
                ) -> TransferResult:
    """``versioned`` from the cache (fetched into it first when missing) into the volume."""
    version, open_source = versioned

    def fill(staging: Directory, name: str) -> TransferResult:
        source = open_source()
        sink = LocalSink(staging, name, "the ingress cache", source.tree, CACHE_MODES)
        result = copy(source, sink, progress, budget)
        expected = expected_digest(version)
        if expected is not None and result.sha256 != expected:
            raise TransferError(f"{version.source}: changed while it was read")
        return result

    with cache.holding(version, fill) as (entry, directory, fetched):
        if fetched == 0 and budget is not None:
            budget.take(entry.size, version.source)
        sink = LocalSink(placement.volume, placement.target, placement.uri, entry.tree,
                         VOLUME_MODES)
        try:
            if entry.tree:
                with directory.subdirectory(DATA) as data:
                    for relative, _ in data.files(""):
                        sink.link(relative, data, relative, hard=placement.hard_links)
            else:
                sink.link(entry.name, directory, DATA, hard=placement.hard_links)
            sink.commit()
        except BaseException:
            sink.abort()
            raise
    if fetched == 0 and progress is not None:
        progress(entry.size, entry.size)
    return TransferResult(version.source, placement.uri, entry.size, entry.sha256,
                          entry.files, fetched=fetched, cached=fetched == 0)


def _versioned(uri: str, credentials: S3Credentials | None, host: HostAccess | None,
               identity: Identity | None, http_policy: IngressPolicy | None,
               stack: ExitStack) -> Versioned | None:
    """The version of the source at ``uri`` as this user may read it (TransferError when
    they may not), None for a source the cache does not keep."""
    scheme = _scheme(uri)
    if scheme in ("http", "https"):
        return http_version(uri, http_policy)
    if scheme == "file":
        return host_version(uri, *_host_directory(uri, host, identity, stack))
    if scheme == "s3":
        endpoint = credentials.endpoint_url if credentials is not None else None
        return s3_version(uri, s3_client(credentials, uri, http_policy), endpoint or "")
    return None


def egress(
    source_uri: str,
    destination_uri: str,
    volume_dir: Path,
    *,
    credentials: S3Credentials | None = None,
    progress: ProgressCallback | None = None,
    host: HostAccess | None = None,
    identity: Identity | None = None,
    http_policy: IngressPolicy | None = None,
) -> TransferResult:
    """Copy ``source_uri`` (a file or directory in the volume) out to ``destination_uri``.

    A file goes to the destination (inside it when that is a directory or ends
    with ``/``); a directory's tree goes under it. A ``file:///`` destination must
    be in ``host``'s directories; an S3 endpoint a secret names, at an address
    ``http_policy`` allows. Files are read and written as ``identity``.
    Raises TransferError.
    """
    relative = volume_relative(source_uri)
    with ExitStack() as stack:
        volume = stack.enter_context(_open_volume(volume_dir, identity, source_uri))
        source = local_source(volume, relative, source_uri)
        sink = _egress_sink(destination_uri, credentials, source.tree, host, identity,
                            http_policy, stack)
        return copy(source, sink, progress)


def _open_volume(volume_dir: Path, identity: Identity | None, uri: str) -> Directory:
    try:
        return Directory.open(volume_dir, identity, "the volume")
    except OSError as exc:
        raise TransferError(f"{uri}: the volume: {exc.strerror}") from exc


def _host_directory(uri: str, host: HostAccess | None, identity: Identity | None,
                    stack: ExitStack) -> tuple[Directory, str]:
    if host is None:
        raise TransferError(f"{uri}: outside the directories workflows may use on the "
                            "orchestrator host (none; an admin lists them under "
                            "orchestrator.host_paths)")
    try:
        directory, relative = host.open(uri, identity)
    except OSError as exc:
        raise TransferError(f"{uri}: {exc.strerror}") from exc
    return stack.enter_context(directory), relative


def _scheme(uri: str) -> str:
    scheme, separator, _ = uri.partition("://")
    return scheme.lower() if separator else ""


def _inline_key(uri: str, inline_files: Mapping[str, str]) -> str | None:
    """``KEY`` when ``uri`` is ``file://KEY`` and KEY an entry of ``inline_files``."""
    key = uri.removeprefix("file://") if _scheme(uri) == "file" else None
    return key if key in inline_files else None


def _inline_source(uri: str, key: str, text: str) -> Source:
    """An inline file's text (UTF-8) as a one-file source."""
    data = text.encode()
    item = Item(key, lambda: nullcontext((io.BytesIO(data), len(data))))
    return Source(uri, tree=False, items=[item], total=len(data), errors=nullcontext)


def _ingress_source(uri: str, credentials: S3Credentials | None, host: HostAccess | None,
                    identity: Identity | None, http_policy: IngressPolicy | None,
                    stack: ExitStack) -> Source:
    scheme = _scheme(uri)
    if scheme in ("http", "https"):
        return http_source(uri, http_policy)
    if scheme == "file":
        return local_source(*_host_directory(uri, host, identity, stack), uri)
    if scheme == "s3":
        return s3_source(uri, s3_client(credentials, uri, http_policy))
    raise TransferError(f"{uri}: an ingress source must be http(s)://, file:// or s3://")


def _egress_sink(uri: str, credentials: S3Credentials | None, tree: bool,
                 host: HostAccess | None, identity: Identity | None,
                 http_policy: IngressPolicy | None, stack: ExitStack) -> Sink:
    scheme = _scheme(uri)
    if scheme == "file":
        directory, relative = _host_directory(uri, host, identity, stack)
        return LocalSink(directory, relative, uri, tree, HOST_MODES)
    if scheme == "s3":
        return S3Sink(uri, s3_client(credentials, uri, http_policy), tree)
    raise TransferError(f"{uri}: an egress destination must be file:// or s3://")
