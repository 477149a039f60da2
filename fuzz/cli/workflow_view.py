"""How workflows look on a terminal and in ``--json``: the status table Fuzzball users know.

One row per workflow, volume (and each of its transfers), image and task, with
its state, node, start and end times, and error, as in Fuzzball's status view.
"""

from __future__ import annotations

import time
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from rich.table import Table
from rich.text import Text

from fuzz.api import orchestrator_pb2 as pb
from fuzz.units import format_bytes

STATE_STYLES = {
    "SUCCEEDED": "green", "DONE": "green", "READY": "green", "RUNNING": "cyan",
    "STARTING": "cyan", "PULLING": "cyan", "INGRESS": "cyan", "EGRESS": "cyan",
    "FAILED": "red", "CANCELED": "yellow", "NOT_RUN": "yellow", "SKIPPED": "yellow",
    "QUEUED": "blue", "WAITING": "dim", "PENDING": "dim", "DELETED": "dim",
}


def to_dict(message: Message) -> dict[str, Any]:
    """An API message as a JSON-ready dict (field names as in the .proto, zeros included)."""
    return MessageToDict(message, always_print_fields_with_no_presence=True,
                         preserving_proto_field_name=True)


def clock(seconds: float) -> str:
    """Unix seconds as a local wall-clock time, or '-' when unset."""
    return time.strftime("%H:%M:%S", time.localtime(seconds)) if seconds else "-"


def _state(state: str) -> Text:
    return Text(state, style=STATE_STYLES.get(state, ""))


def _transfer_detail(move: pb.Transfer) -> str:
    if move.waiting_for:
        return move.waiting_for
    if move.state == "DONE":
        cached = "cached " if move.cached else ""
        return f"{cached}{format_bytes(move.bytes_done)} sha256:{move.sha256[:12]}"
    if move.bytes_total:
        return f"{format_bytes(move.bytes_done)} of {format_bytes(move.bytes_total)}"
    if move.bytes_done:
        return format_bytes(move.bytes_done)
    return ""


def status_table(workflow: pb.Workflow) -> Table:
    """The status table of one workflow run."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("KIND", "NAME", "STATE", "NODE", "STARTED", "FINISHED", "DETAIL / ERROR"):
        table.add_column(column, overflow="fold")
    table.add_row("workflow", f"{workflow.name} (run {workflow.run})", _state(workflow.state),
                  "", clock(workflow.started), clock(workflow.finished), workflow.error)
    for volume in workflow.volumes:
        table.add_row("volume", volume.name, _state(volume.state), "", "", "",
                      volume.error or volume.reference)
        for move in volume.transfers:
            arrow = f"{move.source} -> {move.destination}"
            detail = move.error or " ".join(p for p in (arrow, _transfer_detail(move)) if p)
            table.add_row(f"  {move.direction}", volume.name, _state(move.state), "", "", "",
                          detail)
    for image in workflow.images:
        table.add_row("image", image.uri, _state(image.state), "", "", "",
                      image.error or image.digest)
    for task in workflow.tasks:
        detail = task.error or task.waiting_for
        if task.attempt > 1 and not task.error:
            detail = f"attempt {task.attempt}"
        state = _state(task.state)
        if task.kind == "service":
            detail = service_detail(task)
            if task.readiness:
                state = Text.assemble(state, " ", _state(task.readiness))
        table.add_row(task.kind or "job", task.key, state, ",".join(task.nodes),
                      clock(task.started), clock(task.finished), detail)
        if len(task.nodes) > 1:  # a multinode job: one row per node, rank 0 (its head) first
            for rank, node in enumerate(task.nodes):
                table.add_row(f"  node {rank}", task.key, _state(task.state), node, "", "", "")
    for endpoint in workflow.endpoints:
        table.add_row("endpoint", f"{endpoint.service}/{endpoint.name}", "", "", "", "",
                      endpoint_detail(endpoint))
    return table


def endpoint_detail(endpoint: pb.Endpoint) -> str:
    """An endpoint's URL and who may open it, as status and describe show them."""
    return f"{endpoint.url or '(no endpoint gateway)'} (scope {endpoint.scope})"


def service_detail(task: pb.Task) -> str:
    """What a service's row says: its probe's last error while it is not ready, its
    restarts, its address, else why it ended or waits."""
    parts = []
    if task.readiness == "STARTING" and task.probe_error:
        parts.append(f"probe: {task.probe_error}")
    elif task.readiness == "READY" and task.addresses and task.addresses[0]:
        parts.append(f"{task.key}.svc at {task.addresses[0]}")
    if task.restarts:
        parts.append(f"restarts {task.restarts}")
    if task.error and task.readiness != "READY":
        parts.append(task.error)
    return "; ".join(parts) or task.waiting_for


def list_table(workflows: list[pb.Workflow]) -> Table:
    """One row per workflow (its latest run)."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("OWNER", "NAME", "RUN", "RUN ID", "STATE", "CREATED", "FINISHED", "ERROR"):
        table.add_column(column, overflow="fold")
    for workflow in workflows:
        table.add_row(workflow.owner, workflow.name, str(workflow.run), workflow.id,
                      _state(workflow.state),
                      clock(workflow.created), clock(workflow.finished), workflow.error)
    return table
