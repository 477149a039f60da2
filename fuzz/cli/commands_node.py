"""``fuzz node cordon|uncordon|drain NODE``: an admin takes a node out of scheduling.

Cordon: nothing new is placed on the node; what runs there goes on. Drain: cordon,
then wait for the node's running tasks to end (up to ``--timeout``, default its pool's
``drain_timeout``), showing which still run; past it they are stopped and fail (or are
retried elsewhere) with the reason. Uncordon: the node takes work again. Each needs
``node:drain`` on ``node/NODE`` (the built-in admin role).
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape

from fuzz.api import orchestrator_pb2 as pb
from fuzz.cli.connection import connect, server_options
from fuzz.cli.nodedrain import DEFAULT_DRAIN_TIMEOUT, OrchestratorDrainer, node_work
from fuzz.cli.options import AppContext, json_option, parse_duration_option, pass_app
from fuzz.cli.render import print_json, print_json_line
from fuzz.errors import FuzzError
from fuzz.lifecycle.drain import DrainEvent, DrainSettings, drain_node

node_argument = click.argument("name", metavar="NODE")


def _show(app: AppContext, reply: pb.NodeWork, as_json: bool) -> None:
    work = node_work(reply)
    if as_json:
        print_json(app.out, {"node": reply.node, "state": work.state,
                             "tasks": [task.to_json() for task in work.tasks]})
        return
    running = ", ".join(task.describe() for task in work.tasks) or "none"
    app.out.print(f"Node {escape(reply.node)} is {work.state}; tasks running there: "
                  f"{escape(running)}.")


def _mark(app: AppContext, name: str, action: str, server: str | None,
          token_file: Path | None, as_json: bool) -> None:
    with connect(app, server, token_file) as client:
        replies = client.cordon_nodes([name], action)
    _show(app, replies[0], as_json)


@click.command("cordon")
@node_argument
@server_options
@json_option
@pass_app
def cordon(app: AppContext, name: str, server: str | None, token_file: Path | None,
           as_json: bool) -> None:
    """Place nothing new on NODE (its running tasks go on)."""
    _mark(app, name, "cordon", server, token_file, as_json)


@click.command("uncordon")
@node_argument
@server_options
@json_option
@pass_app
def uncordon(app: AppContext, name: str, server: str | None, token_file: Path | None,
             as_json: bool) -> None:
    """Let NODE take work again."""
    _mark(app, name, "uncordon", server, token_file, as_json)


def _default_timeout(app: AppContext, name: str) -> float:
    """NODE's pool's drain_timeout when the spec here has that pool, else the default."""
    if not app.spec_path.exists():
        return DEFAULT_DRAIN_TIMEOUT
    parts = name.split(".")  # pool.NAME.node[…]
    pool = app.workspace.loaded.spec.pools.get(parts[1]) if len(parts) > 2 else None
    return pool.drain_timeout_seconds() if pool is not None else DEFAULT_DRAIN_TIMEOUT


@click.command("drain")
@node_argument
@click.option("--timeout", "timeout", metavar="DURATION",
              help="How long to wait for the running tasks before stopping them "
                   "(default: the node's pool's drain_timeout).")
@server_options
@json_option
@pass_app
def drain(app: AppContext, name: str, timeout: str | None, server: str | None,
          token_file: Path | None, as_json: bool) -> None:
    """Cordon NODE and wait for its running tasks to end; stop them past the timeout."""
    seconds = parse_duration_option("--timeout", timeout) if timeout is not None \
        else _default_timeout(app, name)
    with connect(app, server, token_file) as client:
        if client.node_work([name])[0].state == "UNKNOWN":
            raise FuzzError(f"no node {name!r} is registered")
        client.cordon_nodes([name], "drain")

        def show(event: DrainEvent) -> None:
            if as_json:
                print_json_line(app.out, event.to_json())
            else:
                app.out.print(escape(event.describe()))

        drain_node(name, seconds, DrainSettings(OrchestratorDrainer(client),
                                                lambda record: seconds, show))
        final = client.node_work([name])[0]
    if as_json:
        print_json_line(app.out, {"type": "result", "node": final.node, "state": final.state,
                                  "tasks": len(final.tasks)})
    else:
        app.out.print(f"Node {escape(final.node)} is drained ({final.state}): nothing runs "
                      "there and nothing new is placed there; fuzz node uncordon "
                      f"{escape(final.node)} lets it take work again.")


COMMANDS = [cordon, uncordon, drain]  # under ``fuzz node``, beside commands_info's list
