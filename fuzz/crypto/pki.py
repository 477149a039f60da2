"""The cluster's certificate authority: keys, CSRs, certificates and signed proofs.

``fuzz init`` (or ``fuzz server --init``) creates one CA per cluster. It issues the
orchestrator's certificate (for the addresses clients dial) and, at join, each
node agent's certificate: the agent makes its own key and sends a CSR; the CA
takes only the public key from it and writes the subject itself, so a node can
only ever be certified as the node its join token was issued for. Every
certificate carries both ``serverAuth`` and ``clientAuth``: the orchestrator
presents its own when it calls agents (mutual TLS), and agents present theirs
when they call each other's health check. Only the orchestrator's certificate
also carries the extended key usage :data:`ORCHESTRATOR_USAGE`
(``CertificateAuthority.issue(..., orchestrator=True)``); agents serve their API to no
other client (:func:`is_orchestrator`), so one node's certificate cannot drive
another node's agent.

Keys are ECDSA P-256 (gRPC's TLS stack, BoringSSL, accepts them everywhere;
Ed25519 certificates are not usable with every gRPC release). Built on the
``cryptography`` package; nothing here does any I/O.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fuzz.errors import FuzzError

CA_DAYS = 3650
CERT_DAYS = 365
CLOCK_SKEW = datetime.timedelta(minutes=5)
NODE_DOMAIN = "node.fuzz"
ORCHESTRATOR_USAGE = x509.ObjectIdentifier("2.25.271912731984280404902925412396368298592")
"""The extended key usage "fuzz orchestrator": an OID under the UUID arc (ITU-T X.667),
which needs no registration, so only this CA's orchestrator certificates carry it."""
_CURVE = ec.SECP256R1()
_HASH = hashes.SHA256()
_SLUG = re.compile(r"[^a-z0-9]+")

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class PkiError(FuzzError):
    """A key, CSR or certificate that is malformed, not ours, or out of date."""


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def new_key() -> ec.EllipticCurvePrivateKey:
    """A new ECDSA P-256 private key."""
    return ec.generate_private_key(_CURVE)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """``key`` as unencrypted PKCS#8 PEM (store it mode 0600)."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    """An ECDSA private key from PEM; PkiError for anything else."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise PkiError(f"not a PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError("the private key is not an ECDSA key")
    return key


def cert_pem(cert: x509.Certificate) -> bytes:
    """``cert`` as PEM."""
    return cert.public_bytes(serialization.Encoding.PEM)


def load_cert(pem: bytes) -> x509.Certificate:
    """A certificate from PEM; PkiError when it is not one."""
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise PkiError(f"not a PEM certificate: {exc}") from None


def fingerprint(cert: x509.Certificate) -> str:
    """The SHA-256 fingerprint of ``cert`` (hex), as admins compare them."""
    return cert.fingerprint(_HASH).hex()


def public_key_id(key: CertificatePublicKeyTypes) -> str:
    """SHA-256 of the public key's SubjectPublicKeyInfo (hex): the same key, the same id."""
    der = key.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def node_dns_name(node: str) -> str:
    """The DNS name a node's certificate is issued for, and verified against.

    Node names are cluster addresses (``pool.cpu.node[0]``), not host names: the
    name is a readable slug plus a digest of the exact name, under ``node.fuzz``.
    The orchestrator checks it (not the IP it dials), so a certificate of one node
    never passes for another.
    """
    slug = _SLUG.sub("-", node.lower()).strip("-")[:40] or "node"
    digest = hashlib.sha256(node.encode()).hexdigest()[:12]
    return f"{slug}-{digest}.{NODE_DOMAIN}"


def make_csr(key: ec.EllipticCurvePrivateKey, common_name: str) -> bytes:
    """A PEM certificate signing request for ``key`` named ``common_name``."""
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
           .sign(key, _HASH))
    return csr.public_bytes(serialization.Encoding.PEM)


def common_name(cert: x509.Certificate) -> str:
    """The certificate's subject common name ('' when it has none)."""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def is_orchestrator(cert: x509.Certificate) -> bool:
    """Whether ``cert`` carries the orchestrator's extended key usage."""
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return ORCHESTRATOR_USAGE in usages


def sign_proof(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """Sign ``data`` with ``key`` (ECDSA, SHA-256): proof that the signer holds the key."""
    return key.sign(data, ec.ECDSA(_HASH))


def proof_is_valid(cert: x509.Certificate, signature: bytes, data: bytes) -> bool:
    """Whether ``signature`` over ``data`` was made with the key ``cert`` certifies."""
    public = cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        return False
    try:
        public.verify(signature, data, ec.ECDSA(_HASH))
    except InvalidSignature:
        return False
    return True


def split_hosts(hosts: Iterable[str]) -> tuple[list[str], list[IpAddress]]:
    """Host names and IP addresses among ``hosts`` (deduplicated, order kept)."""
    names: list[str] = []
    ips: list[IpAddress] = []
    for host in hosts:
        host = host.strip("[]")
        if not host:
            continue
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            if host not in names:
                names.append(host)
            continue
        if ip not in ips:
            ips.append(ip)
    return names, ips


@dataclass(frozen=True)
class CertificateAuthority:
    """A cluster CA: its certificate and private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, cluster: str) -> CertificateAuthority:
        """A new self-signed CA for ``cluster``, valid for ten years."""
        key = new_key()
        name = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fuzz"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"fuzz cluster CA {cluster}"),
        ])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, _HASH)
        )
        return cls(cert, key)

    @classmethod
    def load(cls, cert: bytes, key: bytes) -> CertificateAuthority:
        """The CA from its PEM certificate and key; PkiError when they do not belong together."""
        loaded = cls(load_cert(cert), load_key(key))
        if public_key_id(loaded.key.public_key()) != public_key_id(loaded.cert.public_key()):
            raise PkiError("the CA key does not match the CA certificate")
        return loaded

    @property
    def cert_pem(self) -> bytes:
        """The CA certificate as PEM: what every client and agent trusts."""
        return cert_pem(self.cert)

    @property
    def key_pem(self) -> bytes:
        """The CA key as PEM (keep it mode 0600, on the orchestrator only)."""
        return key_pem(self.key)

    def issue(self, public_key: ec.EllipticCurvePublicKey, name: str,
              hosts: Iterable[str] = (), *, orchestrator: bool = False) -> x509.Certificate:
        """A certificate for ``public_key`` named ``name``, valid for ``hosts`` (names, IPs).

        It may serve TLS and authenticate TLS clients (both extended key usages);
        with ``orchestrator`` it also acts as the cluster's orchestrator
        (:data:`ORCHESTRATOR_USAGE`), which agents require of whoever calls them.
        """
        usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        if orchestrator:
            usages.append(ORCHESTRATOR_USAGE)
        dns_names, ips = split_hosts(hosts)
        alternatives: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        alternatives += [x509.IPAddress(ip) for ip in ips]
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.cert.subject).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=False, crl_sign=False,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.key.public_key()), critical=False)
        )
        if alternatives:
            builder = builder.add_extension(x509.SubjectAlternativeName(alternatives),
                                            critical=False)
        return builder.sign(self.key, _HASH)

    def sign_csr(self, csr_pem: bytes, name: str, hosts: Iterable[str] = ()
                 ) -> x509.Certificate:
        """Certify the key of a CSR as ``name`` for ``hosts``; the CSR's own subject is ignored.

        PkiError when the CSR is malformed, its self-signature is wrong (the sender
        does not hold the key), or the key is not ECDSA.
        """
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise PkiError(f"not a PEM certificate signing request: {exc}") from None
        if not csr.is_signature_valid:
            raise PkiError("the certificate signing request's signature is not valid")
        public = csr.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise PkiError("the certificate signing request must be for an ECDSA key")
        return self.issue(public, name, hosts)

    def verify(self, cert: x509.Certificate) -> None:
        """PkiError unless this CA issued ``cert`` and it is valid now."""
        verify_issued(self.cert, cert)


def verify_issued(ca_cert: x509.Certificate, cert: x509.Certificate) -> None:
    """PkiError unless the CA of ``ca_cert`` issued ``cert`` and it is valid now."""
    if cert.issuer != ca_cert.subject:
        raise PkiError("the certificate was not issued by this cluster's CA")
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise PkiError("the certificate's signature is not this cluster CA's") from exc
    now = _now()
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise PkiError(f"the certificate is not valid now (valid "
                       f"{cert.not_valid_before_utc:%Y-%m-%d} to "
                       f"{cert.not_valid_after_utc:%Y-%m-%d})")
