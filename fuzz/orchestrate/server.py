"""`fuzz server`: the orchestrator process of one cluster.

Its data directory holds everything it needs to carry on after a restart:

``server.db``     the SQLite store (workflows, tasks, volumes, nodes, secrets)
``master.key``    the key secrets and agent tokens are sealed with (0600)
``admin.token``   the bearer token clients (the CLI) present (0600)
``server.json``   pid and endpoint while it runs
``server.lock``   held while it runs: one server per data directory
``logs/``         finished tasks' output
``volumes/``      the volume root, unless another (shared) path is configured
"""

from __future__ import annotations

import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

from fuzz.api import orchestrator_pb2_grpc
from fuzz.encryption import Sealer
from fuzz.grpcserve import (
    RunningServer,
    ServerStartError,
    TlsFiles,
    install_signal_handlers,
    restore_signal_handlers,
    start_server,
)
from fuzz.orchestrate.access import AdminOnly
from fuzz.orchestrate.connect import INFO_FILE, admin_token_path
from fuzz.orchestrate.nodes import NodeDirectory
from fuzz.orchestrate.runner import Runner, RunnerSettings
from fuzz.orchestrate.secretstore import SecretStore
from fuzz.orchestrate.service import REGISTER_METHOD, SERVICE_NAME, OrchestratorService
from fuzz.orchestrate.store import Store
from fuzz.substrate.auth import read_token_file
from fuzz.substrate.statedir import (
    acquire_lock,
    release_lock,
    write_json_atomic,
    write_private_file,
)

DB_FILE = "server.db"
KEY_FILE = "master.key"
LOCK_FILE = "server.lock"
STOP_GRACE = 2.0
# Watches, followed logs, execs and forwarded connections hold a worker each while they last.
MAX_WORKERS = 256


@dataclass(frozen=True)
class ServerSettings:
    """How to run the orchestrator: where it listens, keeps its data, and runs jobs."""

    listen: str
    data_dir: Path
    volume_root: Path | None = None
    job_uid: int = 65534
    job_gid: int = 65534
    tls: TlsFiles | None = None
    advertise: str | None = None  # the address agents register with; default: where it listens


def _key(data_dir: Path) -> bytes:
    path = data_dir / KEY_FILE
    if not path.exists():
        write_private_file(path, os.urandom(32))
    key = path.read_bytes()
    if len(key) != 32:
        raise ServerStartError(f"{path} must hold 32 bytes (it holds {len(key)})")
    return key


def _admin_token(data_dir: Path) -> str:
    path = admin_token_path(data_dir)
    if not path.exists():
        write_private_file(path, (secrets.token_urlsafe(32) + "\n").encode())
    return read_token_file(path)


def serve(settings: ServerSettings, stop: threading.Event | None = None) -> None:
    """Run the orchestrator until SIGTERM or SIGINT (or ``stop``); blocks for its life."""
    data_dir = settings.data_dir
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock_fd = acquire_lock(data_dir, lock_file=LOCK_FILE, owner="server")
    except OSError as exc:
        raise ServerStartError(f"cannot use data dir {data_dir}: {exc.strerror}") from None
    stop_event = stop or threading.Event()
    previous = install_signal_handlers(stop_event)
    store: Store | None = None
    running: RunningServer | None = None
    runner: Runner | None = None
    try:
        sealer = Sealer.from_keys(_key(data_dir))
        token = _admin_token(data_dir)
        store = Store(data_dir / DB_FILE)
        nodes = NodeDirectory(store, sealer)
        secret_store = SecretStore(store, sealer)
        runner = Runner(store, nodes, secret_store, RunnerSettings(
            volume_root=settings.volume_root or data_dir / "volumes",
            log_dir=data_dir / "logs", job_uid=settings.job_uid, job_gid=settings.job_gid,
        ))
        service = OrchestratorService(runner, nodes, secret_store, settings.advertise or "",
                                      AdminOnly(token))
        running = start_server(
            settings.listen, token,
            lambda server: orchestrator_pb2_grpc.add_OrchestratorServicer_to_server(
                service, server),
            SERVICE_NAME, tls=settings.tls, open_methods=(REGISTER_METHOD,),
            max_workers=MAX_WORKERS,
        )
        service.advertise = settings.advertise or running.endpoint
        runner.start()
        write_json_atomic(data_dir / INFO_FILE, {"pid": os.getpid(),
                                                 "endpoint": running.endpoint})
        stop_event.wait()
    finally:
        if running is not None:
            running.health.enter_graceful_shutdown()
            running.server.stop(STOP_GRACE).wait()
        if runner is not None:
            runner.stop()
        if store is not None:
            store.close()
        (data_dir / INFO_FILE).unlink(missing_ok=True)
        restore_signal_handlers(previous)
        release_lock(lock_fd)
