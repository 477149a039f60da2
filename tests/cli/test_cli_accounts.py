"""``fuzz secret … --account NAME`` through the real CLI against a real detached server.

An account is an IAM group: alice is in ``lab``, carol is not. Account secrets are
the members' to create, list and delete, each refused to a non-member in one line;
leaving the group takes effect at the next call.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fuzz.testing.oci import free_port
from tests.support.cliutil import Result, run_fuzz

SPEC = """\
version: 1
cluster: accounts
orchestrator:
  listen: 127.0.0.1:{port}
  data_dir: .fuzz/server
"""


class Site:
    """The admin's spec directory and the users' own config files."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.admin_dir = root / "admin"
        self.address = f"127.0.0.1:{port}"
        self.data_dir = self.admin_dir / ".fuzz" / "server"

    def admin(self, *args: str) -> Result:
        return run_fuzz(self.admin_dir, *args)

    def ok(self, *args: str) -> Result:
        result = self.admin(*args)
        assert result.code == 0, f"fuzz {' '.join(args)}: {result.err}"
        return result

    def as_user(self, name: str, *args: str, stdin: str = "") -> Result:
        home = self.root / name
        return run_fuzz(home, *args, stdin=stdin, env={"FUZZ_CONFIG": str(home / "c.yaml")})

    def add_user(self, name: str, *groups: str) -> None:
        (self.root / name).mkdir(exist_ok=True)
        flags = [part for group in groups for part in ("--group", group)]
        code = self.ok("iam", "user", "add", name, "--role", "user", *flags,
                       "--json").json()["code"]
        logged = self.as_user(name, "login", self.address, "--code", code, "--ca-file",
                              str(self.data_dir / "ca.pem"))
        assert logged.code == 0, logged.err


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    running = Site(tmp_path_factory.mktemp("accounts"), free_port())
    running.admin_dir.mkdir()
    (running.admin_dir / "fuzz.yaml").write_text(SPEC.format(port=running.address[10:]))
    running.ok("init")
    running.ok("server", "--detach")
    try:
        running.ok("iam", "group", "set", "lab")
        running.add_user("alice", "lab")
        running.add_user("carol")
        yield running
    finally:
        running.admin("server", "--stop")


def one_line(result: Result) -> str:
    assert result.code == 1, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.err, result.err
    return lines[0]


def test_members_keep_account_secrets_apart_from_their_own(site: Site) -> None:
    made = site.as_user("alice", "secret", "create", "--account", "lab", "regcred",
                        "--from-file", "-", "--json", stdin="u:p")
    assert made.code == 0, made.err
    assert {k: made.json()[k] for k in ("name", "account", "size")} == \
        {"name": "regcred", "account": "lab", "size": "3"}  # uint64: a JSON string
    listed = site.as_user("alice", "secret", "list", "--account", "lab", "--json")
    assert [(s["name"], s["account"]) for s in listed.json()] == [("regcred", "lab")]
    text = site.as_user("alice", "secret", "list", "--account", "lab")
    assert text.out.split()[:3] == ["regcred", "3", "bytes"], text.out
    # not alice's own secret: her own list is empty, and deleting hers finds none
    assert site.as_user("alice", "secret", "list", "--json").json() == []
    assert "no secret 'regcred'" in one_line(site.as_user("alice", "secret", "delete",
                                                          "regcred"))
    said = site.as_user("alice", "secret", "create", "--account", "lab", "regcred",
                        "--from-file", "-", stdin="x")
    assert "exists" in one_line(said)


def test_a_non_member_is_refused_in_one_line(site: Site) -> None:
    for args in (("create", "--account", "lab", "regcred", "--from-file", "-"),
                 ("list", "--account", "lab"),
                 ("delete", "--account", "lab", "regcred")):
        said = one_line(site.as_user("carol", "secret", *args, stdin="x"))
        assert said.endswith("carol is not a member of account 'lab'"), said


def test_an_invalid_account_name_is_one_line(site: Site) -> None:
    said = one_line(site.as_user("alice", "secret", "list", "--account", "Lab!"))
    assert "--account" in said and "invalid account name 'Lab!'" in said, said


def test_leaving_the_account_takes_effect_at_once(site: Site) -> None:
    site.add_user("dave", "lab")
    made = site.as_user("dave", "secret", "create", "--account", "lab", f"d{os.getpid()}",
                        "--from-file", "-", stdin="v")
    assert made.code == 0, made.err
    site.ok("iam", "user", "add", "dave", "--role", "user")  # no --group: out of lab
    said = one_line(site.as_user("dave", "secret", "list", "--account", "lab"))
    assert said.endswith("dave is not a member of account 'lab'"), said
    deleted = site.as_user("alice", "secret", "delete", "--account", "lab", f"d{os.getpid()}")
    assert deleted.code == 0 and "deleted" in deleted.out, deleted.err
