"""The authorization seam: every orchestrator RPC asks :class:`Authorizer` before it acts.

An RPC first learns who calls (:meth:`Authorizer.identify`, from the bearer token)
and then asks whether they may (:meth:`Authorizer.check`), which raises
:class:`PermissionDeniedError` (PERMISSION_DENIED on the wire) and writes the
decision to the audit log either way. :meth:`Authorizer.authorize` does both.
Resources are named by the functions below; the owner of a workflow or secret is
the user who created it (a workflow is keyed by owner and name).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import grpc

from fuzz.errors import FuzzError
from fuzz.orchestrate.iam.audit import AuditLog
from fuzz.orchestrate.iam.directory import AuthenticationError, IamDirectory, Identity
from fuzz.orchestrate.iam.policy import Decision, Statement, decide
from fuzz.orchestrate.iam.within import exceeding
from fuzz.rpc.auth import presented_token

NOBODY = "-"
WITHIN = "iam:within"  # the audit log's name for "may give only what one has"


class PermissionDeniedError(FuzzError):
    """The caller's roles do not allow the action on the resource."""


class UnauthenticatedError(FuzzError):
    """The call carries no token the orchestrator accepts."""


def workflow_resource(owner: str, name: str) -> str:
    """A workflow: ``workflow/<owner>/<name>``."""
    return f"workflow/{owner}/{name}"


def secret_resource(owner: str, name: str) -> str:
    """A secret: ``secret/<owner>/<name>``."""
    return f"secret/{owner}/{name}"


def account_resource(account: str) -> str:
    """An account (an IAM group): ``account/<account>``."""
    return f"account/{account}"


def account_secret_resource(account: str, name: str) -> str:
    """An account's secret: ``account/<account>/secret/<name>``."""
    return f"account/{account}/secret/{name}"


def node_resource(name: str) -> str:
    """A node: ``node/<name>``."""
    return f"node/{name}"


def cluster_resource(name: str) -> str:
    """The cluster: ``cluster/<name>``."""
    return f"cluster/{name}"


def iam_resource(kind: str, name: str) -> str:
    """A user, group, role or setting: ``iam/<kind>/<name>``."""
    return f"iam/{kind}/{name}"


class Authorizer:
    """Authenticates callers, decides with their roles (and the curtain), audits every decision."""

    def __init__(self, iam: IamDirectory, audit: AuditLog) -> None:
        """Decide with ``iam``'s users and roles; write decisions to ``audit``."""
        self.iam = iam
        self.audit = audit

    def token_problem(self, token: str) -> str | None:
        """For the server's token interceptor: None when ``token`` is accepted, else why not."""
        try:
            self.iam.authenticate(token)
        except AuthenticationError as exc:
            self.audit.record(NOBODY, "authenticate", "-", False, str(exc))
            return str(exc)
        return None

    def identify(self, context: grpc.ServicerContext) -> Identity:
        """Who makes this call; UnauthenticatedError when no accepted token comes with it."""
        token, problem = presented_token(context.invocation_metadata() or ())
        if problem is not None:
            raise UnauthenticatedError(problem)
        try:
            return self.iam.authenticate(token)
        except AuthenticationError as exc:
            raise UnauthenticatedError(str(exc)) from None

    def _decide(self, identity: Identity, action: str, resource: str) -> Decision:
        """Decide whether ``identity`` may do ``action`` on ``resource``, and audit it."""
        decision = decide(identity.subject, action, resource, self.iam.roles(),
                          self.iam.curtain)
        self.audit.record(identity.user, action, resource, decision.allowed, decision.reason)
        return decision

    def allows(self, identity: Identity, action: str, resource: str) -> bool:
        """Audit whether ``identity`` may do ``action`` on ``resource``; say, never raise
        (for an answer that must not tell "denied" from "not there")."""
        return self._decide(identity, action, resource).allowed

    def check(self, identity: Identity, action: str, resource: str) -> None:
        """Audit whether ``identity`` may do ``action`` on ``resource``; raise if not."""
        decision = self._decide(identity, action, resource)
        if not decision.allowed:
            raise PermissionDeniedError(
                f"{identity.user} may not {action} on {resource} ({decision.reason})")

    def check_hidden(self, identity: Identity, action: str, resource: str, owner: str,
                     hidden: FuzzError) -> None:
        """:meth:`check`, but a denial on what belongs to another ``owner`` raises ``hidden``.

        ``hidden`` is the answer for a missing one, so the refusal reveals neither
        that it exists nor whose it is. The audit log records the real decision.
        """
        try:
            self.check(identity, action, resource)
        except PermissionDeniedError:
            if owner == identity.user:
                raise
            raise hidden from None

    def authorize(self, context: grpc.ServicerContext, action: str, resource: str) -> Identity:
        """:meth:`identify` the caller and :meth:`check` them; returns who it was."""
        identity = self.identify(context)
        self.check(identity, action, resource)
        return identity

    def role_statements(self, names: Iterable[str]) -> dict[str, Sequence[Statement]]:
        """The statements of the named roles that exist, by role name."""
        roles = self.iam.roles()
        return {name: roles[name].statements for name in names if name in roles}

    def check_within(self, identity: Identity, doing: str, resource: str,
                     given: Mapping[str, Sequence[Statement]]) -> None:
        """Audit whether the ``given`` roles' permissions are within ``identity``'s own.

        Raises PermissionDeniedError naming the first statement beyond them:
        ``identity`` may not ``doing`` (e.g. "give role admin to user bob").
        """
        own = [s for statements in self.role_statements(identity.roles).values()
               for s in statements]
        excess = exceeding(given, own)
        reason = "within the caller's own permissions" if excess is None else \
            f"{excess.describe()}, beyond {identity.user}'s own permissions"
        self.audit.record(identity.user, WITHIN, resource, excess is None, reason)
        if excess is not None:
            raise PermissionDeniedError(f"{identity.user} may not {doing}: {reason}")

    def permitted(self, identity: Identity, action: str, resources: Sequence[str],
                  listing: str) -> list[bool]:
        """Which of ``resources`` ``identity`` may ``action``: a list call's filter.

        One audit line for the whole list (``listing`` names it, e.g. ``workflow/*``)
        says how many were shown.
        """
        roles, curtain = self.iam.roles(), self.iam.curtain
        allowed = [decide(identity.subject, action, r, roles, curtain).allowed
                   for r in resources]
        self.audit.record(identity.user, action, listing, True,
                          f"list: {sum(allowed)} of {len(allowed)} shown")
        return allowed
