"""Node certificates, orchestrator side: spend a join token for one, and check proofs made with it.

A join token is single use: :meth:`NodeCertifier.enroll` spends it (while it is
the node's newest and has not expired, :mod:`fuzz.orchestrate.cluster.jointokens`) for a
certificate of the node it was issued for, certifying the key of the node's CSR.
A retry with the same token and the same key (the reply was lost) gets a fresh
certificate; any other key is refused. From then on the node proves each
registration with that certificate (:meth:`NodeCertifier.verify`): issued by the
cluster CA, the one enrolled last for that name (a re-created node's new
certificate replaces the old), and a signature by its key over the registration,
made within :data:`PROOF_WINDOW` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from fuzz.crypto import pki
from fuzz.crypto.proof import registration_payload
from fuzz.orchestrate.cluster.jointokens import JoinRefusedError, JoinTokens
from fuzz.orchestrate.records import EnrollmentRecord
from fuzz.orchestrate.store import Store

PROOF_WINDOW = 300.0


class NodeCertifier:
    """Issues node certificates at join and checks registrations proven with them."""

    def __init__(self, store: Store, authority: pki.CertificateAuthority,
                 join_tokens: JoinTokens, clock: Callable[[], float] = time.time) -> None:
        """Record enrollments in ``store``; sign with ``authority``; check ``join_tokens``."""
        self._store = store
        self._authority = authority
        self._join_tokens = join_tokens
        self._clock = clock

    @property
    def ca_pem(self) -> bytes:
        """The cluster CA certificate new nodes are told to trust."""
        return self._authority.cert_pem

    def enroll(self, name: str, join_token: str, csr: bytes) -> bytes:
        """Node ``name``'s certificate (PEM) for the key in ``csr``, spending ``join_token``.

        JoinRefusedError when the token was not issued for ``name``, was voided by a
        newer one, expired, was spent for another key, or the CSR is unusable.
        """
        digest = self._join_tokens.check(name, join_token)
        try:
            cert = self._authority.sign_csr(csr, name, [pki.node_dns_name(name)])
        except pki.PkiError as exc:
            raise JoinRefusedError(f"node {name!r}: {exc}") from None
        key_id = pki.public_key_id(cert.public_key())
        spent = self._store.load(EnrollmentRecord, join_token_hash=digest)
        if spent and spent[0].key_id != key_id:
            raise JoinRefusedError(f"node {name!r}: the join token was spent already")
        self._store.save(EnrollmentRecord(name, digest, key_id, format(cert.serial_number, "x"),
                                          self._clock()))
        return pki.cert_pem(cert)

    def verify(self, name: str, endpoint: str, agent_token: str, labels: Mapping[str, str],
               certificate: bytes, signature: bytes, signed_at: float) -> None:
        """JoinRefusedError unless the registration is proven by ``name``'s certificate."""
        try:
            cert = pki.load_cert(certificate)
            self._authority.verify(cert)
        except pki.PkiError as exc:
            raise JoinRefusedError(f"node {name!r}: {exc}") from None
        enrolled = self._store.load(EnrollmentRecord, order_by="created DESC", node=name)
        if pki.common_name(cert) != name or not enrolled or \
                enrolled[0].serial != format(cert.serial_number, "x"):
            raise JoinRefusedError(f"node {name!r}: the certificate is not the one it enrolled")
        if abs(self._clock() - signed_at) > PROOF_WINDOW:
            raise JoinRefusedError(
                f"node {name!r}: the registration was signed {self._clock() - signed_at:.0f}s "
                "from now; are the clocks in sync?")
        payload = registration_payload(name, endpoint, agent_token, labels, signed_at)
        if not pki.proof_is_valid(cert, signature, payload):
            raise JoinRefusedError(f"node {name!r}: the registration's signature is not valid")
