"""``fuzz server``: the orchestrator (``--init``, foreground, ``--detach``, ``--stop``)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from fuzz.cli.lazygroup import LazyGroup
from fuzz.cli.options import AppContext, pass_app
from fuzz.clients.orchestrator import OrchestratorClient
from fuzz.daemonlog import configure_daemon_logging
from fuzz.errors import FuzzError
from fuzz.fsutil import flock_held, read_json
from fuzz.orchestrate.connect import (
    CA_FILE,
    INFO_FILE,
    admin_token_path,
    read_ca_file,
    running_endpoint,
)
from fuzz.orchestrate.datadir import init_data_dir
from fuzz.orchestrate.store_target import PostgresTarget
from fuzz.rpc.auth import read_token_file
from fuzz.rpc.client import ClientTls
from fuzz.spec.cluster import OrchestratorSpec

LOG_FILE = "server.log"
LOCK_FILE = "server.lock"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
STORE_COMMANDS = "fuzz.cli.commands_store"  # under ``fuzz server``, loaded when asked for

logger = logging.getLogger(__name__)


def orchestrator_block(app: AppContext) -> tuple[OrchestratorSpec, Path, str]:
    """The spec's orchestrator block, directory and cluster name (defaults without a spec)."""
    if not app.spec_path.exists():
        return OrchestratorSpec(), Path.cwd(), "default"
    loaded = app.workspace.loaded
    return (loaded.spec.orchestrator or OrchestratorSpec(), loaded.base_dir,
            loaded.spec.cluster)


def postgres_target(block: OrchestratorSpec, base: Path) -> PostgresTarget | None:
    """The spec's ``orchestrator.store`` (None: the data dir's SQLite file)."""
    if block.store is None:
        return None
    password = block.store.password_file
    return PostgresTarget(block.store.url, (base / password).absolute() if password else None)


def _detach(argv: list[str], data_dir: Path, insecure: bool) -> None:
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
        if endpoint is not None and (read_json(data_dir / INFO_FILE) or {}).get("role") \
                == "standby":
            click.echo(f"orchestrator standing by as a replica at {endpoint} (pid {proc.pid}; "
                       f"log {data_dir / LOG_FILE}); it leads once the leader's lease lapses")
            return
        if endpoint is not None:
            token = read_token_file(admin_token_path(data_dir))
            tls = None if insecure else ClientTls(read_ca_file(data_dir / CA_FILE))
            with OrchestratorClient(endpoint, token, tls=tls) as client:
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


def _stop(data_dir: Path, cluster: str, no_cluster_here: str | None) -> None:
    """Stop the orchestrator running on ``data_dir``; a no-op (said so) when none runs.

    A data dir never initialized is no cluster: FuzzError, with ``no_cluster_here``
    as the reason when neither a spec nor ``--data-dir`` named one.
    """
    if not (data_dir / CA_FILE).exists():
        raise FuzzError(no_cluster_here or f"no orchestrator data dir at {data_dir} "
                        f"(no {CA_FILE}: `fuzz init` makes one)")
    info = read_json(data_dir / INFO_FILE)
    if not info or not flock_held(data_dir / LOCK_FILE):
        click.echo(f"the orchestrator of cluster {cluster} is not running "
                   f"(data dir {data_dir}): nothing to stop")
        return
    pid = int(info["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while flock_held(data_dir / LOCK_FILE):
        if time.monotonic() > deadline:
            raise FuzzError(f"the orchestrator (pid {pid}) did not stop within {STOP_TIMEOUT:g}s")
        time.sleep(0.1)
    click.echo(f"orchestrator stopped (pid {pid})")


@click.group("server", invoke_without_command=True, cls=LazyGroup,
             lazy_subcommands={"migrate": STORE_COMMANDS, "migrate-store": STORE_COMMANDS})
@click.option("--listen", metavar="HOST:PORT", help="Where to listen (default: the spec's "
              "orchestrator.listen, else 127.0.0.1:7400).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Database, keys and logs (default: the spec's orchestrator.data_dir).")
@click.option("--volume-root", type=click.Path(file_okay=False, path_type=Path),
              help="Where volumes live, the same path on every node (default: the spec's "
              "orchestrator.volume_root, else DATA_DIR-volumes next to the data dir).")
@click.option("--init", "initialize", is_flag=True,
              help="Create the data dir with the cluster CA and the admin token, then exit "
              "(`fuzz init` does this too).")
@click.option("--insecure", is_flag=True, help="Serve plain text, no TLS (also the spec's "
              "orchestrator.insecure): tests and trusted networks only; warns.")
@click.option("--detach", is_flag=True, help="Run in the background; return once it answers.")
@click.option("--stop", is_flag=True, help="Stop the orchestrator running on the data dir.")
@pass_app
def server(app: AppContext, listen: str | None, data_dir: Path | None,
           volume_root: Path | None, initialize: bool, insecure: bool, detach: bool,
           stop: bool) -> None:
    """Run the orchestrator of the cluster in the spec: its API, scheduler and data mover.

    It serves TLS with a certificate of the cluster CA (`fuzz init` makes the CA).
    `fuzz server migrate` and `fuzz server migrate-store` manage its store.
    """
    if click.get_current_context().invoked_subcommand is not None:
        return  # `fuzz server migrate` and `migrate-store`: fuzz/cli/commands_store.py
    block, base, cluster = orchestrator_block(app)
    data = (data_dir or base / block.data_dir).absolute()
    if initialize:
        created = init_data_dir(data, cluster)
        click.echo(f"{'created' if created else 'found'} the cluster CA ({data / CA_FILE}) and "
                   f"the admin token ({admin_token_path(data)})")
        return
    if stop:
        guessed = data_dir is None and not app.spec_path.exists()
        _stop(data, cluster, f"no cluster here: no {app.spec_path} in {Path.cwd()} and no "
              f"orchestrator data dir at {data} (run it in the cluster's directory, or give "
              "-f SPEC or --data-dir DIR)" if guessed else None)
        return
    listen = listen or block.listen
    insecure = insecure or block.insecure
    volumes = volume_root or (base / block.volume_root if block.volume_root else None)
    if detach:
        argv = ["-f", str(app.spec_path.absolute()), "server", "--listen", listen,
                "--data-dir", str(data)]
        if volumes is not None:
            argv += ["--volume-root", str(Path(volumes).absolute())]
        if insecure:
            argv += ["--insecure"]
            click.echo("warning: --insecure: the orchestrator serves plain text; tokens, "
                       "secrets and data cross the network unencrypted", err=True)
        _detach(argv, data, insecure)
        return
    # the server's imports, only here
    from fuzz.heap import keep_large_buffers_in_heap
    from fuzz.orchestrate.cluster.elastic import ElasticSetup
    from fuzz.orchestrate.server import ServerSettings, serve
    from fuzz.orchestrate.transfer.ingress_policy import IngressPolicy
    from fuzz.orchestrate.workflows.jobids import JobIdRange

    keep_large_buffers_in_heap()  # it relays port-forward data
    elastic = None
    if app.spec_path.exists():
        ws = app.workspace
        elastic = ElasticSetup(ws.loaded, ws.plugins, ws.store)
    configure_daemon_logging()
    logger.info("orchestrator starting on %s (data in %s)", listen, data)
    serve(ServerSettings(
        listen=listen, data_dir=data, volume_root=Path(volumes).absolute() if volumes else None,
        job_ids=JobIdRange(block.job_ids.first, block.job_ids.count), advertise=block.advertise,
        cluster=cluster, insecure=insecure,
        host_paths=tuple((base / path).absolute() for path in block.host_paths),
        join_token_ttl=block.join_token_ttl_seconds(),
        node_grace=block.node_grace_seconds(),
        ingress=IngressPolicy.from_spec(block.ingress.allow, block.ingress.proxy),
        limits=block.limits, disk=block.disk, cache=block.cache,
        catalogs=tuple(catalog.model_copy(update={"path": str((base / catalog.path).absolute())})
                       if catalog.path is not None else catalog for catalog in block.catalogs),
        endpoints=block.endpoints.model_copy(update={
            key: str((base / value).absolute()) for key, value in
            (("cert", block.endpoints.cert), ("key", block.endpoints.key)) if value}),
        metrics=block.metrics,
        store=postgres_target(block, base),
        replicas=tuple(block.replicas),
        ui=block.ui,
    ), elastic=elastic)


COMMANDS = (server,)
