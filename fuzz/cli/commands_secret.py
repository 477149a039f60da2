"""``fuzz secret create|list|delete``: credentials jobs and transfers use, never shown again."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from fuzz.cli.connection import connect, server_options
from fuzz.cli.options import AppContext, account_option, json_option, pass_app
from fuzz.cli.secretinput import ASK, secret_option_value
from fuzz.cli.workflow_view import clock, to_dict
from fuzz.errors import ConfigError


@click.group("secret")
def secret() -> None:
    """Manage secrets (registry credentials, S3 keys) kept encrypted by the orchestrator."""


@secret.command("create")
@click.argument("name")
@click.option("--from-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Read the value from this file ('-' for standard input).")
@click.option("--from-literal", metavar="[VALUE]", is_flag=False, flag_value=ASK,
              help="The value: typed (hidden) or piped in when VALUE is left out; a VALUE "
              "given here shows in the process list and your shell history (warns).")
@click.option("--replace", is_flag=True, help="Replace an existing secret of that name.")
@account_option("Store it as a secret of this account (an IAM group you are a member of): "
                "secret://account/NAME.")
@server_options
@json_option
@pass_app
def create(app: AppContext, name: str, from_file: Path | None, from_literal: str | None,
           replace: bool, account: str, server: str | None, token_file: Path | None,
           as_json: bool) -> None:
    """Store secret NAME; reference it from a Fuzzfile as secret://user/NAME (with
    --account, as secret://account/NAME: the account's members' workflows use it).

    Give NAME before --from-literal: a word after --from-literal is its value.
    """
    if (from_file is None) == (from_literal is None):
        raise click.UsageError("give exactly one of --from-file and --from-literal")
    if from_literal is not None:
        value = secret_option_value("--from-literal", from_literal, "Secret value").encode()
    elif str(from_file) == "-":
        value = sys.stdin.buffer.read()
    else:
        try:
            value = Path(str(from_file)).read_bytes()
        except OSError as exc:
            raise ConfigError(f"--from-file {from_file}: {exc.strerror}") from exc
    with connect(app, server, token_file) as client:
        made = client.create_secret(name, value, replace, account)
    if as_json:
        sys.stdout.write(json.dumps(to_dict(made)) + "\n")
    else:
        app.out.print(f"secret {made.name}{_of(account)} stored ({made.size} bytes, "
                      "encrypted)")


def _of(account: str) -> str:
    return f" of account {account}" if account else ""


@secret.command("list")
@account_option("List this account's secrets instead of your own.")
@server_options
@json_option
@pass_app
def list_(app: AppContext, account: str, server: str | None, token_file: Path | None,
          as_json: bool) -> None:
    """List your secrets, or an account's (names and sizes; values are never shown)."""
    with connect(app, server, token_file) as client:
        found = client.list_secrets(account)
    if as_json:
        sys.stdout.write(json.dumps([to_dict(s) for s in found], indent=2) + "\n")
        return
    for item in found:
        app.out.print(f"{item.name}\t{item.size} bytes\tcreated {clock(item.created)}")


@secret.command("delete")
@click.argument("name")
@account_option("Delete this account's secret NAME instead of your own.")
@server_options
@pass_app
def delete(app: AppContext, name: str, account: str, server: str | None,
           token_file: Path | None) -> None:
    """Delete secret NAME (of an account, with --account)."""
    with connect(app, server, token_file) as client:
        client.delete_secret(name, account)
    app.out.print(f"secret {name}{_of(account)} deleted")


COMMANDS = (secret,)
