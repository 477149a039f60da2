"""How a user names a workflow: ``NAME``, their own, or ``OWNER/NAME``, another owner's;
or one run of a workflow by its run id, ``OWNER.NAME.RUN``.

Workflows are keyed by (owner, name): two users' workflows of one name are two
workflows. A bare name always means the caller's own; acting on another owner's
workflow is asked for explicitly with ``OWNER/NAME`` (and IAM must allow it on
``workflow/<owner>/<name>``). Names have no ``/`` (``WORKFLOW_NAME_PATTERN``), so
the split is never ambiguous.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from fuzz.errors import FuzzError
from fuzz.spec.names import iam_name_problem

WORKFLOW_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
"""Workflow names: letters, digits, '_' and '-', starting with a letter or digit, ≤ 64."""


@dataclass(frozen=True)
class WorkflowRef:
    """A workflow as a user named it; ``owner`` empty: the caller's own."""

    owner: str
    name: str

    def __str__(self) -> str:
        """As the user wrote it: ``NAME`` or ``OWNER/NAME``."""
        return f"{self.owner}/{self.name}" if self.owner else self.name


def is_run_id(text: str) -> bool:
    """Whether ``text`` names one run by its id (``OWNER.NAME.RUN``, as the orchestrator
    gives it) rather than a workflow: names have no ``.``, ids always do."""
    return "." in text and "/" not in text


def split_workflow_ref(text: str) -> WorkflowRef:
    """``NAME`` or ``OWNER/NAME`` as a reference, unchecked (the orchestrator checks)."""
    owner, _, name = text.rpartition("/")
    return WorkflowRef(owner, name)


def workflow_ref_problem(text: str) -> str | None:
    """Why ``text`` is no valid ``NAME`` or ``OWNER/NAME``; None when it is."""
    ref = split_workflow_ref(text)
    if "/" in text:
        problem = iam_name_problem("owner", ref.owner)  # an owner is a user
        if problem is not None:
            return problem
    if not WORKFLOW_NAME_PATTERN.fullmatch(ref.name):
        return (f"invalid workflow name {ref.name!r}: use 1-64 letters, digits, '_' or '-', "
                "starting with a letter or digit")
    return None


RUN_ID_PATTERN = re.compile(r"^(?:[^/\s]+\.)?[A-Za-z0-9][A-Za-z0-9_-]{0,63}\.[0-9]+$")
"""Run ids: ``OWNER.NAME.RUN`` (``NAME.RUN`` for runs recorded before workflows had owners)."""


def workflow_or_run_problem(text: str) -> str | None:
    """Why ``text`` names neither a workflow (``[OWNER/]NAME``) nor a run (its id); None
    when it names one."""
    if is_run_id(text):
        if RUN_ID_PATTERN.fullmatch(text):
            return None
    elif workflow_ref_problem(text) is None:
        return None
    return (f"{text!r} is neither a workflow name ([OWNER/]NAME: 1-64 letters, digits, '_' "
            "or '-') nor a run id (OWNER.NAME.RUN, as `fuzz workflow list` shows)")


class TaskNotFoundError(FuzzError):
    """No task of that name in the workflow."""


def task_key(tasks: Iterable[tuple[str, str]], task: str, workflow: str) -> str:
    """The key of the task the user named ``task`` among ``tasks`` ((key, job) pairs) of
    ``workflow``: a task key, or a job with one task; TaskNotFoundError otherwise."""
    pairs = list(tasks)
    if any(key == task for key, _ in pairs):
        return task
    of_job = [key for key, job in pairs if job == task]
    if len(of_job) == 1:
        return of_job[0]
    if of_job:
        raise TaskNotFoundError(
            f"job {task!r} has {len(of_job)} tasks: name one, e.g. {of_job[0]!r}")
    raise TaskNotFoundError(f"workflow {workflow!r} has no job or task {task!r}")
