"""Fuzzball's MULTINODE_* variables and their expansion in command items (issue 17, point 3)."""

from __future__ import annotations

from pathlib import Path

from fuzz.orchestrate.workflows.multinode import (
    expand_multinode,
    multinode_environment,
    rank_hosts,
)
from fuzz.orchestrate.workflows.tasks import rank_log_path


def test_each_rank_gets_the_host_list_with_slots_and_its_own_address() -> None:
    hosts = ["10.1.0.2", "10.2.0.7", "10.3.0.4"]
    assert multinode_environment(hosts, 4, 1) == {
        "MULTINODE_HOSTLIST": "10.1.0.2:4,10.2.0.7:4,10.3.0.4:4",
        "MULTINODE_HOSTLIST_NOSLOTS": "10.1.0.2,10.2.0.7,10.3.0.4",
        "MULTINODE_TOTAL_SLOTS": "12",
        "MULTINODE_NODE_IP": "10.2.0.7",
    }


def test_the_wrappers_are_set_only_when_the_containers_have_a_launch_helper() -> None:
    variables = multinode_environment(["a", "b"], 1, 0, wrapper="/.fuzz-launch/fuzz-launch")
    assert variables["MULTINODE_SSH_WRAPPER"] == "/.fuzz-launch/fuzz-launch"
    assert variables["MULTINODE_RSH_WRAPPER"] == "/.fuzz-launch/fuzz-launch"
    assert "MULTINODE_SSH_WRAPPER" not in multinode_environment(["a", "b"], 1, 0)


def test_command_items_expand_multinode_variables_only() -> None:
    env = ("MULTINODE_HOSTLIST=a:2,b:2", "MULTINODE_TOTAL_SLOTS=4", "HOME=/root")
    argv = ("mpirun", "-H", "$MULTINODE_HOSTLIST", "-np", "${MULTINODE_TOTAL_SLOTS}",
            "--tag=$MULTINODE_TOTAL_SLOTS/x", "$HOME", "$MULTINODE_UNKNOWN", "$$", "cost: $5")
    assert expand_multinode(argv, env) == (
        "mpirun", "-H", "a:2,b:2", "-np", "4", "--tag=4/x", "$HOME", "$MULTINODE_UNKNOWN",
        "$$", "cost: $5")


def test_each_rank_keeps_its_log_beside_the_first() -> None:
    first = Path("/logs/wf/ring.stdout")
    assert rank_log_path(first, 0) == first
    assert rank_log_path(first, 3) == Path("/logs/wf/ring.node3.stdout")
    assert rank_log_path(Path("/logs/wf/sweep[2].stderr"), 1) == \
        Path("/logs/wf/sweep[2].node1.stderr")


def test_the_ranks_are_named_after_their_task_in_etc_hosts() -> None:
    assert rank_hosts("ring", ["10.0.0.2", "10.1.0.3"]) == ["10.0.0.2 ring-0", "10.1.0.3 ring-1"]
    assert rank_hosts("My_Job[2]", ["10.0.0.2"]) == ["10.0.0.2 my-job-2-0"]
    assert rank_hosts("__", ["10.0.0.2"]) == ["10.0.0.2 rank-0"]
    assert rank_hosts("ring", ["10.0.0.2", ""]) == []  # the host network: node names resolve
