"""``fuzz federation status`` and the federated ``fuzz workflow start``.

Start routes the workflow (:func:`fuzz.federate.route.route`) on the members' facts;
``--explain`` prints every member's assessment. A member that cannot be asked is
skipped and said so; a member that fails the start itself (unreachable by then, or
refusing the workflow) is left out and the workflow placed again on the next best.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from fuzz.api import orchestrator_pb2 as pb
from fuzz.cli.federation import (
    MemberReport,
    gather,
    load,
    member_client,
    record_placement,
)
from fuzz.cli.options import FEDERATION_ENV, AppContext, json_option, pass_app
from fuzz.cli.render import print_json
from fuzz.clients.orchestrator import OrchestratorClient
from fuzz.errors import FuzzError
from fuzz.federate.demand import workflow_demand
from fuzz.federate.model import Assessment, Decision, MemberFacts
from fuzz.federate.route import route, why_not
from fuzz.spec.federation import DEFAULT_FILE, LoadedFederation, PriceList
from fuzz.spec.fuzzfile_loader import parse_fuzzfile
from fuzz.units import format_bytes

GPU_PREFIX = "nvidia.com/gpu"


@click.group()
def federation() -> None:
    """The clusters of a federation: what each offers, and where workflows go."""


def _prices(prices: PriceList) -> str:
    parts = [f"core-h {prices.core_hour:g}", f"GiB-h {prices.memory_gib_hour:g}"]
    parts += [f"gpu-h {model} {price:g}" for model, price in sorted(prices.gpu_hour.items())]
    return ", ".join(parts)


def _capacity(report: MemberReport) -> dict[str, Any]:
    """Free and total capacity by resource over the member's schedulable nodes."""
    nodes = report.nodes
    devices: dict[str, int] = {}
    for node in nodes:
        for kind, count in node.devices.items():
            devices[kind] = devices.get(kind, 0) + count
    return {"nodes": len(nodes),
            "cores": {"free": sum(n.free_cores for n in nodes),
                      "total": sum(n.cores for n in nodes)},
            "memory_bytes": {"free": sum(n.free_memory_bytes for n in nodes),
                             "total": sum(n.memory_bytes for n in nodes)},
            "devices": devices}


def _report_json(report: MemberReport) -> dict[str, Any]:
    facts = report.facts
    return {"member": facts.name, "reachable": not facts.unreachable,
            "error": facts.unreachable or None, "site": facts.site, "labels": dict(facts.labels),
            "capacity": None if facts.unreachable else _capacity(report),
            "offerings": [{"pool": o.pool, "name": o.capacity.name, "cores": o.capacity.cores,
                           "memory_bytes": o.capacity.memory_bytes,
                           "devices": dict(o.capacity.devices),
                           "architecture": o.capacity.architecture,
                           "price_per_hour": o.price_per_hour} for o in facts.offerings],
            "prices": facts.prices.model_dump(),
            "workflows": report.workflows, "queued_tasks": report.queued_tasks,
            "cached": dict(facts.cached_bytes)}


@federation.command("status")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_FILE,
                envvar=FEDERATION_ENV)
@json_option
@pass_app
def status(app: AppContext, file: Path, as_json: bool) -> None:
    """Each member of the federation in FILE (default federation.yaml): reachable, free
    and total capacity, its elastic pools' offerings with prices, its price list,
    workflows, cached data."""
    loaded = load(file)
    reports = gather(loaded)
    if as_json:
        print_json(app.out, {"federation": loaded.spec.federation,
                             "members": [_report_json(r) for r in reports]})
        return
    table = Table("member", "reachable", "site", "labels", "cores free/total",
                  "memory free/total", "devices", "offerings", "prices", "workflows", "cached")
    for report in reports:
        row = _report_json(report)
        labels = ",".join(f"{k}={v}" for k, v in sorted(row["labels"].items()))
        if report.facts.unreachable:
            table.add_row(row["member"], f"[red]no: {escape(report.facts.unreachable)}[/]",
                          row["site"], escape(labels), "-", "-", "-", "-",
                          _prices(report.facts.prices), "-", "-")
            continue
        capacity = row["capacity"]
        offerings = "; ".join(f"{o['pool']}/{o['name']} {o['price_per_hour']:g}/h"
                              for o in row["offerings"]) or "-"
        cached = f"{len(row['cached'])}: {format_bytes(sum(row['cached'].values()))}" \
            if row["cached"] else "-"
        workflows = ", ".join(f"{count} {state.lower()}"
                              for state, count in sorted(row["workflows"].items())) or "0"
        if report.queued_tasks:
            workflows += f"; {report.queued_tasks} tasks wait for room"
        table.add_row(
            row["member"], "[green]yes[/]", row["site"], escape(labels),
            f"{capacity['cores']['free']}/{capacity['cores']['total']}",
            f"{format_bytes(capacity['memory_bytes']['free'])}/"
            f"{format_bytes(capacity['memory_bytes']['total'])}",
            ", ".join(f"{k} {v}" for k, v in sorted(capacity["devices"].items())) or "-",
            escape(offerings), _prices(report.facts.prices), workflows, cached)
    app.out.print(table)


# --- federated start --------------------------------------------------------------------

def _money(value: float) -> str:
    return f"{value:.2f}"


def _policy_text(assessment: Assessment) -> str:
    applying = [v.describe() for v in assessment.verdicts if v.applies]
    return "; ".join(applying) or "-"


def explain_rows(decision: Decision) -> list[dict[str, Any]]:
    """The decision as rows: every member, feasible or why not, each cost term, the policy
    verdicts, the choice."""
    rows = []
    for a in decision.assessments:
        judged = not a.unreachable and not a.unfit
        rows.append({
            "member": a.member, "reachable": not a.unreachable,
            "feasible": None if a.unreachable else not a.unfit,
            "why_not": None if a.eligible else why_not(a),
            "policy": [{"policy": v.policy, "applies": v.applies, "allowed": v.allowed}
                       for v in a.verdicts],
            "compute": a.compute if judged else None, "egress": a.egress if judged else None,
            "cached_gb": a.cached_gb if judged else None,
            "wait_hours": a.wait_hours if judged else None, "wait": a.wait if judged else None,
            "total": a.total if judged else None, "chosen": a.member == decision.chosen})
    return rows


def explain_table(decision: Decision) -> Table:
    """``--explain``: one row per member, cheapest eligible first."""
    table = Table("member", "feasible", "policy", "compute", "data", "cached GB", "wait h",
                  "wait", "total", "choice", title="routing")
    for a in decision.assessments:
        if a.unreachable:
            feasible = f"unreachable: {a.unreachable}"
        else:
            feasible = "yes" if not a.unfit else f"no: {a.unfit}"
        judged = not a.unreachable and not a.unfit
        costs = [_money(a.compute), _money(a.egress), f"{a.cached_gb:g}", f"{a.wait_hours:g}",
                 _money(a.wait), _money(a.total)] if judged else ["-"] * 6
        choice = "chosen" if a.member == decision.chosen else (
            "" if a.eligible else "skipped" if a.unreachable
            else "refused" if a.refused_by() else "-")
        table.add_row(a.member, escape(feasible), escape(_policy_text(a)), *costs, choice)
    return table


def _left_out(facts: list[MemberFacts], name: str, why: str) -> list[MemberFacts]:
    """``facts`` with member ``name`` marked unreachable for ``why``."""
    return [replace(f, unreachable=why) if f.name == name else f for f in facts]


def federated_start(app: AppContext, name: str, text: str, fuzzfile: Path, account: str,
                    pinned: str | None, explain: bool, as_json: bool
                    ) -> tuple[OrchestratorClient, pb.Workflow, Decision]:
    """Route the workflow and start it on the chosen member (placing it again elsewhere
    when that member fails the start); the open client, the run, the final decision."""
    assert app.access.federation is not None
    loaded = load(app.access.federation)
    parsed = parse_fuzzfile(text, str(fuzzfile)).fuzzfile
    demand = workflow_demand(parsed, loaded.spec, account)
    facts = [report.facts for report in gather(loaded)]
    for member in facts:
        if member.unreachable:
            app.err.print(f"member {member.name} is unreachable, skipped: "
                          f"{escape(member.unreachable)}")
    while True:
        decision = route(demand, facts, loaded.spec, pinned)
        if explain and not as_json:
            app.out.print(explain_table(decision))
        if decision.chosen is None:
            raise FuzzError(decision.reason)
        started = _try_start(app, loaded, decision.chosen, name, text, fuzzfile, account)
        if isinstance(started, tuple):
            record_placement(loaded, [name, started[1].id], decision.chosen)
            return started[0], started[1], decision
        app.err.print(f"workflow {name} could not start on member {decision.chosen}: "
                      f"{escape(started)}; placing it again")
        facts = _left_out(facts, decision.chosen, f"failed the start: {started}")


def _try_start(app: AppContext, loaded: LoadedFederation, member: str, name: str, text: str,
               fuzzfile: Path, account: str) -> tuple[OrchestratorClient, pb.Workflow] | str:
    """The client and the run started on ``member``, or why it failed there."""
    client = member_client(loaded, member)
    try:
        return client, client.start_workflow(name, text, str(fuzzfile), account)
    except FuzzError as exc:
        client.close()
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


COMMANDS = [federation]
