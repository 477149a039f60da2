"""Encryption at rest: AES-256-GCM envelopes whose header names the key that sealed them.

A :class:`Sealer` seals bytes with its primary key and unseals with the primary or
any fallback key, which is how keys are rotated: make the new key primary, keep the
old one as a fallback until everything was written again. Keys come from a
:class:`KeySource`: a raw 32-byte key, a passphrase (scrypt), or a KMS key
(:mod:`fuzz.crypto.kms`, envelope encryption with a data key).

Envelope format (all integers big-endian)::

    offset  size  field
    0       7     magic b"FUZZENC"
    7       1     format version (1)
    8       1     key source kind: 1 raw key, 2 passphrase (scrypt), 3 KMS data key
    9       8     key id: the first 8 bytes of SHA-256 over the AES key, or over the
                  KMS key's ARN (kind 3); names the key without revealing it
    17      2     length P of the key source's parameters
    19      P     parameters: nothing (kind 1); log2(N), r, p (1 byte each) and a
                  16-byte salt (kind 2); the KMS-wrapped data key (kind 3)
    19+P    12    random nonce
    31+P    ...   ciphertext followed by the 16-byte GCM tag

The GCM associated data is the whole header (bytes 0 to 31+P) followed by the
caller's ``associated_data``, so neither the header nor the context a blob was
sealed for (``b"fuzz state"``, ``b"fuzz plan"``) can be changed without the tag
failing. A passphrase source derives one key per salt and reuses it (scrypt is
deliberately slow), so the salt is per key, not per blob; nonces are random per blob.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from fuzz.errors import ConfigError, FuzzError

MAGIC = b"FUZZENC"
VERSION = 1
KEY_BYTES = 32
KEY_ID_BYTES = 8
NONCE_BYTES = 12
SALT_BYTES = 16
SCRYPT_LOG2_N = 15  # N = 32768, r = 8: 32 MiB and about 0.1 s per derivation
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_MAX_MEMORY = 256 * 2**20  # a header asking for more is refused, not obeyed
_FIXED = struct.Struct(">7sBB8sH")  # magic, version, kind, key id, parameter length


class DecryptionError(FuzzError):
    """Sealed data could not be opened: wrong key, corrupted, or not encrypted at all."""


@dataclass(frozen=True)
class SealingKey:
    """What a key source hands the sealer for one seal: the AES key and its header fields."""

    kind: int
    key_id: bytes
    parameters: bytes
    key: bytes


class KeySource(Protocol):
    """Where AES keys come from; one source per configured key (primary or fallback)."""

    kind: int

    def describe(self) -> str:
        """How the key is named in messages, e.g. ``passphrase`` or ``KMS key alias/x``."""
        ...

    def sealing_key(self) -> SealingKey:
        """The key to seal with, and the header fields that let it be found again."""
        ...

    def unsealing_key(self, key_id: bytes, parameters: bytes) -> bytes | None:
        """The AES key for a blob with these header fields, or None if it is not this key."""
        ...


def key_id_of(material: bytes) -> bytes:
    """The 8-byte key id of an AES key (or of a KMS key's ARN): a SHA-256 prefix."""
    return hashlib.sha256(material).digest()[:KEY_ID_BYTES]


class RawKeySource:
    """A 32-byte key given directly (kind 1)."""

    kind = 1

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ConfigError(f"an encryption key must be {KEY_BYTES} bytes, not {len(key)}")
        self._key = bytes(key)
        self._id = key_id_of(self._key)

    def describe(self) -> str:
        """``key <id>``."""
        return f"key {self._id.hex()}"

    def sealing_key(self) -> SealingKey:
        """The key itself; no parameters."""
        return SealingKey(self.kind, self._id, b"", self._key)

    def unsealing_key(self, key_id: bytes, parameters: bytes) -> bytes | None:
        """The key when the blob's key id is this key's."""
        return self._key if key_id == self._id else None


class PassphraseKeySource:
    """A key derived from a passphrase with scrypt (kind 2), one derivation per salt.

    Sealing reuses a salt already derived (from sealing or unsealing), so a process
    that reads and then writes state pays for scrypt once.
    """

    kind = 2
    _PARAMS = struct.Struct(">BBB16s")

    def __init__(self, passphrase: str) -> None:
        if not passphrase:
            raise ConfigError("an encryption passphrase must not be empty")
        self._passphrase = passphrase.encode()
        self._derived: dict[bytes, bytes] = {}  # parameters -> key
        self._mutex = threading.Lock()

    def describe(self) -> str:
        """``passphrase``: its derived key ids differ per salt, so none is shown."""
        return "passphrase"

    def sealing_key(self) -> SealingKey:
        """A key for an already derived salt, or for a fresh random one."""
        with self._mutex:
            if self._derived:
                parameters, key = next(iter(self._derived.items()))
                return SealingKey(self.kind, key_id_of(key), parameters, key)
        parameters = self._PARAMS.pack(SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P,
                                       secrets.token_bytes(SALT_BYTES))
        key = self._derive(parameters)
        return SealingKey(self.kind, key_id_of(key), parameters, key)

    def unsealing_key(self, key_id: bytes, parameters: bytes) -> bytes | None:
        """Derive the key for the blob's salt; None when this passphrase gives another id."""
        key = self._derive(parameters)
        return key if key_id_of(key) == key_id else None

    def _derive(self, parameters: bytes) -> bytes:
        with self._mutex:
            cached = self._derived.get(parameters)
        if cached is not None:
            return cached
        if len(parameters) != self._PARAMS.size:
            raise DecryptionError("damaged encryption header (bad scrypt parameters)")
        log2_n, r, p, salt = self._PARAMS.unpack(parameters)
        if not (10 <= log2_n <= 20 and 1 <= r <= 16 and 1 <= p <= 4
                and 128 * r * 2**log2_n <= SCRYPT_MAX_MEMORY):
            raise DecryptionError(
                f"damaged encryption header (scrypt N=2^{log2_n}, r={r}, p={p} out of range)"
            )
        key = Scrypt(salt=salt, length=KEY_BYTES, n=2**log2_n, r=r, p=p).derive(self._passphrase)
        with self._mutex:
            self._derived.setdefault(parameters, key)
        return key


_KIND_NAMES = {1: "a raw key", 2: "a passphrase", 3: "a KMS key"}


class Sealer:
    """Seals with the primary key source, unseals with the primary or any fallback.

    Safe to share between threads.
    """

    def __init__(self, primary: KeySource, fallbacks: Sequence[KeySource] = ()) -> None:
        self.primary = primary
        self.sources: tuple[KeySource, ...] = (primary, *fallbacks)

    @classmethod
    def from_passphrase(cls, passphrase: str, fallbacks: Sequence[str] = ()) -> Sealer:
        """Keys derived from passphrases with scrypt; ``fallbacks`` only unseal."""
        return cls(PassphraseKeySource(passphrase),
                   [PassphraseKeySource(phrase) for phrase in fallbacks])

    @classmethod
    def from_keys(cls, key: bytes, fallbacks: Sequence[bytes] = ()) -> Sealer:
        """Raw 32-byte AES-256 keys; ``fallbacks`` only unseal."""
        return cls(RawKeySource(key), [RawKeySource(k) for k in fallbacks])

    def describe(self) -> str:
        """The configured keys, primary first, e.g. ``passphrase (+1 fallback)``."""
        extra = len(self.sources) - 1
        return self.primary.describe() + (f" (+{extra} fallback)" if extra else "")

    def seal(self, plaintext: bytes, associated_data: bytes = b"") -> bytes:
        """Encrypt ``plaintext`` with the primary key into a self-describing envelope."""
        sealing = self.primary.sealing_key()
        header = _FIXED.pack(MAGIC, VERSION, sealing.kind, sealing.key_id,
                             len(sealing.parameters)) + sealing.parameters
        header += os.urandom(NONCE_BYTES)
        ciphertext = AESGCM(sealing.key).encrypt(
            header[-NONCE_BYTES:], plaintext, header + associated_data
        )
        return header + ciphertext

    def unseal(self, blob: bytes, associated_data: bytes = b"") -> bytes:
        """Decrypt an envelope from :meth:`seal` with whichever configured key sealed it.

        Raises DecryptionError (one line) when ``blob`` is not an envelope, was sealed
        with a key that is not configured, or fails authentication (corrupted,
        altered, or sealed for other ``associated_data``). Never returns partial data.
        """
        kind, key_id, parameters, header_end = _parse_header(blob)
        key = self._find_key(kind, key_id, parameters)
        nonce = blob[header_end - NONCE_BYTES:header_end]
        try:
            return AESGCM(key).decrypt(nonce, blob[header_end:],
                                       blob[:header_end] + associated_data)
        except InvalidTag as exc:
            raise DecryptionError(
                f"encrypted data failed authentication with key {key_id.hex()}: it is "
                "corrupted or was altered"
            ) from exc

    def _find_key(self, kind: int, key_id: bytes, parameters: bytes) -> bytes:
        for source in self.sources:
            if source.kind != kind:
                continue
            key = source.unsealing_key(key_id, parameters)
            if key is not None:
                return key
        configured = ", ".join(source.describe() for source in self.sources)
        raise DecryptionError(
            f"wrong key: the data was encrypted with {_KIND_NAMES.get(kind, 'an unknown key')} "
            f"(key id {key_id.hex()}) that none of the configured keys ({configured}) match"
        )


def is_sealed(blob: bytes) -> bool:
    """True when ``blob`` starts like an envelope made by :meth:`Sealer.seal`."""
    return blob.startswith(MAGIC)


def _parse_header(blob: bytes) -> tuple[int, bytes, bytes, int]:
    """Return (kind, key id, parameters, header length) or raise DecryptionError."""
    if not is_sealed(blob):
        raise DecryptionError("the data is not encrypted (no fuzz encryption header)")
    if len(blob) < _FIXED.size:
        raise DecryptionError("encrypted data is truncated (incomplete header)")
    _, version, kind, key_id, parameter_length = _FIXED.unpack_from(blob)
    if version != VERSION:
        raise DecryptionError(
            f"encrypted data has format version {version}; this fuzz reads version {VERSION}"
        )
    header_end = _FIXED.size + parameter_length + NONCE_BYTES
    if len(blob) < header_end + 16:
        raise DecryptionError("encrypted data is truncated")
    return kind, key_id, blob[_FIXED.size:_FIXED.size + parameter_length], header_end
