"""A click group that imports a subcommand's module only when that subcommand is asked for.

``fuzz workflow exec`` should start as fast as ``ssh``: importing every command module up
front (the cluster spec's and the Fuzzfile's pydantic models, the providers, IAM) cost
most of a CPU-second before the first byte moved. Click documents this pattern ("lazily
loading subcommands"): the group knows each subcommand's name and module, and
``get_command`` imports the module on demand. Listing the group (``--help``) still loads
them all, to show each one's summary.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import click


class LazyGroup(click.Group):
    """A group whose subcommands named in ``lazy_subcommands`` load on first use.

    ``lazy_subcommands`` maps a subcommand's name to the module that defines it; the
    module lists its commands in ``COMMANDS``, and the one of that name is taken.
    """

    def __init__(self, *args: Any, lazy_subcommands: Mapping[str, str] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_subcommands = dict(lazy_subcommands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every subcommand's name, the lazy ones without importing them."""
        return sorted({*super().list_commands(ctx), *self.lazy_subcommands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The subcommand ``cmd_name``, importing its module the first time."""
        if cmd_name not in self.commands and cmd_name in self.lazy_subcommands:
            self.add_command(load_command(self.lazy_subcommands[cmd_name], cmd_name))
        return super().get_command(ctx, cmd_name)


def load_command(module_name: str, cmd_name: str) -> click.Command:
    """The command named ``cmd_name`` in ``module_name``'s ``COMMANDS``."""
    module = importlib.import_module(module_name)
    for command in module.COMMANDS:
        if command.name == cmd_name:
            return command  # type: ignore[no-any-return]
    raise LookupError(f"{module_name}.COMMANDS has no command named {cmd_name!r}")
