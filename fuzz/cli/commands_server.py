"""``fuzz server``: run the cluster's orchestrator (foreground, ``--detach`` or ``--stop``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from fuzz.cli.options import AppContext, pass_app
from fuzz.errors import ConfigError, FuzzError
from fuzz.grpcserve import TlsFiles
from fuzz.orchestrate.client import OrchestratorClient
from fuzz.orchestrate.connect import INFO_FILE, admin_token_path, running_endpoint
from fuzz.spec.cluster import OrchestratorSpec
from fuzz.substrate.auth import read_token_file
from fuzz.substrate.statedir import flock_held, read_json

LOG_FILE = "server.log"
LOCK_FILE = "server.lock"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0


def _block(app: AppContext) -> tuple[OrchestratorSpec, Path]:
    """The spec's orchestrator block and the spec's directory (defaults without a spec)."""
    if not app.spec_path.exists():
        return OrchestratorSpec(), Path.cwd()
    loaded = app.workspace.loaded
    return loaded.spec.orchestrator or OrchestratorSpec(), loaded.base_dir


def _detach(argv: list[str], data_dir: Path) -> None:
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if flock_held(data_dir / LOCK_FILE):
        raise FuzzError(f"an orchestrator already runs on {data_dir} "
                        f"(at {running_endpoint(data_dir)})")
    (data_dir / INFO_FILE).unlink(missing_ok=True)
    with open(data_dir / LOG_FILE, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "fuzz", *argv], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        endpoint = running_endpoint(data_dir)
        if endpoint is not None:
            token = read_token_file(admin_token_path(data_dir))
            with OrchestratorClient(endpoint, token) as client:
                if client.ready_within(max(deadline - time.monotonic(), 0.1)):
                    click.echo(f"orchestrator running at {endpoint} (pid {proc.pid}; "
                               f"log {data_dir / LOG_FILE})")
                    return
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    tail = (data_dir / LOG_FILE).read_text(errors="replace").strip().splitlines()[-1:]
    raise FuzzError(f"the orchestrator did not start: {tail[0] if tail else 'no output'} "
                    f"(see {data_dir / LOG_FILE})")


def _stop(data_dir: Path) -> None:
    info = read_json(data_dir / INFO_FILE)
    if not info or not flock_held(data_dir / LOCK_FILE):
        click.echo(f"no orchestrator runs on {data_dir}")
        return
    pid = int(info["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while flock_held(data_dir / LOCK_FILE):
        if time.monotonic() > deadline:
            raise FuzzError(f"the orchestrator (pid {pid}) did not stop within {STOP_TIMEOUT:g}s")
        time.sleep(0.1)
    click.echo(f"orchestrator stopped (pid {pid})")


@click.command("server")
@click.option("--listen", metavar="HOST:PORT", help="Where to listen (default: the spec's "
              "orchestrator.listen, else 127.0.0.1:7400).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Database, keys and logs (default: the spec's orchestrator.data_dir).")
@click.option("--volume-root", type=click.Path(file_okay=False, path_type=Path),
              help="Where volumes live, the same path on every node.")
@click.option("--tls-cert", type=click.Path(dir_okay=False, path_type=Path), metavar="PEM")
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path), metavar="PEM")
@click.option("--detach", is_flag=True, help="Run in the background; return once it answers.")
@click.option("--stop", is_flag=True, help="Stop the orchestrator running on the data dir.")
@pass_app
def server(app: AppContext, listen: str | None, data_dir: Path | None,
           volume_root: Path | None, tls_cert: Path | None, tls_key: Path | None,
           detach: bool, stop: bool) -> None:
    """Run the orchestrator of the cluster in the spec: its API, scheduler and data mover."""
    block, base = _block(app)
    data = (data_dir or base / block.data_dir).absolute()
    if stop:
        _stop(data)
        return
    listen = listen or block.listen
    volumes = volume_root or (base / block.volume_root if block.volume_root else None)
    if (tls_cert is None) != (tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together")
    if detach:
        argv = ["server", "--listen", listen, "--data-dir", str(data)]
        if volumes is not None:
            argv += ["--volume-root", str(Path(volumes).absolute())]
        if tls_cert and tls_key:
            argv += ["--tls-cert", str(tls_cert.absolute()), "--tls-key", str(tls_key.absolute())]
        _detach(argv, data)
        return
    from fuzz.orchestrate.server import ServerSettings, serve  # the server's imports, only here

    click.echo(f"orchestrator starting on {listen} (data in {data})", err=True)
    serve(ServerSettings(
        listen=listen, data_dir=data, volume_root=Path(volumes).absolute() if volumes else None,
        job_uid=block.job_uid, job_gid=block.job_gid,
        tls=TlsFiles(tls_cert, tls_key) if tls_cert and tls_key else None,
        advertise=block.advertise,
    ))


COMMANDS = (server,)
