"""The ``fuzz`` command: global options, command groups, and the one-line error contract."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

import click

from fuzz import __version__
from fuzz.cli.options import AppContext
from fuzz.errors import FuzzError

DEBUG_ENV = "FUZZ_DEBUG"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-C", "--chdir", type=click.Path(file_okay=False, path_type=Path),
              help="Run as if fuzz was started in this directory.")
@click.option("-f", "--file", "spec_file", default="fuzz.yaml", show_default=True,
              envvar="FUZZ_SPEC", help="The cluster spec.")
@click.option("--no-color", is_flag=True, envvar="NO_COLOR", help="Plain output.")
@click.version_option(__version__, prog_name="fuzz")
@click.pass_context
def cli(ctx: click.Context, chdir: Path | None, spec_file: str, no_color: bool) -> None:
    """fuzz turns declared clusters and workflows into containers on provisioned nodes."""
    if chdir is not None:
        try:
            os.chdir(chdir)
        except OSError as exc:
            raise FuzzError(f"-C {chdir}: {exc.strerror}") from exc
    ctx.obj = AppContext(Path(spec_file), color=not no_color)


def _register_commands() -> None:
    from fuzz.cli import (
        commands_access,
        commands_app,
        commands_cache,
        commands_endpoints,
        commands_federation,
        commands_iam,
        commands_info,
        commands_lifecycle,
        commands_login,
        commands_node,
        commands_pool,
        commands_runs,
        commands_secret,
        commands_server,
        commands_state,
        commands_store,
        commands_upgrade,
    )
    from fuzz.cli.commands_workflow import workflow
    from fuzz.substrate.cli import substrate

    for module in (commands_lifecycle, commands_state, commands_info, commands_server,
                   commands_secret, commands_login, commands_iam, commands_pool,
                   commands_federation, commands_app, commands_cache):
        for command in module.COMMANDS:
            cli.add_command(command)
    for command in (*commands_runs.COMMANDS, *commands_access.COMMANDS,
                    *commands_endpoints.COMMANDS,
                    *commands_upgrade.COMMANDS):
        workflow.add_command(command)
    cli.add_command(workflow)
    for command in commands_store.COMMANDS:
        commands_server.server.add_command(command)
    cli.add_command(substrate)
    for command in commands_node.COMMANDS:
        commands_info.node.add_command(command)


def _debugging() -> bool:
    """Whether ``FUZZ_DEBUG`` (set to anything) asks for tracebacks."""
    return bool(os.environ.get(DEBUG_ENV))


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: user errors are one line on stderr and exit 1, never a traceback.

    With ``FUZZ_DEBUG=1`` an error's traceback, with the causes it chains (the OS or
    SDK error behind it), comes before that line.
    """
    _register_commands()
    try:
        cli.main(args=argv, prog_name="fuzz", standalone_mode=False)
    except FuzzError as exc:
        if _debugging():
            traceback.print_exception(exc)
        if str(exc):
            click.echo(f"{exc.prefix}{exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug: say so in one line, full trace only on request
        if _debugging():
            traceback.print_exception(exc)
        click.echo(f"Internal error: {type(exc).__name__}: {exc} "
                   f"(set {DEBUG_ENV}=1 for the traceback, and please report it)", err=True)
        sys.exit(1)
