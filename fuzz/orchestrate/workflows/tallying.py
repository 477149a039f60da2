"""The runner's way to the store, counting each task it writes in its workflow's DAG tally.

Every change of a task's state is written (a restart must see it), under the runner's
lock, so counting the tasks as they are written keeps each workflow's
:class:`~fuzz.orchestrate.workflows.dag.TaskTally` exact without a call at every
place a state changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fuzz.orchestrate.records import TaskRecord
from fuzz.orchestrate.store import Store
from fuzz.orchestrate.store_group import GroupCommit
from fuzz.orchestrate.workflows.workflow import ActiveWorkflow


class TallyingCommit(GroupCommit):
    """A :class:`GroupCommit` that counts each task written in its active workflow's tally
    (called, as every write of a task is, under the runner's lock)."""

    def __init__(self, store: Store, active: Mapping[str, ActiveWorkflow]) -> None:
        """Write to ``store``; ``active``: the runner's workflows being run, by id."""
        super().__init__(store)
        self._active = active

    def save(self, *records: Any) -> None:
        """Count the tasks among ``records``, then write them now (see :class:`GroupCommit`)."""
        self._count(records)
        super().save(*records)

    def save_later(self, *records: Any) -> int:
        """Count the tasks among ``records``, then queue them (see :class:`GroupCommit`)."""
        self._count(records)
        return super().save_later(*records)

    def queue(self, *records: Any) -> None:
        """Count the tasks among ``records``, then queue them, unwaited (see
        :class:`GroupCommit`)."""
        self._count(records)
        super().queue(*records)

    def _count(self, records: Iterable[Any]) -> None:
        for record in records:
            if isinstance(record, TaskRecord):
                workflow = self._active.get(record.workflow_id)
                if workflow is not None:
                    workflow.tally.note(record)
