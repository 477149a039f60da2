"""The fuzz CLI as a user runs it: a subprocess per command, real local agent processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cliutil import (
    agent_pids,
    fuzz_command,
    kill_agents,
    read_state,
    run_fuzz,
    write_spec,
)


@pytest.fixture
def cluster_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory with a 3-node local spec; any agent left behind is killed afterwards."""
    write_spec(tmp_path, 3)
    yield tmp_path
    kill_agents(tmp_path)


def test_validate_reports_each_problem_on_one_line_with_file_line_and_field(
    tmp_path: Path,
) -> None:
    (tmp_path / "fuzz.yaml").write_text(
        "version: 1\ncluster: demo\nproviders:\n  local: {}\npools:\n  gpu:\n"
        "    provider: local\n    min: 4\n    max: 2\n    idle_tll: 5m\n"
    )
    result = run_fuzz(tmp_path, "validate")
    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert lines[0] == "fuzz.yaml:9:5: pools.gpu.max: must be >= min"
    assert any(line.startswith("fuzz.yaml:10:5: pools.gpu.idle_tll: unknown key") for line in
               lines), result.err
    as_json = run_fuzz(tmp_path, "validate", "--json")
    assert as_json.code == 1
    problems = as_json.json()["problems"]
    assert {(p["line"], p["field"]) for p in problems} >= {(9, "pools.gpu.max")}


def test_provider_block_is_validated_by_its_plugin_schema(tmp_path: Path) -> None:
    (tmp_path / "fuzz.yaml").write_text(
        "version: 1\ncluster: demo\nproviders:\n  local:\n    workdirr: x\npools: {}\n")
    result = run_fuzz(tmp_path, "validate")
    assert result.code == 1
    assert "fuzz.yaml:5:5: providers.local.workdirr: unknown key 'workdirr'" in result.err


def test_missing_spec_and_missing_plugin_are_one_line_errors(tmp_path: Path) -> None:
    missing = run_fuzz(tmp_path, "plan")
    assert missing.code == 1 and "fuzz.yaml" in missing.err and "no such file" in missing.err
    (tmp_path / "fuzz.yaml").write_text(
        "version: 1\ncluster: demo\nproviders:\n  hpc:\n    kind: nosuch\npools:\n"
        "  cpu: {provider: hpc, min: 1}\n")
    result = run_fuzz(tmp_path, "plan")
    assert result.code == 1
    assert "no provider plugin for 'nosuch' is installed" in result.err
    assert len(result.err.strip().splitlines()) == 1
    providers = run_fuzz(tmp_path, "providers", "--json")
    assert providers.code == 0, "an unrelated command still works"
    kinds = {k for row in providers.json() for k in row["kinds"]}
    assert {"local", "aws", "gcp", "azure", "baremetal"} <= kinds
    dists = {row["distribution"] for row in providers.json()}
    assert {"fuzz", "fuzz-provider-aws", "fuzz-state"} <= dists


def test_plan_apply_drift_and_destroy_cycle(cluster_dir: Path) -> None:
    assert run_fuzz(cluster_dir, "init").code == 0
    plan = run_fuzz(cluster_dir, "plan", "--detailed-exitcode")
    assert plan.code == 2, plan.err
    assert "Plan: 3 to add, 0 to change, 0 to destroy." in plan.out
    assert "+ pool.cpu.node[2]" in plan.out
    applied = run_fuzz(cluster_dir, "apply", "--auto-approve")
    assert applied.code == 0, applied.err
    assert "Apply complete! Resources: 3 added, 0 changed, 0 destroyed." in applied.out
    assert "pool.cpu.node[0]: Creation complete" in applied.out
    assert len(agent_pids(cluster_dir)) == 3
    assert run_fuzz(cluster_dir, "plan", "--detailed-exitcode").code == 0

    nodes = run_fuzz(cluster_dir, "node", "list", "--json").json()
    assert [n["agent"] for n in nodes] == ["ready"] * 3
    assert all(n["cores"] == os.cpu_count() and n["labels"]["role"] == "compute" for n in nodes)

    victim = nodes[1]
    os.kill(int(read_state(cluster_dir)["resources"][victim["address"]]["observed"]["pid"]),
            signal.SIGKILL)
    drift = run_fuzz(cluster_dir, "plan", "--json")
    changes = drift.json()["changes"]
    assert [(c["action"], c["address"]) for c in changes] == [("create", victim["address"])]
    assert "drift" in changes[0]["reason"]
    assert run_fuzz(cluster_dir, "apply", "--auto-approve").code == 0
    assert len(agent_pids(cluster_dir)) == 3

    destroyed = run_fuzz(cluster_dir, "destroy", "--auto-approve")
    assert destroyed.code == 0, destroyed.err
    assert "Destroy complete! Resources: 0 added, 0 changed, 3 destroyed." in destroyed.out
    assert agent_pids(cluster_dir) == []
    assert read_state(cluster_dir)["resources"] == {}


def test_plan_json_shape_and_saved_plan_staleness(cluster_dir: Path) -> None:
    plan = run_fuzz(cluster_dir, "plan", "--json", "-out", "first.plan")
    data = plan.json()
    assert set(data) == {"lineage", "serial", "summary", "changes", "membership", "workflows",
                         "interrupts"}
    assert data["membership"] == "recorded"  # no orchestrator block
    assert data["interrupts"] == {}  # nothing is deleted
    assert data["workflows"] == []  # the spec declares none
    assert data["summary"] == {"create": 3, "update": 0, "replace": 0, "delete": 0}
    assert set(data["changes"][0]) == {"address", "action", "reason", "orphan", "generation",
                                       "before", "after"}
    assert oct((cluster_dir / "first.plan").stat().st_mode & 0o777) == "0o600"
    run_fuzz(cluster_dir, "plan", "-out", "second.plan")
    assert run_fuzz(cluster_dir, "apply", "second.plan").code == 0
    stale = run_fuzz(cluster_dir, "apply", "first.plan")
    assert stale.code == 1
    assert "plan is stale" in stale.err
    assert len(agent_pids(cluster_dir)) == 3


def test_apply_without_a_terminal_asks_for_auto_approve(cluster_dir: Path) -> None:
    result = run_fuzz(cluster_dir, "apply")
    assert result.code == 1
    assert "pass --auto-approve" in result.err
    assert agent_pids(cluster_dir) == []


def test_apply_json_streams_progress_then_a_result(cluster_dir: Path) -> None:
    result = run_fuzz(cluster_dir, "apply", "--auto-approve", "--json")
    assert result.code == 0, result.err
    events = [json.loads(line) for line in result.out.splitlines()]
    assert [e["phase"] for e in events if e["type"] == "progress"].count("done") == 3
    assert events[-1]["type"] == "result" and events[-1]["added"] == 3
    again = run_fuzz(cluster_dir, "apply", "--auto-approve", "--json")
    lines = again.out.splitlines()
    assert len(lines) == 1, "nothing to do: the result alone, on one line like every event"
    assert json.loads(lines[0])["type"] == "result" and json.loads(lines[0])["added"] == 0


HOLD_LOCK = """
import sys, time
from pathlib import Path
from fuzz.plugin.loader import load_plugins
from fuzz.lifecycle.statestore import StateStore, open_backend
store = StateStore(open_backend("local", {}, Path(sys.argv[1]), load_plugins()))
with store.lock("apply", 0):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_lock_contention_names_the_holder_and_waits_for_the_timeout(cluster_dir: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(cluster_dir)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        result = run_fuzz(cluster_dir, "apply", "--auto-approve", "--lock-timeout", "2s")
        waited = time.monotonic() - started
        assert result.code == 1
        assert "state is locked" in result.err and "operation apply" in result.err
        assert "@" in result.err and "since" in result.err and "ID " in result.err
        assert waited >= 2.0
    finally:
        holder.kill()
        holder.wait()
    assert run_fuzz(cluster_dir, "plan", "--lock-timeout", "5s").code == 0


def test_concurrent_applies_are_serialised_and_create_no_duplicates(cluster_dir: Path) -> None:
    write_spec(cluster_dir, 4)
    procs = [subprocess.Popen(fuzz_command("apply", "--auto-approve", "--lock-timeout", "90s"),
                              cwd=cluster_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert sum("4 added" in out for out, _ in outputs) == 1
    assert sum("No changes." in out for out, _ in outputs) == 1
    assert len(agent_pids(cluster_dir)) == 4
    assert len(read_state(cluster_dir)["resources"]) == 4


def test_state_commands(cluster_dir: Path) -> None:
    assert run_fuzz(cluster_dir, "apply", "--auto-approve").code == 0
    listed = run_fuzz(cluster_dir, "state", "list").out.split()
    assert listed == ["pool.cpu.node[0]", "pool.cpu.node[1]", "pool.cpu.node[2]"]
    shown = run_fuzz(cluster_dir, "state", "show", "pool.cpu.node[1]").json()
    assert shown["status"] == "created" and shown["provider_id"]
    assert run_fuzz(cluster_dir, "state", "show", "pool.cpu.node[9]").code == 1

    pulled = run_fuzz(cluster_dir, "state", "pull")
    (cluster_dir / "backup.json").write_text(pulled.out)
    serial = pulled.json()["serial"]

    moved = run_fuzz(cluster_dir, "state", "mv", "pool.cpu.node[2]", "pool.cpu.node[7]")
    assert moved.code == 0
    plan = run_fuzz(cluster_dir, "plan", "--json").json()
    assert plan["changes"] == [], (
        "the moved record is a recorded member, and apply keeps recorded members")
    assert run_fuzz(cluster_dir, "state", "mv", "pool.cpu.node[7]", "pool.cpu.node[2]").code == 0

    removed = run_fuzz(cluster_dir, "state", "rm", "pool.cpu.node[0]")
    assert removed.code == 0
    orphaned = run_fuzz(cluster_dir, "plan", "--json").json()
    assert any(c["orphan"] for c in orphaned["changes"])

    stale_push = run_fuzz(cluster_dir, "state", "push", "backup.json")
    assert stale_push.code == 1, "an older serial is refused without --force"
    assert run_fuzz(cluster_dir, "state", "push", "--force", "backup.json").code == 0
    assert run_fuzz(cluster_dir, "plan", "--detailed-exitcode").code == 0
    assert read_state(cluster_dir)["serial"] > serial

    assert run_fuzz(cluster_dir, "destroy", "--auto-approve").code == 0
    assert agent_pids(cluster_dir) == []


def _install_broken_plugin(site: Path) -> dict[str, str]:
    """A distribution whose provider entry point fails to import; returns the env to see it."""
    dist = site / "broken_fuzz_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-fuzz-plugin\n"
                                   "Version: 1.0\n")
    (dist / "entry_points.txt").write_text("[fuzz.providers]\nbroken = broken_fuzz_plugin\n")
    (site / "broken_fuzz_plugin.py").write_text("import not_installed_sdk\n")
    return {**os.environ, "PYTHONPATH": str(site)}


def test_a_broken_plugin_names_its_distribution_and_breaks_only_what_needs_it(
    cluster_dir: Path,
) -> None:
    env = _install_broken_plugin(cluster_dir / "site")
    listing = subprocess.run(fuzz_command("providers", "--json"), cwd=cluster_dir, env=env,
                             capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0
    [broken] = [row for row in json.loads(listing.stdout) if row["name"] == "broken"]
    assert broken["distribution"] == "broken-fuzz-plugin" and broken["version"] == "1.0"
    assert "ModuleNotFoundError" in broken["error"]

    unrelated = subprocess.run(fuzz_command("plan"), cwd=cluster_dir, env=env,
                               capture_output=True, text=True, timeout=60)
    assert unrelated.returncode == 0, unrelated.stderr

    (cluster_dir / "fuzz.yaml").write_text(
        "version: 1\ncluster: demo\nproviders:\n  hpc: {kind: broken}\npools:\n"
        "  cpu: {provider: hpc, min: 1}\n")
    needed = subprocess.run(fuzz_command("plan"), cwd=cluster_dir, env=env,
                            capture_output=True, text=True, timeout=60)
    assert needed.returncode == 1
    assert needed.stderr.strip() == (
        "Error: provider plugin 'broken' from distribution broken-fuzz-plugin 1.0 failed to "
        "load: ModuleNotFoundError: No module named 'not_installed_sdk'")


def test_node_list_shows_each_nodes_inventory_and_leases(cluster_dir: Path) -> None:
    from fuzz.clients.agent import AgentClient

    assert run_fuzz(cluster_dir, "apply", "--auto-approve").code == 0
    first = read_state(cluster_dir)["resources"]["pool.cpu.node[0]"]["observed"]
    client = AgentClient(first["endpoint"], Path(first["token_file"]).read_text().strip())
    try:
        lease = client.acquire_lease(1, memory_bytes=2**30, holder="workflow-a/job-1")
    finally:
        client.close()
    rows = {r["address"]: r for r in run_fuzz(cluster_dir, "node", "list", "--json").json()}
    [shown] = rows["pool.cpu.node[0]"]["leases"]
    assert (shown["id"], shown["holder"], shown["memory_bytes"]) == (
        lease.id, "workflow-a/job-1", 2**30)
    assert rows["pool.cpu.node[1]"]["leases"] == []
    table = run_fuzz(cluster_dir, "node", "list").out
    assert "1: 1 cpus, 1.0 GiB" in table
    assert run_fuzz(cluster_dir, "destroy", "--auto-approve").code == 0


def test_a_bad_drain_timeout_is_one_line_before_any_work(cluster_dir: Path) -> None:
    for command in ("apply", "destroy"):
        result = run_fuzz(cluster_dir, command, "--auto-approve", "--drain-timeout", "soon")
        assert result.code == 1, result.out
        assert result.err.strip().splitlines() == [
            "Error: --drain-timeout: invalid duration 'soon': use e.g. 30s, 10m, 1h30m"]
    assert not (cluster_dir / ".fuzz" / "nodes").exists()  # nothing was created
