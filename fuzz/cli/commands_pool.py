"""``fuzz pool list``: the elastic pools as the running orchestrator sees them."""

from __future__ import annotations

import time
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from fuzz.api import orchestrator_pb2 as pb
from fuzz.cli.options import AppContext, json_option, pass_app
from fuzz.cli.render import print_json


def _pool_json(pool: pb.ElasticPoolState) -> dict[str, Any]:
    return {"name": pool.name, "failing": pool.failing, "error": pool.error,
            "error_at": pool.error_at,
            "members": [{"address": m.address, "offering": m.offering or None, "state": m.state}
                        for m in pool.members]}


@click.group()
def pool() -> None:
    """Elastic pools: members, failing pools and provider errors."""


@pool.command("list")
@json_option
@pass_app
def list_pools(app: AppContext, as_json: bool) -> None:
    """The orchestrator's elastic pools: each member's offering and state, and trouble."""
    reply = app.workspace.orchestrator.pool_demand()
    if as_json:
        print_json(app.out, {"decided_at": reply.decided_at,
                             "pools": [_pool_json(p) for p in reply.pools]})
        return
    if not reply.pools:
        app.out.print("No elastic pools (or the orchestrator has not decided them yet).")
        return
    table = Table("pool", "members", "status")
    for p in reply.pools:
        members = ", ".join(f"{m.address} {m.offering or '-'} {m.state}" for m in p.members)
        status = (f"[red]failing: {escape(p.failing)}[/]" if p.failing
                  else f"[yellow]error: {escape(p.error)}[/]" if p.error else "[green]ok[/]")
        table.add_row(p.name, escape(members) or "-", status)
    app.out.print(table)
    if reply.decided_at:
        app.out.print(f"(decided {time.time() - reply.decided_at:.0f}s ago)")


COMMANDS = (pool,)
