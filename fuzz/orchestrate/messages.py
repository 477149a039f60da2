"""Orchestrator records as API messages (what `fuzz workflow status` and `list` receive)."""

from __future__ import annotations

from fuzz.api import orchestrator_pb2 as pb
from fuzz.orchestrate.cluster.nodes import NodeDirectory, NodeUse
from fuzz.orchestrate.records import NodeRecord, SecretRecord, WorkflowRecord
from fuzz.orchestrate.secrets import ACCOUNT_PREFIX
from fuzz.orchestrate.workflows.base import WorkflowSnapshot


def workflow_summary(record: WorkflowRecord) -> pb.Workflow:
    """A workflow without its volumes, images and tasks."""
    return pb.Workflow(
        name=record.name, run=record.run, state=record.state, error=record.error,
        owner=record.owner, content_hash=record.content_hash, created=record.created,
        started=record.started, finished=record.finished, file_name=record.file_name,
        id=record.id, account=record.account,
    )


def workflow_message(snapshot: WorkflowSnapshot) -> pb.Workflow:
    """A workflow with every volume (and its transfers), image and task."""
    message = workflow_summary(snapshot.record)
    for volume in sorted(snapshot.volumes, key=lambda v: v.name):
        moves = [m for m in snapshot.transfers if m.volume == volume.name]
        message.volumes.append(pb.Volume(
            name=volume.name, reference=volume.reference, state=volume.state,
            error=volume.error,
            transfers=[pb.Transfer(
                direction=m.direction, source=m.source, destination=m.destination,
                state=m.state, bytes_done=m.bytes_done, bytes_total=m.bytes_total,
                sha256=m.sha256, error=m.error, waiting_for=m.waiting_for,
            ) for m in sorted(moves, key=lambda m: (m.direction != "ingress", m.seq))],
        ))
    for image in sorted(snapshot.images, key=lambda i: i.uri):
        message.images.append(pb.Image(uri=image.uri, state=image.state, digest=image.digest,
                                       error=image.error))
    for task in snapshot.tasks:
        message.tasks.append(pb.Task(
            key=task.key, job=task.job, index=task.index, state=task.state, nodes=task.nodes,
            attempt=task.attempt, exit_code=task.exit_code, started=task.started,
            finished=task.finished, error=task.error, waiting_for=task.waiting_for,
            kind=task.kind, readiness=task.readiness, probe_error=task.probe_error,
            restarts=task.restarts, addresses=task.addresses,
        ))
    return message


def node_state(record: NodeRecord, directory: NodeDirectory) -> str:
    """READY, CORDONED, DRAINING, UNREACHABLE or LOST (silent past the node's grace)."""
    if directory.lost(record.name):
        return "LOST"
    if not directory.reachable(record):
        return "UNREACHABLE"
    return directory.cordon_mode(record.name).upper() or "READY"


def node_message(record: NodeRecord, use: NodeUse, directory: NodeDirectory) -> pb.Node:
    """A registered node with what the orchestrator's tasks hold on it."""
    return pb.Node(
        name=record.name, endpoint=record.endpoint, state=node_state(record, directory),
        cores=record.cores, memory_bytes=record.memory_bytes, devices=record.devices,
        free_cores=max(record.cores - use.cores, 0),
        free_memory_bytes=max(record.memory_bytes - use.memory_bytes, 0),
        running_tasks=use.tasks, last_seen=record.last_seen, labels=record.labels,
    )


def secret_message(record: SecretRecord) -> pb.Secret:
    """A secret's name, owner, size and creation time: never its value."""
    account = record.owner.removeprefix(ACCOUNT_PREFIX) \
        if record.owner.startswith(ACCOUNT_PREFIX) else ""
    return pb.Secret(name=record.name, owner="" if account else record.owner,
                     account=account, created=record.created, size=record.size)
