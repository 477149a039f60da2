"""The ``fuzz.iam.v1.Iam`` gRPC service: logins, tokens, users, groups, roles and the curtain.

Login is open (the one-time code is the credential); WhoAmI and Logout act on the
caller's own token; everything else needs ``iam:manage`` on ``iam/<kind>/<name>``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import grpc

from fuzz.api import iam_pb2 as pb
from fuzz.errors import FuzzError
from fuzz.grpcserve import StatusTable, abort_with
from fuzz.orchestrate.authz import (
    Authorizer,
    PermissionDeniedError,
    UnauthenticatedError,
    iam_resource,
)
from fuzz.orchestrate.iam import AuthenticationError, IamError, IamNotFoundError
from fuzz.orchestrate.policy import PolicyError, Role, statement
from fuzz.orchestrate.records import GroupRecord, UserRecord

SERVICE_NAME = "fuzz.iam.v1.Iam"
LOGIN_METHOD = f"/{SERVICE_NAME}/Login"
MANAGE = "iam:manage"

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
                  act: Callable[[], _Reply]) -> _Reply:
        """Check ``iam:manage`` on ``iam/<kind>/<name>``, then ``act``; errors end the call."""
        try:
            self._authz.authorize(context, MANAGE, iam_resource(kind, name))
            return act()
        except PolicyError as exc:
            abort_with(context, InvalidPolicyError(str(exc)), _STATUS)
        except FuzzError as exc:
            abort_with(context, exc, _STATUS)

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
        """Create or replace a user."""
        return self._managing(context, "user", request.name, lambda: user_message(
            self._iam.put_user(request.name, request.roles, request.groups)))

    def ListUsers(self, request: pb.ListRequest, context: grpc.ServicerContext
                  ) -> pb.UserList:
        """Every user."""
        return self._managing(context, "user", "*", lambda: pb.UserList(
            users=[user_message(u) for u in self._iam.users()]))

    def DeleteUser(self, request: pb.NameRef, context: grpc.ServicerContext
                   ) -> pb.DeleteReply:
        """Delete a user and revoke what they hold."""
        def delete() -> pb.DeleteReply:
            self._iam.delete_user(request.name)
            return pb.DeleteReply()
        return self._managing(context, "user", request.name, delete)

    def IssueLoginCode(self, request: pb.LoginCodeRequest, context: grpc.ServicerContext
                       ) -> pb.LoginCode:
        """A one-time login code for a user."""
        def issue() -> pb.LoginCode:
            code, expires = self._iam.issue_code(request.user, request.ttl_seconds)
            return pb.LoginCode(code=code, user=request.user, expires=expires)
        return self._managing(context, "user", request.user, issue)

    def RevokeTokens(self, request: pb.NameRef, context: grpc.ServicerContext
                     ) -> pb.RevokeReply:
        """Revoke every token and code of a user."""
        return self._managing(context, "user", request.name, lambda: pb.RevokeReply(
            revoked=self._iam.revoke_user(request.name)))

    # --- groups ----------------------------------------------------------------------------

    def PutGroup(self, request: pb.Group, context: grpc.ServicerContext) -> pb.Group:
        """Create or replace a group."""
        return self._managing(context, "group", request.name, lambda: group_message(
            self._iam.put_group(request.name, request.roles)))

    def ListGroups(self, request: pb.ListRequest, context: grpc.ServicerContext
                   ) -> pb.GroupList:
        """Every group."""
        return self._managing(context, "group", "*", lambda: pb.GroupList(
            groups=[group_message(g) for g in self._iam.groups()]))

    def DeleteGroup(self, request: pb.NameRef, context: grpc.ServicerContext
                    ) -> pb.DeleteReply:
        """Delete a group without members."""
        def delete() -> pb.DeleteReply:
            self._iam.delete_group(request.name)
            return pb.DeleteReply()
        return self._managing(context, "group", request.name, delete)

    # --- roles -----------------------------------------------------------------------------

    def PutRole(self, request: pb.Role, context: grpc.ServicerContext) -> pb.Role:
        """Create or replace a role (not a built-in one)."""
        return self._managing(context, "role", request.name, lambda: role_message(
            self._iam.put_role(request.name, [
                statement(s.effect, s.actions, s.resources) for s in request.statements])))

    def ListRoles(self, request: pb.ListRequest, context: grpc.ServicerContext
                  ) -> pb.RoleList:
        """Every role, built-in ones first."""
        return self._managing(context, "role", "*", lambda: pb.RoleList(
            roles=[role_message(r) for r in self._iam.roles().values()]))

    def DeleteRole(self, request: pb.NameRef, context: grpc.ServicerContext
                   ) -> pb.DeleteReply:
        """Delete a role nobody has."""
        def delete() -> pb.DeleteReply:
            self._iam.delete_role(request.name)
            return pb.DeleteReply()
        return self._managing(context, "role", request.name, delete)

    # --- the curtain -------------------------------------------------------------------------

    def SetCurtain(self, request: pb.Curtain, context: grpc.ServicerContext) -> pb.Curtain:
        """Draw or open the curtain over exec and port-forward."""
        def draw() -> pb.Curtain:
            self._iam.set_curtain(request.drawn)
            return pb.Curtain(drawn=self._iam.curtain)
        return self._managing(context, "setting", "curtain", draw)
