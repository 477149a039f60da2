"""The policy engine: statements, deny wins, ${user}, the built-in roles and the curtain."""

from __future__ import annotations

import pytest

from fuzz.orchestrate.iam.policy import (
    BUILTIN_ROLES,
    PolicyError,
    Role,
    Statement,
    Subject,
    decide,
    statement,
    statements_from,
)

ALICE = Subject("alice", ("user",))
BOB = Subject("bob", ("submit-only",))
ROOT = Subject("root", ("admin",))


def allowed(subject: Subject, action: str, resource: str, roles: dict[str, Role] | None = None,
            curtain: bool = False) -> bool:
    return decide(subject, action, resource, roles or dict(BUILTIN_ROLES), curtain).allowed


def test_a_user_reaches_only_their_own_workflows_and_secrets() -> None:
    assert allowed(ALICE, "workflow:read", "workflow/alice/pipeline")
    assert allowed(ALICE, "workflow:exec", "workflow/alice/pipeline")
    assert allowed(ALICE, "workflow:port-forward", "workflow/alice/notebook")
    assert allowed(ALICE, "secret:create", "secret/alice/s3")
    assert not allowed(ALICE, "workflow:read", "workflow/bob/pipeline")
    assert not allowed(ALICE, "secret:use", "secret/bob/s3")
    assert not allowed(ALICE, "cluster:apply", "cluster/demo")
    assert not allowed(ALICE, "iam:manage", "iam/user/alice")
    # ${user} is the whole path segment: alice's pattern is not a prefix match for alicex
    assert not allowed(ALICE, "workflow:read", "workflow/alicex/pipeline")


def test_submit_only_may_start_and_watch_but_not_exec_forward_or_store_secrets() -> None:
    assert allowed(BOB, "workflow:start", "workflow/bob/run")
    assert allowed(BOB, "workflow:read", "workflow/bob/run")
    assert allowed(BOB, "secret:use", "secret/bob/registry")
    for action in ("workflow:exec", "workflow:port-forward"):
        decision = decide(BOB, action, "workflow/bob/run", BUILTIN_ROLES)
        assert (decision.allowed, decision.reason) == (False, "no role allows it")
    assert not allowed(BOB, "secret:create", "secret/bob/registry")


def test_deny_wins_over_allow_whatever_the_order() -> None:
    no_exec = Role("no-exec", (Statement("deny", ("workflow:exec",), ("workflow/*",)),))
    roles = {**BUILTIN_ROLES, "no-exec": no_exec}
    for order in (("admin", "no-exec"), ("no-exec", "admin")):
        decision = decide(Subject("carol", order), "workflow:exec", "workflow/x/y", roles)
        assert (decision.allowed, decision.reason) == (False, "denied by role 'no-exec'")
        assert allowed(Subject("carol", order), "workflow:read", "workflow/x/y", roles)


def test_a_role_can_grant_more_than_the_own_workflows() -> None:
    reader = Role("team-reader", (Statement("allow", ("workflow:read",), ("workflow/*",)),))
    roles = {**BUILTIN_ROLES, "team-reader": reader}
    dave = Subject("dave", ("user", "team-reader"))
    assert allowed(dave, "workflow:read", "workflow/alice/pipeline", roles)
    assert not allowed(dave, "workflow:cancel", "workflow/alice/pipeline", roles)


def test_the_curtain_denies_exec_and_port_forward_to_everyone_admins_too() -> None:
    for subject, resource in ((ROOT, "workflow/alice/nb"), (ALICE, "workflow/alice/nb")):
        for action in ("workflow:exec", "workflow:port-forward"):
            decision = decide(subject, action, resource, BUILTIN_ROLES, curtain=True)
            assert (decision.allowed, decision.reason) == (False, "denied by role 'curtain'")
        assert allowed(subject, "workflow:read", resource, curtain=True)
    assert allowed(ROOT, "workflow:exec", "workflow/alice/nb")


def test_unknown_roles_give_nothing_and_nothing_matching_is_a_deny() -> None:
    assert not allowed(Subject("erin", ("nosuch",)), "workflow:read", "workflow/erin/x")
    assert not allowed(Subject("erin"), "workflow:read", "workflow/erin/x")


def test_statements_are_checked() -> None:
    with pytest.raises(PolicyError, match="matches no action"):
        statement("allow", ["workflow:teleport"], ["*"])
    with pytest.raises(PolicyError, match="effect must be allow or deny"):
        statement("maybe", ["workflow:read"], ["*"])
    with pytest.raises(PolicyError, match="at least one action and one resource"):
        statement("allow", ["workflow:read"], [])
    assert statement("deny", ["secret:*"], ["secret/*"]).matches("secret:use", "secret/a/b", "x")


def test_statements_from_a_document() -> None:
    parsed = statements_from([
        {"effect": "allow", "actions": "workflow:read", "resources": ["workflow/*"]},
        {"effect": "deny", "actions": ["workflow:exec"], "resources": "workflow/prod/*"},
    ])
    assert parsed == (Statement("allow", ("workflow:read",), ("workflow/*",)),
                      Statement("deny", ("workflow:exec",), ("workflow/prod/*",)))
    with pytest.raises(PolicyError, match=r"statements\[1\]: unknown keys \['principal'\]"):
        statements_from([{"effect": "allow", "actions": "workflow:read", "resources": "*"},
                         {"effect": "allow", "principal": "x"}])
    with pytest.raises(PolicyError, match="must be strings or lists of strings"):
        statements_from([{"effect": "allow", "actions": 3, "resources": "*"}])
