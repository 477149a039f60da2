"""The spec's ``workflows:`` in ``fuzz plan`` and ``fuzz apply``: read, compare, start.

A spec's workflows belong to whoever applies it (the identity of the admin token
next to the spec, asked with WhoAmI): each declared Fuzzfile is read and validated
here, its hash compared with the orchestrator's latest run of the applier's own
workflow of that name (:mod:`fuzz.engine.workflows`), and ``apply`` starts the ones
that are new or changed, so CI runs pipelines the way it applies infrastructure.
An entry ``OWNER/NAME`` of another owner is refused: a spec never runs someone
else's workflow.
"""

from __future__ import annotations

from rich.console import Console

from fuzz.cli.workspace import Workspace
from fuzz.clients.orchestrator import NotFoundError, OrchestratorClient
from fuzz.engine.workflows import (
    DeclaredWorkflow,
    RecordedRun,
    WorkflowChange,
    plan_workflows,
)
from fuzz.orchestrate.connect import spec_target
from fuzz.spec.fuzzfile_loader import LoadedFuzzfile, load_fuzzfile
from fuzz.spec.problems import SpecError
from fuzz.spec.workflowref import split_workflow_ref

_SYMBOLS = {"start": "[green]+[/]", "rerun": "[yellow]~[/]", "none": " "}


def _read(ws: Workspace) -> dict[str, LoadedFuzzfile]:
    loaded = ws.loaded
    return {
        name: load_fuzzfile(loaded.base_dir / entry.file, display_name=entry.file)
        for name, entry in loaded.spec.workflows.items()
    }


def _applier(ws: Workspace) -> str:
    """Who applies the spec: the user of the token the CLI speaks to the orchestrator with."""
    with spec_target(ws.loaded).iam() as iam:
        return iam.whoami().user


def _own_names(ws: Workspace, keys: list[str], applier: str) -> dict[str, str]:
    """Each ``workflows:`` key's workflow name; SpecError (at the key) for one of another
    owner than ``applier``."""
    names = {}
    for key in keys:
        ref = split_workflow_ref(key)
        if ref.owner and ref.owner != applier:
            raise SpecError([ws.loaded.source.problem(
                ("workflows", key),
                f"owned by {ref.owner}, but this spec is applied as {applier}: a spec starts "
                "only the workflows of whoever applies it", at="key")])
        names[key] = ref.name
    return names


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
    """The plan for the spec's workflows (empty when it declares none), and their files
    by workflow name."""
    by_key = _read(ws)
    if not by_key:
        return [], by_key
    applier = _applier(ws)
    names = _own_names(ws, list(by_key), applier)
    files = {names[key]: loaded for key, loaded in by_key.items()}
    declared = [DeclaredWorkflow(names[key], ws.loaded.spec.workflows[key].file,
                                 loaded.content_hash, applier)
                for key, loaded in by_key.items()]
    return plan_workflows(declared, _recorded(ws.orchestrator, list(files))), files


def has_workflow_changes(changes: list[WorkflowChange]) -> bool:
    """Whether apply would start anything."""
    return any(change.action != "none" for change in changes)


def print_workflow_changes(console: Console, changes: list[WorkflowChange]) -> None:
    """One line per declared workflow, after the node plan."""
    if not changes:
        return
    console.print(f"\nWorkflows (owner {changes[0].workflow.owner}):", highlight=False)
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
