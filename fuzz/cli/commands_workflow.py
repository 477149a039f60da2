"""``fuzz workflow validate``: check a Fuzzfile before anything runs."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fuzz.cli.connection import server_options
from fuzz.cli.known_cluster import known_capacities
from fuzz.cli.options import AppContext, json_option, pass_app
from fuzz.cli.render import print_json, validation_json
from fuzz.spec.cluster import LimitsSpec
from fuzz.spec.fuzzfile_loader import load_fuzzfile
from fuzz.spec.fuzzfile_plan import workflow_plan
from fuzz.spec.problems import SpecError


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


@click.command("validate")
@click.argument("file", type=click.Path(path_type=Path))
@json_option
@server_options
@pass_app
def workflow_validate(app: AppContext, file: Path, as_json: bool, server: str | None,
                      token_file: Path | None) -> None:
    """Check FILE before anything runs: one line per problem, exit 1 if there is any.

    Next to a cluster spec with an ``orchestrator:`` block, its limits apply too; with
    a cluster known (that spec, or --server/--context), what its nodes could hold.
    ``--json`` prints the file, ``valid``, its jobs (in run order), volumes, content hash,
    ``version`` (the dialect) and ``plan`` (what would run:
    :func:`~fuzz.spec.fuzzfile_plan.workflow_plan`).
    """
    try:
        loaded = load_fuzzfile(file, limits=known_limits(app),
                               capacities=known_capacities(app, server, token_file),
                               capacities_are_nodes=True)
    except SpecError as exc:
        if as_json:
            print_json(app.out, validation_json(exc.problems))
            sys.exit(1)
        raise
    fuzzfile = loaded.fuzzfile
    if as_json:
        print_json(app.out, validation_json(
            [], file=str(file), jobs=fuzzfile.job_order(), volumes=list(fuzzfile.volumes),
            content_hash=loaded.content_hash, version=fuzzfile.version,
            plan=workflow_plan(fuzzfile)))
        return
    services = f", {_count(len(fuzzfile.services), 'service')}" if fuzzfile.services else ""
    app.out.print(f"{file}: valid: {_count(len(fuzzfile.jobs), 'job')}, "
                  f"{_count(len(fuzzfile.volumes), 'volume')}{services}")


def known_limits(app: AppContext) -> LimitsSpec | None:
    """The limits of the cluster in the spec, None without a spec or orchestrator block."""
    if not app.spec_path.exists():
        return None
    block = app.workspace.loaded.spec.orchestrator
    return block.limits if block is not None else None


COMMANDS = [workflow_validate]
