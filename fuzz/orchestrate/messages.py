"""Orchestrator records as API messages (what `fuzz workflow status` and `list` receive)."""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import Any

from fuzz.api import orchestrator_pb2 as pb
from fuzz.orchestrate.cluster.nodes import NodeDirectory, NodeUse
from fuzz.orchestrate.records import NodeRecord, SecretRecord, TaskRecord, WorkflowRecord
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


def workflow_message(snapshot: WorkflowSnapshot, kept: TaskMessages | None = None
                     ) -> pb.Workflow:
    """A workflow with every volume (and its transfers), image and task; ``kept``: a
    watcher's task messages from its last update, of which those still true are reused."""
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
                cached=m.cached, bytes_fetched=m.bytes_fetched,
            ) for m in sorted(moves, key=lambda m: (m.direction != "ingress", m.seq))],
        ))
    for image in sorted(snapshot.images, key=lambda i: i.uri):
        message.images.append(pb.Image(uri=image.uri, state=image.state, digest=image.digest,
                                       error=image.error))
    message.tasks.extend((kept or TaskMessages()).messages(snapshot.tasks))
    return message


# What a task's message is built from: the fields of TaskRecord that pb.Task shows.
TASK_FIELDS = ("key", "job", "index", "state", "nodes", "attempt", "exit_code", "started",
               "finished", "error", "waiting_for", "kind", "readiness", "probe_error",
               "restarts", "addresses")
_LIST_FIELDS = frozenset({"nodes", "addresses"})
_task_values = operator.attrgetter(*TASK_FIELDS)


def _copied(values: tuple[Any, ...]) -> tuple[Any, ...]:
    """``values`` with copies of its lists: a kept key stays what its message was built
    from, whatever later happens to the record's lists."""
    return tuple(list(value) if name in _LIST_FIELDS else value
                 for name, value in zip(TASK_FIELDS, values, strict=True))


class TaskMessages:
    """One watcher's last message of each task, keyed by what it was built from.

    A watcher's update rebuilds only the tasks whose fields changed since its last one:
    reading a task's fields costs a fraction of building its message, so an update of a
    task array of thousands, a few of which changed, costs little more than those few.
    Not thread-safe: each watcher keeps its own.
    """

    def __init__(self) -> None:
        """Nothing kept yet: the first update builds every task's message."""
        self._kept: dict[str, tuple[tuple[Any, ...], pb.Task]] = {}
        self.built = 0  # task messages built so far (the rest were kept ones)

    def messages(self, tasks: Iterable[TaskRecord]) -> list[pb.Task]:
        """The messages of ``tasks``, in their order; only those of tasks that are new or
        changed are built. Tasks no longer among ``tasks`` are forgotten."""
        kept: dict[str, tuple[tuple[Any, ...], pb.Task]] = {}
        found = []
        for task in tasks:
            values = _task_values(task)
            entry = self._kept.get(task.key)
            if entry is None or entry[0] != values:
                values = _copied(values)
                entry = (values, pb.Task(**dict(zip(TASK_FIELDS, values, strict=True))))
                self.built += 1
            kept[task.key] = entry
            found.append(entry[1])
        self._kept = kept
        return found


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
