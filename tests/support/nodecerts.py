"""A node's TLS certificate and key, issued by a fresh CA, as an agent's direct port reads them."""

from __future__ import annotations

from pathlib import Path

from fuzz.crypto import pki


def write_node_certificate(directory: Path, node: str) -> bytes:
    """Write ``cert.pem`` and ``key.pem`` for ``node`` (its DNS name as subject and SAN) into
    ``directory``, issued by a new CA; returns that CA's certificate (PEM)."""
    ca = pki.CertificateAuthority.create("test")
    key = pki.new_key()
    cert = ca.issue(key.public_key(), pki.node_dns_name(node), [pki.node_dns_name(node)])
    (directory / "cert.pem").write_bytes(pki.cert_pem(cert))
    (directory / "key.pem").write_bytes(pki.key_pem(key))
    return ca.cert_pem
