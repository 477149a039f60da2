"""The applications ``fuzz app list|show|start`` choose from: those of the user's own
catalogs (``fuzz app catalog add``) and those the cluster's orchestrator serves
(``orchestrator.catalogs``), when a cluster is known.

Known means, as for ``fuzz workflow validate``: ``--server``/``--context`` given (then
it must answer), or a cluster spec with an ``orchestrator:`` block here, or a current
context from ``fuzz login`` (either may be down: the user's catalogs are listed
anyway, after a warning).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import click

from fuzz.catalog.application import Application, Bundle, load_application, not_found
from fuzz.catalog.catalogs import load_catalog
from fuzz.catalog.registry import UserCatalogs
from fuzz.cli.connection import connect
from fuzz.cli.contexts import ClientConfig, config_path
from fuzz.cli.known_cluster import named_server
from fuzz.cli.options import AppContext
from fuzz.errors import ConfigError, FuzzError


def user_catalogs() -> UserCatalogs:
    """The user's catalogs, beside the client config (``FUZZ_CONFIG``'s directory)."""
    return UserCatalogs(config_path().parent)


@dataclass
class Applications:
    """The applications found, each with where it came from, and the ones that were not."""

    found: list[tuple[str, Application]] = field(default_factory=list)
    """(``user`` or ``cluster``, application)."""
    broken: list[str] = field(default_factory=list)

    def find(self, wanted: str) -> tuple[str, Application]:
        """The application ``wanted`` names: ``CATALOG/APP``, its directory name, or its
        metadata id. ConfigError when none or several match."""
        matches = [(source, app) for source, app in self.found
                   if wanted in (app.ref, app.key, app.metadata.id)]
        if not matches:
            raise not_found(wanted, [app.ref for _, app in self.found])
        if len(matches) > 1:
            refs = ", ".join(f"{app.ref} ({source})" for source, app in matches)
            raise ConfigError(f"{wanted!r} names several applications: {refs}; "
                              "name one as CATALOG/APP")
        return matches[0]


def _cluster_known(app: AppContext, server: str | None, token_file: Path | None) -> bool:
    if named_server(app, server, token_file):
        return True
    if app.spec_path.exists() and app.workspace.loaded.spec.orchestrator is not None:
        return True
    return ClientConfig.load(config_path()).current is not None


def gather(app: AppContext, server: str | None, token_file: Path | None) -> Applications:
    """The user's applications and, when a cluster is known, the cluster's."""
    result = Applications()
    registry = user_catalogs()
    for source in registry.sources():
        try:
            loaded = load_catalog(source.name, registry.root(source))
        except FuzzError as exc:
            result.broken.append(str(exc))
            continue
        result.found += [("user", application) for application in loaded.applications]
        result.broken += loaded.broken
    if not _cluster_known(app, server, token_file):
        return result
    try:
        with connect(app, server, token_file) as client:
            reply = client.list_applications()
    except FuzzError as exc:
        if named_server(app, server, token_file):
            raise
        click.echo(f"warning: the cluster's catalogs are not shown: {exc}", err=True)
        return result
    result.broken += list(reply.broken)
    for bundle in reply.applications:
        try:
            application = load_application(bundle.catalog, bundle.app, Bundle(
                bundle.template, bundle.values, bundle.metadata, bundle.where))
        except FuzzError as exc:
            result.broken.append(str(exc).splitlines()[0])
            continue
        result.found.append(("cluster", application))
    return result
