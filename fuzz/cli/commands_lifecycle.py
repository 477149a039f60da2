"""``fuzz init``, ``validate``, ``plan``, ``apply`` and ``destroy``."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import click

from fuzz.cli.declared_workflows import (
    has_workflow_changes,
    print_workflow_changes,
    start_changed,
    workflow_changes,
)
from fuzz.cli.nodedrain import drain_settings, drain_timeout_option, interrupted_work
from fuzz.cli.options import (
    AppContext,
    json_option,
    lock_timeout_option,
    parse_duration_option,
    parse_lock_timeout,
    pass_app,
)
from fuzz.cli.render import (
    ProgressPrinter,
    print_apply_result,
    print_interrupts,
    print_json,
    print_json_line,
    print_plan,
    summary_line,
    validation_json,
)
from fuzz.engine.desired import Membership
from fuzz.engine.model import Plan, State
from fuzz.errors import ConfigError, FuzzError
from fuzz.lifecycle.drain import nodes_to_drain
from fuzz.lifecycle.planfile import read_plan, write_plan
from fuzz.lifecycle.reconcile import PlanRequest, apply_changes, refresh_and_plan
from fuzz.orchestrate.datadir import init_data_dir
from fuzz.orchestrate.transfer.host_roots import make_host_paths
from fuzz.spec.problems import SpecError

MEMBERSHIP_TIMEOUT = 5.0


class ChangesPresent(FuzzError):
    """``fuzz plan --detailed-exitcode`` found changes: exit 2, with nothing printed."""

    exit_code = 2


def _migrate(app: AppContext, timeout: float) -> dict[str, object]:
    """Copy the state from the recorded backend to the spec's; what happened, as JSON."""
    ws = app.workspace
    source = ws.open_recorded_store()
    destination = ws.open_spec_store()
    if source is None or source.describe() == destination.describe():
        raise ConfigError("--migrate-state: nothing to migrate from: the state: block names "
                          "the backend fuzz init last used here")
    with source.lock("migrate-state", timeout), destination.lock("migrate-state", timeout):
        state = source.read()
        copied = state is not None and destination.adopt(state)
    return {"from": source.describe(), "to": destination.describe(), "copied": copied,
            "found": state is not None}


@click.command()
@click.option("--migrate-state", is_flag=True,
              help="Copy the state from the backend used before to the one the spec names now.")
@click.option("--reconfigure", is_flag=True,
              help="Use the backend the spec names now, leaving the old state where it is.")
@json_option
@lock_timeout_option
@pass_app
def init(app: AppContext, migrate_state: bool, reconfigure: bool, as_json: bool,
         lock_timeout: str) -> None:
    """Check the spec and installed providers, and create the state if there is none."""
    if migrate_state and reconfigure:
        raise ConfigError("--migrate-state and --reconfigure exclude each other")
    ws = app.workspace
    timeout = parse_lock_timeout(lock_timeout)
    # Building the contexts validates every provider block with its installed plugin.
    kinds = sorted({ctx.kind for ctx in ws.contexts.values()})
    migration = _migrate(app, timeout) if migrate_state else None
    if migrate_state or reconfigure:
        ws.record_state_block()
    with ws.locked("init", timeout):
        state = ws.store.read()
        created = state is None
        if state is None:
            state = ws.store.write(State.new(ws.loaded.spec.cluster))
    ca = _init_orchestrator(app)
    host_paths = _make_host_paths(app)
    if as_json:
        print_json(app.out, {"cluster": ws.loaded.spec.cluster, "state": ws.store.describe(),
                             "lineage": state.lineage, "serial": state.serial,
                             "created": created, "providers": kinds, "migration": migration,
                             "orchestrator": ca, "host_paths_created": host_paths})
        return
    if migration is not None:
        source, target = migration["from"], migration["to"]
        if migration["copied"]:
            app.out.print(f"Copied the state from {source} to {target}, lineage and serial "
                          "kept. The old copy is left as it was.")
        elif migration["found"]:
            app.out.print(f"The state in {target} already is the one in {source}.")
        else:
            app.out.print(f"There was no state in {source} to copy.")
    verb = "Created" if created else "Found"
    app.out.print(f"Spec {ws.spec_path} is valid: cluster [bold]{ws.loaded.spec.cluster}[/], "
                  f"{len(ws.loaded.spec.pools)} pool(s), providers: {', '.join(kinds) or 'none'}.")
    app.out.print(f"{verb} state in {ws.store.describe()} "
                  f"(lineage {state.lineage}, serial {state.serial}).")
    if ca is not None:
        app.out.print(f"{'Created' if ca['created'] else 'Found'} the cluster CA and the admin "
                      f"token in {ca['data_dir']}.")
    for made in host_paths:
        app.out.print(f"Created the host path {made} (mode 0755).")
    app.out.print("[green]fuzz is initialized.[/] Run fuzz plan to see what apply would do.")


def _init_orchestrator(app: AppContext) -> dict[str, object] | None:
    """The CA and admin token in the spec's orchestrator data dir, if it has the block."""
    loaded = app.workspace.loaded
    block = loaded.spec.orchestrator
    if block is None:
        return None
    data_dir = (loaded.base_dir / block.data_dir).absolute()
    created = init_data_dir(data_dir, loaded.spec.cluster)
    return {"data_dir": str(data_dir), "created": created}


def _make_host_paths(app: AppContext) -> list[str]:
    """The spec's ``orchestrator.host_paths`` that did not exist and were made now."""
    loaded = app.workspace.loaded
    block = loaded.spec.orchestrator
    if block is None:
        return []
    wanted = [(loaded.base_dir / path).absolute() for path in block.host_paths]
    try:
        return [str(path) for path in make_host_paths(wanted)]
    except OSError as exc:
        raise ConfigError(f"orchestrator.host_paths: cannot make {exc.filename}: "
                          f"{exc.strerror}") from exc


@click.command()
@json_option
@pass_app
def validate(app: AppContext, as_json: bool) -> None:
    """Check the spec, including each provider block against its plugin; exit 1 if invalid."""
    ws = app.workspace
    try:
        ws.check_state_block()
        providers = len(ws.contexts)
    except SpecError as exc:
        if as_json:
            print_json(app.out, validation_json(exc.problems))
            sys.exit(1)
        raise
    if as_json:
        print_json(app.out, validation_json([]))
    else:
        app.out.print(f"[green]Success![/] {ws.spec_path} is valid "
                      f"({len(ws.loaded.spec.pools)} pool(s), {providers} provider block(s)).")


def _plan_request(refresh: bool, target: tuple[str, ...], replace: tuple[str, ...],
                  destroy: bool, membership: Mapping[str, Membership] | None = None
                  ) -> PlanRequest:
    return PlanRequest(do_refresh=refresh, targets=target, replace=replace, destroy=destroy,
                       membership=membership)


def _orchestrator_membership(app: AppContext) -> tuple[Mapping[str, Membership] | None, str]:
    """The running orchestrator's membership of the elastic pools, and where it came from.

    Without an orchestrator block, elastic pools, or an answer: None (the recorded
    members rule) and why.
    """
    spec = app.workspace.loaded.spec
    if spec.orchestrator is None or not any(pool.resizes for pool in spec.pools.values()):
        return None, "recorded"
    try:
        reply = app.workspace.orchestrator.pool_demand(timeout=MEMBERSHIP_TIMEOUT)
    except FuzzError as exc:
        return None, f"recorded (the orchestrator did not answer: {exc})"
    pools = {pool.name: {m.address: m.offering or None for m in pool.members
                         if m.state != "RELEASING"}
             for pool in reply.pools if pool.known}
    if not pools:
        return None, "recorded (the orchestrator has not decided its pools yet)"
    return pools, "orchestrator"


@click.command()
@click.option("-out", "--out", "out", type=click.Path(dir_okay=False, path_type=Path),
              help="Save the plan to FILE for fuzz apply FILE.")
@click.option("--detailed-exitcode", is_flag=True,
              help="Exit 0 for no changes, 2 for changes, 1 for errors.")
@click.option("--refresh/--no-refresh", default=True, show_default=True,
              help="Ask the providers what exists before planning.")
@click.option("--target", multiple=True, metavar="ADDR",
              help="Plan only this address or pool (pool.cpu); repeatable.")
@click.option("--replace", multiple=True, metavar="ADDR",
              help="Plan to replace this node even if unchanged; repeatable.")
@click.option("--destroy", is_flag=True, help="Plan to destroy everything.")
@json_option
@lock_timeout_option
@pass_app
def plan(app: AppContext, out: Path | None, detailed_exitcode: bool, refresh: bool,
         target: tuple[str, ...], replace: tuple[str, ...], destroy: bool, as_json: bool,
         lock_timeout: str) -> None:
    """Show what apply would change, and why."""
    ws = app.workspace
    membership, source = (None, "recorded") if destroy else _orchestrator_membership(app)
    request = _plan_request(refresh, target, replace, destroy, membership)
    with ws.locked("plan", parse_lock_timeout(lock_timeout)):
        the_plan, _ = refresh_and_plan(ws.loaded.spec, ws.gateway, ws.store, request,
                                       persist_refresh=False)
    workflows = [] if destroy else workflow_changes(ws)[0]
    interrupts = interrupted_work(app, nodes_to_drain(the_plan))
    if out is not None:
        write_plan(out, the_plan, ws.spec_path, ws.store.encryption)
    if as_json:
        print_json(app.out, {**the_plan.to_json(), "membership": source,
                             "workflows": [change.to_json() for change in workflows],
                             "interrupts": None if interrupts is None else {
                                 address: [task.to_json() for task in tasks]
                                 for address, tasks in interrupts.items()}})
    else:
        if membership is not None:
            app.out.print("Elastic pools: planned with the running orchestrator's membership "
                          "(what it would do now).")
        elif source != "recorded":
            why = source.removeprefix("recorded ").strip("()")
            app.out.print("Elastic pools: planned with their recorded members within min and "
                          f"max; {why}{'' if why.endswith(('.', '?')) else '.'}")
        print_plan(app.out, the_plan)
        print_interrupts(app.out, interrupts)
        print_workflow_changes(app.out, workflows)
        if out is not None:
            app.out.print(f"\nSaved the plan to {out}. Apply exactly this plan with: "
                          f"fuzz apply {out} (declared workflows are compared again then)")
    if detailed_exitcode and (the_plan.has_changes or has_workflow_changes(workflows)):
        raise ChangesPresent("")


@contextmanager
def _graceful_interrupt(app: AppContext, cancel: threading.Event) -> Iterator[None]:
    """First Ctrl-C: start nothing new and let running changes finish; second: abort."""
    def handler(signum: int, frame: FrameType | None) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        app.err.print("[yellow]Interrupt: finishing the changes under way, starting no new "
                      "ones (Ctrl-C again to abort now).[/]")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _confirm(app: AppContext, question: str) -> None:
    if not sys.stdin.isatty():
        raise ConfigError("confirmation needed but stdin is not a terminal: pass --auto-approve, "
                          "or apply a plan saved with fuzz plan -out FILE")
    answer = click.prompt(f"{question}\n  Only 'yes' will be accepted", default="",
                          show_default=False)
    if answer.strip() != "yes":
        raise FuzzError("cancelled: nothing was changed")


def _run_apply(app: AppContext, the_plan: Plan, state: State, parallelism: int,
               as_json: bool, drain_timeout: str | None, operation: str) -> None:
    ws = app.workspace
    cancel = threading.Event()
    progress = ProgressPrinter(app.out, len(the_plan.changes), as_json)
    draining = nodes_to_drain(the_plan)
    drain = drain_settings(app, draining, drain_timeout, as_json) if draining else None
    with _graceful_interrupt(app, cancel):
        result = apply_changes(the_plan, state, ws.gateway, ws.store, parallelism, progress,
                               cancel, drain)
    print_apply_result(app.out, the_plan, result, as_json, operation)
    if result.failed or result.skipped:
        raise FuzzError(f"{len(result.failed)} change(s) failed and {len(result.skipped)} "
                        f"were skipped; state records what was done, run fuzz apply again")


def _lifecycle(app: AppContext, plan_file: Path | None, auto_approve: bool, lock_timeout: str,
               parallelism: int, as_json: bool, request: PlanRequest, operation: str,
               drain_timeout: str | None) -> None:
    if parallelism < 1:
        raise ConfigError("--parallelism must be at least 1")
    if drain_timeout is not None:
        parse_duration_option("--drain-timeout", drain_timeout)  # bad input: before any work
    ws = app.workspace
    with ws.locked(operation, parse_lock_timeout(lock_timeout)):
        if plan_file is not None:
            the_plan = read_plan(plan_file, ws.store.encryption)
            state = ws.store.read_or_create(ws.loaded.spec.cluster)
        else:
            the_plan, state = refresh_and_plan(ws.loaded.spec, ws.gateway, ws.store, request,
                                               persist_refresh=True)
            if not as_json:
                print_plan(app.out, the_plan)
            if the_plan.has_changes and not auto_approve:
                _confirm(app, f"\nDo you want to perform these actions? {summary_line(the_plan)}")
        if the_plan.has_changes:
            _run_apply(app, the_plan, state, parallelism, as_json, drain_timeout, operation)
        elif as_json:
            print_json_line(app.out, {"type": "result", "added": 0, "changed": 0,
                                      "destroyed": 0, "failed": {}, "skipped": [],
                                      "serial": state.serial, "lineage": state.lineage})
    if operation == "apply":
        changes, files = workflow_changes(ws)
        if not as_json:
            print_workflow_changes(app.out, changes)
        started = start_changed(ws, app.out, changes, files, as_json)
        if as_json and changes:
            print_json_line(app.out, {"type": "workflows", "started": started})


@click.command()
@click.argument("plan_file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--auto-approve", is_flag=True, help="Apply without asking for confirmation.")
@click.option("--parallelism", default=10, show_default=True,
              help="How many changes run at once.")
@click.option("--refresh/--no-refresh", default=True, show_default=True)
@click.option("--target", multiple=True, metavar="ADDR")
@click.option("--replace", multiple=True, metavar="ADDR")
@drain_timeout_option
@json_option
@lock_timeout_option
@pass_app
def apply(app: AppContext, plan_file: Path | None, auto_approve: bool, parallelism: int,
          refresh: bool, target: tuple[str, ...], replace: tuple[str, ...],
          drain_timeout: str | None, as_json: bool, lock_timeout: str) -> None:
    """Make the cluster match the spec (or carry out a saved PLAN_FILE).

    Nodes to delete or replace are drained first when an orchestrator runs.
    """
    if as_json and not auto_approve and plan_file is None:
        raise ConfigError("--json needs --auto-approve or a saved plan file")
    _lifecycle(app, plan_file, auto_approve, lock_timeout, parallelism, as_json,
               _plan_request(refresh, target, replace, destroy=False), "apply", drain_timeout)


@click.command()
@click.option("--auto-approve", is_flag=True, help="Destroy without asking for confirmation.")
@click.option("--parallelism", default=10, show_default=True)
@click.option("--target", multiple=True, metavar="ADDR")
@drain_timeout_option
@json_option
@lock_timeout_option
@pass_app
def destroy(app: AppContext, auto_approve: bool, parallelism: int, target: tuple[str, ...],
            drain_timeout: str | None, as_json: bool, lock_timeout: str) -> None:
    """Delete every node of the cluster, and every orphan found for it (drained first)."""
    if as_json and not auto_approve:
        raise ConfigError("--json needs --auto-approve")
    _lifecycle(app, None, auto_approve, lock_timeout, parallelism, as_json,
               _plan_request(True, target, (), destroy=True), "destroy", drain_timeout)


COMMANDS = [init, validate, plan, apply, destroy]
