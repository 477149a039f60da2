"""The cluster CA: certificates it issues, CSRs it signs, proofs made with certified keys."""

from __future__ import annotations

import datetime
import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from fuzz.crypto import pki


@pytest.fixture(scope="module")
def authority() -> pki.CertificateAuthority:
    return pki.CertificateAuthority.create("test")


def test_a_csr_is_certified_under_the_name_the_ca_chooses(
        authority: pki.CertificateAuthority) -> None:
    key = pki.new_key()
    csr = pki.make_csr(key, "pool.gpu.node[9]")  # the node asks for another name
    cert = authority.sign_csr(csr, "pool.cpu.node[0]", [pki.node_dns_name("pool.cpu.node[0]")])
    authority.verify(cert)
    assert pki.common_name(cert) == "pool.cpu.node[0]"
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [pki.node_dns_name("pool.cpu.node[0]")]
    assert pki.public_key_id(cert.public_key()) == pki.public_key_id(key.public_key())


def test_a_csr_whose_signature_is_not_its_keys_is_refused(
        authority: pki.CertificateAuthority) -> None:
    csr = bytearray(pki.make_csr(pki.new_key(), "n"))
    der_start = csr.index(b"\n") + 1
    csr[der_start + 60] ^= 1  # flip a bit inside the base64 body
    with pytest.raises(pki.PkiError):
        authority.sign_csr(bytes(csr), "n")
    with pytest.raises(pki.PkiError, match="not a PEM certificate signing request"):
        authority.sign_csr(b"hello", "n")


def test_certificates_of_another_ca_or_out_of_date_are_refused(
        authority: pki.CertificateAuthority) -> None:
    other = pki.CertificateAuthority.create("other")
    foreign = other.issue(pki.new_key().public_key(), "x")
    with pytest.raises(pki.PkiError, match="not issued by this cluster's CA"):
        authority.verify(foreign)
    long_ago = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    expired = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
               .issuer_name(authority.cert.subject).public_key(pki.new_key().public_key())
               .serial_number(1).not_valid_before(long_ago)
               .not_valid_after(long_ago + datetime.timedelta(days=1))
               .sign(authority.key, hashes.SHA256()))
    with pytest.raises(pki.PkiError, match="not valid now"):
        authority.verify(expired)


def test_the_ca_loads_from_pem_and_a_foreign_key_is_refused(
        authority: pki.CertificateAuthority) -> None:
    again = pki.CertificateAuthority.load(authority.cert_pem, authority.key_pem)
    again.verify(authority.issue(pki.new_key().public_key(), "x"))
    with pytest.raises(pki.PkiError, match="does not match"):
        pki.CertificateAuthority.load(authority.cert_pem, pki.key_pem(pki.new_key()))


def test_a_proof_is_valid_only_for_the_certified_key_and_the_signed_bytes(
        authority: pki.CertificateAuthority) -> None:
    key = pki.new_key()
    cert = authority.issue(key.public_key(), "n")
    signature = pki.sign_proof(key, b"payload")
    assert pki.proof_is_valid(cert, signature, b"payload")
    assert not pki.proof_is_valid(cert, signature, b"payloaD")
    assert not pki.proof_is_valid(cert, pki.sign_proof(pki.new_key(), b"payload"), b"payload")


def test_node_dns_names_are_dns_labels_and_tell_nodes_apart() -> None:
    names = {pki.node_dns_name(n) for n in ("pool.cpu.node[0]", "pool.cpu.node[1]",
                                            "pool.cpu.node-0-", "POOL.CPU.NODE[0]")}
    assert len(names) == 4
    for name in names:
        assert re.fullmatch(r"[a-z0-9-]{1,63}\.node\.fuzz", name), name


def test_server_certificates_carry_names_and_addresses(
        authority: pki.CertificateAuthority) -> None:
    cert = authority.issue(pki.new_key().public_key(), "orchestrator",
                           ["127.0.0.1", "[::1]", "localhost", "127.0.0.1"])
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]


def test_only_the_orchestrators_certificate_carries_its_usage() -> None:
    authority = pki.CertificateAuthority.create("c")
    key = pki.new_key()
    orchestrator = authority.issue(key.public_key(), "fuzz orchestrator", ["127.0.0.1"],
                                   orchestrator=True)
    assert pki.is_orchestrator(orchestrator)
    # a node asking for that name, by CSR, still gets a node's certificate
    node = authority.sign_csr(pki.make_csr(key, "fuzz orchestrator"), "fuzz orchestrator")
    assert not pki.is_orchestrator(node)
    assert not pki.is_orchestrator(authority.cert)  # the CA's has no extended key usage
