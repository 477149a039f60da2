"""The agent over TLS: a client that trusts its CA gets through, a plain-text one does not."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from test_substrate_agent import TOKEN, _run_failing, _spawn, _stop, _token_file, _wait_ready

from fuzz.grpcclient import ClientTls
from fuzz.substrate.client import AgentClient, AgentUnreachableError


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (its own CA) and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fuzz-test-agent")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "agent.crt", directory / "agent.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def test_agent_serves_tls_and_refuses_plain_text(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    agent = _spawn(tmp_path / "state", _token_file(tmp_path / "secrets"),
                   "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        _wait_ready(agent)
        with AgentClient(agent.endpoint, TOKEN, tls=ClientTls(cert.read_bytes())) as client:
            assert client.inventory().cores > 0
        with AgentClient(agent.endpoint, TOKEN, timeout=2) as plain, \
                pytest.raises(AgentUnreachableError):
            plain.inventory()
    finally:
        _stop(agent)


def test_tls_options_go_together_and_must_be_pem(tmp_path: Path) -> None:
    token = _token_file(tmp_path / "secrets")
    cert, _ = _self_signed(tmp_path)
    code, err = _run_failing(tmp_path / "state", token, "--tls-cert", str(cert))
    assert code == 1 and "--tls-cert and --tls-key go together" in err
    (tmp_path / "bad.key").write_text("not a key")
    code, err = _run_failing(tmp_path / "state2", token, "--tls-cert", str(cert),
                             "--tls-key", str(tmp_path / "bad.key"))
    assert code == 1 and "must be PEM" in err
