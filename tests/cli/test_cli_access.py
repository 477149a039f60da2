"""TLS, ``fuzz iam``, ``login``, ``context`` and ``logout`` through the real CLI.

The admin works next to the cluster spec (the CA and admin token come from the
server's data dir); users work from elsewhere with contexts in their own config
file. Every command is a real ``fuzz`` process against a real detached server.
"""

from __future__ import annotations

import json
import signal
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from fuzz.testing.oci import free_port
from tests.support.cliutil import Result, run_fuzz, run_fuzz_in_terminal
from tests.support.threadsignal import a_thread_other_than_main, signal_thread, thread_name

SPEC = """\
version: 1
cluster: access
orchestrator:
  listen: 127.0.0.1:{port}
  data_dir: .fuzz/server
"""


class Site:
    """The admin's spec directory and a user's laptop (its own config file)."""

    def __init__(self, root: Path, port: int) -> None:
        self.admin_dir = root / "admin"
        self.laptop = root / "laptop"
        self.config = self.laptop / "config.yaml"
        self.address = f"127.0.0.1:{port}"
        self.data_dir = self.admin_dir / ".fuzz" / "server"

    def admin(self, *args: str, stdin: str = "") -> Result:
        return run_fuzz(self.admin_dir, *args, stdin=stdin)

    def user(self, *args: str, stdin: str = "") -> Result:
        return run_fuzz(self.laptop, *args, stdin=stdin, env={"FUZZ_CONFIG": str(self.config)})

    def code_for(self, name: str, role: str) -> str:
        added = self.admin("iam", "user", "add", name, "--role", role, "--json")
        assert added.code == 0, added.err
        code: str = added.json()["code"]
        return code

    def login(self, code: str, *extra: str) -> Result:
        return self.user("login", self.address, "--code", code, "--ca-file",
                         str(self.data_dir / "ca.pem"), *extra)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    running = Site(tmp_path_factory.mktemp("access"), free_port())
    running.admin_dir.mkdir()
    running.laptop.mkdir()
    (running.admin_dir / "fuzz.yaml").write_text(SPEC.format(port=running.address[10:]))
    initialized = running.admin("init")
    assert initialized.code == 0, initialized.err
    assert "Created the cluster CA and the admin token" in initialized.out
    started = running.admin("server", "--detach")
    assert started.code == 0, started.err
    try:
        yield running
    finally:
        running.admin("server", "--stop")


def test_sigterm_delivered_to_another_thread_stops_the_orchestrator(tmp_path: Path) -> None:
    own = Site(tmp_path, free_port())
    own.admin_dir.mkdir()
    (own.admin_dir / "fuzz.yaml").write_text(SPEC.format(port=own.address[10:]))
    assert own.admin("init").code == 0
    assert own.admin("server", "--detach").code == 0
    try:
        pid = int(json.loads((own.data_dir / "server.json").read_text())["pid"])
        tid = a_thread_other_than_main(pid)
        name = thread_name(pid, tid)
        signal_thread(pid, tid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while _running(pid):
            assert time.monotonic() < deadline, f"SIGTERM to its thread {name} did not stop it"
            time.sleep(0.1)
        assert "is not running" in own.admin("server", "--stop").out
    finally:
        own.admin("server", "--stop")


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _one_error(result: Result) -> str:
    assert result.code == 1
    errors = [line for line in result.err.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.err
    return errors[0]


def test_plain_text_to_the_tls_server_is_refused_with_a_warning(site: Site) -> None:
    assert stat.S_IMODE((site.data_dir / "ca.key").stat().st_mode) == 0o600
    plain = site.admin("workflow", "list", "--server", site.address, "--token-file",
                       str(site.data_dir / "admin.token"), "--insecure")
    assert "warning: talking to the orchestrator" in plain.err
    assert "plain text" in _one_error(plain)


def test_users_log_in_switch_contexts_and_log_out(site: Site) -> None:
    logged_in = site.login(site.code_for("alice", "user"))
    assert logged_in.code == 0, logged_in.err
    assert f"Logged in to {site.address} as alice" in logged_in.out
    assert stat.S_IMODE(site.config.stat().st_mode) == 0o600
    alice_token = yaml.safe_load(site.config.read_text())["contexts"][
        f"alice@{site.address}"]["token"]

    assert site.login(site.code_for("bob", "submit-only"), "--context", "bob").code == 0
    contexts = site.user("context", "list", "--json").json()
    assert [(c["name"], c["current"]) for c in contexts] == [
        (f"alice@{site.address}", False), ("bob", True)]
    denied = _one_error(site.user("secret", "create", "key", "--from-literal", "v"))
    assert denied == ("Error: permission denied: bob may not secret:create on secret/bob/key "
                      "(no role allows it)")
    assert site.user("context", "use", f"alice@{site.address}").code == 0

    logged_out = site.user("logout")
    assert logged_out.code == 0, logged_out.err
    token_file = site.laptop / "alice.token"
    token_file.write_text(alice_token)
    token_file.chmod(0o600)
    revoked = site.user("whoami", "--server", site.address, "--token-file", str(token_file),
                        "--ca-file", str(site.data_dir / "ca.pem"))
    assert "the token was revoked" in _one_error(revoked)
    assert site.user("whoami", "--context", "bob", "--json").json()["user"] == "bob"


def test_admins_set_roles_from_policy_files_and_draw_the_curtain(site: Site,
                                                                 tmp_path: Path) -> None:
    policy = tmp_path / "reader.yaml"
    policy.write_text("statements:\n  - {effect: allow, actions: [workflow:read], "
                      "resources: ['workflow/*']}\n")
    assert site.admin("iam", "role", "set", "reader", "--policy", str(policy)).code == 0
    added = site.admin("iam", "user", "add", "carol", "--role", "reader")
    assert added.code == 0, added.err
    assert f"They log in with: fuzz login {site.address} --code fzc_" in added.out
    drawn = site.admin("iam", "curtain", "on")
    assert "The curtain is drawn" in drawn.out
    assert site.admin("whoami", "--json").json()["curtain"] is True
    assert "The curtain is open" in site.admin("iam", "curtain", "off").out


def _warning(option: str) -> str:
    return (f"warning: {option} VALUE is visible to other users in the process list and stays "
            f"in your shell history; give {option} without a value to type it hidden or pipe "
            "it in")


def test_secret_values_are_piped_or_typed_hidden_and_warned_about_on_the_command_line(
        site: Site) -> None:
    piped = site.admin("secret", "create", "piped", "--from-literal", stdin="s3cr3t\n")
    assert piped.code == 0 and "secret piped stored (6 bytes" in piped.out, piped.err
    assert "warning" not in piped.err
    given = site.admin("secret", "create", "given", "--from-literal", "visible", "--replace")
    assert given.code == 0 and "secret given stored (7 bytes" in given.out
    assert given.err.strip() == _warning("--from-literal")
    code, shown = run_fuzz_in_terminal(site.admin_dir, "secret", "create", "typed",
                                       "--from-literal", "--replace", typed="hidden-value")
    assert code == 0 and "Secret value: " in shown and "secret typed stored (12 bytes" in shown
    assert "hidden-value" not in shown and "warning" not in shown


def test_login_codes_are_piped_or_typed_hidden_and_warned_about_on_the_command_line(
        site: Site) -> None:
    ca = ("--ca-file", str(site.data_dir / "ca.pem"))
    piped = site.user("login", site.address, *ca, "--context", "piped",
                      stdin=site.code_for("dora", "user") + "\n")
    assert piped.code == 0 and "as dora" in piped.out and "warning" not in piped.err, piped.err
    given = site.login(site.code_for("erin", "user"), "--context", "given")
    assert given.code == 0 and given.err.strip() == _warning("--code")
    typed = site.code_for("fred", "user")
    code, shown = run_fuzz_in_terminal(site.laptop, "login", site.address, *ca, "--context",
                                       "typed", typed=typed,
                                       env={"FUZZ_CONFIG": str(site.config)})
    assert code == 0 and "Login code: " in shown and "as fred" in shown, shown
    assert typed not in shown and "warning" not in shown
