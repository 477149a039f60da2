"""The states of a workflow run and of its volumes, transfers, images and tasks.

``StrEnum``s: each member is its own string value, so the store keeps the same
text in its columns, the API the same strings in its messages, and the CLI the
same words on screen; only the code names them instead of spelling literals.
"""

from __future__ import annotations

from enum import StrEnum


class WorkflowState(StrEnum):
    """Where a run stands: PENDING until its first pass, RUNNING, then one final state."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"


class TaskState(StrEnum):
    """A task's state: WAITING for its requirements, QUEUED for a node, then running, then final."""

    WAITING = "WAITING"
    QUEUED = "QUEUED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    NOT_RUN = "NOT_RUN"


class VolumeState(StrEnum):
    """A volume's state: made, filled (INGRESS), used (READY), emptied (EGRESS), then gone."""

    PENDING = "PENDING"
    INGRESS = "INGRESS"
    READY = "READY"
    EGRESS = "EGRESS"
    DONE = "DONE"
    DELETED = "DELETED"
    FAILED = "FAILED"


class TransferState(StrEnum):
    """An ingress or egress: PENDING, RUNNING, then DONE, FAILED or SKIPPED (never needed)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"


class ImageState(StrEnum):
    """An image a workflow uses: PENDING, PULLING on some node, READY or FAILED."""

    PENDING = "PENDING"
    PULLING = "PULLING"
    READY = "READY"
    FAILED = "FAILED"


class Readiness(StrEnum):
    """A service's readiness while its container runs: STARTING until its readiness probe
    passes (at once without one), then READY."""

    STARTING = "STARTING"
    READY = "READY"


TERMINAL_WORKFLOW_STATES = frozenset({WorkflowState.SUCCEEDED, WorkflowState.FAILED,
                                      WorkflowState.CANCELED})
TERMINAL_TASK_STATES = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELED,
                                  TaskState.NOT_RUN})
ACTIVE_TASK_STATES = frozenset({TaskState.STARTING, TaskState.RUNNING})
