"""A node's certificate: its key made here, signed by the cluster CA at join, kept in the state dir.

An agent that joins a TLS cluster (``--join-ca-file``) enrolls before it serves:
it makes an ECDSA key (``tls/node.key``, mode 0600), sends a CSR with its join
token to the orchestrator's ``EnrollNode`` (verifying the orchestrator against
the cluster CA) and keeps the certificate it gets (``tls/node.crt``) next to that
CA (``tls/ca.pem``). It then serves mutual TLS with it: clients must present a
certificate of the same CA. A restarted agent reuses a certificate that is still
valid for its name and CA.

The join token is spent by enrolling. From then on the certificate identifies
the node: every registration (the heartbeat) carries it and a signature made
with the node's key over the registration's fields and the time
(:func:`fuzz.crypto.proof.registration_payload`), which the orchestrator checks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fuzz.clients.orchestrator import OrchestratorClient
from fuzz.crypto import pki
from fuzz.crypto.proof import RegistrationProof
from fuzz.errors import FuzzError
from fuzz.fsutil import write_private_file
from fuzz.rpc.client import ClientTls
from fuzz.rpc.server import TlsFiles

logger = logging.getLogger(__name__)

TLS_DIR = "tls"
RETRY_INTERVAL = 2.0


@dataclass(frozen=True)
class NodeIdentity:
    """The node's key, certificate and cluster CA under ``directory`` (``STATE_DIR/tls``)."""

    directory: Path

    @property
    def key_path(self) -> Path:
        """The node's private key (0600)."""
        return self.directory / "node.key"

    @property
    def cert_path(self) -> Path:
        """The node's certificate, issued by the cluster CA."""
        return self.directory / "node.crt"

    @property
    def ca_path(self) -> Path:
        """The cluster CA the node trusts."""
        return self.directory / "ca.pem"

    def server_files(self) -> TlsFiles:
        """Serve with the node's certificate; require clients certified by the cluster CA."""
        return TlsFiles(self.cert_path, self.key_path, client_ca=self.ca_path)

    def client_tls(self, node: str) -> ClientTls:
        """Call node ``node``'s agent with this node's certificate (mutual TLS)."""
        return ClientTls(self.ca_path.read_bytes(), self.cert_path.read_bytes(),
                         self.key_path.read_bytes(), pki.node_dns_name(node))

    def is_complete(self) -> bool:
        """Whether a key, a certificate and a CA are there."""
        return all(p.exists() for p in (self.key_path, self.cert_path, self.ca_path))

    def valid_for(self, name: str, ca_pem: bytes) -> bool:
        """Whether the kept certificate is ``name``'s, from the CA ``ca_pem``, valid now."""
        if not self.is_complete() or self.ca_path.read_bytes() != ca_pem:
            return False
        try:
            cert = pki.load_cert(self.cert_path.read_bytes())
            pki.verify_issued(pki.load_cert(ca_pem), cert)
            key = pki.load_key(self.key_path.read_bytes())
        except pki.PkiError:
            return False
        return pki.common_name(cert) == name and \
            pki.public_key_id(cert.public_key()) == pki.public_key_id(key.public_key())

    def csr(self, name: str) -> bytes:
        """A CSR for the node's key (made, and kept, on first use)."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.key_path.exists():
            key = pki.load_key(self.key_path.read_bytes())
        else:
            key = pki.new_key()
            write_private_file(self.key_path, pki.key_pem(key))
        return pki.make_csr(key, name)

    def keep(self, certificate: bytes, ca_pem: bytes) -> None:
        """Keep the issued certificate and the CA; PkiError if the CA did not issue it."""
        pki.verify_issued(pki.load_cert(ca_pem), pki.load_cert(certificate))
        write_private_file(self.ca_path, ca_pem)
        write_private_file(self.cert_path, certificate)

    def prove(self, payload: Callable[[float], bytes]) -> RegistrationProof:
        """Sign ``payload(now)`` with the node's key."""
        signed_at = time.time()
        key = pki.load_key(self.key_path.read_bytes())
        return RegistrationProof(self.cert_path.read_bytes(),
                                 pki.sign_proof(key, payload(signed_at)), signed_at)


def enroll(identity: NodeIdentity, orchestrator: str, name: str, join_token: str,
           ca_pem: bytes, stop: threading.Event) -> bool:
    """Make sure ``identity`` holds a valid certificate for ``name``, enrolling if needed.

    Retries until the orchestrator answers (logging each distinct problem once);
    returns False when ``stop`` was set first.
    """
    if identity.valid_for(name, ca_pem):
        return True
    last_problem = ""
    with OrchestratorClient(orchestrator, join_token, tls=ClientTls(ca_pem)) as client:
        while not stop.is_set():
            try:
                certificate = client.enroll_node(name, join_token, identity.csr(name))
                identity.keep(certificate, ca_pem)
                logger.info("enrolled with the orchestrator at %s as %s", orchestrator, name)
                return True
            except FuzzError as exc:
                if str(exc) != last_problem:
                    logger.warning("cannot enroll with %s yet: %s", orchestrator, exc)
                    last_problem = str(exc)
            stop.wait(RETRY_INTERVAL)
    return False
