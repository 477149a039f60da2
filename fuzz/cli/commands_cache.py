"""``fuzz cache list|prune``: the cluster's ingress cache (what it holds, emptying it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.table import Table

from fuzz.api import orchestrator_pb2 as pb
from fuzz.cli.connection import connect, server_options
from fuzz.cli.options import AppContext, json_option, pass_app
from fuzz.cli.workflow_view import clock, to_dict
from fuzz.units import format_bytes


@click.group("cache")
def cache() -> None:
    """The cluster's ingress cache: each version of an ingress source, fetched once."""


@cache.command("list")
@server_options
@json_option
@pass_app
def list_(app: AppContext, server: str | None, token_file: Path | None, as_json: bool) -> None:
    """List what the ingress cache holds, least recently used first (admins: cache:read)."""
    with connect(app, server, token_file) as client:
        listing = client.list_cache()
    if as_json:
        sys.stdout.write(json.dumps(to_dict(listing), indent=2) + "\n")
        return
    _print(app, listing)


@cache.command("prune")
@server_options
@json_option
@pass_app
def prune(app: AppContext, server: str | None, token_file: Path | None, as_json: bool) -> None:
    """Remove every cache entry no ingress is using now (admins: cache:prune)."""
    with connect(app, server, token_file) as client:
        reply = client.prune_cache()
    if as_json:
        sys.stdout.write(json.dumps(to_dict(reply), indent=2) + "\n")
        return
    freed = sum(entry.size for entry in reply.removed)
    app.out.print(f"removed {len(reply.removed)} cache entries ({format_bytes(freed)})")
    _print(app, reply.cache)


def _print(app: AppContext, listing: pb.CacheList) -> None:
    if not listing.enabled:
        app.out.print("the ingress cache is off (orchestrator.cache.bytes is 0)")
        return
    summary = f"{format_bytes(listing.bytes)} of {format_bytes(listing.quota)}"
    if not listing.entries:
        app.out.print(f"no cached ingress sources ({summary})")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("SOURCE", "VERSION", "SIZE", "USES", "LAST USED"):
        table.add_column(column, overflow="fold")
    for entry in listing.entries:
        table.add_row(entry.source, entry.version, format_bytes(entry.size), str(entry.uses),
                      clock(entry.last_used))
    app.out.print(table)
    app.out.print(f"{len(listing.entries)} entries, {summary}")


COMMANDS = (cache,)
