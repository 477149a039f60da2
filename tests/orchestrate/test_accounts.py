"""Accounts (issue 16, point 1): a Fuzzball account is an IAM group of fuzz.

``${account}`` in a policy resource stands for each account the caller is a member of;
account secrets are sealed bound to the account; the account a workflow runs in is
chosen from the caller's groups, with one clear sentence when it cannot be.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fuzz.crypto.envelope import DecryptionError, Sealer
from fuzz.orchestrate.iam.accounts import AccountError, choose_account
from fuzz.orchestrate.iam.policy import BUILTIN_ROLES, Subject, decide, statement
from fuzz.orchestrate.iam.within import covers, exceeding
from fuzz.orchestrate.records import SecretRecord
from fuzz.orchestrate.secrets import SecretStore, account_owner
from fuzz.orchestrate.store import PostgresTarget, Store

ALICE = Subject("alice", ("user",), ("lab",))
CAROL = Subject("carol", ("user",), ())
SUBMITTER = Subject("sam", ("submit-only",), ("lab",))


def allowed(subject: Subject, action: str, resource: str) -> bool:
    return decide(subject, action, resource, dict(BUILTIN_ROLES)).allowed


def test_account_resources_are_their_members_only() -> None:
    for action in ("secret:create", "secret:read", "secret:delete", "secret:use"):
        assert allowed(ALICE, action, "account/lab/secret/regcred")
        assert not allowed(CAROL, action, "account/lab/secret/regcred")
    assert allowed(ALICE, "account:use", "account/lab")
    assert not allowed(ALICE, "account:use", "account/other")
    assert not allowed(CAROL, "account:use", "account/lab")
    # ${account} is the whole path segment: a member of lab is no member of labx
    assert not allowed(ALICE, "secret:use", "account/labx/secret/regcred")
    # submit-only members may use, not manage, the account's secrets
    assert allowed(SUBMITTER, "account:use", "account/lab")
    assert allowed(SUBMITTER, "secret:use", "account/lab/secret/regcred")
    assert not allowed(SUBMITTER, "secret:create", "account/lab/secret/regcred")
    # an account secret is no user's: alice's own-secret statement does not reach it
    assert not allowed(Subject("account", ("user",)), "secret:use", "account/lab/secret/x")


def test_account_variable_is_a_template_when_giving_roles_away() -> None:
    mine = "account/${account}/secret/*"
    assert covers(mine, mine)
    assert covers("*", mine)
    assert not covers(mine, "account/lab/secret/*")  # a member of lab need not be its holder
    assert not covers("account/${user}/secret/*", mine)
    given = {"r": [statement("allow", ["secret:use"], [mine])]}
    assert exceeding(given, BUILTIN_ROLES["user"].statements) is None
    assert exceeding(given, [statement("allow", ["secret:use"], ["secret/${user}/*"])])


def test_account_secrets_are_sealed_bound_to_the_account(
        store_target: Path | PostgresTarget) -> None:
    store = Store(store_target)
    secrets = SecretStore(store, Sealer.from_keys(os.urandom(32)))
    secrets.create(account_owner("lab"), "regcred", b"u:p")
    secrets.create("alice", "regcred", b"mine")
    assert secrets.open(account_owner("lab"), "regcred") == b"u:p"
    assert [r.name for r in secrets.list(account_owner("lab"))] == ["regcred"]
    assert [r.size for r in secrets.list("alice")] == [4]
    # the account's sealed value copied onto alice's row does not open as hers
    sealed = store.load(SecretRecord, owner=account_owner("lab"), name="regcred")[0].sealed
    store.save(SecretRecord("alice", "regcred", sealed, 3, 0.0))
    with pytest.raises(DecryptionError):
        secrets.open("alice", "regcred")


REFS = [("volumes.shared.reference", "volume://account/persistent/shared")]


def test_the_account_is_the_one_asked_for_or_the_callers_only_group() -> None:
    assert choose_account("alice", ("lab",), "", REFS, "wf.yaml") == "lab"
    assert choose_account("alice", ("lab", "ops"), "ops", REFS, "wf.yaml") == "ops"
    assert choose_account("alice", ("lab", "ops"), "", [], "wf.yaml") == ""
    assert choose_account("alice", ("lab",), "lab", [], "wf.yaml") == "lab"


@pytest.mark.parametrize(("groups", "asked", "said"), [
    ((), "lab", "wf.yaml: volumes.shared.reference: volume://account/persistent/shared: "
                "carol is not a member of account 'lab'"),
    (("ops",), "lab", "wf.yaml: volumes.shared.reference: volume://account/persistent/shared: "
                      "carol is not a member of account 'lab'"),
    ((), "", "wf.yaml: volumes.shared.reference: volume://account/persistent/shared: carol is "
             "a member of no account (an IAM group), so no account can own it"),
    (("lab", "ops"), "", "wf.yaml: volumes.shared.reference: volume://account/persistent/"
                         "shared: carol is a member of several accounts (lab, ops): choose "
                         "one with fuzz workflow start --account NAME"),
])
def test_an_account_that_cannot_be_used_is_one_sentence(
        groups: tuple[str, ...], asked: str, said: str) -> None:
    with pytest.raises(AccountError) as caught:
        choose_account("carol", groups, asked, REFS, "wf.yaml")
    assert str(caught.value) == said


def test_asking_for_an_account_one_is_not_in_is_refused_even_unused() -> None:
    with pytest.raises(AccountError, match="carol is not a member of account 'lab'"):
        choose_account("carol", (), "lab", [], "wf.yaml")
