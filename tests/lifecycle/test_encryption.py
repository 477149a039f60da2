"""fuzz.crypto.envelope: AES-256-GCM envelopes, passphrase and raw keys, rotation, clear errors."""

from __future__ import annotations

import os

import pytest

from fuzz.crypto.envelope import MAGIC, DecryptionError, Sealer, is_sealed
from fuzz.errors import ConfigError, FuzzError

SECRET = b"the launch code is 0000"


def test_round_trip_with_a_passphrase_hides_the_plaintext() -> None:
    sealer = Sealer.from_passphrase("correct horse")
    blob = sealer.seal(SECRET)
    assert is_sealed(blob)
    assert SECRET not in blob
    assert b"correct horse" not in blob
    assert sealer.unseal(blob) == SECRET
    # another process with the same passphrase (no cached derivation) opens it too
    assert Sealer.from_passphrase("correct horse").unseal(blob) == SECRET


def test_each_seal_uses_a_fresh_nonce() -> None:
    sealer = Sealer.from_keys(os.urandom(32))
    first, second = sealer.seal(SECRET), sealer.seal(SECRET)
    assert first != second
    assert sealer.unseal(first) == sealer.unseal(second) == SECRET


def test_a_wrong_passphrase_is_named_as_such() -> None:
    blob = Sealer.from_passphrase("right").seal(SECRET)
    with pytest.raises(DecryptionError, match=r"^wrong key: .*a passphrase.*key id [0-9a-f]{16}"):
        Sealer.from_passphrase("wrong").unseal(blob)


def test_a_wrong_raw_key_is_named_as_such() -> None:
    blob = Sealer.from_keys(b"\x01" * 32).seal(SECRET)
    with pytest.raises(DecryptionError, match=r"wrong key: .*a raw key"):
        Sealer.from_keys(b"\x02" * 32).unseal(blob)
    with pytest.raises(DecryptionError, match="wrong key"):
        Sealer.from_passphrase("x").unseal(blob)  # a passphrase never opens a raw-key blob


def test_rotation_reads_old_blobs_with_the_fallback_and_writes_with_the_new_key() -> None:
    old_key, new_key = os.urandom(32), os.urandom(32)
    old_blob = Sealer.from_keys(old_key).seal(SECRET)
    rotated = Sealer.from_keys(new_key, fallbacks=[old_key])
    assert rotated.unseal(old_blob) == SECRET
    new_blob = rotated.seal(SECRET)
    assert Sealer.from_keys(new_key).unseal(new_blob) == SECRET
    with pytest.raises(DecryptionError, match="wrong key"):
        Sealer.from_keys(old_key).unseal(new_blob)


def test_passphrase_rotation_with_a_fallback() -> None:
    old_blob = Sealer.from_passphrase("old").seal(SECRET)
    rotated = Sealer.from_passphrase("new", fallbacks=["old"])
    assert rotated.unseal(old_blob) == SECRET
    assert Sealer.from_passphrase("new").unseal(rotated.seal(SECRET)) == SECRET


@pytest.mark.parametrize("position", [0, 8, 9, 20, -40, -1])
def test_any_changed_byte_is_refused_without_returning_data(position: int) -> None:
    sealer = Sealer.from_passphrase("p")
    blob = bytearray(sealer.seal(SECRET * 4))
    blob[position] ^= 0x01
    with pytest.raises(DecryptionError):
        sealer.unseal(bytes(blob))


def test_corruption_and_truncation_have_their_own_messages() -> None:
    sealer = Sealer.from_keys(b"\x07" * 32)
    blob = sealer.seal(SECRET)
    damaged = blob[:-1] + bytes([blob[-1] ^ 0xFF])
    with pytest.raises(DecryptionError, match="corrupted or was altered"):
        sealer.unseal(damaged)
    for cut in (len(MAGIC) + 3, len(blob) - len(SECRET) - 10):
        with pytest.raises(DecryptionError, match="truncated"):
            sealer.unseal(blob[:cut])


def test_associated_data_binds_a_blob_to_its_purpose() -> None:
    sealer = Sealer.from_keys(b"\x03" * 32)
    blob = sealer.seal(SECRET, b"fuzz state")
    assert sealer.unseal(blob, b"fuzz state") == SECRET
    with pytest.raises(DecryptionError, match="altered"):
        sealer.unseal(blob, b"fuzz plan")


def test_plaintext_is_not_mistaken_for_an_envelope() -> None:
    assert not is_sealed(b'{"serial": 1}')
    with pytest.raises(DecryptionError, match="not encrypted"):
        Sealer.from_keys(b"\x03" * 32).unseal(b'{"serial": 1}')


def test_a_header_demanding_huge_scrypt_memory_is_refused() -> None:
    blob = bytearray(Sealer.from_passphrase("p").seal(SECRET))
    blob[19] = 24  # log2(N) of the scrypt parameters: 2 GiB of memory
    with pytest.raises(DecryptionError, match="scrypt"):
        Sealer.from_passphrase("p").unseal(bytes(blob))


def test_bad_keys_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="32 bytes"):
        Sealer.from_keys(b"short")
    with pytest.raises(ConfigError, match="empty"):
        Sealer.from_passphrase("")
    assert issubclass(DecryptionError, FuzzError)
