"""Which orchestrator a command talks to, as whom, and how it verifies it.

In order: ``--server`` with ``--token-file`` (``$FUZZ_SERVER``, ``$FUZZ_TOKEN_FILE``),
verified against ``--ca-file`` (``$FUZZ_CA_FILE``), else the CA of a context logged in
to that server, else the CA of the cluster spec here (or plain text with ``--insecure``);
the context ``--context NAME`` (or ``$FUZZ_CONTEXT``) names; the cluster spec's
``orchestrator:`` block, as the admin (the CA and admin token in its data dir);
the current context from ``fuzz login``. Plain text is only ever used when asked
for (``--insecure``, a context logged in with it, ``orchestrator.insecure``), and
then with a warning on standard error.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from fuzz.cli.options import AppContext
from fuzz.cli.spectargets import recall, remember
from fuzz.clients.orchestrator import OrchestratorClient
from fuzz.errors import ConfigError
from fuzz.orchestrate.connect import (
    CA_FILE,
    SpecOrchestrator,
    Target,
    explicit_target,
    orchestrator_target,
    read_ca_file,
    spec_orchestrator,
)

if TYPE_CHECKING:  # the logins' and federations' models load only when a command uses them
    from fuzz.cli.contexts import ClientConfig
    from fuzz.clients.iam import IamClient

F = TypeVar("F", bound=Callable[..., Any])


def _store(attribute: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A callback keeping an option's value in the app's access options."""

    def keep(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        app = ctx.find_object(AppContext)
        if app is not None and value is not None:
            setattr(app.access, attribute, value)
        return value

    return keep


def server_options(func: F) -> F:
    """``--server``, ``--token-file``, ``--ca-file``, ``--insecure`` and ``--context``.

    The first two are the command's parameters; the others land in ``app.access``.
    """
    for option in (
        click.option("--context", metavar="NAME", envvar="FUZZ_CONTEXT", expose_value=False,
                     callback=_store("context"),
                     help="Use this context from `fuzz login` (default: the spec's "
                     "orchestrator, else the current context)."),
        click.option("--insecure", is_flag=True, expose_value=False,
                     callback=_store("insecure"),
                     help="With --server: plain text, no TLS (warns)."),
        click.option("--ca-file", type=click.Path(dir_okay=False, path_type=Path),
                     envvar="FUZZ_CA_FILE", expose_value=False, callback=_store("ca_file"),
                     help="With --server: the cluster CA to verify it against."),
        click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path),
                     envvar="FUZZ_TOKEN_FILE",
                     help="With --server: the file holding your token."),
        click.option("--server", metavar="HOST:PORT", envvar="FUZZ_SERVER",
                     help="The orchestrator (default: see --context)."),
    ):
        func = option(func)
    return func


def target(app: AppContext, server: str | None, token_file: Path | None) -> Target:
    """The orchestrator the options (or their defaults) choose; warns about plain text."""
    if server is not None or token_file is not None:
        if server is None or token_file is None:
            raise click.UsageError("--server and --token-file go together")
        chosen = explicit_target(server, token_file, _server_ca(app, server))
    elif app.access.context is None and (block := _spec_orchestrator(app)) is not None:
        chosen = orchestrator_target(block)
    else:
        chosen = _logins().context(app.access.context)[1].target()
    if chosen.tls is None:
        click.echo(f"warning: talking to the orchestrator at {chosen.endpoint} in plain text "
                   "(insecure): tokens and data cross the network unencrypted", err=True)
    return chosen


def _spec_orchestrator(app: AppContext) -> SpecOrchestrator | None:
    """The ``orchestrator:`` block of the cluster spec here (None: no spec, or no block),
    remembered for the spec's exact bytes (:mod:`fuzz.cli.spectargets`), else read."""
    try:
        spec_bytes = app.spec_path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read {app.spec_path}: {exc.strerror}") from exc
    block = recall(app.spec_path, spec_bytes)
    if block is None and app.spec.spec.orchestrator is not None:
        block = spec_orchestrator(app.spec)
        remember(app.spec_path, spec_bytes, block)
    return block


def _logins() -> ClientConfig:
    """The contexts ``fuzz login`` saved."""
    from fuzz.cli.contexts import ClientConfig, config_path  # late: see TYPE_CHECKING

    return ClientConfig.load(config_path())


def _server_ca(app: AppContext, server: str) -> bytes | None:
    """The cluster CA that ``--server`` is verified against (None: plain text, asked for
    with ``--insecure``): ``--ca-file``, else the CA of a context logged in to ``server``,
    else the CA in the data dir of the cluster spec here."""
    ca_file, insecure = app.access.ca_file, app.access.insecure
    if insecure and ca_file is not None:
        raise click.UsageError("--insecure and --ca-file do not go together")
    if insecure:
        return None
    if ca_file is not None:
        return read_ca_file(ca_file)
    for context in _logins().contexts.values():
        if context.server == server and context.ca:
            return context.ca.encode()
    if app.spec_path.exists():
        loaded = app.spec
        block = loaded.spec.orchestrator
        spec_ca = loaded.base_dir / block.data_dir / CA_FILE if block is not None else None
        if spec_ca is not None and spec_ca.exists():
            return read_ca_file(spec_ca)
    raise ConfigError(f"--server {server}: no cluster CA to verify it against: pass --ca-file "
                      f"(or set FUZZ_CA_FILE), or log in to it once with `fuzz login {server} "
                      "--ca-file CA`")


def connect(app: AppContext, server: str | None, token_file: Path | None,
            workflow: str | None = None) -> OrchestratorClient:
    """A client for the chosen orchestrator; with ``--federation``, for the member that
    runs ``workflow``."""
    if app.access.federation is not None and workflow is not None:
        if server is not None or app.access.context is not None:
            raise click.UsageError("--federation and --server/--context do not go together")
        from fuzz.cli.federation import workflow_client  # late: see TYPE_CHECKING

        return workflow_client(app, workflow)
    return target(app, server, token_file).orchestrator()


def connect_iam(app: AppContext, server: str | None, token_file: Path | None) -> IamClient:
    """A client for the chosen orchestrator's Iam API."""
    return target(app, server, token_file).iam()
