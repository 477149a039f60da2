"""What a delegate may give away: glob subsumption, deny overlap, roles within roles."""

from __future__ import annotations

import pytest

from fuzz.orchestrate.iam.policy import BUILTIN_ROLES, statement
from fuzz.orchestrate.iam.within import covers, exceeding, may_overlap

ADMIN = BUILTIN_ROLES["admin"].statements
USER = BUILTIN_ROLES["user"].statements
SUBMIT_ONLY = BUILTIN_ROLES["submit-only"].statements


@pytest.mark.parametrize(("outer", "inner"), [
    ("*", "anything/at/all"),
    ("*", "*"),
    ("workflow/*", "workflow/${user}/*"),
    ("workflow/${user}/*", "workflow/${user}/*"),
    ("workflow/${user}/*", "workflow/${user}/run-?"),
    ("workflow/*/a*", "workflow/bob/a[xy]*"),
    ("node/pool.?.x", "node/pool.[ab].x"),
    ("node/[ab]", "node/a"),
    ("iam/user/*", "iam/user/*"),
])
def test_covered(outer: str, inner: str) -> None:
    assert covers(outer, inner)


@pytest.mark.parametrize(("outer", "inner"), [
    ("workflow/alice/*", "workflow/${user}/*"),  # a literal name never covers ${user}
    ("workflow/${user}/*", "workflow/alice/*"),  # nor the template a literal name
    ("workflow/${user}/*", "workflow/*"),
    ("workflow/$*", "workflow/${user}/x"),  # a user name need not start with '$'
    ("node/?", "node/${user}"),
    ("node/[ab]", "node/?"),
    ("node/a", "node/[a]"),  # true, but not proven: refused
    ("iam/user/*", "iam/*"),
    ("iam/role/user", "iam/role/user*"),
])
def test_not_covered_or_unsure(outer: str, inner: str) -> None:
    assert not covers(outer, inner)


@pytest.mark.parametrize(("first", "second", "overlap"), [
    ("secret/*", "workflow/*", False),
    ("*.log", "*.txt", False),
    ("node/a", "node/b", False),
    ("node/a", "node/a", True),
    ("secret/${user}/x", "secret/*", True),
    ("secret/a*", "secret/*b", True),
    ("a[xy]", "az", True),  # unsure: assumed to overlap
])
def test_overlap(first: str, second: str, overlap: bool) -> None:
    assert may_overlap(first, second) is overlap


def test_builtin_roles_are_within_each_other_as_expected() -> None:
    assert exceeding({"user": USER, "submit-only": SUBMIT_ONLY}, ADMIN) is None
    assert exceeding({"submit-only": SUBMIT_ONLY}, USER) is None
    excess = exceeding({"user": USER}, SUBMIT_ONLY)
    assert excess is not None and excess.describe() == \
        "role user allows workflow:* on workflow/${user}/*"
    excess = exceeding({"admin": ADMIN}, USER)
    assert excess is not None and excess.describe() == "role admin allows * on *"


def test_actions_are_compared_exactly_and_statements_combine() -> None:
    own = (statement("allow", ["workflow:read", "workflow:start"], ["workflow/*"]),
           statement("allow", ["workflow:cancel"], ["workflow/team/*"]))
    given = statement("allow", ["workflow:read", "workflow:cancel"], ["workflow/team/x*"])
    assert exceeding({"r": [given]}, own) is None
    wider = statement("allow", ["workflow:[rc]*"], ["workflow/team/x*"])  # read and cancel
    assert exceeding({"r": [wider]}, own) is None
    assert exceeding({"r": [statement("allow", ["workflow:*"], ["workflow/team/x"])]},
                     own) is not None


def test_a_deny_of_the_caller_that_may_overlap_makes_a_grant_exceed() -> None:
    own = (statement("allow", ["*"], ["*"]), statement("deny", ["secret:*"], ["secret/vault/*"]))
    assert exceeding({"r": [statement("allow", ["secret:read"], ["secret/team/*"])]},
                     own) is None
    assert exceeding({"r": [statement("allow", ["secret:read"], ["secret/*"])]},
                     own) is not None
    assert exceeding({"r": [statement("allow", ["workflow:read"], ["secret/vault/x"])]},
                     own) is None  # another action
    # the given role's own denies only take away
    assert exceeding({"r": [statement("deny", ["*"], ["*"])]}, USER) is None
