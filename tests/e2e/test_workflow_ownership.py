"""End to end: a workflow belongs to whoever runs it (issue 14, point 3), and each owner's
jobs run under a uid of their own (point 7's per-tenant uids).

Two real users, alice and bob (the built-in ``user`` role, logged in with login codes
through the real CLI, each with a config of their own), run workflows of the same
name ``wf`` on one local node: real runc containers, a real registry that needs the
credentials of a ``secret://user/regcred``, real persistent volumes.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fuzz.testing.oci import PushedImage, free_port
from tests.support.cliutil import Result, run_fuzz
from tests.support.workflowutil import LocalCluster, dump, local_cluster

NAME = "wf"
JOB = "job"
FIRST_ID, ID_COUNT = 200000, 100000  # the default orchestrator.job_ids range
FUZZFILE = """\
version: v1
volumes:
  data:
    reference: volume://user/persistent/shared
jobs:
  job:
    image: {{uri: {image}, secret: secret://user/regcred}}
    script: |
      cat /data/mark 2>/dev/null || echo nothing-here-before
      echo {who} > /data/mark
      id -u
      exec sleep 600
    mounts: {{data: {{location: /data}}}}
    resource: {{cpu: {{cores: 1}}, memory: {{size: 64MiB}}}}
"""


@dataclass
class User:
    """A logged-in user: runs ``fuzz`` with a config of their own."""

    name: str
    home: Path
    cluster: LocalCluster

    def fuzz(self, *args: str) -> Result:
        """``fuzz ARGS`` as this user."""
        return run_fuzz(self.home, *args, env={"FUZZ_CONFIG": str(self.home / "config.yaml")})

    def ok(self, *args: str) -> Result:
        """``fuzz ARGS`` as this user; exit 0 required."""
        result = self.fuzz(*args)
        assert result.code == 0, f"{self.name}: fuzz {' '.join(args)}: {result.err}{result.out}"
        return result

    def status(self, ref: str) -> dict[str, object]:
        """``fuzz workflow status REF --json``."""
        data: dict[str, object] = self.ok("workflow", "status", ref, "--json").json()
        return data

    def secret(self, name: str, value: str) -> None:
        """Store (or replace) secret ``name``."""
        path = self.home / f"{name}.secret"
        path.write_text(value)
        self.ok("secret", "create", name, "--from-file", str(path), "--replace")


@dataclass
class Tenants:
    """The cluster, its two users, and the image their jobs pull (with credentials)."""

    cluster: LocalCluster
    alice: User
    bob: User
    image: PushedImage


def _user(cluster: LocalCluster, name: str, home: Path) -> User:
    added = cluster.ok("iam", "user", "add", name, "--role", "user", "--json")
    address = json.loads((cluster.data_dir / "server.json").read_text())["endpoint"]
    user = User(name, home, cluster)
    user.ok("login", address, "--code", added.json()["code"],
            "--ca-file", str(cluster.data_dir / "ca.pem"))
    return user


def _wait(user: User, ref: str, state: str, timeout: float = 120) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        status = user.status(ref)
        tasks = status["tasks"]
        assert isinstance(tasks, list)
        if state in (status["state"], tasks[0]["state"]):
            return status
        assert status["state"] not in ("SUCCEEDED", "FAILED", "CANCELED"), dump(status)
        assert time.monotonic() < deadline, f"{ref} still {status['state']}: {dump(status)}"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory,
            auth_busybox_image: PushedImage) -> Iterator[Tenants]:
    directory = tmp_path_factory.mktemp("owners")
    os.chmod(directory, 0o755)
    registry = auth_busybox_image.registry
    with local_cluster(directory, [registry.host], free_port(), nodes=1) as cluster:
        alice = _user(cluster, f"alice{os.getpid()}", tmp_path_factory.mktemp("alice"))
        bob = _user(cluster, f"bob{os.getpid()}", tmp_path_factory.mktemp("bob"))
        try:
            yield Tenants(cluster, alice, bob, auth_busybox_image)
        finally:  # stopped before the node goes, so that the containers are cleaned up
            for user in (alice, bob):
                cluster.fuzz("workflow", "cancel", f"{user.name}/{NAME}")
            for user in (alice, bob):
                cluster.wait(f"{user.name}/{NAME}")


def _start(user: User, image: PushedImage) -> Result:
    path = user.home / "wf.yaml"
    path.write_text(FUZZFILE.format(image=image.reference, who=user.name))
    return user.fuzz("workflow", "start", NAME, str(path))


def _job_uid(user: User, ref: str) -> int:
    lines = user.ok("workflow", "log", ref, JOB).out.split()
    return int(lines[-1])


def _same_answer(user: User, existing: str, absent: str, *args: str) -> tuple[int, str]:
    """Run ``fuzz workflow ARGS`` on ``existing`` and on ``absent``: both answers, the
    absent's name put in place of the existing's."""
    one = user.fuzz("workflow", args[0], existing, *args[1:])
    other = user.fuzz("workflow", args[0], absent, *args[1:])
    assert (one.code, one.err.replace(existing, absent), one.out) == \
        (other.code, other.err, other.out), (one, other)
    assert one.code == 1 and len(one.err.strip().splitlines()) == 1, one
    return one.code, one.err


def test_two_owners_run_the_same_name_with_their_own_secrets_volumes_and_uids(
        tenants: Tenants) -> None:
    cluster, alice, bob, image = tenants.cluster, tenants.alice, tenants.bob, tenants.image
    registry = image.registry
    alice.secret("regcred", f"{registry.username}:{registry.password}")
    assert _start(alice, image).code == 0
    _wait(alice, NAME, "RUNNING")

    # bob's `wf` is his own: it resolves secret://user/regcred as his (he has none yet)
    refused = _start(bob, image)
    assert refused.code == 1 and "no secret 'regcred'" in refused.err, refused
    bob.secret("regcred", f"{registry.username}:not-the-password")
    assert _start(bob, image).code == 0
    failed = _wait(bob, NAME, "FAILED")
    assert failed["owner"] == bob.name and failed["run"] == 1, dump(failed)
    bob.secret("regcred", f"{registry.username}:{registry.password}")
    assert _start(bob, image).code == 0
    mine = _wait(bob, NAME, "RUNNING")
    assert mine["owner"] == bob.name and mine["run"] == 2, dump(mine)

    # alice's run was not touched: still her run 1, running
    hers = alice.status(NAME)
    assert (hers["owner"], hers["run"], hers["state"]) == (alice.name, 1, "RUNNING"), dump(hers)

    # volume://user/persistent/shared is each owner's own, owned by their uid, 0700
    alice_uid, bob_uid = _job_uid(alice, NAME), _job_uid(bob, NAME)
    assert alice_uid != bob_uid and alice_uid != 65534 and bob_uid != 65534
    for uid in (alice_uid, bob_uid):
        assert FIRST_ID <= uid < FIRST_ID + ID_COUNT
    persistent = cluster.volume_root / "persistent"
    for user, uid in ((alice, alice_uid), (bob, bob_uid)):
        volume = persistent / user.name / "shared"
        info = volume.stat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (uid, uid, 0o700)
        assert (volume / "mark").read_text() == f"{user.name}\n"
        assert "nothing-here-before" in user.ok("workflow", "log", NAME, JOB).out
    exec_uid = alice.ok("workflow", "exec", NAME, JOB, "--", "id", "-u").out.strip()
    assert exec_uid == str(alice_uid)
    assert bob.ok("workflow", "exec", NAME, JOB, "--", "id", "-g").out.strip() == str(bob_uid)

    # the admin may act on either, named OWNER/NAME; the listing shows both
    assert cluster.status(f"{alice.name}/{NAME}")["owner"] == alice.name
    listed = {(w["owner"], w["name"]) for w in cluster.ok("workflow", "list", "--json").json()}
    assert {(alice.name, NAME), (bob.name, NAME)} <= listed


def test_another_owners_workflow_answers_as_if_it_did_not_exist(tenants: Tenants) -> None:
    alice, bob = tenants.alice, tenants.bob
    _wait(bob, NAME, "RUNNING")
    theirs, absent = f"{bob.name}/{NAME}", f"{bob.name}/absent"
    _, said = _same_answer(alice, theirs, absent, "status")
    assert "no workflow" in said and "permission" not in said.lower(), said
    _same_answer(alice, theirs, absent, "describe")
    _same_answer(alice, theirs, absent, "log", JOB)
    _same_answer(alice, theirs, absent, "cancel")
    _same_answer(alice, theirs, absent, "exec", JOB, "--", "true")
    _same_answer(alice, theirs, absent, "port-forward", JOB, "0:80")
    # alice's list shows her own only; bob's run still runs, untouched by all of that
    listed = alice.ok("workflow", "list", "--json").json()
    assert [(w["owner"], w["name"]) for w in listed] == [(alice.name, NAME)]
    assert bob.status(NAME)["state"] == "RUNNING"
    # asking for her own `wf` answers about her own
    assert alice.status(NAME)["owner"] == alice.name


def test_plan_and_apply_name_the_owner_and_refuse_another_owners_workflow(
        tenants: Tenants) -> None:
    cluster, alice, image = tenants.cluster, tenants.alice, tenants.image
    registry = image.registry
    secret = cluster.directory / "regcred.secret"
    secret.write_text(f"{registry.username}:{registry.password}")
    cluster.ok("secret", "create", "regcred", "--from-file", str(secret), "--replace")
    (cluster.directory / "ci.yaml").write_text(f"""\
version: v1
jobs:
  job:
    image: {{uri: {image.reference}, secret: secret://user/regcred}}
    command: [echo, the admin's own]
""")
    spec = cluster.directory / "fuzz.yaml"
    original = spec.read_text()
    try:
        # alice's and bob's `wf` are theirs: the spec's `wf` is the applier's (the admin's)
        spec.write_text(original + f"workflows:\n  {NAME}: {{file: ci.yaml}}\n")
        planned = cluster.ok("plan", "--json").json()
        assert [(w["owner"], w["name"], w["action"]) for w in planned["workflows"]] == [
            ("admin", NAME, "start")]
        assert "Workflows (owner admin):" in cluster.ok("plan").out
        applied = cluster.ok("apply", "--auto-approve").out
        assert f"started workflow {NAME} run 1 (no run recorded)" in applied
        assert cluster.status(NAME)["owner"] == "admin"  # queued: alice and bob hold the node
        assert alice.status(NAME)["run"] == 1  # still her own run 1
        # a declared workflow of another owner is refused, in one line
        spec.write_text(original + f"workflows:\n  {alice.name}/{NAME}: {{file: ci.yaml}}\n")
        for command in (("plan",), ("apply", "--auto-approve")):
            refused = cluster.fuzz(*command)
            assert refused.code == 1 and len(refused.err.strip().splitlines()) == 1, refused
            line = len(original.splitlines()) + 2
            assert refused.err.strip() == (
                f"fuzz.yaml:{line}:3: workflows.{alice.name}/{NAME}: owned by "
                f"{alice.name}, but this spec is applied as admin: a spec starts only the "
                f"workflows of whoever applies it"), refused.err
        assert alice.status(NAME)["run"] == 1
    finally:
        spec.write_text(original)
        cluster.fuzz("workflow", "cancel", NAME)
