"""Where the orchestrator's store is, without the database drivers (the CLI imports it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fuzz.errors import FuzzError
from fuzz.spec.store_url import url_problem

__all__ = ["PostgresTarget", "StoreError"]


class StoreError(FuzzError):
    """The database cannot be opened or is of a newer version than this server."""


@dataclass(frozen=True)
class PostgresTarget:
    """A PostgreSQL database to keep the orchestrator's records in.

    ``url``: ``postgres://[user@]host[:port]/database`` (no password);
    ``password_file``: a file holding the password (else libpq's environment).
    """

    url: str
    password_file: Path | None = None

    def __post_init__(self) -> None:
        problem = url_problem(self.url)
        if problem is not None:
            raise StoreError(problem)

    def __str__(self) -> str:
        return self.url
