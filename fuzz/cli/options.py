"""Shared CLI plumbing: the app context, consoles, and options several commands take."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from fuzz.errors import ConfigError
from fuzz.spec.federation_file import DEFAULT_FILE
from fuzz.spec.names import iam_name_problem
from fuzz.spec.workflowref import workflow_or_run_problem
from fuzz.units import parse_duration

if TYPE_CHECKING:  # imported when first used: the spec's models are most of a start, and
    # a command that prints through neither console (exec) need not import rich
    from rich.console import Console

    from fuzz.cli.workspace import Workspace
    from fuzz.spec.loader import LoadedSpec

F = TypeVar("F", bound=Callable[..., Any])
FEDERATION_ENV = "FUZZ_FEDERATION"
PIPED_WIDTH = 160


@dataclass
class AccessOptions:
    """How to reach the orchestrator beyond ``--server``/``--token-file`` (see connection.py)."""

    context: str | None = None
    ca_file: Path | None = None
    insecure: bool = False
    federation: Path | None = None
    """``--federation``: the federation spec whose member runs the workflow."""


@dataclass
class AppContext:
    """What the top-level group hands every command."""

    spec_path: Path
    color: bool = True
    access: AccessOptions = field(default_factory=AccessOptions)

    @cached_property
    def out(self) -> Console:
        """The console on standard output."""
        from rich.console import Console  # late: see TYPE_CHECKING above

        # Piped output (CI logs, files) gets wide lines instead of rich's default 80 columns.
        width = None if sys.stdout.isatty() else PIPED_WIDTH
        return Console(no_color=not self.color, highlight=False, soft_wrap=True, width=width)

    @cached_property
    def err(self) -> Console:
        """The console on standard error."""
        from rich.console import Console  # late: see TYPE_CHECKING above

        return Console(stderr=True, no_color=not self.color, highlight=False, soft_wrap=True)

    @cached_property
    def spec(self) -> LoadedSpec:
        """The parsed and validated cluster spec, without its plugins or state (what a
        command that only reaches the spec's orchestrator needs)."""
        from fuzz.spec.loader import load_cluster_spec  # late: see TYPE_CHECKING above

        return load_cluster_spec(self.spec_path, display_name=str(self.spec_path))

    @cached_property
    def workspace(self) -> Workspace:
        """The spec, plugins and state this command acts on."""
        from fuzz.cli.workspace import Workspace  # late: see TYPE_CHECKING above

        return Workspace(self.spec_path, lambda: self.spec)


pass_app = click.make_pass_decorator(AppContext)


def parse_duration_option(option: str, value: str) -> float:
    """Parse a duration given as ``option``, with the option's name in the error."""
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ConfigError(f"{option}: {exc}") from None


def parse_lock_timeout(value: str) -> float:
    """Parse a ``--lock-timeout`` value, with the flag's name in the error."""
    return parse_duration_option("--lock-timeout", value)


def lock_timeout_option(func: F) -> F:
    """``--lock-timeout``: how long to wait for the state lock."""
    # Not Terraform's 0s: the orchestrator's elastic loop takes the lock for a moment on
    # every pass, and a command must not fail for meeting one.
    return click.option(
        "--lock-timeout", default="60s", show_default=True, metavar="DURATION",
        help="How long to wait for the state lock held by someone else (0s: fail at once).",
    )(func)


def json_option(func: F) -> F:
    """``--json``: machine-readable output."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(func)


def checked_workflow(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A workflow argument as given, once it names a workflow or a run (one line if not)."""
    problem = workflow_or_run_problem(value)
    if problem is not None:
        raise ConfigError(problem)
    return value


workflow_argument = click.argument("name", metavar="WORKFLOW", callback=checked_workflow)
"""A workflow argument: ``NAME`` is the caller's own workflow, ``OWNER/NAME`` another
owner's (only where IAM allows it on ``workflow/OWNER/NAME``), a run id (``OWNER.NAME.RUN``)
that run."""


def _checked_account(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    """An ``--account`` as given (empty when left out), once it is an IAM group name."""
    problem = iam_name_problem("account", value) if value else None
    if problem is not None:
        raise ConfigError(f"--account {value}: {problem}")
    return value or ""


def account_option(help_text: str) -> Callable[[F], F]:
    """``--account NAME``: an account (an IAM group the caller is a member of)."""
    return click.option("--account", metavar="NAME", default=None, callback=_checked_account,
                        help=help_text)


def _keep_federation(ctx: click.Context, param: click.Parameter, value: Path | None
                     ) -> Path | None:
    app = ctx.find_object(AppContext)
    if app is not None and value is not None:
        app.access.federation = value
    return value


def federation_option(func: F) -> F:
    """``--federation [FILE]``: go through the federation of FILE (default
    ``federation.yaml``; ``$FUZZ_FEDERATION``) to the member that runs the workflow."""
    return click.option(
        "--federation", is_flag=False, flag_value=DEFAULT_FILE, default=None,
        type=click.Path(dir_okay=False, path_type=Path), envvar=FEDERATION_ENV,
        expose_value=False, callback=_keep_federation, metavar="[FILE]",
        help=f"Through the federation in FILE (default {DEFAULT_FILE}): start routes the "
             "workflow to a member; the other commands reach the member running it.")(func)
