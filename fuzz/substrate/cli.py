"""The ``substrate`` command group (mounted as ``fuzz substrate``): run the node agent."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from pathlib import Path

import click

from fuzz.errors import FuzzError


def parse_labels(items: Iterable[str]) -> dict[str, str]:
    """Turn ``KEY=VALUE`` strings into a dict; raise click.ClickException on a bad one."""
    labels: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.ClickException(f"invalid label {item!r}: expected KEY=VALUE")
        labels[key.strip()] = value
    return labels


def _check_transport(tls: bool, join_ca: bool, insecure: bool, joins: bool) -> None:
    """Exactly one of --tls-cert, --join-ca-file and --insecure (the agent warns when serving)."""
    chosen = [flag for flag, given in (("--tls-cert", tls), ("--join-ca-file", join_ca),
                                       ("--insecure", insecure)) if given]
    if len(chosen) > 1:
        raise click.ClickException(f"{' and '.join(chosen)} exclude each other")
    if not chosen:
        raise click.ClickException(
            "the agent serves TLS: give --join-ca-file (a node of a TLS cluster) or "
            "--tls-cert/--tls-key, or --insecure for plain text")
    if join_ca and not joins:
        raise click.ClickException("--join-ca-file needs --join")


def _read_ca(path: Path) -> bytes:
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise click.ClickException(f"--join-ca-file {path}: {exc.strerror}") from exc
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise click.ClickException(f"--join-ca-file {path}: not a PEM certificate")
    return pem


@click.group(name="substrate")
def substrate() -> None:
    """Run and inspect the node agent."""


@substrate.command("serve")
@click.option(
    "--listen", default="127.0.0.1:0", show_default=True, metavar="HOST:PORT",
    help="Address to listen on; port 0 lets the OS pick one (see agent.json).",
)
@click.option(
    "--state-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
    help="The agent's own directory: lock, agent.json, node id.",
)
@click.option(
    "--token-file", required=True, type=click.Path(dir_okay=False, path_type=Path),
    help="File holding the bearer token clients must send (mode 0600).",
)
@click.option(
    "--label", "labels", multiple=True, metavar="KEY=VALUE",
    help="A label reported in the inventory; repeatable.",
)
@click.option(
    "--inventory", "inventory_file", type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Declare the node's CPUs, NUMA domains, memory and GPUs in a YAML file "
    "instead of reading the hardware (declared CPUs map onto the real ones).",
)
@click.option(
    "--image-cache", default="10GiB", show_default=True, metavar="SIZE",
    help="Unused images beyond this size are evicted, least recently used first.",
)
@click.option(
    "--insecure-registry", "insecure_registries", multiple=True, metavar="HOST:PORT",
    help="A registry spoken to over plain HTTP (tests, local mirrors); repeatable.",
)
@click.option(
    "--cdi-dir", "cdi_dirs", multiple=True, metavar="DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="Read the CDI specs of leased devices (GPUs) here instead of /etc/cdi and "
    "/var/run/cdi; repeatable, later directories win.",
)
@click.option("--tls-cert", type=click.Path(dir_okay=False, path_type=Path), metavar="PEM",
              help="Serve TLS with this certificate (chain); needs --tls-key.")
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path), metavar="PEM",
              help="The private key of --tls-cert.")
@click.option("--join", "join_address", metavar="HOST:PORT",
              help="Register with the orchestrator at this address (and keep doing so).")
@click.option("--join-token-file", type=click.Path(dir_okay=False, path_type=Path),
              metavar="FILE", help="File holding the join token this node was created with.")
@click.option("--join-ca-file", type=click.Path(dir_okay=False, path_type=Path), metavar="PEM",
              help="The cluster CA: enroll with the orchestrator for a certificate (verifying "
              "it against this CA) and serve mutual TLS with it.")
@click.option("--insecure", is_flag=True,
              help="Serve (and join) in plain text, without TLS: only for tests and trusted "
              "networks; logs a warning.")
@click.option("--node-name", metavar="NAME",
              help="The node's name in its cluster (default: the hostname).")
@click.option("--advertise", metavar="HOST:PORT",
              help="The address the orchestrator calls this agent at (default: where it "
              "listens).")
@click.option("--job-network", default="auto", show_default=True, metavar="CIDR|auto|host",
              help="The subnet of this node's jobs (each job gets a network namespace with "
              "an address in it); auto: a free /24 of --jobs-range; host: jobs share the "
              "node's network (for RDMA and some MPI fabrics; see docs/security.md), as the "
              "label fuzz:network=host also asks.")
@click.option("--jobs-range", default="10.200.0.0/13", show_default=True, metavar="CIDR",
              help="Every node's job subnet lies in this range; a job reaches none of it "
              "but the peers of its own multinode job.")
@click.option("--metrics-listen", default="127.0.0.1:0", show_default=True,
              metavar="HOST:PORT|off",
              help="Serve /metrics (Prometheus), /healthz and /readyz over HTTP here; port 0 "
              "lets the OS pick one (see agent.json); off: no listener.")
@click.option("--share-cpus-with", type=click.Path(file_okay=False, path_type=Path),
              metavar="DIR",
              help="This machine's CPUs are shared with the agents whose state dirs are in "
              "DIR (the local provider's nodes): each container is pinned to the CPUs the "
              "fewest of their running containers use.")
def serve_command(
    listen: str,
    state_dir: Path,
    token_file: Path,
    labels: tuple[str, ...],
    inventory_file: Path | None,
    image_cache: str,
    insecure_registries: tuple[str, ...],
    cdi_dirs: tuple[Path, ...],
    tls_cert: Path | None,
    tls_key: Path | None,
    join_address: str | None,
    join_token_file: Path | None,
    join_ca_file: Path | None,
    insecure: bool,
    node_name: str | None,
    advertise: str | None,
    job_network: str,
    jobs_range: str,
    metrics_listen: str,
    share_cpus_with: Path | None,
) -> None:
    """Serve the node agent's gRPC API until SIGTERM or SIGINT."""
    # gRPC core logs failures (e.g. a port in use) itself; the agent says them in one line.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    from fuzz.daemonlog import configure_daemon_logging
    from fuzz.heap import keep_large_buffers_in_heap
    from fuzz.rpc.auth import read_token_file
    from fuzz.rpc.server import TlsFiles
    from fuzz.substrate.capacity.cdi import DEFAULT_CDI_DIRS
    from fuzz.substrate.join import JoinSettings
    from fuzz.substrate.monitor.jobnet import JobNetworkError, agent_network
    from fuzz.substrate.server import serve
    from fuzz.units import parse_size

    keep_large_buffers_in_heap()  # it moves port-forward data
    configure_daemon_logging()
    parsed = parse_labels(labels)
    if share_cpus_with is not None:  # its MPI jobs' ranks here may be one node to Open MPI
        from fuzz.resources import MACHINE_LABEL
        from fuzz.substrate.launch.sharedns import machine_id

        parsed.setdefault(MACHINE_LABEL, machine_id(share_cpus_with))
    if (tls_cert is None) != (tls_key is None):
        raise click.ClickException("--tls-cert and --tls-key go together")
    _check_transport(tls_cert is not None, join_ca_file is not None, insecure,
                     join_address is not None)
    tls = TlsFiles(tls_cert, tls_key) if tls_cert and tls_key else None
    try:
        network = agent_network(job_network, jobs_range, parsed)
    except JobNetworkError as exc:
        raise click.ClickException(f"--job-network: {exc}") from None
    try:
        token = read_token_file(token_file)
        join = None
        if join_address is not None:
            if join_token_file is None:
                raise click.ClickException("--join needs --join-token-file")
            join = JoinSettings(join_address, read_token_file(join_token_file),
                                node_name or socket.gethostname(), advertise,
                                _read_ca(join_ca_file) if join_ca_file else None)
        serve(listen, state_dir.absolute(), token, parsed, inventory_file=inventory_file,
              image_cache_bytes=parse_size(image_cache),
              insecure_registries=insecure_registries, tls=tls, join=join,
              cdi_dirs=tuple(d.absolute() for d in cdi_dirs) or DEFAULT_CDI_DIRS,
              job_network=network,
              metrics_listen=None if metrics_listen == "off" else metrics_listen,
              share_cpus_with=share_cpus_with.absolute() if share_cpus_with else None)
    except ValueError as exc:
        raise click.ClickException(f"--image-cache: {exc}") from None
    except FuzzError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(str(exc)) from exc


COMMANDS = (substrate,)  # what ``fuzz`` mounts (fuzz.cli.main loads it when asked for)
