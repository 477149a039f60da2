"""``fuzz login``, ``logout``, ``whoami`` and ``context list|use``: who the CLI is, where."""

from __future__ import annotations

import time
from pathlib import Path

import click

from fuzz.cli.connection import connect_iam, server_options
from fuzz.cli.contexts import ClientConfig, Context, config_path
from fuzz.cli.options import AppContext, json_option, parse_duration_option, pass_app
from fuzz.cli.render import print_json
from fuzz.cli.secretinput import ASK, secret_option_value
from fuzz.clients.iam import IamClient
from fuzz.clients.orchestrator import AccessDeniedError
from fuzz.orchestrate.connect import read_ca_file
from fuzz.rpc.client import ClientTls
from fuzz.units import utc


def expiry(seconds: float) -> str:
    """When a token expires, for people ('never' for 0)."""
    return utc(seconds) if seconds else "never"


@click.command()
@click.argument("server", metavar="HOST:PORT")
@click.option("--code", metavar="[CODE]", is_flag=False, flag_value=ASK, default=ASK,
              help="The one-time login code an admin gave you: typed (hidden) or piped in "
              "when left out; a CODE given here shows in the process list (warns).")
@click.option("--ca-file", type=click.Path(dir_okay=False, path_type=Path), metavar="PEM",
              help="The cluster CA (the server's DATA_DIR/ca.pem) to verify the server with.")
@click.option("--insecure", is_flag=True, help="Plain text, no TLS (warns; not for real use).")
@click.option("--context", "name", metavar="NAME",
              help="Name the context (default: USER@HOST:PORT).")
@click.option("--ttl", metavar="DURATION", help="How long the token lives (e.g. 8h; "
              "default: the server's, 30 days).")
@json_option
@pass_app
def login(app: AppContext, server: str, code: str, ca_file: Path | None, insecure: bool,
          name: str | None, ttl: str | None, as_json: bool) -> None:
    """Log in to the orchestrator at HOST:PORT: spend a login code for a token, kept as a context.

    The token goes to ~/.config/fuzz/config.yaml (mode 0600) under a named context,
    which becomes the current one.
    """
    if insecure == (ca_file is not None):
        raise click.UsageError("give --ca-file (the cluster CA) or --insecure")
    ca = read_ca_file(ca_file) if ca_file is not None else None
    if insecure:
        click.echo(f"warning: logging in to {server} in plain text (--insecure): the token "
                   "crosses the network unencrypted", err=True)
    code = secret_option_value("--code", code, "Login code").strip()
    with IamClient(server, "", tls=ClientTls(ca) if ca else None) as client:
        session = client.login(code, parse_duration_option("--ttl", ttl) if ttl else 0.0)
    context_name = name or f"{session.user}@{server}"
    path = config_path()
    config = ClientConfig.load(path)
    config.contexts[context_name] = Context(
        server=server, user=session.user, token=session.token, expires=session.expires,
        ca=ca.decode() if ca else None, insecure=insecure)
    config.current = context_name
    config.save(path)
    if as_json:
        print_json(app.out, {"context": context_name, "server": server, "user": session.user,
                             "expires": session.expires, "config": str(path)})
        return
    app.out.print(f"Logged in to {server} as {session.user} (context {context_name}, token "
                  f"expires {expiry(session.expires)}); saved in {path}.")


@click.command()
@click.option("--context", "name", metavar="NAME", help="Log out of this context "
              "(default: the current one).")
@pass_app
def logout(app: AppContext, name: str | None) -> None:
    """Revoke the context's token on the server and forget the context."""
    path = config_path()
    config = ClientConfig.load(path)
    chosen, context = config.context(name)
    try:
        with context.target().iam() as client:
            client.logout()
    except AccessDeniedError:
        pass  # expired or revoked already: nothing left to revoke
    del config.contexts[chosen]
    if config.current == chosen:
        config.current = None
    config.save(path)
    app.out.print(f"Logged out of {context.server} ({chosen}); the token is revoked.")


@click.command()
@server_options
@json_option
@pass_app
def whoami(app: AppContext, server: str | None, token_file: Path | None, as_json: bool) -> None:
    """Who the orchestrator takes you for: user, roles, groups, token expiry."""
    with connect_iam(app, server, token_file) as client:
        identity = client.whoami()
    if as_json:
        print_json(app.out, {"user": identity.user, "roles": list(identity.roles),
                             "groups": list(identity.groups), "expires": identity.expires,
                             "curtain": identity.curtain})
        return
    app.out.print(f"{identity.user} (roles: {', '.join(identity.roles) or 'none'}; groups: "
                  f"{', '.join(identity.groups) or 'none'}; token expires "
                  f"{expiry(identity.expires)})")
    if identity.curtain:
        app.out.print("The curtain is drawn: exec and port-forward are off for everyone.")


@click.group()
def context() -> None:
    """The contexts `fuzz login` saved: list them, pick the current one."""


@context.command("list")
@json_option
@pass_app
def context_list(app: AppContext, as_json: bool) -> None:
    """List the saved contexts; the current one is marked with *."""
    config = ClientConfig.load(config_path())
    rows = [{"name": name, "current": name == config.current, "server": c.server,
             "user": c.user, "expires": c.expires, "expired": bool(c.expires) and
             c.expires <= time.time(), "insecure": c.insecure}
            for name, c in sorted(config.contexts.items())]
    if as_json:
        print_json(app.out, rows)
        return
    if not rows:
        app.out.print("No contexts: log in with `fuzz login SERVER`.")
    for row in rows:
        state = " (expired)" if row["expired"] else ""
        app.out.print(f"{'*' if row['current'] else ' '} {row['name']}\t{row['user']} at "
                      f"{row['server']}{state}", markup=False)


@context.command("use")
@click.argument("name")
@pass_app
def context_use(app: AppContext, name: str) -> None:
    """Make context NAME the current one."""
    path = config_path()
    config = ClientConfig.load(path)
    config.current = config.context(name)[0]
    config.save(path)
    app.out.print(f"Now using context {name}.", markup=False)


COMMANDS = (login, logout, whoami, context)
