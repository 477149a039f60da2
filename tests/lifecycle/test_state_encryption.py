"""State and plan encryption at rest: raw stored bytes never hold a secret; keys, KMS, rotation."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from fuzz.crypto.envelope import DecryptionError, is_sealed
from fuzz.engine.model import RecordedNode, State
from fuzz.errors import ConfigError
from fuzz.lifecycle.sealing import DEFAULT_PASSPHRASE_ENV, resolve_encryption
from fuzz.lifecycle.statestore import StateStore, open_backend
from fuzz.plugin.loader import load_plugins
from fuzz.spec.cluster import EncryptionSpec
from tests.support.cliutil import run_fuzz
from tests.support.servers import MotoServer, Postgres

SECRET = "hunter2-" + uuid.uuid4().hex
ENV = {"PASS_NEW": "correct horse battery", "PASS_OLD": "tr0ub4dor&3"}


def secret_state() -> State:
    state = State.new("hpc")
    state.resources["pool.cpu.node[0]"] = RecordedNode(
        address="pool.cpu.node[0]", pool="cpu", provider="local", kind="local",
        status="created", generation=1, client_token="t" * 32, provider_id="i-1",
        labels={"db-password": SECRET},
    )
    return state


class Stored:
    """A state on one backend, and a way to fetch its raw bytes behind fuzz's back."""

    def __init__(self, kind: str, config: dict[str, Any], base_dir: Path, raw: Any) -> None:
        self.kind, self.config, self.base_dir, self._raw = kind, config, base_dir, raw

    def store(self, spec: EncryptionSpec | None, environ: dict[str, str]) -> StateStore:
        backend = open_backend(self.kind, self.config, self.base_dir, load_plugins())
        return StateStore(backend, resolve_encryption(spec, backend.shared, environ))

    def raw(self) -> bytes:
        data: bytes = self._raw()
        return data


@pytest.fixture(params=["local", "s3", "postgres"])
def stored(request: pytest.FixtureRequest, tmp_path: Path) -> Stored:
    if request.param == "local":
        return Stored("local", {"path": "state.json"}, tmp_path,
                      lambda: (tmp_path / "state.json").read_bytes())
    if request.param == "s3":
        server: MotoServer = request.getfixturevalue("moto_server")
        bucket = server.new_bucket()
        return Stored("s3", {"bucket": bucket, "endpoint_url": server.endpoint_url}, tmp_path,
                      lambda: server.client("s3").get_object(
                          Bucket=bucket, Key="fuzz/state.json")["Body"].read())
    pg: Postgres = request.getfixturevalue("postgres")
    schema = f"e_{uuid.uuid4().hex[:10]}"

    def row() -> bytes:
        with psycopg.connect(pg.conninfo) as conn:
            found = conn.execute(f"SELECT data FROM {schema}.states").fetchone()
            assert found is not None
            return bytes(found[0])

    return Stored("postgres", {"conninfo": pg.conninfo, "schema": schema}, tmp_path, row)


def test_stored_bytes_never_hold_the_secret(stored: Stored) -> None:
    spec = EncryptionSpec(passphrase_env="PASS_NEW")
    stored.store(spec, ENV).write(secret_state())
    raw = stored.raw()
    assert is_sealed(raw)
    assert SECRET.encode() not in raw and b"db-password" not in raw
    back = stored.store(spec, ENV).read()
    assert back is not None and back.resources["pool.cpu.node[0]"].labels["db-password"] == SECRET


def test_wrong_or_missing_key_is_a_clear_error_and_never_a_partial_read(stored: Stored) -> None:
    stored.store(EncryptionSpec(passphrase_env="PASS_NEW"), ENV).write(secret_state())
    with pytest.raises(DecryptionError, match=r"^cannot decrypt state in .*: wrong key"):
        stored.store(EncryptionSpec(passphrase_env="PASS_OLD"), ENV).read()
    with pytest.raises(DecryptionError, match=r"is encrypted, but no key is configured"):
        stored.store(None, {}).read()


def test_rotation_and_rekey(stored: Stored) -> None:
    stored.store(EncryptionSpec(passphrase_env="PASS_OLD"), ENV).write(secret_state())
    rotated = stored.store(
        EncryptionSpec(passphrase_env="PASS_NEW", fallback_passphrase_env="PASS_OLD"), ENV)
    assert rotated.read() is not None
    assert rotated.rekey().serial == 2
    assert stored.store(EncryptionSpec(passphrase_env="PASS_NEW"), ENV).read() is not None
    with pytest.raises(DecryptionError, match="wrong key"):
        stored.store(EncryptionSpec(passphrase_env="PASS_OLD"), ENV).read()


def test_plaintext_is_refused_while_encryption_is_on_until_rekeyed(stored: Stored) -> None:
    stored.store(EncryptionSpec(enabled=False), {}).write(secret_state())
    assert SECRET.encode() in stored.raw()
    encrypted = stored.store(EncryptionSpec(passphrase_env="PASS_NEW"), ENV)
    with pytest.raises(DecryptionError, match="is not encrypted, but encryption is on: run "
                                              "fuzz state rekey"):
        encrypted.read()
    encrypted.rekey()
    assert SECRET.encode() not in stored.raw()
    assert encrypted.read() is not None


def test_kms_envelope_through_moto(moto_server: MotoServer, tmp_path: Path) -> None:
    kms = moto_server.client("kms")
    key = kms.create_key(Description="fuzz state")["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/fuzz-state", TargetKeyId=key)
    other = kms.create_key(Description="another")["KeyMetadata"]["KeyId"]
    common = {"kms_endpoint_url": moto_server.endpoint_url, "kms_region": "us-east-1"}
    stored = Stored("local", {"path": "s.json"}, tmp_path,
                    lambda: (tmp_path / "s.json").read_bytes())
    stored.store(EncryptionSpec(kms_key_id="alias/fuzz-state", **common), {}).write(
        secret_state())
    raw = stored.raw()
    assert is_sealed(raw) and raw[8] == 3  # kind 3: a KMS-wrapped data key
    assert SECRET.encode() not in raw
    by_id = stored.store(EncryptionSpec(kms_key_id=key, **common), {}).read()
    assert by_id is not None and by_id.resources["pool.cpu.node[0]"].labels["db-password"] == SECRET
    with pytest.raises(DecryptionError, match=r"wrong key: .*a KMS key"):
        stored.store(EncryptionSpec(kms_key_id=other, **common), {}).read()
    # rotating from KMS to a passphrase: the KMS key stays as a fallback
    rotated = stored.store(EncryptionSpec(passphrase_env="PASS_NEW", fallback_kms_key_id=key,
                                          **common), ENV)
    rotated.rekey()
    assert stored.raw()[8] == 2


def test_defaults_off_for_local_on_for_shared_when_a_key_exists() -> None:
    key = {DEFAULT_PASSPHRASE_ENV: "pw"}
    assert not resolve_encryption(None, shared=False, environ=key).enabled
    assert resolve_encryption(None, shared=True, environ=key).enabled
    assert not resolve_encryption(None, shared=True, environ={}).enabled
    assert resolve_encryption(EncryptionSpec(passphrase_env="P"), False, {"P": "x"}).enabled
    assert not resolve_encryption(EncryptionSpec(enabled=False), True, key).enabled
    with pytest.raises(ConfigError, match="enabled but no key"):
        resolve_encryption(EncryptionSpec(enabled=True), False, {})
    with pytest.raises(ConfigError, match="passphrase_env: environment variable NOPE is not set"):
        resolve_encryption(EncryptionSpec(passphrase_env="NOPE"), False, {})


def test_plan_files_are_encrypted_like_state(tmp_path: Path) -> None:
    (tmp_path / "fuzz.yaml").write_text(f"""\
version: 1
cluster: enc
state:
  backend: local
  encryption: {{passphrase_env: PASS_NEW}}
providers:
  local: {{workdir: .fuzz/nodes}}
pools:
  cpu:
    provider: local
    min: 1
    labels: {{db-password: {SECRET}}}
""")
    env = dict(ENV)
    assert run_fuzz(tmp_path, "init", env=env).code == 0
    assert run_fuzz(tmp_path, "plan", "-out", "plan.bin", env=env).code == 0
    for path in (tmp_path / "plan.bin", tmp_path / ".fuzz" / "state.json"):
        raw = path.read_bytes()
        assert is_sealed(raw) and SECRET.encode() not in raw, path
    wrong = run_fuzz(tmp_path, "apply", "plan.bin", env={"PASS_NEW": "nope"})
    assert wrong.code == 1
    assert wrong.err.startswith("Error: cannot decrypt plan file plan.bin: wrong key")
    assert len(wrong.err.strip().splitlines()) == 1
    bad_spec = (tmp_path / "fuzz.yaml").read_text().replace("passphrase_env: PASS_NEW",
                                                              "passphrase_envv: PASS_NEW")
    (tmp_path / "fuzz.yaml").write_text(bad_spec)
    result = run_fuzz(tmp_path, "validate", env=env)
    assert "fuzz.yaml:5:16: state.encryption.passphrase_envv: unknown key" in result.err
