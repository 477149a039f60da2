"""``fuzz app``: Fuzzball applications, templated workflows from catalogs.

``render`` renders a template with a values file (the engine: :mod:`fuzz.catalog.render`);
``catalog add|list|remove`` keeps the user's own catalogs; ``list``, ``show`` and
``start`` work on those and on the catalogs the cluster serves
(:mod:`fuzz.cli.app_catalogs`).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import click
from pydantic import ValidationError
from rich.table import Table

from fuzz.catalog.application import (
    check_rendered,
    render_application,
    render_checked,
    rendered_name,
)
from fuzz.catalog.catalogs import parse_source
from fuzz.catalog.values import parse_values
from fuzz.cli.app_catalogs import gather, user_catalogs
from fuzz.cli.commands_runs import StartOptions, checked_workflow_name, default_name, start_text
from fuzz.cli.commands_workflow import known_limits
from fuzz.cli.connection import server_options
from fuzz.cli.options import AppContext, account_option, json_option, pass_app
from fuzz.cli.render import print_json
from fuzz.errors import ConfigError
from fuzz.spec.fuzzfile_loader import check_fuzzfile_size
from fuzz.spec.yamlsource import decode_source, read_source

set_option = click.option(
    "--set", "overrides", multiple=True, metavar="NAME=VALUE",
    help="Give a value (typed as values.yaml declares it); repeat for more.")


@click.group("app")
def app_group() -> None:
    """Applications: Fuzzball templates (template.yaml, values.yaml, metadata.md)."""


def _read_text(path: Path) -> str:
    name = str(path)
    return decode_source(read_source(path, name), name)


@app_group.command("render")
@click.argument("template", type=click.Path(path_type=Path))
@click.argument("values", type=click.Path(path_type=Path))
@set_option
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the Fuzzfile here (also when it is invalid: problems name its "
              "lines) instead of printing it.")
@pass_app
def render(app: AppContext, template: Path, values: Path, overrides: tuple[str, ...],
           output: Path | None) -> None:
    """Render TEMPLATE with VALUES' defaults and --set values, then check the Fuzzfile.

    Problems of the rendered Fuzzfile name the lines of the rendered text: of the
    -o file, or of "TEMPLATE (rendered)" when it is printed.
    """
    declared = parse_values(_read_text(values), str(values))
    text = render_checked(_read_text(template), str(template), declared, str(values),
                          overrides)
    if output is not None:
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"-o {output}: cannot write it: {exc.strerror}") from exc
        check_rendered(text, str(output))
        return
    check_rendered(text, rendered_name(str(template)))
    click.echo(text, nl=not text.endswith("\n"))


# --- catalogs ---------------------------------------------------------------------------

@app_group.group("catalog")
def catalog() -> None:
    """Your own application catalogs (the cluster's come from its spec)."""


@catalog.command("add")
@click.argument("name")
@click.argument("source", metavar="PATH|GIT_URL[@REF]")
@pass_app
def catalog_add(app: AppContext, name: str, source: str) -> None:
    """Add catalog NAME: a directory (read where it is) or a git repository, cloned at
    REF (a branch, tag or commit; default HEAD) into your config directory."""
    registry = user_catalogs()
    try:
        spec = parse_source(name, source)
    except ValidationError as exc:  # the catalog's name
        message = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"catalog {name}: {message}") from exc
    commit = registry.add(spec)
    where = f"{spec.git} at {commit[:12]}" if commit else str(spec.path)
    app.out.print(f"catalog {name} added ({where})", markup=False)


@catalog.command("list")
@json_option
@pass_app
def catalog_list(app: AppContext, as_json: bool) -> None:
    """Your catalogs and where they come from."""
    sources = user_catalogs().sources()
    if as_json:
        print_json(app.out, [source.model_dump(exclude_none=True) for source in sources])
        return
    if not sources:
        app.out.print("no catalogs of your own: add one with fuzz app catalog add NAME PATH")
        return
    table = Table("NAME", "SOURCE", "REF", box=None)
    for source in sources:
        table.add_row(source.name, source.path or source.git, source.ref or "")
    app.out.print(table)


@catalog.command("remove")
@click.argument("name")
@pass_app
def catalog_remove(app: AppContext, name: str) -> None:
    """Forget your catalog NAME (and delete its clone)."""
    user_catalogs().remove(name)
    app.out.print(f"catalog {name} removed")


# --- applications -----------------------------------------------------------------------

def _warn_broken(broken: list[str]) -> None:
    for line in broken:
        click.echo(f"warning: {line}", err=True)


@app_group.command("list")
@click.option("--category", metavar="C", help="Only this category (e.g. EXAMPLES).")
@server_options
@json_option
@pass_app
def list_(app: AppContext, category: str | None, server: str | None, token_file: Path | None,
          as_json: bool) -> None:
    """The applications of your catalogs and of the cluster's, by category."""
    found = gather(app, server, token_file)
    _warn_broken(found.broken)
    shown = [(source, application) for source, application in found.found
             if category is None or application.metadata.category.upper() == category.upper()]
    if as_json:
        print_json(app.out, [{**application.summary_json(), "source": source}
                             for source, application in shown])
        return
    if not shown:
        app.out.print("no applications" + (f" in category {category}" if category else ""))
        return
    by_category: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for source, application in shown:
        by_category[application.metadata.category].append(
            (application.ref, application.metadata.name, source))
    for name in sorted(by_category):
        table = Table("APP", "NAME", "FROM", box=None, title=name, title_justify="left")
        for row in sorted(by_category[name]):
            table.add_row(*row)
        app.out.print(table)


@app_group.command("show")
@click.argument("application", metavar="APP")
@server_options
@json_option
@pass_app
def show(app: AppContext, application: str, server: str | None, token_file: Path | None,
         as_json: bool) -> None:
    """An application's description and values (types, defaults, options)."""
    source, found = gather(app, server, token_file).find(application)
    if as_json:
        print_json(app.out, {**found.to_json(), "source": source})
        return
    meta = found.metadata
    app.out.print(f"{meta.name} ({found.ref}, {meta.category}, from the {source}'s catalogs)",
                  markup=False)
    if meta.description:
        app.out.print(f"\n{meta.description}\n", markup=False)
    table = Table("VALUE", "TYPE", "DEFAULT", "DESCRIPTION", box=None)
    for value in found.values:
        kind = value.kind + (f" ({' | '.join(value.options)})" if value.options else "")
        label = value.display_name.splitlines()[0] if value.display_name else ""
        table.add_row(value.name + (" *" if value.required else ""), kind,
                      repr(value.default) if value.kind == "string" else str(value.default),
                      label)
    app.out.print(table)


@app_group.command("start")
@click.argument("application", metavar="APP")
@set_option
@click.option("--name", "-n", metavar="[OWNER/]NAME",
              help="The workflow's name (default: the application's directory name).")
@click.option("--watch", "-w", is_flag=True,
              help="Show the status live until the workflow ends; exit 1 unless it succeeded.")
@account_option("Run it in this account (an IAM group the owner is a member of).")
@server_options
@json_option
@pass_app
def start(app: AppContext, application: str, overrides: tuple[str, ...], name: str | None,
          watch: bool, account: str, server: str | None, token_file: Path | None,
          as_json: bool) -> None:
    """Render APP with its defaults and --set values, check it, and start it."""
    _, found = gather(app, server, token_file).find(application)
    workflow = name or default_name(Path(found.key))
    checked_workflow_name(workflow)
    rendered = render_application(found, overrides)
    check_fuzzfile_size(len(rendered.text.encode()), str(rendered.loaded.path),
                        known_limits(app))
    start_text(app, workflow, rendered.text, str(rendered.loaded.path),
               StartOptions(account, watch, as_json), server, token_file)


COMMANDS = [app_group]
