"""``fuzz state list|show|rm|mv|pull|push|history|rollback|rekey`` and ``fuzz force-unlock``."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

import click
from rich.markup import escape

from fuzz.cli.options import (
    AppContext,
    json_option,
    lock_timeout_option,
    parse_lock_timeout,
    pass_app,
)
from fuzz.cli.render import print_json
from fuzz.engine.model import RecordedNode, State
from fuzz.engine.planner import address_sort_key
from fuzz.errors import ConfigError, FuzzError, StateError


@click.group()
def state() -> None:
    """Inspect and edit recorded state."""


def _read(app: AppContext) -> State:
    ws = app.workspace
    recorded = ws.store.read()
    if recorded is None:
        raise StateError(f"no state yet in {ws.store.describe()}; run fuzz init or fuzz apply")
    return recorded


def _node(recorded: State, address: str) -> RecordedNode:
    try:
        return recorded.resources[address]
    except KeyError:
        raise ConfigError(f"{address}: no such resource in state") from None


@state.command("list")
@json_option
@lock_timeout_option
@pass_app
def list_(app: AppContext, as_json: bool, lock_timeout: str) -> None:
    """List the recorded addresses."""
    with app.workspace.locked("state list", parse_lock_timeout(lock_timeout)):
        recorded = _read(app)
    addresses = sorted(recorded.resources, key=address_sort_key)
    if as_json:
        print_json(app.out, addresses)
        return
    for address in addresses:
        app.out.print(escape(address))


@state.command()
@click.argument("address")
@lock_timeout_option
@pass_app
def show(app: AppContext, address: str, lock_timeout: str) -> None:
    """Show one recorded node as JSON."""
    with app.workspace.locked("state show", parse_lock_timeout(lock_timeout)):
        node = _node(_read(app), address)
    print_json(app.out, node.to_json())


@state.command()
@click.argument("addresses", nargs=-1, required=True)
@lock_timeout_option
@pass_app
def rm(app: AppContext, addresses: tuple[str, ...], lock_timeout: str) -> None:
    """Forget nodes without deleting them (the provider keeps them: they become orphans)."""
    ws = app.workspace
    with ws.locked("state rm", parse_lock_timeout(lock_timeout)):
        recorded = _read(app)
        for address in addresses:
            _node(recorded, address)
            del recorded.resources[address]
        written = ws.store.write(recorded)
    for address in addresses:
        app.out.print(f"Removed {escape(address)} from state.")
    app.out.print(f"State serial is now {written.serial}. The nodes still exist; fuzz plan lists "
                  "them as orphans to delete unless you add them back with fuzz state push.")


@state.command()
@click.argument("source")
@click.argument("destination")
@lock_timeout_option
@pass_app
def mv(app: AppContext, source: str, destination: str, lock_timeout: str) -> None:
    """Move a recorded node to a new address (e.g. after renaming a pool)."""
    ws = app.workspace
    with ws.locked("state mv", parse_lock_timeout(lock_timeout)):
        recorded = _read(app)
        node = _node(recorded, source)
        if destination in recorded.resources:
            raise ConfigError(f"{destination}: already in state; remove it first")
        del recorded.resources[source]
        recorded.resources[destination] = replace(node, address=destination)
        written = ws.store.write(recorded)
    app.out.print(f"Moved {escape(source)} to {escape(destination)} (serial {written.serial}).")


@state.command()
@lock_timeout_option
@pass_app
def pull(app: AppContext, lock_timeout: str) -> None:
    """Print the whole recorded state as JSON."""
    with app.workspace.locked("state pull", parse_lock_timeout(lock_timeout)):
        recorded = _read(app)
    print_json(app.out, recorded.to_json())


@state.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Allow another lineage or a lower serial.")
@lock_timeout_option
@pass_app
def push(app: AppContext, file: Path, force: bool, lock_timeout: str) -> None:
    """Replace recorded state with FILE (same lineage and a higher serial, unless --force)."""
    try:
        incoming = State.from_json(json.loads(Path(file).read_text()))
    except FileNotFoundError as exc:
        raise ConfigError(f"{file}: no such file") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{file}: not a fuzz state file ({exc})") from exc
    ws = app.workspace
    with ws.locked("state push", parse_lock_timeout(lock_timeout)):
        written = ws.store.push(incoming, force=force)
    app.out.print(f"Pushed {file}: lineage {written.lineage}, serial {written.serial}.")


@state.command()
@click.option("--limit", default=20, show_default=True, help="How many versions to show.")
@json_option
@lock_timeout_option
@pass_app
def history(app: AppContext, limit: int, as_json: bool, lock_timeout: str) -> None:
    """List stored versions of the state, newest first (for fuzz state rollback)."""
    if limit < 1:
        raise ConfigError("--limit must be at least 1")
    with app.workspace.locked("state history", parse_lock_timeout(lock_timeout)):
        entries = app.workspace.store.history(limit)
    rows = [{**asdict(entry.version),
             "serial": entry.state.serial if entry.state else None,
             "lineage": entry.state.lineage if entry.state else None,
             "nodes": len(entry.state.resources) if entry.state else None,
             "problem": entry.problem} for entry in entries]
    if as_json:
        print_json(app.out, rows)
        return
    for row in rows:
        mark = "*" if row["current"] else " "
        what = (f"serial {row['serial']}, {row['nodes']} node(s)" if row["serial"] is not None
                else f"unreadable: {row['problem']}")
        app.out.print(f"{mark} {escape(str(row['id']))}  {row['created']}  {what}")


@state.command()
@click.argument("version")
@lock_timeout_option
@pass_app
def rollback(app: AppContext, version: str, lock_timeout: str) -> None:
    """Make an earlier VERSION (from fuzz state history) the current state again."""
    ws = app.workspace
    with ws.locked("state rollback", parse_lock_timeout(lock_timeout)):
        written = ws.store.rollback(version)
    app.out.print(f"Rolled back to version {escape(version)}: {len(written.resources)} node(s), "
                  f"now serial {written.serial}. Run fuzz plan to see what differs from reality.")


@state.command()
@lock_timeout_option
@pass_app
def rekey(app: AppContext, lock_timeout: str) -> None:
    """Write the state again with the current encryption settings and primary key."""
    ws = app.workspace
    with ws.locked("state rekey", parse_lock_timeout(lock_timeout)):
        written = ws.store.rekey()
    app.out.print(f"Rewrote {escape(ws.store.describe())}, {ws.store.encryption.describe()}, "
                  f"serial {written.serial}.")


@click.command("force-unlock")
@click.argument("lock_id")
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def force_unlock(app: AppContext, lock_id: str, force: bool) -> None:
    """Release a state lock left behind by a process that died."""
    ws = app.workspace
    holder = ws.store.backend.lock_holder()
    if holder is None:
        raise FuzzError("the state is not locked")
    if not force:
        if not sys.stdin.isatty():
            raise ConfigError("confirmation needed but stdin is not a terminal: pass --force")
        click.confirm(f"Release the lock {holder.describe()}?", abort=True)
    ws.store.backend.force_unlock(lock_id)
    app.out.print(f"Released lock {escape(lock_id)}.")


COMMANDS = [state, force_unlock]
