"""``fuzz iam``: users, groups, roles, login codes, tokens and the curtain (admins)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import yaml

from fuzz.cli.commands_login import expiry
from fuzz.cli.connection import connect_iam, server_options, target
from fuzz.cli.options import AppContext, json_option, parse_duration_option, pass_app
from fuzz.cli.render import print_json
from fuzz.cli.workflow_view import to_dict
from fuzz.errors import ConfigError
from fuzz.orchestrate.iam.policy import ACTIONS, PolicyError, Statement, statements_from

ROLE_HELP = "A role to give (admin, user, submit-only or one of yours); repeatable."


@click.group(help="Manage who may do what: users, groups, roles, and the curtain over "
             f"exec and port-forward. Actions: {', '.join(ACTIONS)}.")
def iam() -> None:
    """The ``fuzz iam`` group."""


@iam.group()
def user() -> None:
    """Users: add one (with a login code), list, remove, new code, revoke tokens."""


@user.command("add")
@click.argument("name")
@click.option("--role", "roles", multiple=True, metavar="ROLE", help=ROLE_HELP)
@click.option("--group", "groups", multiple=True, metavar="GROUP",
              help="A group to put the user in; repeatable.")
@click.option("--code-ttl", default="24h", show_default=True, metavar="DURATION",
              help="How long the login code may be used.")
@server_options
@json_option
@pass_app
def user_add(app: AppContext, name: str, roles: tuple[str, ...], groups: tuple[str, ...],
             code_ttl: str, server: str | None, token_file: Path | None, as_json: bool) -> None:
    """Add user NAME (or set their roles and groups) and print a one-time login code."""
    ttl = parse_duration_option("--code-ttl", code_ttl)
    chosen = target(app, server, token_file)
    with chosen.iam() as client:
        made = client.put_user(name, roles, groups)
        code = client.issue_login_code(name, ttl)
    if as_json:
        print_json(app.out, {**to_dict(made), "code": code.code, "code_expires": code.expires})
        return
    app.out.print(f"User {made.name} (roles: {', '.join(made.roles) or 'none'}; groups: "
                  f"{', '.join(made.groups) or 'none'}).", markup=False)
    _print_code(app, chosen.endpoint, code.code, code.expires)


def _print_code(app: AppContext, endpoint: str, code: str, expires: float) -> None:
    app.out.print(f"One-time login code (until {expiry(expires)}): {code}\n"
                  f"They log in with: fuzz login {endpoint} --code {code} --ca-file ca.pem\n"
                  "(ca.pem: the cluster CA, the server's DATA_DIR/ca.pem; it is not secret)",
                  markup=False)


@user.command("code")
@click.argument("name")
@click.option("--ttl", default="24h", show_default=True, metavar="DURATION",
              help="How long the login code may be used.")
@server_options
@json_option
@pass_app
def user_code(app: AppContext, name: str, ttl: str, server: str | None,
              token_file: Path | None, as_json: bool) -> None:
    """Print a new one-time login code for user NAME."""
    chosen = target(app, server, token_file)
    with chosen.iam() as client:
        code = client.issue_login_code(name, parse_duration_option("--ttl", ttl))
    if as_json:
        print_json(app.out, to_dict(code))
        return
    _print_code(app, chosen.endpoint, code.code, code.expires)


@user.command("list")
@server_options
@json_option
@pass_app
def user_list(app: AppContext, server: str | None, token_file: Path | None,
              as_json: bool) -> None:
    """List users with their roles and groups."""
    with connect_iam(app, server, token_file) as client:
        users = client.users()
    if as_json:
        print_json(app.out, [to_dict(u) for u in users])
        return
    for item in users:
        app.out.print(f"{item.name}\troles: {', '.join(item.roles) or '-'}\tgroups: "
                      f"{', '.join(item.groups) or '-'}", markup=False)


@user.command("remove")
@click.argument("name")
@server_options
@pass_app
def user_remove(app: AppContext, name: str, server: str | None,
                token_file: Path | None) -> None:
    """Remove user NAME; their tokens stop working at once."""
    with connect_iam(app, server, token_file) as client:
        client.delete_user(name)
    app.out.print(f"User {name} removed; their tokens are revoked.", markup=False)


@user.command("revoke")
@click.argument("name")
@server_options
@pass_app
def user_revoke(app: AppContext, name: str, server: str | None,
                token_file: Path | None) -> None:
    """Revoke every token and login code of user NAME (they log in again with a new code)."""
    with connect_iam(app, server, token_file) as client:
        count = client.revoke_tokens(name)
    app.out.print(f"Revoked {count} token(s) and code(s) of {name}.", markup=False)


@iam.group()
def group() -> None:
    """Groups: the roles their members have."""


@group.command("set")
@click.argument("name")
@click.option("--role", "roles", multiple=True, metavar="ROLE", help=ROLE_HELP)
@server_options
@json_option
@pass_app
def group_set(app: AppContext, name: str, roles: tuple[str, ...], server: str | None,
              token_file: Path | None, as_json: bool) -> None:
    """Create group NAME, or set its roles."""
    with connect_iam(app, server, token_file) as client:
        made = client.put_group(name, roles)
    if as_json:
        print_json(app.out, to_dict(made))
        return
    app.out.print(f"Group {made.name} (roles: {', '.join(made.roles) or 'none'}).", markup=False)


@group.command("list")
@server_options
@json_option
@pass_app
def group_list(app: AppContext, server: str | None, token_file: Path | None,
               as_json: bool) -> None:
    """List groups and their roles."""
    with connect_iam(app, server, token_file) as client:
        groups = client.groups()
    if as_json:
        print_json(app.out, [to_dict(g) for g in groups])
        return
    for item in groups:
        app.out.print(f"{item.name}\troles: {', '.join(item.roles) or '-'}", markup=False)


@group.command("remove")
@click.argument("name")
@server_options
@pass_app
def group_remove(app: AppContext, name: str, server: str | None,
                 token_file: Path | None) -> None:
    """Remove group NAME (it must have no members)."""
    with connect_iam(app, server, token_file) as client:
        client.delete_group(name)
    app.out.print(f"Group {name} removed.", markup=False)


@iam.group()
def role() -> None:
    """Roles: policy documents of allow/deny statements (deny wins)."""


def read_policy(path: Path) -> list[Statement]:
    """The statements of a policy document (YAML: ``statements:`` of effect/actions/resources)."""
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not YAML: {' '.join(str(exc).split())}") from exc
    if not isinstance(data, dict) or set(data) != {"statements"} or \
            not isinstance(data["statements"], list) or \
            not all(isinstance(item, dict) for item in data["statements"]):
        raise ConfigError(f"{path}: a policy is a mapping with one key, statements: a list of "
                          "{effect, actions, resources}")
    try:
        return list(statements_from(data["statements"]))
    except PolicyError as exc:
        raise ConfigError(f"{path}: {exc}") from None


@role.command("set")
@click.argument("name")
@click.option("--policy", "policy_file", required=True,
              type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="The policy document (YAML), e.g. statements: [{effect: allow, actions: "
              "[workflow:read], resources: ['workflow/*']}].")
@server_options
@json_option
@pass_app
def role_set(app: AppContext, name: str, policy_file: Path, server: str | None,
             token_file: Path | None, as_json: bool) -> None:
    """Create role NAME, or replace its policy."""
    statements = read_policy(policy_file)
    with connect_iam(app, server, token_file) as client:
        made = client.put_role(name, statements)
    if as_json:
        print_json(app.out, to_dict(made))
        return
    app.out.print(f"Role {made.name}: {len(made.statements)} statement(s).", markup=False)


@role.command("list")
@server_options
@json_option
@pass_app
def role_list(app: AppContext, server: str | None, token_file: Path | None,
              as_json: bool) -> None:
    """List roles and their statements."""
    with connect_iam(app, server, token_file) as client:
        roles = client.roles()
    if as_json:
        print_json(app.out, [to_dict(r) for r in roles])
        return
    for item in roles:
        app.out.print(f"{item.name}{' (built in)' if item.builtin else ''}", markup=False)
        for s in item.statements:
            app.out.print(f"  {s.effect} {', '.join(s.actions)} on {', '.join(s.resources)}",
                          markup=False)


@role.command("remove")
@click.argument("name")
@server_options
@pass_app
def role_remove(app: AppContext, name: str, server: str | None,
                token_file: Path | None) -> None:
    """Remove role NAME (no user or group may have it)."""
    with connect_iam(app, server, token_file) as client:
        client.delete_role(name)
    app.out.print(f"Role {name} removed.", markup=False)


@iam.command("curtain")
@click.argument("state", type=click.Choice(["on", "off"]))
@server_options
@pass_app
def curtain(app: AppContext, state: str, server: str | None, token_file: Path | None) -> None:
    """Draw the curtain (on: exec and port-forward off for everyone, admins too) or open it."""
    with connect_iam(app, server, token_file) as client:
        drawn = client.set_curtain(state == "on")
    app.out.print("The curtain is drawn: exec and port-forward are off for everyone."
                  if drawn else "The curtain is open: exec and port-forward follow the policies.")


COMMANDS = (iam,)
