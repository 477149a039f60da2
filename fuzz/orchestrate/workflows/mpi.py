"""A multinode MPI job as one MPI program: its launcher on rank 0, and who may enter the rest.

Fuzzball wraps an ``openmpi``/``ompi`` or ``mpich`` multinode job's command in the
implementation's launcher; so does fuzz. Rank 0's container runs the launcher
(``mpirun`` with the ranks' addresses and slots, or MPICH's ``mpiexec``); every
other rank's container runs the launch helper's ``--wait`` and is entered by the
launcher's remote start: the helper (``/.fuzz-launch/fuzz-launch``, which the agents
bind-mount with the job's launch socket, :mod:`fuzz.substrate.launch`) stands in
for ssh. What the helper asks reaches the orchestrator with the job's launch token
(:class:`LaunchTokens`), which names this attempt's containers and nothing else.

When every rank's node is on one machine (the local provider's nodes, whose agents
report the same :data:`~fuzz.resources.MACHINE_LABEL`), Open MPI's ``mpirun`` is
given that machine as one host of all the slots: it starts every rank itself, as
ranks of one node, so that they talk through ``vader``'s shared memory (the job's
containers there share ``/dev/shm`` and a PID namespace), and the helper, as
``orte_fork_agent`` in front of each rank (``--rank``), starts each rank in its own
node's container (:func:`one_machine_environment`).

The command building is pure; the tokens are a small thread-safe table.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from fuzz.errors import FuzzError

LAUNCH_DIR = "/.fuzz-launch"
LAUNCH_HELPER = f"{LAUNCH_DIR}/fuzz-launch"
WAIT_COMMAND = (LAUNCH_HELPER, "--wait")
# The Fuzzfile's spellings → the launcher fuzz wraps the command in.
LAUNCHERS = {"openmpi": "openmpi", "ompi": "openmpi", "mpich": "mpich"}


class LaunchRefusedError(FuzzError):
    """A multinode job that fuzz cannot launch as asked."""


def launcher_of(implementation: str) -> str:
    """``openmpi`` or ``mpich`` for a job fuzz wraps in a launcher; ``""`` for one it does not.

    GASNet is refused: its spawners (ssh, mpi, pmi) are not wired to the launch
    helper yet, and running N unconnected copies would be a wrong result.
    """
    if implementation == "gasnet":
        raise LaunchRefusedError(
            "multinode implementation gasnet is not supported by fuzz yet (no GASNet spawner "
            "runs in its containers); use openmpi or mpich")
    return LAUNCHERS.get(implementation, "")


def one_machine(launcher: str, machines: Sequence[str]) -> bool:
    """Whether an MPI job's ranks, on nodes of ``machines`` (each rank's node's machine,
    "" unknown), are one host to ``launcher``: Open MPI's, all on one known machine."""
    return (launcher == "openmpi" and len(machines) > 1 and machines[0] != ""
            and all(machine == machines[0] for machine in machines))


def launcher_command(launcher: str, argv: Sequence[str], addresses: Sequence[str],
                     slots: int, one_host: bool = False) -> tuple[str, ...]:
    """Rank 0's command: ``argv`` under ``launcher`` over the ranks at ``addresses``.

    ``slots`` processes run on each node. Rank 0's own address comes first, so the
    launcher starts its local share itself and the others through the helper.
    No addresses: a job of one node, all of it local. ``one_host`` (Open MPI, the
    nodes on one machine: :func:`one_machine`): rank 0's address holds every slot,
    and :func:`one_machine_environment` starts each rank in its own node's container.
    """
    total = str(slots * max(len(addresses), 1))
    hosts = ",".join(f"{address}:{slots}" for address in addresses)
    if launcher == "openmpi" and one_host and addresses:
        hosts = f"{addresses[0]}:{total}"
    if launcher == "openmpi":
        # the remote start is set in the environment (launcher_environment), which
        # Open MPI 4 (orte) and 5 (PRRTE) both read; --bind-to none: the lease's
        # cpuset already confines the ranks
        where = ("--host", hosts) if addresses else ()
        return ("mpirun", *where, "-np", total, "--bind-to", "none", *argv)
    remote = ("-launcher", "rsh", "-launcher-exec", LAUNCH_HELPER, "-hosts", hosts) \
        if addresses else ()
    return ("mpiexec", *remote, "-n", total, *argv)


def launcher_environment(launcher: str) -> dict[str, str]:
    """What rank 0's environment adds for ``launcher`` (the helper as its remote shell)."""
    if launcher != "openmpi":
        return {"SHELL": "/bin/sh"}
    return {
        "SHELL": "/bin/sh",  # what the remote start's commands are written for
        "OMPI_MCA_plm_rsh_agent": LAUNCH_HELPER,  # Open MPI 4
        "PRTE_MCA_plm_ssh_agent": LAUNCH_HELPER,  # Open MPI 5 (PRRTE)
        "OMPI_MCA_plm_rsh_no_tree_spawn": "1",  # every daemon from rank 0: no hop via a daemon
        "PRTE_MCA_plm_ssh_no_tree_spawn": "1",
        # cross-memory attach between a node's ranks needs ptrace rights over each other
        # (Yama's ptrace_scope may refuse them): copy through shared memory instead
        "OMPI_MCA_btl_vader_single_copy_mechanism": "none",
        "OMPI_MCA_btl_sm_single_copy_mechanism": "none",
    }


def one_machine_environment(addresses: Sequence[str], slots: int) -> dict[str, str]:
    """What rank 0's environment adds for Open MPI when its nodes (at ``addresses``,
    ``slots`` ranks each) are one host to ``mpirun`` (:func:`one_machine`).

    The helper is the fork agent in front of each rank: ``FUZZ_LAUNCH_RANK_HOSTS``
    (``host:slots,...``) names the MPI ranks' nodes (mpirun fills the slots in order:
    ranks 0 to slots-1 on rank 0's node, and so on); a rank of another node is started
    in that node's container, its connections to mpirun's PMIx server (on rank 0's
    loopback) carried by the helper. The PMIx server keeps its data in a hash table
    (``gds=hash``) instead of a shared-memory store in rank 0's ``/tmp``, which the
    other containers cannot see.
    """
    fork_agent = f"{LAUNCH_HELPER} --rank"
    return {
        "OMPI_MCA_orte_fork_agent": fork_agent,  # Open MPI 4 (orte)
        "PRTE_MCA_prte_fork_agent": fork_agent,  # Open MPI 5 (PRRTE)
        "PMIX_MCA_gds": "hash",
        "FUZZ_LAUNCH_RANK_HOSTS": ",".join(f"{address}:{slots}" for address in addresses),
    }


def remote_command(argv: Sequence[str]) -> tuple[str, ...]:
    """What a remote start runs in the target container: the words joined and run by a
    shell, as ssh does (the launchers quote their daemons' arguments for one)."""
    return ("/bin/sh", "-c", " ".join(argv))


@dataclass(frozen=True)
class LaunchTarget:
    """Where a job's launch token may start processes: its ranks' nodes and containers."""

    nodes: tuple[str, ...]
    containers: tuple[str, ...]
    addresses: tuple[str, ...]

    def rank_of(self, host: str) -> int:
        """The rank whose address (or host name, the same) is ``host``; NOT_FOUND-like error."""
        if host in self.addresses:
            return self.addresses.index(host)
        raise UnknownHostError(f"host {host!r} is not a node of this job")


class UnknownHostError(FuzzError):
    """A remote start named a host that is not one of the job's ranks."""


class LaunchTokenError(FuzzError):
    """A launch token that names no running job."""


class LaunchTokens:
    """The launch tokens of the MPI attempts in flight: token → their containers.

    Only a token's hash is kept. A token is issued when an attempt's ranks are
    leased and revoked when the attempt ends; it dies with this orchestrator (an
    adopted attempt's launcher has started its daemons long before).
    """

    def __init__(self) -> None:
        """An empty table."""
        self._lock = threading.Lock()
        self._targets: dict[bytes, LaunchTarget] = {}

    def issue(self, target: LaunchTarget) -> str:
        """A new token for ``target``."""
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._targets[_digest(token)] = target
        return token

    def revoke(self, token: str) -> None:
        """The token is valid no more."""
        with self._lock:
            self._targets.pop(_digest(token), None)

    def target(self, token: str) -> LaunchTarget:
        """What ``token`` may reach; LaunchTokenError if it names nothing."""
        with self._lock:
            target = self._targets.get(_digest(token))
        if target is None:
            raise LaunchTokenError("no running multinode job has this launch token")
        return target


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
