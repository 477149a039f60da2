"""How a client finds the orchestrator: an explicit address and token file, or the spec's.

``fuzz server`` keeps its admin token in ``DATA_DIR/admin.token`` and publishes
its endpoint in ``DATA_DIR/server.json`` while it runs; a CLI run next to the
cluster spec finds both through the spec's ``orchestrator:`` block.
"""

from __future__ import annotations

from pathlib import Path

from fuzz.errors import ConfigError
from fuzz.orchestrate.client import OrchestratorClient
from fuzz.spec.loader import LoadedSpec
from fuzz.substrate.auth import read_token_file
from fuzz.substrate.statedir import read_json

TOKEN_FILE = "admin.token"
INFO_FILE = "server.json"


def admin_token_path(data_dir: Path) -> Path:
    """The file holding the admin token of the server using ``data_dir``."""
    return data_dir / TOKEN_FILE


def running_endpoint(data_dir: Path) -> str | None:
    """The endpoint of the server running on ``data_dir``, if it published one."""
    info = read_json(data_dir / INFO_FILE)
    return str(info["endpoint"]) if info and "endpoint" in info else None


def orchestrator_client(loaded: LoadedSpec) -> OrchestratorClient:
    """A client for the orchestrator the cluster spec's ``orchestrator:`` block declares."""
    block = loaded.spec.orchestrator
    if block is None:
        raise ConfigError(
            f"{loaded.path.name} has no orchestrator: block; add one, or pass --server "
            "and --token-file")
    data_dir = loaded.base_dir / block.data_dir
    token_path = admin_token_path(data_dir)
    if not token_path.exists():
        raise ConfigError(
            f"no orchestrator has run on {data_dir} yet (no {TOKEN_FILE}): start it with "
            "`fuzz server`")
    return OrchestratorClient(running_endpoint(data_dir) or block.address,
                              read_token_file(token_path))


def explicit_client(server: str, token_file: Path) -> OrchestratorClient:
    """A client for the orchestrator at ``server`` with the token in ``token_file``."""
    return OrchestratorClient(server, read_token_file(token_file))
