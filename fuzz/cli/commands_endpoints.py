"""``fuzz workflow endpoints`` and ``fuzz workflow connect``: a workflow's service endpoints,
in the browser (their URLs on the orchestrator's endpoint gateway) and from the terminal
(a local port forwarded to the service's port, once the service runs)."""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.table import Table

from fuzz.api import orchestrator_pb2 as pb
from fuzz.cli.commands_access import forward_reporter
from fuzz.cli.connection import connect, server_options
from fuzz.cli.options import AppContext, json_option, pass_app, workflow_argument
from fuzz.cli.portforward import DRAIN_SECONDS, ForwardTarget, OpenConnections, listen, serve
from fuzz.cli.render import print_json
from fuzz.cli.workflow_view import to_dict
from fuzz.clients.orchestrator import OrchestratorClient
from fuzz.errors import FuzzError
from fuzz.heap import keep_large_buffers_in_heap

ENDED = frozenset({"SUCCEEDED", "FAILED", "CANCELED", "NOT_RUN"})
POLL_SECONDS = 1.0


class EndpointChoiceError(FuzzError):
    """The service has no endpoint of that name, or several and none was chosen."""


class ServiceNotRunningError(FuzzError):
    """The service ended (or its workflow did) before it was ready to connect to."""


def select_endpoints(workflow: pb.Workflow, service: str | None,
                     endpoint: str | None = None) -> list[pb.Endpoint]:
    """``workflow``'s endpoints, of ``service`` (and named ``endpoint``) when given."""
    found = [e for e in workflow.endpoints if service is None or e.service == service]
    if endpoint is not None:
        found = [e for e in found if e.name == endpoint]
    if (service is not None or endpoint is not None) and not found:
        known = ", ".join(f"{e.service}/{e.name}" for e in workflow.endpoints) or "none"
        asked = f"{service}/{endpoint}" if endpoint else f"service {service}"
        raise EndpointChoiceError(f"workflow {workflow.name} has no endpoint of {asked} "
                                  f"(its endpoints: {known})")
    return found


@click.command("endpoints")
@workflow_argument
@click.argument("service", required=False)
@click.argument("endpoint", required=False)
@server_options
@json_option
@pass_app
def endpoints(app: AppContext, name: str, service: str | None, endpoint: str | None,
              server: str | None, token_file: Path | None, as_json: bool) -> None:
    """List a workflow's service endpoints and the URLs to open them at (of SERVICE, and
    its ENDPOINT, when given)."""
    with connect(app, server, token_file) as client:
        found = select_endpoints(client.get_workflow(name), service, endpoint)
    if as_json:
        print_json(app.out, [to_dict(e) for e in found])
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("SERVICE", "ENDPOINT", "SCOPE", "TYPE", "URL"):
        table.add_column(column, overflow="fold")
    for entry in found:
        table.add_row(entry.service, entry.name, entry.scope, entry.type, entry.url or "-")
    app.out.print(table)


def wait_until_running(client: OrchestratorClient, workflow: str, service: str) -> None:
    """Return once ``service``'s task runs and its readiness probe passed (READY); raise
    ServiceNotRunningError once it, or its workflow, has ended instead."""
    while True:
        current = client.get_workflow(workflow)
        task = next((t for t in current.tasks if t.key == service), None)
        state = task.state if task is not None else "WAITING"
        if state == "RUNNING" and task is not None and task.readiness == "READY":
            return
        if state in ENDED or current.state in ENDED:
            raise ServiceNotRunningError(
                f"service {service} of workflow {workflow} is not running ({state}"
                + (f": {task.error}" if task is not None and task.error else "") + ")")
        time.sleep(POLL_SECONDS)


@click.command("connect")
@workflow_argument
@click.argument("service")
@click.option("--local-port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="The local port to listen on (0: a free one, printed).")
@click.option("--endpoint", "endpoint", metavar="NAME",
              help="Which endpoint of SERVICE (needed when it has several).")
@server_options
@json_option
@pass_app
def connect_(app: AppContext, name: str, service: str, local_port: int, endpoint: str | None,
             server: str | None, token_file: Path | None, as_json: bool) -> None:
    """Open SERVICE's endpoint on 127.0.0.1 for tools that are not browsers.

    Waits until the service runs and its readiness probe passed, then forwards every
    connection to the endpoint's port in the service's container until Ctrl-C, or until
    the service stops (exit 1).
    """
    keep_large_buffers_in_heap()
    report = forward_reporter(app, as_json)
    with connect(app, server, token_file) as client:
        found = select_endpoints(client.get_workflow(name), service, endpoint)
        if len(found) > 1:
            raise EndpointChoiceError(
                f"service {service} has several endpoints ("
                f"{', '.join(e.name for e in found)}): choose one with --endpoint NAME")
        wait_until_running(client, name, service)
        server_socket = listen(local_port)
        connections = OpenConnections()
        try:
            serve(client, ForwardTarget(name, service, found[0].port), server_socket, report,
                  connections)
        except KeyboardInterrupt:
            server_socket.close()
            report({"event": "stopped", "open_connections": connections.drain(DRAIN_SECONDS)})
        finally:
            server_socket.close()


COMMANDS = (endpoints, connect_)
