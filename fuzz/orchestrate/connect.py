"""How a client finds the orchestrator: an explicit address and credentials, or the spec's.

``fuzz server`` keeps its admin token in ``DATA_DIR/admin.token`` and the cluster
CA in ``DATA_DIR/ca.pem``, and publishes its endpoint in ``DATA_DIR/server.json``
while it runs; a CLI run next to the cluster spec finds all three through the
spec's ``orchestrator:`` block and so speaks TLS as the admin, verifying the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fuzz.clients.orchestrator import OrchestratorClient
from fuzz.errors import ConfigError
from fuzz.fsutil import read_json
from fuzz.rpc.auth import read_token_file
from fuzz.rpc.client import ClientTls

if TYPE_CHECKING:  # only their types: a client given --server needs no spec parser, and
    # a command that calls no Iam method no Iam stubs (an exec's start is on its data path)
    from fuzz.clients.iam import IamClient
    from fuzz.spec.loader import LoadedSpec

TOKEN_FILE = "admin.token"
INFO_FILE = "server.json"
CA_FILE = "ca.pem"


def admin_token_path(data_dir: Path) -> Path:
    """The file holding the admin token of the server using ``data_dir``."""
    return data_dir / TOKEN_FILE


def running_endpoint(data_dir: Path) -> str | None:
    """The endpoint of the server running on ``data_dir``, if it published one."""
    info = read_json(data_dir / INFO_FILE)
    return str(info["endpoint"]) if info and "endpoint" in info else None


def read_ca_file(path: Path) -> bytes:
    """A CA certificate (PEM) from ``path``; ConfigError naming the file otherwise."""
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the CA file {path}: {exc.strerror}") from exc
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise ConfigError(f"{path} is not a PEM certificate")
    return pem


@dataclass(frozen=True)
class Target:
    """An orchestrator and how to speak to it: where, which token, which TLS (None: plain)."""

    endpoint: str
    token: str
    tls: ClientTls | None

    def orchestrator(self) -> OrchestratorClient:
        """A client of its workflow, secret and node API."""
        return OrchestratorClient(self.endpoint, self.token, tls=self.tls)

    def iam(self) -> IamClient:
        """A client of its Iam API."""
        from fuzz.clients.iam import IamClient  # late: see TYPE_CHECKING

        return IamClient(self.endpoint, self.token, tls=self.tls)


@dataclass(frozen=True)
class SpecOrchestrator:
    """What a cluster spec's ``orchestrator:`` block says of reaching its server: where it
    keeps its data (absolute), its address, whether it runs replicas, plain text or TLS."""

    data_dir: Path
    address: str
    replicated: bool
    insecure: bool


def spec_orchestrator(loaded: LoadedSpec) -> SpecOrchestrator:
    """The cluster spec's ``orchestrator:`` block (ConfigError when it has none)."""
    block = loaded.spec.orchestrator
    if block is None:
        raise ConfigError(
            f"{loaded.path.name} has no orchestrator: block; add one, log in with "
            "`fuzz login SERVER`, or pass --server and --token-file")
    return SpecOrchestrator(loaded.base_dir / block.data_dir, block.address,
                            bool(block.replicas), block.insecure)


def orchestrator_target(block: SpecOrchestrator) -> Target:
    """The orchestrator ``block`` declares, as its admin (its token and CA read now)."""
    token_path = admin_token_path(block.data_dir)
    if not token_path.exists():
        raise ConfigError(
            f"no orchestrator was initialized on {block.data_dir} (no {TOKEN_FILE}): run "
            "`fuzz init`, then `fuzz server`")
    tls = None if block.insecure else ClientTls(read_ca_file(block.data_dir / CA_FILE))
    endpoint = block.address if block.replicated else (
        running_endpoint(block.data_dir) or block.address)
    return Target(endpoint, read_token_file(token_path), tls)


def spec_target(loaded: LoadedSpec) -> Target:
    """The orchestrator the cluster spec's ``orchestrator:`` block declares, as its admin."""
    return orchestrator_target(spec_orchestrator(loaded))


def orchestrator_client(loaded: LoadedSpec) -> OrchestratorClient:
    """A client for the orchestrator the cluster spec's ``orchestrator:`` block declares."""
    return spec_target(loaded).orchestrator()


def explicit_target(server: str, token_file: Path, ca_pem: bytes | None) -> Target:
    """The orchestrator at ``server`` with the token in ``token_file``: TLS verified
    against the CA certificate ``ca_pem``, or plain text when it is None."""
    tls = ClientTls(ca_pem) if ca_pem is not None else None
    return Target(server, read_token_file(token_file), tls)
