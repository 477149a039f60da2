"""``fuzz server migrate`` and ``fuzz server migrate-store``: the orchestrator's store.

``migrate`` brings the store the spec names (the data dir's SQLite file, or
``orchestrator.store``'s PostgreSQL database) to this fuzz's schema and says what it
did; ``fuzz server`` does the same when it starts, so running it first is for sites
that migrate ahead of an upgrade (or from a Kubernetes job). ``migrate-store`` moves a
site's records from its SQLite file to PostgreSQL while no server runs on the data dir.
"""

from __future__ import annotations

from pathlib import Path

import click

from fuzz.cli.commands_server import LOCK_FILE, orchestrator_block, postgres_target
from fuzz.cli.options import AppContext, json_option, pass_app
from fuzz.cli.render import print_json
from fuzz.errors import FuzzError
from fuzz.fsutil import LockHeldError, acquire_lock, release_lock
from fuzz.orchestrate.store_target import PostgresTarget

SQLITE_PREFIX = "sqlite:"
DB_FILE = "server.db"  # fuzz.orchestrate.server's, without importing the server


def _data_dir(app: AppContext, data_dir: Path | None) -> Path:
    block, base, _ = orchestrator_block(app)
    return (data_dir or base / block.data_dir).absolute()


def _sqlite_path(value: str) -> Path:
    if not value.startswith(SQLITE_PREFIX):
        raise click.BadParameter(f"{value!r} is not sqlite:PATH", param_hint="'--from'")
    return Path(value.removeprefix(SQLITE_PREFIX)).absolute()


@click.command("migrate")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="The data dir whose SQLite store to migrate (default: the spec's "
              "orchestrator.data_dir; with orchestrator.store, its PostgreSQL database).")
@json_option
@pass_app
def migrate(app: AppContext, data_dir: Path | None, as_json: bool) -> None:
    """Apply the store's pending schema migrations and say what was done."""
    from fuzz.orchestrate.store import SCHEMA_VERSION, Store

    block, base, _ = orchestrator_block(app)
    target: Path | PostgresTarget | None = postgres_target(block, base) \
        if data_dir is None else None
    if target is None:
        directory = _data_dir(app, data_dir)
        if not directory.is_dir():
            raise FuzzError(f"no orchestrator data dir at {directory} (`fuzz init` makes one)")
        target = directory / DB_FILE
    store = Store(target)
    store.close()
    if as_json:
        print_json(app.out, {"store": store.describe(), "schema": SCHEMA_VERSION,
                             "done": store.migrated})
        return
    for line in store.migrated:
        click.echo(line)
    click.echo(f"store {store.describe()}: schema {SCHEMA_VERSION}"
               f"{'' if store.migrated else ', nothing to do'}")


@click.command("migrate-store")
@click.option("--from", "source", metavar="sqlite:PATH",
              help="The SQLite store to move (default: the data dir's server.db).")
@click.option("--to", "destination", metavar="postgres://HOST/DB",
              help="The empty PostgreSQL database to move it to (default: the spec's "
              "orchestrator.store); no password in it.")
@click.option("--password-file", type=click.Path(dir_okay=False, path_type=Path),
              help="With --to: a file holding the password (else PGPASSWORD, ~/.pgpass).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="The data dir (default: the spec's orchestrator.data_dir).")
@json_option
@pass_app
def migrate_store(app: AppContext, source: str | None, destination: str | None,
                  password_file: Path | None, data_dir: Path | None, as_json: bool) -> None:
    """Move the orchestrator's records from SQLite to PostgreSQL, counted on both sides.

    The orchestrator must be stopped (its data dir's lock is held meanwhile, so none
    starts); the copy is one transaction, so an interrupted move can be run again.
    """
    from fuzz.orchestrate.store import Store
    from fuzz.orchestrate.store_copy import copy_store

    block, base, _ = orchestrator_block(app)
    path = _sqlite_path(source) if source else _data_dir(app, data_dir) / DB_FILE
    if destination is not None:
        target = PostgresTarget(destination, password_file.absolute() if password_file
                                else None)
    elif (spec_target := postgres_target(block, base)) is not None:
        target = spec_target
    else:
        raise FuzzError("no PostgreSQL store to move to: give --to postgres://HOST/DB or "
                        "set orchestrator.store in the spec")
    if not path.is_file():
        raise FuzzError(f"no SQLite store at {path}")
    try:
        lock = acquire_lock(path.parent, LOCK_FILE, owner="migrate-store", wait=0)
    except LockHeldError as exc:
        raise FuzzError(f"an orchestrator runs on {path.parent}: stop it (`fuzz server "
                        "--stop`) before moving its store") from exc
    try:
        from_store, to_store = Store(path), Store(target)
        try:
            counts, copied = copy_store(from_store, to_store)
        finally:
            from_store.close()
            to_store.close()
    finally:
        release_lock(lock)
    if as_json:
        print_json(app.out, {"from": str(path), "to": target.url, "copied": copied,
                             "rows": counts})
        return
    for table, count in counts.items():
        click.echo(f"{table:<16} {count}")
    click.echo(f"{'copied' if copied else 'already copied'}: {sum(counts.values())} rows "
               f"from {path} to {target.url}, counted on both sides; set orchestrator.store "
               "to it and start the server")


COMMANDS = (migrate, migrate_store)
