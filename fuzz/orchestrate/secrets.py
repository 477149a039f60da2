"""Users' and accounts' secrets (registry credentials, S3 keys): sealed at rest, never
returned by the API.

Values are sealed with the server's key (AES-256-GCM, :mod:`fuzz.crypto.envelope`)
bound to the owner and name, so a sealed value copied to another row does not
open. An account's secrets are kept under the owner :func:`account_owner` (``@NAME``:
no user name holds an ``@``), so they are bound to the account. Only the runner
opens them, to hand them to a transfer, an image pull, or a job's environment (``env:
[NAME=secret://…]``, sent to the agent in the start request).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

from fuzz.crypto.envelope import Sealer
from fuzz.errors import FuzzError
from fuzz.orchestrate.records import SecretRecord
from fuzz.orchestrate.store import Store

MAX_SECRET_BYTES = 64 * 1024
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class SecretError(FuzzError):
    """A secret that does not exist, exists already, or has a bad name or size."""


ACCOUNT_PREFIX = "@"


def account_owner(account: str) -> str:
    """The owner an account's secrets are kept (and sealed) under: ``@ACCOUNT``."""
    return ACCOUNT_PREFIX + account


def missing_secret(path: str | Path, where: str, name: str, account: str = "") -> SecretError:
    """The answer for a Fuzzfile's secret that is not there (or not the caller's to see);
    ``account``: the account whose secret it would be (empty: the user's own)."""
    if account:
        return SecretError(f"{path}: {where}: account {account!r} has no secret {name!r} "
                           f"(create it with: fuzz secret create --account {account} {name})")
    return SecretError(f"{path}: {where}: no secret {name!r} "
                       f"(create it with: fuzz secret create {name})")


def _binding(owner: str, name: str) -> bytes:
    return f"secret:{owner}/{name}".encode()


class SecretStore:
    """Create, list, delete and (for the runner only) open secrets."""

    def __init__(self, store: Store, sealer: Sealer, clock: Callable[[], float] = time.time
                 ) -> None:
        """Keep secrets in ``store``, sealed by ``sealer``."""
        self._store = store
        self._sealer = sealer
        self._clock = clock

    def create(self, owner: str, name: str, value: bytes, replace: bool = False) -> SecretRecord:
        """Store ``value`` as ``owner``'s secret ``name``; SecretError if it exists."""
        if not _NAME.match(name):
            raise SecretError(
                f"secret name {name!r}: use letters, digits, '.', '_' or '-' (at most 128)"
            )
        if not value:
            raise SecretError(f"secret {name!r}: the value is empty")
        if len(value) > MAX_SECRET_BYTES:
            raise SecretError(f"secret {name!r}: larger than {MAX_SECRET_BYTES} bytes")
        if not replace and self._store.load(SecretRecord, owner=owner, name=name):
            raise SecretError(f"secret {name!r} exists; delete it first or use --replace")
        record = SecretRecord(owner=owner, name=name, size=len(value), created=self._clock(),
                              sealed=self._sealer.seal(value, _binding(owner, name)))
        self._store.save(record)
        return record

    def list(self, owner: str) -> list[SecretRecord]:
        """``owner``'s secrets (sealed values included; callers must not show them)."""
        return self._store.load(SecretRecord, order_by="name", owner=owner)

    def delete(self, owner: str, name: str) -> None:
        """Delete ``owner``'s secret ``name``; SecretError if there is none."""
        found = self._store.load(SecretRecord, owner=owner, name=name)
        if not found:
            raise SecretError(f"no secret {name!r}")
        self._store.delete(found[0])

    def open(self, owner: str, name: str) -> bytes:
        """The value of ``owner``'s secret ``name``; SecretError if there is none."""
        found = self._store.load(SecretRecord, owner=owner, name=name)
        if not found:
            raise SecretError(f"no secret {name!r} (create it with: fuzz secret create {name})")
        return self._sealer.unseal(found[0].sealed, _binding(owner, name))


def environment_value(value: bytes, name: str) -> str:
    """Secret ``name``'s value as an environment variable's: UTF-8 text without NUL (the
    value itself is never part of the error)."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        text = "\0"
    if "\0" in text:
        raise SecretError(f"secret {name!r} cannot be an environment variable's value: it is"
                          " not UTF-8 text without NUL bytes (store it as text, e.g. base64)")
    return text


def registry_credentials(value: bytes) -> tuple[str, str]:
    """A registry secret's value as (username, password).

    Accepted forms: ``USERNAME:PASSWORD`` on one line, or a JSON object with
    ``username`` and ``password`` (as ``docker login`` would take them).
    """
    text = value.decode("utf-8", "replace").strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
            return str(data["username"]), str(data["password"])
        except (ValueError, KeyError, TypeError):
            raise SecretError(
                "a registry secret in JSON needs 'username' and 'password'") from None
    user, sep, password = text.partition(":")
    if not sep or not user:
        raise SecretError("a registry secret must be USERNAME:PASSWORD or JSON "
                          "{\"username\": ..., \"password\": ...}")
    return user, password
