"""The user's own catalogs (``fuzz app catalog add|list|remove``): ``catalogs.json`` in
the user's config directory (beside ``config.yaml``), git catalogs cloned under
``catalogs/<name>/`` there."""

from __future__ import annotations

import shutil
from pathlib import Path

from fuzz.catalog.catalogs import catalog_root, git_checkout, load_catalog
from fuzz.errors import ConfigError
from fuzz.fsutil import read_json, write_json_atomic
from fuzz.spec.cluster import CatalogSpec


class UserCatalogs:
    """The catalogs listed in ``directory/catalogs.json``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.file = directory / "catalogs.json"
        self.clones = directory / "catalogs"

    def sources(self) -> list[CatalogSpec]:
        """The catalogs, in the order they were added."""
        data = read_json(self.file) or {}
        return [CatalogSpec.model_validate(entry) for entry in data.get("catalogs", [])]

    def _save(self, sources: list[CatalogSpec]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.file, {"catalogs": [
            source.model_dump(exclude_none=True) for source in sources]})

    def add(self, source: CatalogSpec) -> str | None:
        """Add ``source`` (a git one is cloned first, and must hold a catalog); the commit
        checked out for git. ConfigError when the name is taken or it holds no catalog."""
        sources = self.sources()
        if any(known.name == source.name for known in sources):
            raise ConfigError(f"catalog {source.name} exists already; remove it first "
                              f"(fuzz app catalog remove {source.name})")
        commit = None
        if source.git is not None:
            commit = git_checkout(source.git, source.ref, self.clones / source.name)
        try:
            load_catalog(source.name, catalog_root(source, self.clones))
        except ConfigError:
            shutil.rmtree(self.clones / source.name, ignore_errors=True)
            raise
        self._save([*sources, source])
        return commit

    def remove(self, name: str) -> None:
        """Forget catalog ``name`` (and delete its clone). ConfigError when it is unknown."""
        sources = self.sources()
        kept = [source for source in sources if source.name != name]
        if len(kept) == len(sources):
            known = ", ".join(source.name for source in sources) or "none"
            raise ConfigError(f"no catalog {name!r} (yours: {known})")
        self._save(kept)
        shutil.rmtree(self.clones / name, ignore_errors=True)

    def root(self, source: CatalogSpec) -> Path:
        """Where ``source``'s files are on this machine."""
        return catalog_root(source, self.clones)
