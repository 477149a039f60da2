"""Secrets given to the CLI (a secret's value, a login code): typed hidden or piped in.

A value on the command line is visible to every user of the machine in the process
list and stays in the shell's history, so the options that take one may be given
without it: the value is then read from standard input when that is not a
terminal (``... | fuzz secret create NAME --from-literal``), else asked for with
a hidden prompt. A value given on the command line still works, with a warning.
"""

from __future__ import annotations

import sys

import click

ASK = ""
"""What such an option holds when it was given without a value (its ``flag_value``)."""


def secret_option_value(option: str, given: str, prompt: str) -> str:
    """The value for ``option``: ``given`` (warning on stderr), else piped in, else typed.

    A value read from a pipe loses one trailing newline, as ``echo`` adds it.
    """
    if given != ASK:
        click.echo(f"warning: {option} VALUE is visible to other users in the process list "
                   f"and stays in your shell history; give {option} without a value to type "
                   "it hidden or pipe it in", err=True)
        return given
    if not sys.stdin.isatty():
        text = sys.stdin.read()
        return text[:-1] if text.endswith("\n") else text
    value: str = click.prompt(prompt, hide_input=True)
    return value
