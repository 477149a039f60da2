"""The spec's ``workflows:`` in ``fuzz plan`` and ``fuzz apply``: read, compare, start.

Each declared Fuzzfile is read and validated here, its hash compared with the
orchestrator's latest run of the same name (:mod:`fuzz.engine.workflows`), and
``apply`` starts the ones that are new or changed, so CI runs pipelines the way
it applies infrastructure.
"""

from __future__ import annotations

from rich.console import Console

from fuzz.cli.workspace import Workspace
from fuzz.engine.workflows import (
    DeclaredWorkflow,
    RecordedRun,
    WorkflowChange,
    plan_workflows,
)
from fuzz.orchestrate.client import NotFoundError, OrchestratorClient
from fuzz.spec.fuzzfile_loader import LoadedFuzzfile, load_fuzzfile

_SYMBOLS = {"start": "[green]+[/]", "rerun": "[yellow]~[/]", "none": " "}


def _read(ws: Workspace) -> dict[str, LoadedFuzzfile]:
    loaded = ws.loaded
    return {
        name: load_fuzzfile(loaded.base_dir / entry.file, display_name=entry.file)
        for name, entry in loaded.spec.workflows.items()
    }


def _recorded(client: OrchestratorClient, names: list[str]) -> dict[str, RecordedRun]:
    found = {}
    for name in names:
        try:
            run = client.get_workflow(name)
        except NotFoundError:
            continue
        found[name] = RecordedRun(run.run, run.state, run.content_hash)
    return found


def workflow_changes(ws: Workspace) -> tuple[list[WorkflowChange], dict[str, LoadedFuzzfile]]:
    """The plan for the spec's workflows (empty when it declares none), and their files."""
    files = _read(ws)
    if not files:
        return [], files
    declared = [DeclaredWorkflow(name, ws.loaded.spec.workflows[name].file, f.content_hash)
                for name, f in files.items()]
    return plan_workflows(declared, _recorded(ws.orchestrator, list(files))), files


def has_workflow_changes(changes: list[WorkflowChange]) -> bool:
    """Whether apply would start anything."""
    return any(change.action != "none" for change in changes)


def print_workflow_changes(console: Console, changes: list[WorkflowChange]) -> None:
    """One line per declared workflow, after the node plan."""
    if not changes:
        return
    console.print("\nWorkflows:")
    for change in changes:
        verb = {"start": "start", "rerun": "new run of", "none": "unchanged"}[change.action]
        console.print(f"  {_SYMBOLS[change.action]} {verb} {change.workflow.name}: "
                      f"{change.reason}", highlight=False)


def start_changed(ws: Workspace, console: Console, changes: list[WorkflowChange],
                  files: dict[str, LoadedFuzzfile], as_json: bool) -> list[dict[str, object]]:
    """Start every new or changed workflow; returns what was started (for --json)."""
    started: list[dict[str, object]] = []
    for change in changes:
        if change.action == "none":
            continue
        loaded = files[change.workflow.name]
        run = ws.orchestrator.start_workflow(change.workflow.name, loaded.text,
                                             change.workflow.file)
        started.append({"name": run.name, "run": run.run, "reason": change.reason})
        if not as_json:
            console.print(f"started workflow {run.name} run {run.run} ({change.reason})")
    return started
