"""The application catalogs the admin lists in the cluster spec (``orchestrator.catalogs``),
served to ``fuzz app list|show|start`` by the ``ListApplications`` RPC.

A directory catalog is read at each request (the admin's edits show at once); a git
catalog is cloned into the data dir on the first request of the server's life, so a
restart picks up new commits of its ref.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path

from fuzz.api import orchestrator_pb2 as pb
from fuzz.catalog.catalogs import catalog_root, load_catalog
from fuzz.errors import FuzzError
from fuzz.spec.cluster import CatalogSpec

logger = logging.getLogger(__name__)


class ClusterCatalogs:
    """``catalogs`` (directory paths absolute), git ones cloned under ``clones``."""

    def __init__(self, catalogs: Sequence[CatalogSpec], clones: Path) -> None:
        self._catalogs = list(catalogs)
        self._clones = clones
        self._lock = threading.Lock()
        self._fresh: set[str] = set()  # git catalogs cloned in this server's life

    def _root(self, catalog: CatalogSpec) -> Path:
        with self._lock:
            if catalog.git is not None and catalog.name not in self._fresh:
                shutil.rmtree(self._clones / catalog.name, ignore_errors=True)
                self._fresh.add(catalog.name)
            return catalog_root(catalog, self._clones)

    def applications(self) -> pb.ApplicationList:
        """Every catalog's applications as bundles; a catalog or application that cannot
        be read is one line in ``broken`` (and in the server's log)."""
        reply = pb.ApplicationList()
        for catalog in self._catalogs:
            try:
                loaded = load_catalog(catalog.name, self._root(catalog),
                                      catalog.path or catalog.git)
            except FuzzError as exc:
                line = str(exc) if str(exc).startswith(f"catalog {catalog.name}:") \
                    else f"catalog {catalog.name}: {exc}"
                if catalog.git is not None:
                    with self._lock:
                        self._fresh.discard(catalog.name)  # cloned again next time
                logger.warning("%s", line)
                reply.broken.append(line)
                continue
            reply.broken.extend(loaded.broken)
            for app in loaded.applications:
                bundle = app.bundle
                reply.applications.add(catalog=catalog.name, app=app.key,
                                       template=bundle.template, values=bundle.values,
                                       metadata=bundle.metadata, where=bundle.where)
        return reply
