"""The launcher fuzz wraps an MPI job's command in, and the launch tokens (pure parts)."""

from __future__ import annotations

import pytest

from fuzz.orchestrate.workflows.mpi import (
    LAUNCH_HELPER,
    LaunchRefusedError,
    LaunchTarget,
    LaunchTokenError,
    LaunchTokens,
    UnknownHostError,
    launcher_command,
    launcher_environment,
    launcher_of,
    one_machine,
    one_machine_environment,
    remote_command,
)

ADDRESSES = ("10.200.1.2", "10.200.2.2", "10.200.3.2")


def test_both_open_mpi_spellings_and_mpich_are_wrapped_generic_is_not() -> None:
    assert launcher_of("openmpi") == launcher_of("ompi") == "openmpi"
    assert launcher_of("mpich") == "mpich"
    assert launcher_of("generic") == ""


def test_gasnet_is_refused_in_one_sentence() -> None:
    with pytest.raises(LaunchRefusedError, match="gasnet is not supported by fuzz yet"):
        launcher_of("gasnet")


def test_open_mpi_gets_the_hosts_with_their_slots_and_the_helper_as_its_remote_shell() -> None:
    argv = launcher_command("openmpi", ["ranks", "--x"], ADDRESSES, 2)
    assert argv == ("mpirun", "--host", "10.200.1.2:2,10.200.2.2:2,10.200.3.2:2", "-np", "6",
                    "--bind-to", "none", "ranks", "--x")
    env = launcher_environment("openmpi")
    assert env["OMPI_MCA_plm_rsh_agent"] == env["PRTE_MCA_plm_ssh_agent"] == LAUNCH_HELPER


def test_open_mpi_ranks_all_on_one_machine_are_one_host_of_every_slot() -> None:
    assert one_machine("openmpi", ("m1", "m1", "m1"))
    assert not one_machine("openmpi", ("m1", "m2", "m1"))  # two machines: a daemon each
    assert not one_machine("openmpi", ("", ""))  # not known to share a machine
    assert not one_machine("openmpi", ("m1",))  # one node: nothing to join
    assert not one_machine("mpich", ("m1", "m1"))  # MPICH's UCX shares memory already
    argv = launcher_command("openmpi", ["ranks"], ADDRESSES, 2, one_host=True)
    assert argv == ("mpirun", "--host", "10.200.1.2:6", "-np", "6", "--bind-to", "none",
                    "ranks")


def test_one_host_ranks_are_started_in_their_nodes_containers_by_the_fork_agent() -> None:
    env = one_machine_environment(ADDRESSES[:2], 2)
    assert env["OMPI_MCA_orte_fork_agent"] == f"{LAUNCH_HELPER} --rank"
    # mpirun fills the slots in order: ranks 0 and 1 on rank 0's node, 2 and 3 on the next
    assert env["FUZZ_LAUNCH_RANK_HOSTS"] == "10.200.1.2:2,10.200.2.2:2"
    assert env["PMIX_MCA_gds"] == "hash"  # no shared-memory store in rank 0's /tmp


def test_mpich_gets_hydra_with_the_helper_as_its_launcher() -> None:
    argv = launcher_command("mpich", ["ranks"], ADDRESSES[:2], 1)
    assert argv == ("mpiexec", "-launcher", "rsh", "-launcher-exec", LAUNCH_HELPER,
                    "-hosts", "10.200.1.2:1,10.200.2.2:1", "-n", "2", "ranks")


def test_one_node_runs_its_slots_locally() -> None:
    assert launcher_command("openmpi", ["a"], (), 4) == (
        "mpirun", "-np", "4", "--bind-to", "none", "a")
    assert launcher_command("mpich", ["a"], (), 4) == ("mpiexec", "-n", "4", "a")


def test_a_remote_start_runs_as_ssh_would_through_a_shell() -> None:
    assert remote_command(["orted", "-mca", "ess", '"env"']) == (
        "/bin/sh", "-c", 'orted -mca ess "env"')


def test_a_token_reaches_its_own_job_only_until_revoked() -> None:
    tokens = LaunchTokens()
    mine = tokens.issue(LaunchTarget(("n0", "n1"), ("c0", "c1"), ADDRESSES[:2]))
    other = tokens.issue(LaunchTarget(("n2",), ("c2",), ADDRESSES[2:]))
    assert mine != other and len(mine) >= 40
    assert tokens.target(mine).rank_of("10.200.2.2") == 1
    with pytest.raises(UnknownHostError, match="not a node of this job"):
        tokens.target(mine).rank_of(ADDRESSES[2])
    tokens.revoke(mine)
    with pytest.raises(LaunchTokenError):
        tokens.target(mine)
    with pytest.raises(LaunchTokenError):
        tokens.target("guessed")
    assert tokens.target(other).containers == ("c2",)
