"""How plans, apply progress and results look: coloured text for people, JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from fuzz.engine.apply import ApplyEvent, ApplyResult
from fuzz.engine.model import Action, Change, Plan
from fuzz.lifecycle.drain import NodeTask

if TYPE_CHECKING:  # only its type: printing needs no pydantic
    from fuzz.spec.problems import Problem

SYMBOLS = {
    Action.CREATE: ("+", "green", "created"),
    Action.UPDATE: ("~", "yellow", "updated in place"),
    Action.REPLACE: ("-/+", "magenta", "replaced"),
    Action.DELETE: ("-", "red", "destroyed"),
}
VERBS = {
    Action.CREATE: ("Creating", "Creation"),
    Action.UPDATE: ("Modifying", "Modifications"),
    Action.REPLACE: ("Replacing", "Replacement"),
    Action.DELETE: ("Destroying", "Destruction"),
}


def print_json(console: Console, data: Any) -> None:
    """Print ``data`` as JSON, unstyled, for scripts."""
    console.file.write(json.dumps(data, indent=2) + "\n")
    console.file.flush()


def print_json_line(console: Console, data: Any) -> None:
    """Print ``data`` as one JSON line: an event of a ``--json`` stream (apply's progress)."""
    console.file.write(json.dumps(data) + "\n")
    console.file.flush()


def validation_json(problems: Sequence[Problem], **details: Any) -> dict[str, Any]:
    """What ``validate --json`` prints: ``valid``, the problems, and ``details`` if valid."""
    return {"valid": not problems, "problems": [p.to_json() for p in problems], **details}


def summary_line(plan: Plan) -> str:
    """Terraform-style summary: ``Plan: 3 to add, 1 to change, 2 to destroy.``"""
    counts = plan.counts()
    add = counts["create"] + counts["replace"]
    change = counts["update"]
    destroy = counts["delete"] + counts["replace"]
    return f"Plan: {add} to add, {change} to change, {destroy} to destroy."


def _describe_change(change: Change) -> str:
    symbol, colour, verb = SYMBOLS[change.action]
    what = "orphan node" if change.orphan else "node"
    target = change.after or change.before
    details = []
    if change.after and change.after.offering:
        details.append(f"offering={change.after.offering}")
    if target is not None:
        details.append(f"provider={target.provider}")
    if change.before and change.before.provider_id:
        details.append(f"id={change.before.provider_id}")
    return (f"  [{colour}]{symbol} {escape(change.address)}[/] {what} will be {verb} "
            f"[dim]({escape(', '.join(details))})[/]\n"
            f"      [dim]because {escape(change.reason)}[/]")


def print_plan(console: Console, plan: Plan) -> None:
    """Print the plan for people: one entry per change with its reason, then the summary."""
    if not plan.has_changes:
        console.print("[green]No changes.[/] The cluster matches the spec.")
        return
    console.print("fuzz will perform the following actions:\n")
    for change in plan.changes:
        console.print(_describe_change(change), highlight=False)
    console.print(f"\n[bold]{summary_line(plan)}[/]")


class ProgressPrinter:
    """Prints one line as each change starts and finishes, with a running count."""

    def __init__(self, console: Console, total: int, as_json: bool) -> None:
        self.console = console
        self.total = total
        self.finished = 0
        self.as_json = as_json

    def __call__(self, event: ApplyEvent) -> None:
        """Show one event."""
        if event.phase != "start":
            self.finished += 1
        if self.as_json:
            print_json_line(self.console, {
                "type": "progress", "address": event.address, "action": event.action.value,
                "phase": event.phase, "elapsed": round(event.elapsed, 3),
                "message": event.message, "finished": self.finished, "total": self.total,
            })
            return
        ing, noun = VERBS[event.action]
        count = f"[dim]{escape(f'[{self.finished}/{self.total}]')}[/]"
        address = escape(event.address)
        if event.phase == "start":
            self.console.print(f"{count} {address}: {ing}...", highlight=False)
        elif event.phase == "done":
            extra = " " + escape(f"[{event.message}]") if event.message else ""
            self.console.print(f"{count} {address}: {noun} complete after "
                               f"{event.elapsed:.1f}s{extra}", highlight=False)
        else:
            self.console.print(f"{count} [red]{address}: {event.phase}: "
                               f"{escape(event.message)}[/]", highlight=False)


def print_apply_result(console: Console, plan: Plan, result: ApplyResult, as_json: bool,
                       operation: str = "apply") -> None:
    """Print what apply (or ``operation`` destroy) did, and every failure with its reason."""
    actions = {c.address: c.action for c in plan.changes}
    done = [actions[a] for a in result.succeeded]
    added = sum(a in (Action.CREATE, Action.REPLACE) for a in done)
    changed = sum(a is Action.UPDATE for a in done)
    destroyed = sum(a in (Action.DELETE, Action.REPLACE) for a in done)
    if as_json:
        print_json_line(console, {
            "type": "result", "added": added, "changed": changed, "destroyed": destroyed,
            "failed": result.failed, "skipped": result.skipped,
            "serial": result.state.serial, "lineage": result.state.lineage,
        })
        return
    if result.failed or result.skipped:
        console.print(f"\n[red bold]Apply finished with errors.[/] {added} added, {changed} "
                      f"changed, {destroyed} destroyed, {len(result.failed)} failed, "
                      f"{len(result.skipped)} skipped.")
        for address, message in sorted(result.failed.items()):
            console.print(f"[red]  {escape(address)}: {escape(message)}[/]", highlight=False)
        return
    title = "Destroy" if operation == "destroy" else "Apply"  # an apply that removes is one
    console.print(f"\n[green bold]{title} complete![/] Resources: {added} added, {changed} "
                  f"changed, {destroyed} destroyed.")


def print_interrupts(console: Console, interrupts: Mapping[str, Sequence[NodeTask]] | None
                     ) -> None:
    """What ``fuzz plan`` says of the running tasks its deletes and replaces would interrupt.

    None (no orchestrator answered) or empty: nothing to say.
    """
    if not interrupts:
        return
    console.print("\nRunning tasks these changes would interrupt (each node is drained "
                  "first: nothing new is placed there, its tasks may end until its "
                  "drain_timeout):")
    for address, tasks in interrupts.items():
        console.print(f"  {escape(address)}: "
                      + ", ".join(escape(task.describe()) for task in tasks))
