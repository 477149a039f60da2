"""``fuzz workflow exec|port-forward``: into a running job, over gRPC streams (never SSH)."""

from __future__ import annotations

import io
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

import click

from fuzz.cli.connection import connect, server_options
from fuzz.cli.execsession import ExecCommand, run_exec
from fuzz.cli.options import (
    AppContext,
    federation_option,
    json_option,
    pass_app,
    workflow_argument,
)
from fuzz.cli.portforward import (
    DRAIN_SECONDS,
    ForwardTarget,
    OpenConnections,
    Report,
    check_running,
    listen,
    parse_ports,
    serve,
)
from fuzz.errors import ConfigError
from fuzz.heap import keep_large_buffers_in_heap
from fuzz.units import format_bytes


@click.command("exec")
@workflow_argument
@click.argument("job")
@click.argument("command", nargs=-1, required=True)
@click.option("--tty", "-t", is_flag=True,
              help="Run it on a terminal (this one, in raw mode; window changes follow; "
              "its TERM is passed on).")
@click.option("--env", "-e", "env", multiple=True, metavar="KEY=VALUE",
              help="Set a variable over the job's environment (repeatable).")
@click.option("--cwd", default="", help="Working directory (default: the job's).")
@federation_option
@server_options
@json_option
@pass_app
def exec_(app: AppContext, name: str, job: str, command: tuple[str, ...], tty: bool,
          env: tuple[str, ...], cwd: str, server: str | None, token_file: Path | None,
          as_json: bool) -> None:
    """Run COMMAND in JOB's running container (a task-array task is JOB[INDEX]).

    Put `--` before the command: fuzz workflow exec NAME JOB -- sh -c 'ls /data'.
    Exits with the command's exit code.
    """
    if tty and as_json:
        raise ConfigError("--json and --tty do not go together")
    if tty and "TERM" in os.environ and not any(item.startswith("TERM=") for item in env):
        env = (f"TERM={os.environ['TERM']}", *env)  # the process draws on this terminal
    request = ExecCommand(name, job, command, env, cwd, tty)
    stdout = io.BytesIO() if as_json else sys.stdout.buffer
    stderr = io.BytesIO() if as_json else sys.stderr.buffer
    with connect(app, server, token_file, name) as client:
        outcome = run_exec(client, request, sys.stdin.fileno(), stdout, stderr)
    if as_json:
        assert isinstance(stdout, io.BytesIO) and isinstance(stderr, io.BytesIO)
        sys.stdout.write(json.dumps({
            "exit_code": outcome.exit_code,
            "path": outcome.path,
            "stdout": stdout.getvalue().decode(errors="replace"),
            "stderr": stderr.getvalue().decode(errors="replace"),
        }) + "\n")
    sys.exit(outcome.exit_code)


def forward_reporter(app: AppContext, as_json: bool) -> Report:
    """Print each port-forward event: a JSON line, or a line for people."""
    lock = threading.Lock()

    def report(event: dict[str, Any]) -> None:
        with lock:
            if as_json:
                sys.stdout.write(json.dumps(event) + "\n")
                sys.stdout.flush()
            else:
                app.out.print(_describe(event))

    return report


def _describe(event: dict[str, Any]) -> str:
    kind = event["event"]
    if kind == "listening":
        return (f"forwarding {event['address']} -> {event['workflow']}/{event['job']} "
                f"port {event['remote_port']} (Ctrl-C to stop)")
    if kind == "open":
        return f"connection {event['connection']} from {event['peer']}: open"
    if kind == "close":
        traffic = (f"sent {format_bytes(event['sent_bytes'])}, "
                   f"received {format_bytes(event['received_bytes'])}")
        if event["error"]:
            return f"connection {event['connection']}: failed ({traffic}): {event['error']}"
        return f"connection {event['connection']}: closed ({traffic})"
    left = event["open_connections"]
    return f"stopped ({left} connection(s) cut)" if left else "stopped"


@click.command("port-forward")
@workflow_argument
@click.argument("job")
@click.argument("ports", metavar="LOCAL_PORT:REMOTE_PORT")
@federation_option
@server_options
@json_option
@pass_app
def port_forward(app: AppContext, name: str, job: str, ports: str, server: str | None,
                 token_file: Path | None, as_json: bool) -> None:
    """Forward 127.0.0.1:LOCAL_PORT to REMOTE_PORT inside JOB's running container.

    Every connection is its own stream through the orchestrator to the job's
    node; runs until Ctrl-C, or until the job no longer runs (exit 1). A job that
    is not running is refused at once. LOCAL_PORT 0 picks a free port (printed).
    """
    local, remote = parse_ports(ports)
    keep_large_buffers_in_heap()
    report = forward_reporter(app, as_json)
    with connect(app, server, token_file, name) as client:
        target = ForwardTarget(name, job, remote)
        check_running(client, target)  # fail fast, before listening
        server_socket = listen(local)
        connections = OpenConnections()
        try:
            serve(client, target, server_socket, report, connections)
        except KeyboardInterrupt:
            server_socket.close()  # no new connections while the open ones finish
            left = connections.drain(DRAIN_SECONDS)
            report({"event": "stopped", "open_connections": left})
        finally:
            server_socket.close()


COMMANDS = (exec_, port_forward)
