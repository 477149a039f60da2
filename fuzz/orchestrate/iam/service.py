"""The ``fuzz.iam.v1.Iam`` gRPC service: logins, tokens, users, groups, roles and the curtain.

Login is open (the one-time code is the credential); WhoAmI and Logout act on the
caller's own token; everything else needs ``iam:manage`` on ``iam/<kind>/<name>``.

Delegation cannot escalate: giving a role to a user or a group needs ``iam:grant``
on ``iam/role/<role>``, putting a user in a group ``iam:grant`` on
``iam/group/<group>``, and what is given must lie within the caller's own
permissions (:mod:`fuzz.orchestrate.iam.within`). A caller may change, delete, revoke
or issue login codes for only those users, groups and roles whose permissions lie
within their own: no code (so no token) for a user more powerful than oneself, and
no role edited beyond what its editor has.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

import grpc

from fuzz.api import iam_pb2 as pb
from fuzz.errors import FuzzError
from fuzz.orchestrate.iam.authz import (
    Authorizer,
    PermissionDeniedError,
    UnauthenticatedError,
    iam_resource,
)
from fuzz.orchestrate.iam.directory import AuthenticationError, IamError, IamNotFoundError, Identity
from fuzz.orchestrate.iam.policy import PolicyError, Role, statement
from fuzz.orchestrate.records import GroupRecord, UserRecord
from fuzz.rpc.server import StatusTable, abort_with

SERVICE_NAME = "fuzz.iam.v1.Iam"
LOGIN_METHOD = f"/{SERVICE_NAME}/Login"
MANAGE = "iam:manage"
GRANT = "iam:grant"

_Reply = TypeVar("_Reply")


class InvalidPolicyError(FuzzError):
    """A role's statements that the policy engine cannot use."""


_STATUS: StatusTable = (
    (AuthenticationError, grpc.StatusCode.UNAUTHENTICATED),
    (UnauthenticatedError, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED),
    (IamNotFoundError, grpc.StatusCode.NOT_FOUND),
    (IamError, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidPolicyError, grpc.StatusCode.INVALID_ARGUMENT),
)


def user_message(record: UserRecord) -> pb.User:
    """A user as the API shows it."""
    return pb.User(name=record.name, roles=record.roles, groups=record.groups,
                   created=record.created)


def group_message(record: GroupRecord) -> pb.Group:
    """A group as the API shows it."""
    return pb.Group(name=record.name, roles=record.roles)


def role_message(role: Role) -> pb.Role:
    """A role and its statements."""
    return pb.Role(name=role.name, builtin=role.builtin, statements=[
        pb.Statement(effect=s.effect, actions=s.actions, resources=s.resources)
        for s in role.statements])


class IamService:
    """Answers the Iam API from the authorizer's IAM directory."""

    def __init__(self, authz: Authorizer) -> None:
        """Serve ``authz.iam``; authorize and audit through ``authz``."""
        self._authz = authz
        self._iam = authz.iam

    def _managing(self, context: grpc.ServicerContext, kind: str, name: str,
                  act: Callable[[Identity], _Reply]) -> _Reply:
        """Check ``iam:manage`` on ``iam/<kind>/<name>``, then ``act``; errors end the call."""
        try:
            return act(self._authz.authorize(context, MANAGE, iam_resource(kind, name)))
        except PolicyError as exc:
            abort_with(context, InvalidPolicyError(str(exc)), _STATUS)
        except FuzzError as exc:
            abort_with(context, exc, _STATUS)

    # --- delegation: give only what one has ----------------------------------------------

    def _within(self, identity: Identity, doing: str, resource: str, roles: Iterable[str]
                ) -> None:
        """PermissionDeniedError unless the ``roles``' permissions are within the caller's."""
        self._authz.check_within(identity, doing, resource, self._authz.role_statements(roles))

    def _give_roles(self, identity: Identity, roles: Iterable[str], to: str) -> None:
        """The caller may give each of ``roles`` (to ``to``, e.g. ``user bob``)."""
        for role in sorted(set(roles)):
            resource = iam_resource("role", role)
            self._authz.check(identity, GRANT, resource)
            self._within(identity, f"give role {role} to {to}", resource, [role])

    def _add_to_groups(self, identity: Identity, groups: Iterable[str], user: str) -> None:
        """The caller may put ``user`` in each of ``groups``."""
        for group in sorted(set(groups)):
            resource = iam_resource("group", group)
            self._authz.check(identity, GRANT, resource)
            known = self._iam.group(group)
            self._within(identity, f"put user {user} in group {group}", resource,
                         known.roles if known else ())

    def _user_within(self, identity: Identity, doing: str, user: str) -> None:
        """The existing ``user``'s permissions (own and groups') are within the caller's."""
        self._within(identity, f"{doing} user {user}", iam_resource("user", user),
                     self._iam.user_roles(user))

    # --- the caller's own session ------------------------------------------------------

    def Login(self, request: pb.LoginRequest, context: grpc.ServicerContext) -> pb.Session:
        """Spend a login code for a token."""
        try:
            token, user, expires = self._iam.login(request.code, request.ttl_seconds)
        except FuzzError as exc:
            self._authz.audit.record("-", "login", "-", False, str(exc))
            abort_with(context, exc, _STATUS)
        self._authz.audit.record(user, "login", iam_resource("user", user), True,
                                 "login code spent")
        return pb.Session(token=token, user=user, expires=expires)

    def WhoAmI(self, request: pb.WhoAmIRequest, context: grpc.ServicerContext) -> pb.Identity:
        """The caller's user, roles, groups and token expiry, and the curtain."""
        try:
            identity = self._authz.identify(context)
        except FuzzError as exc:
            abort_with(context, exc, _STATUS)
        return pb.Identity(user=identity.user, roles=identity.roles, groups=identity.groups,
                           expires=identity.expires, curtain=self._iam.curtain)

    def Logout(self, request: pb.LogoutRequest, context: grpc.ServicerContext
               ) -> pb.LogoutReply:
        """Revoke the token of this call."""
        try:
            identity = self._authz.identify(context)
        except FuzzError as exc:
            abort_with(context, exc, _STATUS)
        self._iam.revoke(identity.token_hash)
        self._authz.audit.record(identity.user, "logout", iam_resource("user", identity.user),
                                 True, "token revoked")
        return pb.LogoutReply()

    # --- users ---------------------------------------------------------------------------

    def PutUser(self, request: pb.User, context: grpc.ServicerContext) -> pb.User:
        """Create or replace a user: the roles and groups added must be the caller's to give."""
        def put(identity: Identity) -> pb.User:
            known = self._iam.user(request.name)
            if known is not None:
                self._user_within(identity, "change", request.name)
            self._give_roles(identity, set(request.roles) - set(known.roles if known else ()),
                             f"user {request.name}")
            self._add_to_groups(identity, set(request.groups) -
                                set(known.groups if known else ()), request.name)
            return user_message(self._iam.put_user(request.name, request.roles, request.groups))
        return self._managing(context, "user", request.name, put)

    def ListUsers(self, request: pb.ListRequest, context: grpc.ServicerContext
                  ) -> pb.UserList:
        """Every user."""
        return self._managing(context, "user", "*", lambda _: pb.UserList(
            users=[user_message(u) for u in self._iam.users()]))

    def DeleteUser(self, request: pb.NameRef, context: grpc.ServicerContext
                   ) -> pb.DeleteReply:
        """Delete a user (no more powerful than the caller) and revoke what they hold."""
        def delete(identity: Identity) -> pb.DeleteReply:
            self._user_within(identity, "delete", request.name)
            self._iam.delete_user(request.name)
            return pb.DeleteReply()
        return self._managing(context, "user", request.name, delete)

    def IssueLoginCode(self, request: pb.LoginCodeRequest, context: grpc.ServicerContext
                       ) -> pb.LoginCode:
        """A one-time login code for a user no more powerful than the caller."""
        def issue(identity: Identity) -> pb.LoginCode:
            self._user_within(identity, "issue a login code for", request.user)
            code, expires = self._iam.issue_code(request.user, request.ttl_seconds)
            return pb.LoginCode(code=code, user=request.user, expires=expires)
        return self._managing(context, "user", request.user, issue)

    def RevokeTokens(self, request: pb.NameRef, context: grpc.ServicerContext
                     ) -> pb.RevokeReply:
        """Revoke every token and code of a user no more powerful than the caller."""
        def revoke(identity: Identity) -> pb.RevokeReply:
            self._user_within(identity, "revoke the tokens of", request.name)
            return pb.RevokeReply(revoked=self._iam.revoke_user(request.name))
        return self._managing(context, "user", request.name, revoke)

    # --- groups ----------------------------------------------------------------------------

    def PutGroup(self, request: pb.Group, context: grpc.ServicerContext) -> pb.Group:
        """Create or replace a group: the roles added must be the caller's to give."""
        def put(identity: Identity) -> pb.Group:
            known = self._iam.group(request.name)
            if known is not None:
                self._within(identity, f"change group {request.name}",
                             iam_resource("group", request.name), known.roles)
            self._give_roles(identity, set(request.roles) - set(known.roles if known else ()),
                             f"group {request.name}")
            return group_message(self._iam.put_group(request.name, request.roles))
        return self._managing(context, "group", request.name, put)

    def ListGroups(self, request: pb.ListRequest, context: grpc.ServicerContext
                   ) -> pb.GroupList:
        """Every group."""
        return self._managing(context, "group", "*", lambda _: pb.GroupList(
            groups=[group_message(g) for g in self._iam.groups()]))

    def DeleteGroup(self, request: pb.NameRef, context: grpc.ServicerContext
                    ) -> pb.DeleteReply:
        """Delete a group without members, no more powerful than the caller."""
        def delete(identity: Identity) -> pb.DeleteReply:
            known = self._iam.group(request.name)
            self._within(identity, f"delete group {request.name}",
                         iam_resource("group", request.name), known.roles if known else ())
            self._iam.delete_group(request.name)
            return pb.DeleteReply()
        return self._managing(context, "group", request.name, delete)

    # --- roles -----------------------------------------------------------------------------

    def PutRole(self, request: pb.Role, context: grpc.ServicerContext) -> pb.Role:
        """Create or replace a role (not a built-in one) within the caller's permissions."""
        def put(identity: Identity) -> pb.Role:
            statements = [statement(s.effect, s.actions, s.resources)
                          for s in request.statements]
            self._role_within(identity, "change", request.name)
            self._authz.check_within(identity, f"make role {request.name}",
                                     iam_resource("role", request.name),
                                     {request.name: statements})
            return role_message(self._iam.put_role(request.name, statements))
        return self._managing(context, "role", request.name, put)

    def ListRoles(self, request: pb.ListRequest, context: grpc.ServicerContext
                  ) -> pb.RoleList:
        """Every role, built-in ones first."""
        return self._managing(context, "role", "*", lambda _: pb.RoleList(
            roles=[role_message(r) for r in self._iam.roles().values()]))

    def DeleteRole(self, request: pb.NameRef, context: grpc.ServicerContext
                   ) -> pb.DeleteReply:
        """Delete a role nobody has, no more powerful than the caller."""
        def delete(identity: Identity) -> pb.DeleteReply:
            self._role_within(identity, "delete", request.name)
            self._iam.delete_role(request.name)
            return pb.DeleteReply()
        return self._managing(context, "role", request.name, delete)

    def _role_within(self, identity: Identity, doing: str, role: str) -> None:
        """An existing ``role``'s permissions are within the caller's (a new one has none)."""
        self._within(identity, f"{doing} role {role}", iam_resource("role", role), [role])

    # --- the curtain -------------------------------------------------------------------------

    def SetCurtain(self, request: pb.Curtain, context: grpc.ServicerContext) -> pb.Curtain:
        """Draw or open the curtain over exec and port-forward."""
        def draw(_: Identity) -> pb.Curtain:
            self._iam.set_curtain(request.drawn)
            return pb.Curtain(drawn=self._iam.curtain)
        return self._managing(context, "setting", "curtain", draw)
