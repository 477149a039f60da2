"""An orchestrator's in-memory workflow built straight from a Fuzzfile's text, for tests of
the workflow's own logic (its queue, what each task is sent with) without a store."""

from __future__ import annotations

from fuzz.orchestrate.records import WorkflowRecord
from fuzz.orchestrate.workflows.jobids import JobIds
from fuzz.orchestrate.workflows.workflow import ActiveWorkflow, new_tasks
from fuzz.spec.fuzzfile_loader import parse_fuzzfile


def active_workflow(text: str, workflow_id: str = "w1") -> ActiveWorkflow:
    """The workflow ``workflow_id`` of ``text`` (owner alice, run 1), every task new."""
    fuzzfile = parse_fuzzfile(text, "Fuzzfile").fuzzfile
    record = WorkflowRecord(id=workflow_id, name="w", run=1, owner="alice",
                            file_name="Fuzzfile", fuzzfile=text, content_hash="")
    return ActiveWorkflow(record=record, fuzzfile=fuzzfile, ids=JobIds(1000, 1000),
                          volumes={}, transfers=[], images={},
                          tasks={t.key: t for t in new_tasks(workflow_id, fuzzfile)})
