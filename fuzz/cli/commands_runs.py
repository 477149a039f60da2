"""``fuzz workflow start|status|log|list|describe|stop``: running Fuzzfiles on the cluster.

A workflow is the caller's own ``NAME``, or another owner's ``OWNER/NAME`` (where IAM
allows it), or one run by its id ``OWNER.NAME.RUN``; see :mod:`fuzz.spec.workflowref`.
``cancel`` is kept as another name of ``stop`` (Fuzzball's verb).
"""

from __future__ import annotations

import copy
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.live import Live

from fuzz.api import orchestrator_pb2 as pb
from fuzz.cli.connection import connect, server_options
from fuzz.cli.options import (
    AppContext,
    account_option,
    federation_option,
    json_option,
    pass_app,
    workflow_argument,
)
from fuzz.cli.workflow_view import (
    endpoint_detail,
    list_table,
    service_detail,
    status_table,
    to_dict,
)
from fuzz.clients.orchestrator import OrchestratorClient
from fuzz.errors import ConfigError, FuzzError
from fuzz.spec.workflowref import workflow_ref_problem
from fuzz.substrate.rpc.jobs import DEFAULT_GRACE as STOP_GRACE  # what a cancel gives a job
from fuzz.units import format_bytes

if TYPE_CHECKING:  # the spec's models load only in `start`, the one command reading a Fuzzfile
    from fuzz.spec.cluster import LimitsSpec


class WorkflowFailedError(FuzzError):
    """A watched workflow ended other than SUCCEEDED (exit 1, after its table)."""


def checked_workflow_name(name: str) -> None:
    """ConfigError (one line) unless ``name`` is a workflow name, ``[OWNER/]NAME``."""
    problem = workflow_ref_problem(name)
    if problem is not None:
        raise ConfigError(f"--name {name}: {problem}")


def _read_fuzzfile(path: Path, limits: LimitsSpec | None) -> str:
    """The Fuzzfile's text, refused before it is sent when it is larger than ``limits``
    allow (the line the server would answer; see :func:`check_fuzzfile_size`)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such file") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it: {exc}") from exc
    from fuzz.spec.fuzzfile_loader import check_fuzzfile_size  # late: see TYPE_CHECKING

    check_fuzzfile_size(len(raw), str(path), limits)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: cannot read it: {exc}") from exc


def _emit_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def _watch(app: AppContext, updates: object, as_json: bool) -> pb.Workflow:
    last: pb.Workflow | None = None
    if as_json:
        for workflow in updates:  # type: ignore[attr-defined]
            sys.stdout.write(json.dumps(to_dict(workflow)) + "\n")
            sys.stdout.flush()
            last = workflow
    else:
        with Live(console=app.out, auto_refresh=False) as live:
            for workflow in updates:  # type: ignore[attr-defined]
                live.update(status_table(workflow), refresh=True)
                last = workflow
    if last is None:
        raise FuzzError("the orchestrator sent no status")
    return last


def _finish(workflow: pb.Workflow) -> None:
    if workflow.state != "SUCCEEDED":
        message = f"workflow {workflow.name} {workflow.state.lower()}"
        raise WorkflowFailedError(f"{message}: {workflow.error}" if workflow.error else message)


def default_name(fuzzfile: Path) -> str:
    """The workflow name a Fuzzfile gets without ``--name``: its file's stem, each run of
    characters a name may not hold (``.``, spaces) made one ``-`` (``sim.v2.yaml``:
    ``sim-v2``)."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", fuzzfile.stem).lstrip("-_")[:64].rstrip("-")
    if not name:
        raise ConfigError(f"{fuzzfile}: no workflow name can be made of this file's name; "
                          "give one with --name")
    return name


def _name_and_file(arguments: tuple[str, ...], name: str | None) -> tuple[str, Path]:
    """The workflow name and the Fuzzfile of ``start``'s arguments: ``FILE`` (named by
    ``--name`` or its stem) or, as before Fuzzball's form was taken, ``NAME FILE``."""
    if len(arguments) == 1:
        fuzzfile = Path(arguments[0])
        return (name or default_name(fuzzfile)), fuzzfile
    if len(arguments) == 2 and name is None:
        return arguments[0], Path(arguments[1])
    if len(arguments) == 2:
        raise ConfigError(f"--name {name} and the name {arguments[0]!r} both name the "
                          "workflow: give one")
    raise ConfigError("give one Fuzzfile: fuzz workflow start FILE [--name NAME]")


@click.command("start")
@click.argument("arguments", metavar="FILE", nargs=-1, required=True)
@click.option("--name", "-n", metavar="[OWNER/]NAME",
              help="The workflow's name (default: the file's name without its extension).")
@click.option("--watch", "-w", is_flag=True,
              help="Show the status live until the workflow ends; exit 1 unless it succeeded.")
@account_option("Run it in this account (an IAM group the owner is a member of): its "
                "secret://account/ secrets and volume://account/ volumes (default: the "
                "owner's only group, when the file uses them).")
@click.option("--cluster", metavar="NAME",
              help="With --federation: run it on this member (if the policies allow it).")
@click.option("--explain", is_flag=True,
              help="With --federation: show every member's costs, feasibility and policy "
              "verdicts, and the choice.")
@federation_option
@server_options
@json_option
@pass_app
def start(app: AppContext, arguments: tuple[str, ...], name: str | None, watch: bool,
          account: str, cluster: str | None, explain: bool, server: str | None,
          token_file: Path | None, as_json: bool) -> None:
    """Start a run of the workflow in FILE (validated by the server first).

    The workflow is named by --name, else by FILE's stem. OWNER/NAME starts a run of
    OWNER's workflow, as OWNER (their secrets, volumes and job ids), where IAM allows
    workflow:start on workflow/OWNER/NAME. The older form, fuzz workflow start NAME FILE,
    works too. With --federation, the workflow goes to the member cluster that suits it
    best (feasible, allowed by the federation's policies, cheapest), or to --cluster.
    """
    name, fuzzfile = _name_and_file(arguments, name)
    checked_workflow_name(name)
    if app.access.federation is None and (cluster is not None or explain):
        raise click.UsageError("--cluster and --explain go with --federation")
    from fuzz.cli.commands_federation import explain_rows, federated_start  # late: see above
    from fuzz.cli.commands_workflow import known_limits

    text = _read_fuzzfile(fuzzfile, known_limits(app))
    options = StartOptions(account, watch, as_json)
    if app.access.federation is None:
        start_text(app, name, text, str(fuzzfile), options, server, token_file)
        return
    if server is not None or app.access.context is not None:
        raise click.UsageError("--federation and --server/--context do not go together")
    client, started, decision = federated_start(app, name, text, fuzzfile, account,
                                                cluster, explain, as_json)
    if not as_json:
        app.err.print(f"workflow {name} placed on member {decision.chosen}")
    with client:
        _follow_started(app, client, started, options,
                        explain_rows(decision) if explain else None)


@dataclass(frozen=True)
class StartOptions:
    """How ``start`` (and ``fuzz app start``) starts: the account, --watch and --json."""

    account: str
    watch: bool
    as_json: bool


def start_text(app: AppContext, name: str, text: str, file: str, options: StartOptions,
               server: str | None, token_file: Path | None) -> None:
    """Start a run of workflow ``name`` from the Fuzzfile ``text`` (``file`` names it in
    the server's messages); print it, or watch it with ``options.watch``."""
    with connect(app, server, token_file) as client:
        started = client.start_workflow(name, text, file, options.account)
        _follow_started(app, client, started, options)


def _follow_started(app: AppContext, client: OrchestratorClient, started: pb.Workflow,
                    options: StartOptions,
                    routing: list[dict[str, object]] | None = None) -> None:
    """Say that ``started`` started (with the federation's ``routing`` under --json), or
    watch it to its end with --watch."""
    if options.watch:
        if not options.as_json:
            app.err.print(_started_line(started))
        _finish(_watch(app, client.watch_workflow(started.id or started.name),
                       options.as_json))
        return
    if options.as_json:
        _emit_json(to_dict(started) if routing is None
                   else {**to_dict(started), "routing": routing})
        return
    app.out.print(f"{_started_line(started)}; follow it with: fuzz workflow status "
                  f"{started.id or started.name} --watch")

def _started_line(started: pb.Workflow) -> str:
    account = f" in account {started.account}" if started.account else ""
    return (f"workflow {started.name} run {started.run} started{account} "
            f"({len(started.tasks)} tasks), run id {started.id}")


@click.command("status")
@workflow_argument
@click.option("--watch", is_flag=True,
              help="Update live until the workflow ends; exit 1 unless it succeeded.")
@federation_option
@server_options
@json_option
@pass_app
def status(app: AppContext, name: str, watch: bool, server: str | None,
           token_file: Path | None, as_json: bool) -> None:
    """Show a workflow's state: one row per workflow, volume, image and job."""
    with connect(app, server, token_file, name) as client:
        if watch:
            _finish(_watch(app, client.watch_workflow(name), as_json))
            return
        workflow = client.get_workflow(name)
    if as_json:
        _emit_json(to_dict(workflow))
    else:
        app.out.print(status_table(workflow))


@click.command("log")
@workflow_argument
@click.argument("job")
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the job ends.")
@click.option("--stderr", "stderr", is_flag=True,
              help="Print its standard error instead of its standard output.")
@click.option("--node", "node", type=click.IntRange(min=0), default=0, show_default=True,
              help="A multinode job's node (rank) K: 0 is the first, whose container runs "
              "the launcher.")
@federation_option
@server_options
@pass_app
def log(app: AppContext, name: str, job: str, follow: bool, stderr: bool, node: int,
        server: str | None, token_file: Path | None) -> None:
    """Print JOB's output (a task-array task is JOB[INDEX]; a multinode job's first node's,
    or node K's with --node K)."""
    with connect(app, server, token_file, name) as client:
        for data in client.stream_log(name, job, "stderr" if stderr else "stdout", follow,
                                      node):
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()


@click.command("list")
@server_options
@json_option
@pass_app
def list_(app: AppContext, server: str | None, token_file: Path | None, as_json: bool) -> None:
    """List the workflows you may see (the latest run of each), newest first."""
    with connect(app, server, token_file) as client:
        workflows = client.list_workflows()
    if as_json:
        _emit_json([to_dict(w) for w in workflows])
    else:
        app.out.print(list_table(workflows))


@click.command("describe")
@workflow_argument
@federation_option
@server_options
@json_option
@pass_app
def describe(app: AppContext, name: str, server: str | None, token_file: Path | None,
             as_json: bool) -> None:
    """Everything about a workflow's latest run (or the run of that id): file, hash,
    transfers, attempts, exit codes."""
    with connect(app, server, token_file, name) as client:
        workflow = client.get_workflow(name)
    if as_json:
        _emit_json(to_dict(workflow))
        return
    out = app.out
    out.print(f"[bold]{workflow.name}[/] run {workflow.run} (id {workflow.id}): {workflow.state}"
              + (f" ({workflow.error})" if workflow.error else ""))
    out.print(f"  file {workflow.file_name}  sha256:{workflow.content_hash[:16]}  "
              f"owner {workflow.owner}"
              + (f"  account {workflow.account}" if workflow.account else ""))
    for volume in workflow.volumes:
        out.print(f"  volume {volume.name} ({volume.reference}): {volume.state}")
        for move in volume.transfers:
            cached = " (cached)" if move.cached else ""
            out.print(f"    {move.direction} {move.source} -> {move.destination}: {move.state}"
                      f"{cached} "
                      f"{format_bytes(move.bytes_done)} sha256:{move.sha256 or '-'} {move.error}")
    for image in workflow.images:
        out.print(f"  image {image.uri}: {image.state} {image.digest} {image.error}")
    for task in workflow.tasks:
        exited = f" exit {task.exit_code}" if task.started and task.finished else ""
        ran = f"attempt {task.attempt}{exited} on {','.join(task.nodes) or '-'}" \
            if task.attempt else "(never started)"
        if task.kind == "service":
            out.print(f"  service {task.key}: {task.state} {task.readiness} {ran} "
                      f"{service_detail(task)}")
            continue
        out.print(f"  job {task.key}: {task.state} {ran} {task.error or task.waiting_for}")
    for endpoint in workflow.endpoints:
        out.print(f"  endpoint {endpoint.service}/{endpoint.name} ({endpoint.type}, "
                  f"{endpoint.protocol}, port {endpoint.port}): {endpoint_detail(endpoint)}")


@click.command("stop")
@workflow_argument
@federation_option
@server_options
@json_option
@pass_app
def stop(app: AppContext, name: str, server: str | None, token_file: Path | None,
         as_json: bool) -> None:
    """Stop a workflow (its latest run, or the run of that id): queued jobs do not start,
    running ones get SIGTERM, then SIGKILL 10 s later (the grace of the node's agent)."""
    with connect(app, server, token_file, name) as client:
        workflow = client.cancel_workflow(name)
    if as_json:
        _emit_json(to_dict(workflow))
    elif workflow.state in ("PENDING", "RUNNING"):
        app.out.print(f"workflow {workflow.name} run {workflow.run} ({workflow.id}): stopping "
                      f"(running jobs get SIGTERM, then SIGKILL after {STOP_GRACE:g} s)")
    else:
        app.out.print(f"workflow {workflow.name} run {workflow.run} ({workflow.id}) has "
                      f"ended already: {workflow.state}")


def alias(command: click.Command, name: str) -> click.Command:
    """``command`` under a second name, its help saying so (for the verbs users knew)."""
    twin = copy.copy(command)
    twin.name = name
    twin.help = f"The same as `{command.name}`: {command.help}"
    twin.short_help = f"The same as `{command.name}`."
    return twin


COMMANDS = (start, status, log, list_, describe, stop, alias(stop, "cancel"))
