"""Which orchestrator a command talks to: ``--server``/``--token-file`` or the spec's block."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from fuzz.cli.options import AppContext
from fuzz.orchestrate.client import OrchestratorClient
from fuzz.orchestrate.connect import explicit_client

F = TypeVar("F", bound=Callable[..., Any])


def server_options(func: F) -> F:
    """``--server`` and ``--token-file`` (also FUZZ_SERVER and FUZZ_TOKEN_FILE)."""
    func = click.option(
        "--token-file", type=click.Path(dir_okay=False, path_type=Path), envvar="FUZZ_TOKEN_FILE",
        help="The orchestrator's token (default: from the cluster spec's orchestrator: block).",
    )(func)
    return click.option(
        "--server", metavar="HOST:PORT", envvar="FUZZ_SERVER",
        help="The orchestrator (default: from the cluster spec's orchestrator: block).",
    )(func)


def connect(app: AppContext, server: str | None, token_file: Path | None) -> OrchestratorClient:
    """A client for the chosen orchestrator."""
    if server is not None or token_file is not None:
        if server is None or token_file is None:
            raise click.UsageError("--server and --token-file go together")
        return explicit_client(server, token_file)
    return app.workspace.orchestrator
