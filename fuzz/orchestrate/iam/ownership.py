"""Whose workflow a request is about: the caller's own, unless it names another owner.

Workflows are keyed by (owner, name). A request names a workflow by ``name`` and an
optional ``owner``; empty means the caller. The answer for a workflow the caller
may not read is the one for a workflow that does not exist, worded from what the
caller asked (``NAME`` or ``OWNER/NAME``) only, so it tells nothing of other users.
"""

from __future__ import annotations

from dataclasses import dataclass

from fuzz.orchestrate.iam.policy import PolicyError, check_name
from fuzz.orchestrate.workflows.base import WorkflowNotFoundError
from fuzz.orchestrate.workflows.workflow import WorkflowNameError
from fuzz.spec.workflowref import WorkflowRef


@dataclass(frozen=True)
class OwnedWorkflow:
    """A workflow a request is about: its owner and name, and how the caller named it."""

    owner: str
    name: str
    shown: str  # ``NAME``, ``OWNER/NAME`` or the run id, as the caller asked
    run_id: str = ""  # one run, when the caller named it by its id; empty: the latest run

    def not_found(self) -> WorkflowNotFoundError:
        """The one answer for "no such workflow" and "not one you may see"."""
        if self.run_id:
            return WorkflowNotFoundError(f"no workflow run {self.shown!r}")
        return WorkflowNotFoundError(f"no workflow {self.shown!r}")


def unknown_run(run_id: str) -> OwnedWorkflow:
    """What a request naming the run ``run_id`` is about when no such run exists."""
    return OwnedWorkflow("", "", run_id, run_id)


def run_workflow(owner: str, name: str, run_id: str) -> OwnedWorkflow:
    """The run ``run_id`` of ``owner``'s ``name``, as a request that named it by its id."""
    return OwnedWorkflow(owner, name, run_id, run_id)


def owned_workflow(caller: str, owner: str, name: str) -> OwnedWorkflow:
    """The workflow ``name`` of ``owner`` (``caller`` when empty); WorkflowNameError when
    ``owner`` is no user name."""
    if owner:
        try:
            check_name("owner", owner)
        except PolicyError as exc:
            raise WorkflowNameError(str(exc)) from None
    return OwnedWorkflow(owner or caller, name, str(WorkflowRef(owner, name)))
