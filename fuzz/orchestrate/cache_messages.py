"""The ingress cache as the API shows it: ``ListCache`` and ``PruneCache`` replies."""

from __future__ import annotations

from collections.abc import Iterable

from fuzz.api import orchestrator_pb2 as pb
from fuzz.orchestrate.transfer.cache import CacheEntry, IngressCache


def cache_entry_message(entry: CacheEntry) -> pb.CacheEntry:
    """One entry: its source, version, bytes and use."""
    return pb.CacheEntry(key=entry.key, source=entry.source, version=entry.version,
                         size=entry.size, files=entry.files, sha256=entry.sha256,
                         created=entry.created, last_used=entry.last_used, uses=entry.uses)


def cache_list(cache: IngressCache | None) -> pb.CacheList:
    """What ``cache`` holds (disabled and empty when there is none)."""
    if cache is None:
        return pb.CacheList(enabled=False)
    return _listing(cache, cache.entries())


def cache_prune(cache: IngressCache | None) -> pb.PruneCacheReply:
    """Empty ``cache`` of every entry not in use: what went and what is left."""
    if cache is None:
        return pb.PruneCacheReply(cache=pb.CacheList(enabled=False))
    removed = cache.prune()
    return pb.PruneCacheReply(removed=[cache_entry_message(e) for e in removed],
                              cache=_listing(cache, cache.entries()))


def _listing(cache: IngressCache, entries: Iterable[CacheEntry]) -> pb.CacheList:
    shown = list(entries)
    return pb.CacheList(enabled=True, bytes=sum(e.size for e in shown), quota=cache.quota,
                        entries=[cache_entry_message(e) for e in shown])
