"""Users, tokens and login codes in a real store; the authorizer's decisions and its audit log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fuzz.orchestrate.iam.audit import AuditLog
from fuzz.orchestrate.iam.authz import Authorizer, PermissionDeniedError, workflow_resource
from fuzz.orchestrate.iam.directory import (
    DEFAULT_TOKEN_TTL,
    AuthenticationError,
    IamDirectory,
    IamError,
    IamNotFoundError,
)
from fuzz.orchestrate.iam.policy import PolicyError, statement
from fuzz.orchestrate.store import PostgresTarget, Store


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(store_target: Path | PostgresTarget) -> Store:
    return Store(store_target)


@pytest.fixture
def iam(store: Store, clock: Clock) -> IamDirectory:
    directory = IamDirectory(store, clock)
    directory.put_user("alice", ["user"], [])
    directory.put_user("bob", ["submit-only"], [])
    return directory


def _login(iam: IamDirectory, user: str, ttl: float = 0.0) -> str:
    code, _ = iam.issue_code(user)
    return iam.login(code, ttl)[0]


def test_a_login_code_is_spent_once_for_a_token_that_expires(iam: IamDirectory,
                                                             clock: Clock) -> None:
    code, code_expires = iam.issue_code("alice", 60)
    assert code_expires == clock.now + 60
    with pytest.raises(AuthenticationError, match="login code, not a token"):
        iam.authenticate(code)
    token, user, expires = iam.login(code)
    assert (user, expires) == ("alice", clock.now + DEFAULT_TOKEN_TTL)
    with pytest.raises(AuthenticationError, match="used or revoked already"):
        iam.login(code)
    assert iam.authenticate(token).user == "alice"
    clock.now = expires
    with pytest.raises(AuthenticationError) as expired:
        iam.authenticate(token)
    assert str(expired.value).startswith("the token expired at ")
    assert str(expired.value).endswith(  # a newcomer must know a new code is needed, and how
        ": logging in again needs a new one-time login code: ask an admin for one "
        "(`fuzz iam user code alice`), then run `fuzz login SERVER --code CODE`")


def test_an_expired_login_code_and_an_unknown_one_are_refused(iam: IamDirectory,
                                                              clock: Clock) -> None:
    code, expires = iam.issue_code("bob", 10)
    clock.now = expires + 1
    with pytest.raises(AuthenticationError, match="expired"):
        iam.login(code)
    with pytest.raises(AuthenticationError, match="unknown login code"):
        iam.login("fzc_nosuch")


def test_revoking_and_removing_users_end_their_tokens(iam: IamDirectory) -> None:
    first, second = _login(iam, "alice"), _login(iam, "alice")
    iam.revoke(iam.authenticate(first).token_hash)
    with pytest.raises(AuthenticationError, match="revoked"):
        iam.authenticate(first)
    assert iam.authenticate(second).user == "alice"
    assert iam.revoke_user("alice") == 1
    with pytest.raises(AuthenticationError, match="revoked"):
        iam.authenticate(second)
    token = _login(iam, "bob")
    iam.delete_user("bob")
    with pytest.raises(AuthenticationError, match="invalid bearer token"):
        iam.authenticate(token)


def test_everything_survives_a_restart(store: Store, iam: IamDirectory, clock: Clock) -> None:
    token = _login(iam, "alice")
    iam.put_group("ops", ["admin"])
    iam.put_user("carol", ["user"], ["ops"])
    iam.put_role("reader", [statement("allow", ["workflow:read"], ["workflow/*"])])
    iam.set_curtain(True)
    iam.ensure_admin("the-admin-token")
    again = IamDirectory(store, clock)
    assert again.authenticate(token).user == "alice"
    assert again.authenticate("the-admin-token").roles == ("admin",)
    assert set(again.roles()) == {"admin", "user", "submit-only", "reader"}
    assert again.curtain
    carol = again.authenticate(_login(again, "carol"))
    assert (carol.roles, carol.groups) == (("admin", "user"), ("ops",))  # the group's roles too


def test_a_revoked_admin_token_stays_revoked(iam: IamDirectory) -> None:
    iam.ensure_admin("admin-token")
    iam.revoke(iam.authenticate("admin-token").token_hash)
    iam.ensure_admin("admin-token")  # the next server start
    with pytest.raises(AuthenticationError, match="revoked"):
        iam.authenticate("admin-token")


def test_users_groups_and_roles_are_checked(iam: IamDirectory) -> None:
    with pytest.raises(IamNotFoundError, match="no role 'wizard'"):
        iam.put_user("dave", ["wizard"], [])
    with pytest.raises(IamNotFoundError, match="no group 'ops'"):
        iam.put_user("dave", ["user"], ["ops"])
    with pytest.raises(PolicyError, match="invalid user name"):
        iam.put_user("Dave Smith", ["user"], [])
    with pytest.raises(IamError, match="built in and cannot be changed"):
        iam.put_role("admin", [statement("deny", ["*"], ["*"])])
    iam.put_role("reader", [statement("allow", ["workflow:read"], ["workflow/*"])])
    iam.put_group("readers", ["reader"])
    with pytest.raises(IamError, match="still given to group readers"):
        iam.delete_role("reader")
    iam.put_user("dave", ["user"], ["readers"])
    with pytest.raises(IamError, match="still has members: dave"):
        iam.delete_group("readers")


def test_the_authorizer_decides_audits_and_honours_the_curtain(
        iam: IamDirectory, tmp_path: Path) -> None:
    audit_path = tmp_path / "audit.log"
    authz = Authorizer(iam, AuditLog(audit_path))
    iam.ensure_admin("admin-token")
    admin = iam.authenticate("admin-token")
    alice = iam.authenticate(_login(iam, "alice"))
    bob = iam.authenticate(_login(iam, "bob"))
    notebook = workflow_resource("alice", "notebook")

    authz.check(alice, "workflow:exec", notebook)
    authz.check(admin, "workflow:port-forward", notebook)
    for user, action in ((bob, "workflow:exec"), (bob, "workflow:port-forward")):
        with pytest.raises(PermissionDeniedError, match=f"bob may not {action} on "
                           "workflow/alice/notebook"):
            authz.check(user, action, notebook)
    with pytest.raises(PermissionDeniedError):  # bob's own workflow: submit-only has no exec
        authz.check(bob, "workflow:exec", workflow_resource("bob", "job"))

    iam.set_curtain(True)
    for user in (admin, alice, bob):
        for action in ("workflow:exec", "workflow:port-forward"):
            with pytest.raises(PermissionDeniedError, match="denied by role 'curtain'"):
                authz.check(user, action, notebook)
    authz.check(alice, "workflow:read", notebook)  # the curtain covers exec and forwards only
    iam.set_curtain(False)
    authz.check(alice, "workflow:exec", notebook)

    shown = authz.permitted(bob, "workflow:read", [notebook, workflow_resource("bob", "job")],
                            "workflow/*")
    assert shown == [False, True]
    assert authz.token_problem("fzt_forged") == "invalid bearer token"

    lines = [json.loads(line) for line in audit_path.read_text().splitlines()]
    assert {"who", "action", "resource", "allowed", "reason", "time"} <= set(lines[0])
    decisions = [(x["who"], x["action"], x["resource"], x["allowed"]) for x in lines]
    assert decisions[:4] == [
        ("alice", "workflow:exec", notebook, True),
        ("admin", "workflow:port-forward", notebook, True),
        ("bob", "workflow:exec", notebook, False),
        ("bob", "workflow:port-forward", notebook, False),
    ]
    assert ("admin", "workflow:exec", notebook, False) in decisions  # the curtain, audited
    assert lines[-2]["reason"] == "list: 1 of 2 shown"
    assert (lines[-1]["who"], lines[-1]["action"], lines[-1]["allowed"]) == (
        "-", "authenticate", False)
    assert oct(audit_path.stat().st_mode & 0o777) == "0o600"


def test_giving_a_user_more_revokes_their_unspent_login_codes(iam: IamDirectory) -> None:
    iam.put_role("reader", [statement("allow", ["workflow:read"], ["workflow/*"])])
    iam.put_group("readers", [])
    iam.put_user("carol", ["submit-only"], ["readers"])
    widenings = [
        lambda: iam.put_user("carol", ["submit-only", "user"], ["readers"]),  # a role
        lambda: iam.put_group("readers", ["reader"]),  # a role of her group
        lambda: iam.put_role("reader", [statement("allow", ["*"], ["*"])]),  # that role
    ]
    for widen in widenings:
        code, _ = iam.issue_code("carol")
        kept, _ = iam.issue_code("alice")
        widen()
        with pytest.raises(AuthenticationError, match="used or revoked"):
            iam.login(code)
        assert iam.login(kept)[1] == "alice"  # other users' codes stay
    code, _ = iam.issue_code("carol")
    iam.put_user("carol", ["user"], [])  # less: the code stays good
    assert iam.login(code)[1] == "carol"
