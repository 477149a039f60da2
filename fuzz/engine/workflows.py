"""Workflows declared in the cluster spec, planned like nodes: start, new run, or unchanged.

A declared workflow is a name and the content hash of its Fuzzfile, owned by whoever
applies the spec; the recorded side is the content hash of the orchestrator's latest
run of that owner's workflow of that name (None when there is none). Pure: the CLI
reads the files and asks the orchestrator.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

WorkflowAction = Literal["start", "rerun", "none"]


@dataclass(frozen=True)
class DeclaredWorkflow:
    """A workflow of the spec: its name, its Fuzzfile (as the user wrote it) and hash,
    and its owner: whoever applies the spec."""

    name: str
    file: str
    content_hash: str
    owner: str = ""


@dataclass(frozen=True)
class RecordedRun:
    """The orchestrator's latest run of a workflow name."""

    run: int
    state: str
    content_hash: str


@dataclass(frozen=True)
class WorkflowChange:
    """What apply does about one declared workflow, and why."""

    workflow: DeclaredWorkflow
    action: WorkflowAction
    reason: str

    def to_json(self) -> dict[str, str]:
        """The change as a JSON-ready mapping (``fuzz plan --json``)."""
        return {"name": self.workflow.name, "owner": self.workflow.owner,
                "file": self.workflow.file, "action": self.action,
                "reason": self.reason, "content_hash": self.workflow.content_hash}


def plan_workflows(declared: Sequence[DeclaredWorkflow],
                   recorded: Mapping[str, RecordedRun]) -> list[WorkflowChange]:
    """For each declared workflow: start it (never run), run it anew (its file changed) or not.

    A workflow whose latest run has the same content hash is unchanged, whatever
    that run's outcome: re-running an unchanged pipeline is a decision for
    ``fuzz workflow start``, not for apply.
    """
    changes = []
    for workflow in sorted(declared, key=lambda w: w.name):
        run = recorded.get(workflow.name)
        if run is None:
            changes.append(WorkflowChange(workflow, "start", "no run recorded"))
        elif run.content_hash != workflow.content_hash:
            changes.append(WorkflowChange(
                workflow, "rerun",
                f"{workflow.file} changed since run {run.run} "
                f"(sha256 {run.content_hash[:12]} -> {workflow.content_hash[:12]})"))
        else:
            changes.append(WorkflowChange(
                workflow, "none", f"run {run.run} ({run.state.lower()}) used this content"))
    return changes
