"""Which account a workflow runs in: Fuzzball's accounts are fuzz's IAM groups.

A user is a member of an account when they are in the IAM group of that name. A
workflow runs in at most one account, chosen when it starts: the one asked for
(``fuzz workflow start --account NAME``), else, when the Fuzzfile uses the account
scope (``secret://account/…``, ``volume://account/…`` or ``volume://group/…``), the
owner's only group. Pure: the caller gives the owner's groups as IAM has them now,
so leaving a group takes effect at the next start.
"""

from __future__ import annotations

from collections.abc import Sequence

from fuzz.orchestrate.iam.authz import PermissionDeniedError


class AccountError(PermissionDeniedError):
    """The workflow's owner cannot run it in an account as asked (one sentence)."""


def choose_account(owner: str, groups: Sequence[str], asked: str,
                   references: Sequence[tuple[str, str]], path: str) -> str:
    """The account ``owner`` (a member of ``groups``) runs a workflow in; empty for none.

    ``asked``: the account the start names (empty: none); ``references``: (where,
    reference) of every account-scoped reference of the Fuzzfile at ``path``.
    AccountError, naming the first reference, when ``owner`` is not a member of the
    account asked for, or none is asked for and the file needs one but ``owner`` is
    in no group or in several.
    """
    where = f"{path}: {references[0][0]}: {references[0][1]}: " if references else f"{path}: "
    if asked:
        if asked not in groups:
            raise AccountError(f"{where}{owner} is not a member of account {asked!r}")
        return asked
    if not references:
        return ""
    if not groups:
        raise AccountError(f"{where}{owner} is a member of no account (an IAM group), "
                           "so no account can own it")
    if len(groups) > 1:
        raise AccountError(f"{where}{owner} is a member of several accounts "
                           f"({', '.join(sorted(groups))}): choose one with "
                           "fuzz workflow start --account NAME")
    return groups[0]
