"""Encryption of recorded state and saved plans, as the ``state.encryption`` block asks.

:func:`resolve_encryption` turns the block into an :class:`Encryption`: the keys
(a :class:`~fuzz.crypto.envelope.Sealer`, if any key is available) and whether writes
are sealed. Defaults: off for the local backend, on for a shared one (S3,
PostgreSQL) when ``$FUZZ_STATE_PASSPHRASE`` is set, and on wherever the block
names a key. Reading needs only a key: encrypted state is opened whenever one is
configured, and plaintext state is refused while encryption is on (so nobody can
slip a forged plaintext document past it) until ``fuzz state rekey`` encrypts it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from fuzz.crypto.envelope import DecryptionError, KeySource, PassphraseKeySource, Sealer, is_sealed
from fuzz.errors import ConfigError
from fuzz.spec.cluster import EncryptionSpec

DEFAULT_PASSPHRASE_ENV = "FUZZ_STATE_PASSPHRASE"
STATE_CONTEXT = b"fuzz state"
PLAN_CONTEXT = b"fuzz plan"


@dataclass(frozen=True)
class Encryption:
    """The keys for state and plans, and whether what fuzz writes is sealed."""

    sealer: Sealer | None = None
    enabled: bool = False

    def describe(self) -> str:
        """``encrypted (passphrase)`` or ``not encrypted``."""
        if self.enabled and self.sealer is not None:
            return f"encrypted ({self.sealer.describe()})"
        return "not encrypted"

    def seal(self, data: bytes, context: bytes) -> bytes:
        """``data`` sealed for ``context`` when encryption is on, else unchanged."""
        if self.enabled and self.sealer is not None:
            return self.sealer.seal(data, context)
        return data

    def open(self, blob: bytes, context: bytes, source: str, *,
             allow_plaintext: bool = False) -> bytes:
        """The plaintext of ``blob`` read from ``source``; DecryptionError in one line.

        Plaintext is returned as is when encryption is off or ``allow_plaintext``.
        """
        if is_sealed(blob):
            if self.sealer is None:
                raise DecryptionError(
                    f"{source} is encrypted, but no key is configured: set "
                    f"${DEFAULT_PASSPHRASE_ENV} or state.encryption (passphrase_env or kms_key_id)"
                )
            try:
                return self.sealer.unseal(blob, context)
            except DecryptionError as exc:
                raise DecryptionError(f"cannot decrypt {source}: {exc}") from None
        if self.enabled and not allow_plaintext:
            raise DecryptionError(
                f"{source} is not encrypted, but encryption is on: run fuzz state rekey to "
                "encrypt it, or set state.encryption.enabled: false"
            )
        return blob


PLAINTEXT = Encryption()


def resolve_encryption(spec: EncryptionSpec | None, shared: bool,
                       environ: Mapping[str, str] = os.environ) -> Encryption:
    """The :class:`Encryption` a ``state.encryption`` block asks for.

    ``shared`` is the backend's :attr:`~fuzz.plugin.state.StateBackend.shared`.
    Raises ConfigError when a named environment variable is unset, or encryption
    is enabled explicitly without any key.
    """
    spec = spec if spec is not None else EncryptionSpec()
    primary = _primary_source(spec, environ)
    fallbacks = _fallback_sources(spec, environ)
    if spec.enabled is not None:
        enabled = spec.enabled
    else:
        enabled = bool(spec.passphrase_env or spec.kms_key_id) or (shared and primary is not None)
    if enabled and primary is None:
        raise ConfigError(
            f"state.encryption is enabled but no key is configured: set ${DEFAULT_PASSPHRASE_ENV}"
            ", or state.encryption.passphrase_env or kms_key_id"
        )
    keys = [primary, *fallbacks] if primary is not None else fallbacks
    return Encryption(Sealer(keys[0], keys[1:]) if keys else None, enabled)


def _passphrase(variable: str, field: str, environ: Mapping[str, str]) -> PassphraseKeySource:
    value = environ.get(variable)
    if not value:
        raise ConfigError(f"state.encryption.{field}: environment variable {variable} is not set")
    return PassphraseKeySource(value)


def _kms(spec: EncryptionSpec, key_id: str) -> KeySource:
    from fuzz.crypto.kms import KmsKeySource, kms_client

    return KmsKeySource(kms_client(spec.kms_region, spec.kms_endpoint_url), key_id)


def _primary_source(spec: EncryptionSpec, environ: Mapping[str, str]) -> KeySource | None:
    if spec.kms_key_id:
        return _kms(spec, spec.kms_key_id)
    if spec.passphrase_env:
        return _passphrase(spec.passphrase_env, "passphrase_env", environ)
    if environ.get(DEFAULT_PASSPHRASE_ENV):
        return PassphraseKeySource(environ[DEFAULT_PASSPHRASE_ENV])
    return None


def _fallback_sources(spec: EncryptionSpec, environ: Mapping[str, str]) -> list[KeySource]:
    sources: list[KeySource] = []
    if spec.fallback_passphrase_env:
        sources.append(_passphrase(spec.fallback_passphrase_env, "fallback_passphrase_env",
                                   environ))
    if spec.fallback_kms_key_id:
        sources.append(_kms(spec, spec.fallback_kms_key_id))
    return sources
