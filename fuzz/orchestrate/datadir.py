"""The orchestrator's data dir as ``fuzz init`` makes it: the cluster CA and the admin token.

``ca.pem``      the cluster CA certificate (mode 0644: clients and agents trust it)
``ca.key``      the CA's key (0600; never leaves this directory)
``admin.token`` the bearer token of the built-in ``admin`` user (0600)
``server.crt``  the orchestrator's certificate, issued anew at every start for the
                addresses it serves (listen, advertise, loopback, host names)
``server.key``  its key (0600)

:class:`ClusterTls` is what a running orchestrator does with them: serve TLS, and
call agents with mutual TLS, checking each agent's certificate names its node.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

from fuzz.crypto import pki
from fuzz.errors import ConfigError
from fuzz.fsutil import write_private_file
from fuzz.orchestrate.connect import CA_FILE, admin_token_path
from fuzz.rpc.auth import read_token_file
from fuzz.rpc.client import ClientTls
from fuzz.rpc.server import ServerStartError, TlsFiles

CA_KEY_FILE = "ca.key"
SERVER_CERT_FILE = "server.crt"
SERVER_KEY_FILE = "server.key"
_WILDCARDS = ("", "0.0.0.0", "::")


def ensure_admin_token(data_dir: Path) -> str:
    """The admin token in ``data_dir`` (made when there is none)."""
    path = admin_token_path(data_dir)
    if not path.exists():
        write_private_file(path, (secrets.token_urlsafe(32) + "\n").encode())
    return read_token_file(path)


def init_data_dir(data_dir: Path, cluster: str) -> bool:
    """Make ``data_dir`` with a cluster CA and an admin token; False when it had its CA."""
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        ensure_admin_token(data_dir)
        if (data_dir / CA_FILE).exists():
            return False
        authority = pki.CertificateAuthority.create(cluster)
        write_private_file(data_dir / CA_KEY_FILE, authority.key_pem)
        write_private_file(data_dir / CA_FILE, authority.cert_pem)
        os.chmod(data_dir / CA_FILE, 0o644)
    except OSError as exc:
        raise ConfigError(f"cannot initialize {data_dir}: {exc.strerror or exc}") from exc
    return True


def orchestrator_client_tls(data_dir: Path, node: str) -> ClientTls | None:
    """Call node ``node``'s agent as the orchestrator, with the certificate in ``data_dir``.

    For the admin's CLI next to the data dir (``fuzz node list``): an enrolled agent
    answers no other certificate. None when the CA, the certificate or its key
    cannot be read there.
    """
    try:
        ca, cert, key = ((data_dir / name).read_bytes()
                         for name in (CA_FILE, SERVER_CERT_FILE, SERVER_KEY_FILE))
    except OSError:
        return None
    return ClientTls(ca, cert, key, pki.node_dns_name(node))


def server_hosts(listen: str, advertise: str | None) -> list[str]:
    """The names and addresses the orchestrator's certificate is valid for."""
    hosts = [address.rpartition(":")[0].strip("[]") for address in (listen, advertise or "")]
    hosts = [h for h in hosts if h not in _WILDCARDS]
    return [*hosts, "127.0.0.1", "::1", "localhost", socket.gethostname(), socket.getfqdn()]


@dataclass(frozen=True)
class ClusterTls:
    """The cluster CA and the orchestrator's own certificate and key (PEM)."""

    authority: pki.CertificateAuthority
    cert_pem: bytes
    key_pem: bytes
    files: TlsFiles

    @classmethod
    def start(cls, data_dir: Path, hosts: list[str]) -> ClusterTls:
        """Load the CA from ``data_dir`` and issue the orchestrator's certificate for ``hosts``.

        ServerStartError when the data dir has no CA (it was not initialized).
        """
        try:
            authority = pki.CertificateAuthority.load(
                (data_dir / CA_FILE).read_bytes(), (data_dir / CA_KEY_FILE).read_bytes())
        except FileNotFoundError as exc:
            raise ServerStartError(
                f"{data_dir} has no cluster CA: run `fuzz init` next to the spec (or "
                "`fuzz server --init`) first, or serve plain text with --insecure") from exc
        except pki.PkiError as exc:
            raise ServerStartError(f"the cluster CA in {data_dir}: {exc}") from None
        key = pki.new_key()
        cert_pem = pki.cert_pem(authority.issue(key.public_key(), "fuzz orchestrator", hosts,
                                                orchestrator=True))
        key_pem = pki.key_pem(key)
        files = TlsFiles(data_dir / SERVER_CERT_FILE, data_dir / SERVER_KEY_FILE)
        write_private_file(files.key, key_pem)
        write_private_file(files.cert, cert_pem)
        return cls(authority, cert_pem, key_pem, files)

    @property
    def ca_pem(self) -> bytes:
        """The cluster CA certificate."""
        return self.authority.cert_pem

    def agent_tls(self, node: str) -> ClientTls:
        """How the orchestrator calls node ``node``'s agent: mutual TLS, checking its name."""
        return ClientTls(self.ca_pem, self.cert_pem, self.key_pem, pki.node_dns_name(node))
