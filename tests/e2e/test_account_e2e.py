"""End to end: an account-scoped secret used by two users of one account and refused to
a third (issue 16, point 1), and an account persistent volume they share.

Fuzzball's accounts are fuzz's IAM groups. alice and bob are in ``lab``, carol is
not. alice stores the registry login as ``secret://account/regcred`` and an S3 key as
``secret://account/s3creds``; her workflow (``volume://account/persistent/shared``)
pulls the image from a real registry that wants that login, ingresses an object from
S3 (moto, signatures checked) with the account's key and writes into the account's
volume; bob's (spelled ``volume://group/…``) pulls with the same secret and reads
both; carol's start is refused in one sentence before anything runs. Real users
through the real CLI, real runc containers on a local node.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fuzz.testing.oci import PushedImage, free_port
from tests.support.cliutil import Result, run_fuzz
from tests.support.moto_s3 import MotoS3
from tests.support.workflowutil import LocalCluster, dump, local_cluster

WRITER = """\
version: v1
volumes:
  shared:
    reference: volume://account/persistent/shared
    ingress:
      - source: {{uri: "s3://{bucket}/in/data.txt", secret: secret://account/s3creds}}
        destination: {{uri: file://from-s3.txt}}
  mine: {{reference: volume://user/persistent/mine}}
jobs:
  write:
    image: {{uri: {image}, secret: secret://account/regcred}}
    script: |
      echo from-{who} > /data/note
      echo private > /mine/note
      id -u; id -g
    mounts: {{shared: {{location: /data}}, mine: {{location: /mine}}}}
    resource: {{cpu: {{cores: 1}}, memory: {{size: 64MiB}}}}
"""
READER = """\
version: v1
volumes:
  shared: {{reference: volume://group/persistent/shared}}
jobs:
  read:
    image: {{uri: {image}, secret: secret://account/regcred}}
    script: |
      cat /data/note /data/from-s3.txt
      id -u; id -g
    mounts: {{shared: {{location: /data}}}}
    resource: {{cpu: {{cores: 1}}, memory: {{size: 64MiB}}}}
"""


TOKEN_JOB = """\
version: v1
jobs:
  token:
    image: {{uri: {image}, secret: secret://account/regcred}}
    env: [TOKEN=secret://account/apitoken]
    script: echo -n "$TOKEN" | sha256sum
    resource: {{cpu: {{cores: 1}}, memory: {{size: 64MiB}}}}
"""


@dataclass
class User:
    """A logged-in user with a config of their own."""

    name: str
    home: Path

    def fuzz(self, *args: str, stdin: str = "") -> Result:
        return run_fuzz(self.home, *args, stdin=stdin,
                        env={"FUZZ_CONFIG": str(self.home / "config.yaml")})

    def ok(self, *args: str, stdin: str = "") -> Result:
        result = self.fuzz(*args, stdin=stdin)
        assert result.code == 0, f"{self.name}: fuzz {' '.join(args)}: {result.err}{result.out}"
        return result

    def start(self, name: str, template: str, lab: Lab, *flags: str) -> Result:
        path = self.home / f"{name}.yaml"
        path.write_text(template.format(image=lab.image.reference, who=self.name,
                                        bucket=lab.bucket))
        return self.fuzz("workflow", "start", str(path), *flags)


@dataclass
class Lab:
    """The cluster, the account's name, its members, a non-member and the image."""

    cluster: LocalCluster
    account: str
    alice: User
    bob: User
    carol: User
    image: PushedImage
    s3: MotoS3
    bucket: str


def _user(cluster: LocalCluster, name: str, home: Path, *groups: str) -> User:
    flags = [part for group in groups for part in ("--group", group)]
    added = cluster.ok("iam", "user", "add", name, "--role", "user", *flags, "--json")
    address = json.loads((cluster.data_dir / "server.json").read_text())["endpoint"]
    user = User(name, home)
    user.ok("login", address, "--code", added.json()["code"],
            "--ca-file", str(cluster.data_dir / "ca.pem"))
    return user


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, auth_busybox_image: PushedImage,
        moto_s3: MotoS3) -> Iterator[Lab]:
    directory = tmp_path_factory.mktemp("accounts")
    os.chmod(directory, 0o755)
    registry = auth_busybox_image.registry
    suffix = str(os.getpid())
    bucket = moto_s3.new_bucket()
    moto_s3.client().put_object(Bucket=bucket, Key="in/data.txt", Body=b"from-s3\n")
    allow = {"ingress": {"allow": [moto_s3.endpoint_url.removeprefix("http://")]}}
    with local_cluster(directory, [registry.host], free_port(), nodes=1,
                       orchestrator=allow) as cluster:
        account = f"lab{suffix}"
        cluster.ok("iam", "group", "set", account)
        users = [_user(cluster, f"{who}{suffix}", tmp_path_factory.mktemp(who), *groups)
                 for who, groups in (("alice", (account,)), ("bob", (account,)),
                                     ("carol", ()))]
        yield Lab(cluster, account, *users, auth_busybox_image, moto_s3, bucket)


def _log(user: User, workflow: str, job: str) -> list[str]:
    return user.ok("workflow", "log", workflow, job).out.split()


def _one_line(result: Result) -> str:
    assert result.code == 1, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.err, result.err
    return lines[0]


def test_an_account_secret_and_volume_serve_its_members_and_no_one_else(lab: Lab) -> None:
    cluster, account, alice, bob, carol = (lab.cluster, lab.account, lab.alice, lab.bob,
                                           lab.carol)
    registry, s3 = lab.image.registry, lab.s3
    alice.ok("secret", "create", "--account", account, "regcred", "--from-file", "-",
             stdin=f"{registry.username}:{registry.password}")
    alice.ok("secret", "create", "--account", account, "s3creds", "--from-file", "-",
             stdin=f"AWS_ACCESS_KEY_ID={s3.access_key_id}\n"
                   f"AWS_SECRET_ACCESS_KEY={s3.secret_access_key}\n"
                   f"AWS_ENDPOINT_URL={s3.endpoint_url}\nAWS_REGION={s3.region}\n")

    # alice's workflow runs in her only account: it pulls with the account's login
    started = alice.start("writer", WRITER, lab)
    assert started.code == 0 and f"in account {account}" in started.out, started
    done = cluster.wait(f"{alice.name}/writer")
    assert (done["state"], done["account"]) == ("SUCCEEDED", account), dump(done)
    alice_uid, lab_gid = (int(n) for n in _log(alice, "writer", "write"))
    described = alice.ok("workflow", "describe", "writer").out
    assert f"owner {alice.name}  account {account}" in described, described

    # bob names the account himself and spells the scope `group`: same secret, same volume
    started = bob.start("reader", READER, lab, "--account", account)
    assert started.code == 0, started
    done = cluster.wait(f"{bob.name}/reader")
    assert done["state"] == "SUCCEEDED", dump(done)
    note, fetched, bob_uid, bob_gid = _log(bob, "reader", "read")
    assert (note, fetched) == (f"from-{alice.name}", "from-s3")
    assert bob_uid != str(alice_uid) and int(bob_gid) == lab_gid != alice_uid

    # on disk: the account's volume is the account's (2770); alice's own stays hers (0700)
    shared = cluster.volume_root / "account" / account / "shared"
    info = shared.stat()
    assert (info.st_gid, stat.S_IMODE(info.st_mode)) == (lab_gid, 0o2770)
    assert info.st_uid not in (alice_uid, int(bob_uid))
    mine = (cluster.volume_root / "persistent" / alice.name / "mine").stat()
    assert (mine.st_uid, mine.st_gid, stat.S_IMODE(mine.st_mode)) == \
        (alice_uid, alice_uid, 0o700)

    # carol is in no account: refused before anything runs, naming the account and the
    # reference, whether she asks for the account or not
    said = _one_line(carol.start("writer", WRITER, lab, "--account", account))
    assert said.endswith(f"writer.yaml: volumes.shared.reference: "
                         f"volume://account/persistent/shared: {carol.name} is not a member "
                         f"of account '{account}'"), said
    said = _one_line(carol.start("writer", WRITER, lab))
    assert "volume://account/persistent/shared" in said and \
        f"{carol.name} is a member of no account" in said, said
    assert "no workflow 'writer'" in _one_line(carol.fuzz("workflow", "status", "writer"))
    # nor can she see, replace or delete the account's secret
    said = _one_line(carol.fuzz("secret", "list", "--account", account))
    assert said.endswith(f"{carol.name} is not a member of account '{account}'"), said


def test_an_account_secret_in_env_reaches_its_members_jobs_and_no_one_elses(lab: Lab
                                                                           ) -> None:
    cluster, account, alice, bob, carol = (lab.cluster, lab.account, lab.alice, lab.bob,
                                           lab.carol)
    registry = lab.image.registry
    alice.ok("secret", "create", "--account", account, "regcred", "--replace",
             "--from-file", "-", stdin=f"{registry.username}:{registry.password}")
    said = _one_line(alice.start("token", TOKEN_JOB, lab))  # not created yet
    assert said.endswith(f"token.yaml: jobs.token.env.TOKEN: account {account!r} has no"
                         f" secret 'apitoken' (create it with: fuzz secret create --account"
                         f" {account} apitoken)"), said
    value = f"api-{os.getpid()}-token"
    alice.ok("secret", "create", "--account", account, "apitoken", "--from-literal", value)
    digest = hashlib.sha256(value.encode()).hexdigest()
    for member in (alice, bob):
        started = member.start("token", TOKEN_JOB, lab, "--account", account)
        assert started.code == 0, started
        done = cluster.wait(f"{member.name}/token")
        assert done["state"] == "SUCCEEDED", dump(done)
        assert _log(member, "token", "token") == [digest, "-"]
        assert value not in member.ok("workflow", "status", "token", "--json").out
    said = _one_line(carol.start("token", TOKEN_JOB, lab))  # refused before anything runs
    assert f"{carol.name} is a member of no account" in said, said
    assert "no workflow 'token'" in _one_line(carol.fuzz("workflow", "status", "token"))


def test_leaving_the_account_takes_effect_at_the_next_start(lab: Lab) -> None:
    cluster, account, bob = lab.cluster, lab.account, lab.bob
    cluster.ok("iam", "user", "add", bob.name, "--role", "user")  # no --group: out of it
    said = _one_line(bob.start("reader", READER, lab, "--account", account))
    assert said.endswith(f"{bob.name} is not a member of account '{account}'"), said
    said = _one_line(bob.start("reader", READER, lab))
    assert f"{bob.name} is a member of no account" in said, said
