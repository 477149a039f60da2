"""The ``fuzz`` command: global options, command groups, and the one-line error contract."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

import click

from fuzz import __version__
from fuzz.cli.lazygroup import LazyGroup
from fuzz.cli.options import AppContext
from fuzz.errors import FuzzError

DEBUG_ENV = "FUZZ_DEBUG"


def _lazy(commands: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """``{module: (command names)}`` turned round into ``{command name: module}``."""
    return {name: f"fuzz.{module}" for module, names in commands.items() for name in names}


# Each command's module is imported only when that command runs (see lazygroup.py).
TOP_COMMANDS = _lazy({
    "cli.commands_lifecycle": ("init", "validate", "plan", "apply", "destroy"),
    "cli.commands_state": ("state", "force-unlock"),
    "cli.commands_info": ("providers", "node"),
    "cli.commands_server": ("server",),
    "cli.commands_secret": ("secret",),
    "cli.commands_login": ("login", "logout", "whoami", "context"),
    "cli.commands_iam": ("iam",),
    "cli.commands_pool": ("pool",),
    "cli.commands_federation": ("federation",),
    "cli.commands_app": ("app",),
    "cli.commands_cache": ("cache",),
    "substrate.cli": ("substrate",),
})
WORKFLOW_COMMANDS = _lazy({
    "cli.commands_workflow": ("validate",),
    "cli.commands_runs": ("start", "status", "log", "list", "describe", "stop", "cancel"),
    "cli.commands_access": ("exec", "port-forward"),
    "cli.commands_endpoints": ("endpoints", "connect"),
    "cli.commands_upgrade": ("upgrade",),
})


@click.group(cls=LazyGroup, lazy_subcommands=TOP_COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"]})
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


@cli.group(cls=LazyGroup, lazy_subcommands=WORKFLOW_COMMANDS)
def workflow() -> None:
    """Check and run workflows (Fuzzfiles, in the Fuzzball shape)."""


def _debugging() -> bool:
    """Whether ``FUZZ_DEBUG`` (set to anything) asks for tracebacks."""
    return bool(os.environ.get(DEBUG_ENV))


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: user errors are one line on stderr and exit 1, never a traceback.

    With ``FUZZ_DEBUG=1`` an error's traceback, with the causes it chains (the OS or
    SDK error behind it), comes before that line.
    """
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
