"""The built-in ``local`` provider: each node is a real agent process on this machine.

A node lives in ``<workdir>/<cluster>/<client token>/``:

``meta.json``   the node's tags, address, pool, labels and provider block (written first)
``token``       the agent's own bearer token (mode 0600)
``join-token``  the token it joins its orchestrator with, when the cluster has one (0600)
``join-ca.pem`` the cluster CA, when the orchestrator speaks TLS: the agent enrolls for
                a certificate and serves mutual TLS (otherwise it runs ``--insecure``)
``agent.log``   the agent's stdout and stderr
``agent.lock``, ``agent.json``, ``node-id``  kept by the agent (:mod:`fuzz.substrate.statedir`)
``tls/``        the node's key, certificate and CA (:mod:`fuzz.substrate.enroll`); the
                provider's health checks present that certificate

Whether a node runs is read from the agent's lock, not from a pid: a non-blocking
``flock`` attempt on a fresh descriptor fails exactly while a live agent holds it.
A node whose agent died reads as ``gone`` so that the engine recreates it.
No shell is used anywhere: processes are started from argument lists.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

import fuzz
from fuzz.fsutil import read_json, write_json_atomic, write_private_file
from fuzz.plugin import RegisterProvider, hookimpl
from fuzz.plugin.kit import ProviderPlugin
from fuzz.plugin.provider import (
    JoinInfo,
    NodeObservation,
    NodeRequest,
    NodeState,
    Offering,
    ProviderContext,
    ProviderError,
    QuotaExceededError,
)
from fuzz.substrate.capacity.declared import read_declared_inventory
from fuzz.substrate.capacity.inventory import MachineInventory, read_inventory
from fuzz.substrate.statedir import INFO_FILE, lock_held, lock_pid

KIND = "local"
META_FILE = "meta.json"
TOKEN_FILE = "token"
JOIN_TOKEN_FILE = "join-token"
JOIN_CA_FILE = "join-ca.pem"
LOG_FILE = "agent.log"
CREATE_LOCK_FILE = "create.lock"
POLL_INTERVAL = 0.03
KILL_WAIT = 5.0
MONITOR_CLEANUP = 30.0  # after the last SIGKILL: unmount, remove, exit
LOG_TAIL_LINES = 8
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class LocalConfig(BaseModel):
    """The ``local`` provider block: where node dirs live and how long to wait for agents."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workdir: str = Field(
        default=".fuzz/nodes", description="Node dirs, relative to the spec's directory."
    )
    start_timeout: float = Field(default=30, gt=0, description="Seconds to wait for an agent.")
    stop_timeout: float = Field(
        default=10, gt=0, description="Seconds between SIGTERM and SIGKILL."
    )
    insecure_registries: list[str] = Field(
        default_factory=list,
        description="Registries (HOST:PORT) the agents reach over plain HTTP, e.g. a local one.",
    )
    max_nodes: int | None = Field(
        default=None, ge=1, description="The most nodes this block may hold (a quota)."
    )
    inventory: str | None = Field(
        default=None,
        description="A declared node (sockets, NUMA domains, cores, memory, GPUs: see "
        "fuzz.substrate.capacity.declared) that each agent serves instead of this machine, "
        "relative to the spec's directory: GPU and NUMA scheduling tried on a machine "
        "without them.",
    )
    cdi_dirs: list[str] = Field(
        default_factory=list,
        description="Where the agents read CDI specs of leased devices (GPUs) instead of "
        "/etc/cdi and /var/run/cdi, relative to the spec's directory.",
    )


# --- processes this process started (reaped so that none lingers as a zombie) ----------

_children: dict[int, subprocess.Popen[bytes]] = {}
_children_lock = threading.Lock()


def _reap_children() -> None:
    with _children_lock:
        for pid, proc in list(_children.items()):
            if proc.poll() is not None:
                del _children[pid]


def _child(pid: int) -> subprocess.Popen[bytes] | None:
    with _children_lock:
        return _children.get(pid)


# --- node dirs ------------------------------------------------------------------------


def _config(ctx: ProviderContext) -> LocalConfig:
    if isinstance(ctx.config, LocalConfig):
        return ctx.config
    if ctx.config is None:
        return LocalConfig()
    if isinstance(ctx.config, Mapping):
        try:
            return LocalConfig.model_validate(dict(ctx.config))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}"
                for e in exc.errors()
            )
            raise ProviderError(f"local provider '{ctx.name}': {problems}") from None
    raise ProviderError(f"local provider '{ctx.name}': unexpected config {ctx.config!r}")


def _safe(name: str, what: str) -> str:
    if not _SAFE_NAME.match(name):
        raise ProviderError(
            f"local provider: {what} {name!r} cannot name a directory "
            f"(use letters, digits, '.', '_' and '-')"
        )
    return name


def _spec_path(ctx: ProviderContext, path: str) -> Path:
    """``path`` of the provider block, relative to the spec's directory (absolute)."""
    found = Path(path).expanduser()
    return (found if found.is_absolute() else ctx.base_dir / found).absolute()


def cluster_dir(ctx: ProviderContext) -> Path:
    """The directory holding the node dirs of ``ctx.cluster`` (absolute)."""
    return _spec_path(ctx, _config(ctx).workdir) / _safe(ctx.cluster, "cluster name")


def _machine(ctx: ProviderContext) -> MachineInventory:
    """What each node of the block is: the declared inventory, or this machine."""
    inventory = _config(ctx).inventory
    if inventory is None:
        return read_inventory()
    return read_declared_inventory(_spec_path(ctx, inventory))


def _agent_options(ctx: ProviderContext) -> list[str]:
    """The agent options the block's settings make (registries, inventory, CDI dirs), and
    the directory of the sibling nodes this machine's CPUs are shared with."""
    config = _config(ctx)
    argv: list[str] = ["--share-cpus-with", str(cluster_dir(ctx))]
    for registry in config.insecure_registries:
        argv += ["--insecure-registry", registry]
    if config.inventory is not None:
        argv += ["--inventory", str(_spec_path(ctx, config.inventory))]
    for directory in config.cdi_dirs:
        argv += ["--cdi-dir", str(_spec_path(ctx, directory))]
    return argv


def node_dir(ctx: ProviderContext, client_token: str) -> Path:
    """The directory of the node created with ``client_token``."""
    return cluster_dir(ctx) / _safe(client_token, "client token")


def _block_dirs(ctx: ProviderContext) -> list[Path]:
    """The node dirs of ``ctx.cluster`` that belong to this provider block, or may (no meta yet)."""
    try:
        entries = sorted(p for p in cluster_dir(ctx).iterdir() if p.is_dir())
    except FileNotFoundError:
        return []
    return [d for d in entries if (read_json(d / META_FILE) or {}).get("provider", ctx.name)
            == ctx.name]


def _check_quota(ctx: ProviderContext, max_nodes: int) -> None:
    """Raise QuotaExceededError when the block already holds ``max_nodes`` node dirs."""
    held = len(_block_dirs(ctx))
    if held >= max_nodes:
        raise QuotaExceededError(
            f"local provider '{ctx.name}': max_nodes is {max_nodes} and {held} nodes exist "
            f"in {cluster_dir(ctx)}; delete nodes or raise max_nodes"
        )


@contextmanager
def _create_lock(directory: Path) -> Iterator[None]:
    """Serialize creates and deletes of a node dir (or of the cluster dir's node count)."""
    fd = os.open(directory / CREATE_LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@dataclass(frozen=True)
class _AgentStatus:
    held: bool
    pid: int | None
    info: dict[str, Any] | None


def _agent_status(directory: Path) -> _AgentStatus:
    held = lock_held(directory)
    info = read_json(directory / INFO_FILE) if held else None
    pid: int | None = None
    if info is not None and isinstance(info.get("pid"), int):
        pid = info["pid"]
    elif held:
        pid = lock_pid(directory)
    return _AgentStatus(held, pid, info)


def _is_agent_of(pid: int, directory: Path) -> bool:
    """True when ``pid`` is a live (not zombie) agent serving ``directory``."""
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
        cmdline = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if stat.rpartition(")")[2].split()[:1] == ["Z"]:
        return False
    return b"fuzz.substrate" in cmdline and str(directory).encode() in cmdline


def _log_tail(directory: Path) -> str:
    try:
        lines = (directory / LOG_FILE).read_text(errors="replace").splitlines()
    except OSError:
        return "(no agent.log)"
    tail = [line.strip() for line in lines if line.strip()][-LOG_TAIL_LINES:]
    return " | ".join(tail) if tail else "(agent.log is empty)"


def _observation(
    directory: Path, meta: Mapping[str, Any], state: NodeState, status: _AgentStatus
) -> NodeObservation:
    info = status.info or {}
    endpoint = info.get("endpoint") if state == "running" else None
    return NodeObservation(
        provider_id=directory.name,
        address=str(meta.get("address", "")),
        client_token=str(meta.get("client_token", directory.name)),
        state=state,
        endpoint=str(endpoint) if endpoint else None,
        attributes={
            "pid": status.pid,
            "state_dir": str(directory),
            "token_file": str(directory / TOKEN_FILE),
            "log_file": str(directory / LOG_FILE),
        },
    )


# --- bootstrap payload ------------------------------------------------------------------


def payload_document(node: NodeRequest, join: JoinInfo) -> str:
    """The JSON document a local node starts from: join token, orchestrator, CA and labels."""
    labels = {**dict(node.labels), **dict(node.tags)}
    return json.dumps(
        {"token": join.token, "orchestrator": join.orchestrator, "ca": join.ca_pem,
         "labels": labels},
        sort_keys=True,
    )


@dataclass(frozen=True)
class _Payload:
    join_token: str
    orchestrator: str | None
    labels: dict[str, str]
    ca_pem: str | None = None


def _parse_payload(node: NodeRequest) -> _Payload:
    text = node.bootstrap or payload_document(node, node.join)
    try:
        payload = json.loads(text)
        token = str(payload["token"] or "").strip()
        orchestrator = payload.get("orchestrator")
        ca_pem = payload.get("ca")
        labels = {str(k): str(v) for k, v in dict(payload.get("labels") or {}).items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ProviderError(
            f"local node {node.address}: the bootstrap payload is not the local provider's "
            f"JSON document (token, orchestrator, ca, labels)"
        ) from None
    if not token:
        raise ProviderError(f"local node {node.address}: the join token is empty")
    return _Payload(token, str(orchestrator) if orchestrator else None, labels,
                    str(ca_pem) if ca_pem else None)


# --- agent processes --------------------------------------------------------------------


def _read_token(directory: Path) -> str:
    """The agent token of a node dir ('' while the agent that holds it has not written one)."""
    try:
        return (directory / TOKEN_FILE).read_text().strip()
    except FileNotFoundError:
        return ""


def _spawn(
    directory: Path, address: str, payload: _Payload, options: list[str]
) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable,
        "-m",
        "fuzz.substrate",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        str(directory),
        "--token-file",
        str(directory / TOKEN_FILE),
    ]
    for key, value in sorted(payload.labels.items()):
        argv += ["--label", f"{key}={value}"]
    argv += options
    if payload.orchestrator:
        argv += ["--join", payload.orchestrator, "--join-token-file",
                 str(directory / JOIN_TOKEN_FILE), "--node-name", address]
    if payload.orchestrator and payload.ca_pem:
        argv += ["--join-ca-file", str(directory / JOIN_CA_FILE)]
    else:
        argv += ["--insecure"]  # no CA to enroll with: a local, plain-text node
    env = dict(os.environ)
    source_root = str(Path(fuzz.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source_root, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    with open(directory / LOG_FILE, "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=directory,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    with _children_lock:
        _children[proc.pid] = proc
    return proc


def _stop_jobs(directory: Path, stop_timeout: float) -> None:
    """Stop the node's container monitor, and so its jobs: they go with their node.

    Jobs outlive their agent on purpose (an agent restart re-adopts them); deleting
    the node is what ends them, as powering a machine off would: each job gets
    SIGTERM and at most ``stop_timeout`` seconds before SIGKILL (not its own grace,
    which may be longer), and the monitor :data:`MONITOR_CLEANUP` more to clean up
    and exit (a job that ignored SIGTERM made the first delete fail before).
    """
    from fuzz.substrate.runtime.containers import ContainerError, ContainerManager

    try:
        ContainerManager(directory).shutdown_monitor(stop_timeout + MONITOR_CLEANUP,
                                                     grace=stop_timeout)
    except ContainerError as exc:
        raise ProviderError(f"local node {directory.name}: cannot stop its jobs: {exc}") from None


def _healthy(directory: Path, address: str, endpoint: str, token: str) -> bool:
    from fuzz.clients.agent import AgentClient  # imports gRPC only when a node is used
    from fuzz.substrate.enroll import TLS_DIR, NodeIdentity

    identity = NodeIdentity(directory / TLS_DIR)
    tls = identity.client_tls(address) if identity.is_complete() else None
    client = AgentClient(endpoint, token, timeout=2.0, tls=tls)
    try:
        return client.health()
    finally:
        client.close()


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _wait_running(
    directory: Path,
    meta: Mapping[str, Any],
    token: str,
    timeout: float,
    proc: subprocess.Popen[bytes] | None,
) -> NodeObservation:
    """Wait until the node's agent has published agent.json and answers its health check."""
    address = meta.get("address", directory.name)
    deadline = time.monotonic() + timeout
    while True:
        status = _agent_status(directory)
        if proc is not None and proc.poll() is not None and not status.held:
            raise ProviderError(
                f"local node {address}: the agent exited with code {proc.returncode} "
                f"while starting: {_log_tail(directory)}"
            )
        if proc is None and not status.held:
            raise ProviderError(
                f"local node {address}: the agent stopped while starting: {_log_tail(directory)}"
            )
        endpoint = (status.info or {}).get("endpoint")
        if endpoint and _healthy(directory, str(address), str(endpoint), token):
            return _observation(directory, meta, "running", status)
        if time.monotonic() >= deadline:
            if proc is not None:
                _kill(proc)
            raise ProviderError(
                f"local node {address}: the agent did not become ready within {timeout:g}s "
                f"(see {directory / LOG_FILE}): {_log_tail(directory)}"
            )
        time.sleep(POLL_INTERVAL)


def _stop_agent(directory: Path, stop_timeout: float) -> None:
    """SIGTERM the node's agent, SIGKILL it after ``stop_timeout``; return once it is gone."""
    status = _agent_status(directory)
    pid = status.pid
    if pid is not None and _is_agent_of(pid, directory):
        os.kill(pid, signal.SIGTERM)
    if _wait_gone(directory, pid, stop_timeout):
        return
    pid = _agent_status(directory).pid or pid
    if pid is not None and _is_agent_of(pid, directory):
        os.kill(pid, signal.SIGKILL)
    if not _wait_gone(directory, pid, KILL_WAIT):
        raise ProviderError(
            f"local node {directory.name}: the agent (pid {pid}) did not stop; "
            f"its state dir {directory} is still locked"
        )


def _wait_gone(directory: Path, pid: int | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        child = _child(pid) if pid is not None else None
        if child is not None:
            alive = child.poll() is None
        else:
            alive = pid is not None and _is_agent_of(pid, directory)
        if not alive and not lock_held(directory):
            _reap_children()
            return True
        if time.monotonic() >= deadline:
            return False
        if pid is None:
            pid = _agent_status(directory).pid  # the agent may not have written it yet
        time.sleep(POLL_INTERVAL)


# --- operations -------------------------------------------------------------------------


class LocalProvider(ProviderPlugin):
    """Nodes as agent processes on this machine."""

    kind = KIND
    config_schema = LocalConfig

    def offerings(self, ctx: ProviderContext) -> list[Offering] | None:
        """One offering, ``local``: this machine's cores, memory and GPUs (or the declared
        inventory's), free of charge."""
        machine = _machine(ctx)
        gpu_models = sorted({gpu.model for gpu in machine.gpus})
        return [
            Offering(
                name="local",
                cores=machine.cores,
                memory_bytes=machine.memory_bytes,
                gpus=len(machine.gpus),
                gpu_model=gpu_models[0] if gpu_models else None,
                architecture=machine.architecture,
                price_per_hour=0.0,
            )
        ]

    def bootstrap_payload(
        self, ctx: ProviderContext, node: NodeRequest, join: JoinInfo
    ) -> str | None:
        """A JSON document with the join token, the orchestrator and the node's labels."""
        return payload_document(node, join)

    def create_node(self, ctx: ProviderContext, node: NodeRequest) -> NodeObservation | None:
        """Start an agent for ``node`` in its own dir, or return the one already running there."""
        config = _config(ctx)
        directory = node_dir(ctx, node.client_token)
        payload = _parse_payload(node)
        _reap_children()
        try:
            directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with _create_lock(directory.parent):
                if config.max_nodes is not None and not directory.exists():
                    _check_quota(ctx, config.max_nodes)
                directory.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise ProviderError(
                f"local node {node.address}: cannot create {directory}: {exc}"
            ) from exc
        with _create_lock(directory):
            meta = {
                "address": node.address,
                "pool": node.pool,
                "client_token": node.client_token,
                "cluster": ctx.cluster,
                "provider": ctx.name,
                "offering": node.offering,
                "tags": dict(node.tags),
                "labels": dict(node.labels),
            }
            if lock_held(directory):
                existing = read_json(directory / META_FILE) or meta
                return _wait_running(directory, existing, _read_token(directory),
                                     config.start_timeout, None)
            write_json_atomic(directory / META_FILE, meta)
            token = secrets.token_urlsafe(32)
            write_private_file(directory / TOKEN_FILE, (token + "\n").encode())
            if payload.orchestrator:
                write_private_file(directory / JOIN_TOKEN_FILE,
                                   (payload.join_token + "\n").encode())
            if payload.ca_pem:
                write_private_file(directory / JOIN_CA_FILE, payload.ca_pem.encode())
            (directory / INFO_FILE).unlink(missing_ok=True)  # left by a killed agent
            proc = _spawn(directory, node.address, payload, _agent_options(ctx))
            return _wait_running(directory, meta, token, config.start_timeout, proc)

    def read_nodes(self, ctx: ProviderContext) -> list[NodeObservation] | None:
        """Every node dir of ``ctx.cluster`` made by this provider block, with its agent's state."""
        _reap_children()
        nodes: list[NodeObservation] = []
        for directory in _block_dirs(ctx):
            meta = read_json(directory / META_FILE)
            if meta is None:
                continue  # being created: its meta.json follows under the node's lock
            status = _agent_status(directory)
            state: NodeState
            if status.held and status.info is not None:
                state = "running"
            elif status.held:
                state = "pending"
            else:
                state = "gone"
            nodes.append(_observation(directory, meta, state, status))
        return nodes

    def delete_node(self, ctx: ProviderContext, node: NodeObservation) -> bool | None:
        """Stop the node's agent (SIGTERM, then SIGKILL) and remove its dir; True once gone."""
        config = _config(ctx)
        directory = node_dir(ctx, node.provider_id)
        try:
            with _create_lock(directory):
                _stop_agent(directory, config.stop_timeout)
                _stop_jobs(directory, config.stop_timeout)
                shutil.rmtree(directory)
        except FileNotFoundError:
            pass  # already deleted (possibly by a concurrent delete)
        except OSError as exc:
            raise ProviderError(
                f"local node {node.provider_id}: cannot remove {directory}: {exc}"
            ) from exc
        return True


plugin = LocalProvider()
"""The provider of kind ``local``, as registered."""


@hookimpl
def fuzz_register_providers(register: RegisterProvider) -> None:
    """Register the ``local`` provider."""
    register(plugin)
