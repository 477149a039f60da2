"""Delegated IAM cannot escalate: real users, real tokens, the real orchestrator over gRPC/TLS.

The admin delegates user management to mallory (``iam:manage`` on ``iam/user/*``,
and ``iam:grant`` on the ``user`` role). Mallory may add ``user``-role users and
issue their login codes; she may not give herself (or anyone) the ``admin`` role,
join a group that has it, widen a role she holds, or issue a login code (so a
token) for a user more powerful than she is.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fuzz.clients.orchestrator import AccessDeniedError
from fuzz.orchestrate.iam.policy import statement
from tests.support.orchestratorutil import Orchestrator, running_orchestrator


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orchestrator]:
    """An orchestrator where mallory manages users (and holds the ``user`` role herself)."""
    with running_orchestrator(tmp_path_factory.mktemp("delegation") / "server") as running:
        with running.iam(running.admin_token) as admin:
            admin.put_role("user-manager", [
                statement("allow", ["iam:manage"], ["iam/user/*"]),
                statement("allow", ["iam:grant"], ["iam/role/user"])])
            admin.put_role("role-editor", [
                statement("allow", ["iam:manage"], ["iam/role/team-*"])])
            admin.put_role("team-read", [statement("allow", ["node:read"], ["node/*"])])
            admin.put_role("group-manager", [
                statement("allow", ["iam:manage"], ["iam/group/*"]),
                statement("allow", ["iam:grant"], ["iam/group/*", "iam/role/*"])])
            admin.put_group("ops", ["admin"])
            admin.put_user("mallory", ["user", "user-manager", "role-editor", "team-read"], [])
            admin.put_user("root2", ["admin"], [])
            admin.put_user("gina", ["user", "group-manager", "user-manager"], [])
        yield running


def test_a_user_manager_cannot_make_herself_or_anyone_admin(cluster: Orchestrator) -> None:
    token = cluster.login("mallory")
    with cluster.iam(token) as mallory:
        with pytest.raises(AccessDeniedError,
                           match=r"mallory may not iam:grant on iam/role/admin"):
            mallory.put_user("mallory", ["user", "user-manager", "admin"], [])
        with pytest.raises(AccessDeniedError, match=r"mallory may not iam:grant on iam/role/admin"):
            mallory.put_user("puppet", ["admin"], [])
        with pytest.raises(AccessDeniedError, match=r"mallory may not iam:grant on iam/group/ops"):
            mallory.put_user("mallory", ["user", "user-manager"], ["ops"])
        assert set(mallory.whoami().roles) == {"user", "user-manager", "role-editor",
                                               "team-read"}
    with cluster.iam(cluster.admin_token) as admin:
        assert "puppet" not in [u.name for u in admin.users()]


def test_no_login_code_for_a_user_more_powerful_than_the_caller(cluster: Orchestrator) -> None:
    with cluster.iam(cluster.login("mallory")) as mallory:
        for target in ("admin", "root2"):
            with pytest.raises(AccessDeniedError,
                               match=rf"mallory may not issue a login code for user {target}: "
                               r"role admin allows \* on \*, beyond mallory's own permissions"):
                mallory.issue_login_code(target)
            with pytest.raises(AccessDeniedError, match="beyond mallory's own permissions"):
                mallory.revoke_tokens(target)
            with pytest.raises(AccessDeniedError, match="beyond mallory's own permissions"):
                mallory.delete_user(target)
            with pytest.raises(AccessDeniedError, match="beyond mallory's own permissions"):
                mallory.put_user(target, ["user"], [])


def test_a_role_the_caller_holds_cannot_be_widened_beyond_her(cluster: Orchestrator) -> None:
    with cluster.iam(cluster.login("mallory")) as mallory:
        with pytest.raises(AccessDeniedError, match=r"mallory may not make role team-read: role "
                           r"team-read allows \* on \*, beyond mallory's own permissions"):
            mallory.put_role("team-read", [statement("allow", ["*"], ["*"])])
        with pytest.raises(AccessDeniedError, match="beyond mallory's own permissions"):
            mallory.put_role("team-read", [statement("allow", ["workflow:read"],
                                                     ["workflow/*"])])
        narrower = mallory.put_role("team-read", [statement("allow", ["node:read"],
                                                            ["node/pool.*"])])
        assert [list(s.resources) for s in narrower.statements] == [["node/pool.*"]]
    with cluster.iam(cluster.admin_token) as admin:
        admin.put_role("team-read", [statement("allow", ["node:read"], ["node/*"])])


def test_a_group_manager_cannot_give_a_group_more_than_she_has(cluster: Orchestrator) -> None:
    with cluster.iam(cluster.login("gina")) as gina:
        with pytest.raises(AccessDeniedError, match=r"gina may not give role admin to group "
                           r"staff: role admin allows \* on \*, beyond gina's own permissions"):
            gina.put_group("staff", ["admin"])
        with pytest.raises(AccessDeniedError, match="beyond gina's own"):
            gina.put_user("gina", ["user", "group-manager", "user-manager"], ["ops"])
        with pytest.raises(AccessDeniedError, match=r"gina may not delete group ops: role admin"):
            gina.delete_group("ops")
        assert gina.put_group("staff", ["user"]).roles == ["user"]
        gina.put_user("sam", ["user"], ["staff"])


def test_legitimate_delegation_still_works(cluster: Orchestrator) -> None:
    with cluster.iam(cluster.login("mallory")) as mallory:
        assert mallory.put_user("carol", ["user"], []).roles == ["user"]
        code = mallory.issue_login_code("carol").code
    with cluster.iam("") as anonymous:
        carol_token = anonymous.login(code).token
    with cluster.client(carol_token) as carol:
        carol.create_secret("s3", b"AWS_ACCESS_KEY_ID=x")
        assert [s.owner for s in carol.list_secrets()] == ["carol"]
    with cluster.iam(carol_token) as carol_iam:
        assert list(carol_iam.whoami().roles) == ["user"]
    with cluster.iam(cluster.login("mallory")) as mallory:
        assert mallory.revoke_tokens("carol") >= 1
        mallory.delete_user("carol")


def test_the_data_dir_admin_token_can_still_do_everything(cluster: Orchestrator) -> None:
    with cluster.iam(cluster.admin_token) as admin:
        admin.put_user("trusted", ["admin"], ["ops"])
        assert admin.issue_login_code("trusted").user == "trusted"
        admin.delete_user("trusted")


def test_a_code_issued_before_its_user_was_given_more_cannot_be_spent(
        cluster: Orchestrator) -> None:
    with cluster.iam(cluster.login("mallory")) as mallory:
        mallory.put_user("dan", ["user"], [])
        code = mallory.issue_login_code("dan").code
    with cluster.iam(cluster.admin_token) as admin:
        admin.put_user("dan", ["user"], ["ops"])  # dan becomes admin through the group
    with cluster.iam("") as anonymous, \
            pytest.raises(AccessDeniedError, match="the login code was used or revoked"):
        anonymous.login(code)
