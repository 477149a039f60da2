"""``fuzz providers`` and ``fuzz node list``: what is installed, and what is running."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from fuzz.cli.lazygroup import LazyGroup
from fuzz.cli.options import (
    AppContext,
    json_option,
    lock_timeout_option,
    parse_lock_timeout,
    pass_app,
)
from fuzz.cli.render import print_json
from fuzz.clients.agent import AgentClient
from fuzz.clients.orchestrator import OrchestratorUnreachableError
from fuzz.engine.model import RecordedNode, State
from fuzz.engine.planner import address_sort_key
from fuzz.errors import FuzzError
from fuzz.lifecycle.gateway import ProviderGateway
from fuzz.lifecycle.reconcile import refresh_state
from fuzz.orchestrate.datadir import orchestrator_client_tls
from fuzz.substrate.enroll import TLS_DIR, NodeIdentity

FUZZ_TAG_PREFIX = "fuzz:"


@click.command()
@json_option
@pass_app
def providers(app: AppContext, as_json: bool) -> None:
    """List the installed provider and state plugins, their distributions and versions."""
    found = app.workspace.plugins
    if as_json:
        print_json(app.out, [
            {"group": p.group, "name": p.name, "kinds": list(p.kinds), "module": p.value,
             "distribution": p.distribution, "version": p.version, "error": p.error}
            for p in found.plugins
        ])
        return
    table = Table("group", "kinds", "distribution", "version", "status")
    for p in found.plugins:
        status = f"[red]failed: {escape(p.error)}[/]" if p.error else "[green]ok[/]"
        table.add_row(p.group, ", ".join(p.kinds) or p.name, p.distribution, p.version, status)
    app.out.print(table)


def _lease_json(lease: Any) -> dict[str, Any]:
    return {"id": lease.id, "holder": lease.holder, "cpus": list(lease.cpus),
            "memory_bytes": lease.memory_bytes, "exclusive": lease.exclusive,
            "devices": {kind: list(ids.ids) for kind, ids in lease.devices.items()},
            "expires_at": lease.expires_at.ToJsonString()}


def _live_inventory(node: RecordedNode, data_dir: Path | None) -> dict[str, Any]:
    """Ask the node's agent for its inventory and leases; an unreachable agent is reported.

    An agent that enrolled in a TLS cluster answers only the orchestrator's
    certificate: the CLI presents the one in the orchestrator's ``data_dir``.
    """
    endpoint = node.observed.get("endpoint")
    token_file = node.observed.get("token_file")
    if not endpoint or not token_file:
        return {"agent": "unknown"}
    tls = None
    if NodeIdentity(Path(str(node.observed.get("state_dir", ""))) / TLS_DIR).is_complete():
        tls = orchestrator_client_tls(data_dir, node.address) if data_dir else None
        if tls is None:
            return {"agent": "unknown: it answers only the orchestrator's certificate, "
                             "which is not readable here"}
    try:
        client = AgentClient(str(endpoint), Path(str(token_file)).read_text().strip(), tls=tls)
        try:
            inventory = client.inventory(timeout=5.0)
            leases = client.list_leases()
        finally:
            client.close()
    except (OSError, FuzzError) as exc:
        return {"agent": f"unreachable: {exc}"}
    return {"agent": "ready", "cores": inventory.cores, "memory_bytes": inventory.memory_bytes,
            "numa_domains": len(inventory.numa), "architecture": inventory.architecture,
            "labels": dict(inventory.labels), "leases": [_lease_json(x) for x in leases]}


def _observed_now(recorded: State, gateway: Callable[[], ProviderGateway]) -> State:
    """``recorded`` with what the providers observe now (nothing is written).

    An agent restarted in place listens at a new endpoint: the record of the last
    apply would show the old one, unreachable. A provider that cannot be asked now
    leaves its nodes as recorded.
    """
    try:
        return refresh_state(recorded, gateway(), do_refresh=True).state
    except FuzzError:
        return recorded


@click.group(cls=LazyGroup, lazy_subcommands=dict.fromkeys(
    ("cordon", "uncordon", "drain"), "fuzz.cli.commands_node"))
def node() -> None:
    """Inspect the cluster's nodes."""


@node.command("list")
@json_option
@lock_timeout_option
@pass_app
def node_list(app: AppContext, as_json: bool, lock_timeout: str) -> None:
    """List recorded nodes with what each node's agent reports now."""
    ws = app.workspace
    with ws.locked("node list", parse_lock_timeout(lock_timeout)):
        recorded = ws.store.read()
    if recorded is not None:
        recorded = _observed_now(recorded, lambda: ws.gateway)
    block = ws.loaded.spec.orchestrator
    data_dir = ws.loaded.base_dir / block.data_dir if block else None
    nodes = sorted((recorded.resources.values() if recorded else []),
                   key=lambda n: address_sort_key(n.address))
    scheduling = _scheduling(app)
    rows = [{"address": n.address, "pool": n.pool, "provider": n.provider,
             "provider_id": n.provider_id, "status": n.status,
             "endpoint": n.observed.get("endpoint"),
             "scheduling": None if scheduling is None else scheduling.get(n.address, "UNKNOWN"),
             **_live_inventory(n, data_dir)} for n in nodes]
    if as_json:
        print_json(app.out, rows)
        return
    if not rows:
        app.out.print("No nodes recorded. Run fuzz apply to create them.")
        return
    table = Table("address", "provider", "id", "endpoint", "agent", "scheduling", "cores",
                  "memory", "labels", "leases")
    for row in rows:
        memory = f"{row['memory_bytes'] / 2**30:.1f} GiB" if "memory_bytes" in row else ""
        labels = ",".join(f"{k}={v}" for k, v in sorted(row.get("labels", {}).items())
                          if not k.startswith(FUZZ_TAG_PREFIX))
        table.add_row(escape(row["address"]), row["provider"], str(row["provider_id"] or "")[:12],
                      str(row["endpoint"] or ""), escape(row["agent"]),
                      row["scheduling"] or "-",
                      str(row.get("cores", "")), memory, escape(labels),
                      _lease_summary(row.get("leases", [])))
    app.out.print(table)


def _scheduling(app: AppContext) -> dict[str, str] | None:
    """Each registered node's state in the orchestrator (READY, CORDONED, DRAINING,
    UNREACHABLE); None without an orchestrator that answers."""
    if app.workspace.loaded.spec.orchestrator is None:
        return None
    try:
        return {found.name: found.state for found in app.workspace.orchestrator.list_nodes()}
    except OrchestratorUnreachableError:
        return None


def _lease_summary(leases: list[dict[str, Any]]) -> str:
    """``2: 4 cpus, 8.0 GiB`` — how many leases and what they hold together."""
    if not leases:
        return "-"
    cpus = sum(len(x["cpus"]) for x in leases)
    memory = sum(x["memory_bytes"] for x in leases) / 2**30
    return f"{len(leases)}: {cpus} cpus, {memory:.1f} GiB"


COMMANDS = [providers, node]
