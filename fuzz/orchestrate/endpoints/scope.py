"""Who may open an endpoint: its ``scope`` against the signed-in viewer (pure).

``user``: the workflow's owner alone. ``group``: the members of the workflow's account
(an IAM group, :mod:`fuzz.orchestrate.iam.accounts`); a workflow that runs in no
account is its owner's alone, so ``group`` then admits the owner only (never more than
the owner chose to share). ``organization``: anyone signed in to the cluster.
``public``: anyone, signed in or not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum


class Verdict(Enum):
    """What the gateway does with a request."""

    ALLOW = "allow"
    SIGN_IN = "sign-in"  # nobody is signed in, and someone must be
    DENY = "deny"  # someone is, but not one the scope admits


@dataclass(frozen=True)
class Viewer:
    """A signed-in user and the IAM groups they are in now."""

    user: str
    groups: Sequence[str]


def decide(scope: str, owner: str, account: str, viewer: Viewer | None) -> Verdict:
    """May ``viewer`` (None: nobody signed in) open an endpoint of ``scope`` on a
    workflow of ``owner`` running in ``account`` (empty: none)?"""
    if scope == "public":
        return Verdict.ALLOW
    if viewer is None:
        return Verdict.SIGN_IN
    if scope == "organization" or viewer.user == owner:
        return Verdict.ALLOW
    if scope == "group" and account and account in viewer.groups:
        return Verdict.ALLOW
    return Verdict.DENY
