"""A client for the orchestrator's Iam API (`fuzz login`, `fuzz whoami`, `fuzz iam ...`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from fuzz.api import iam_pb2 as pb
from fuzz.api import iam_pb2_grpc
from fuzz.clients.orchestrator import OrchestratorClient
from fuzz.rpc.client import DEFAULT_TIMEOUT, ClientTls


class StatementFields(Protocol):
    """What a role statement sends: :class:`fuzz.orchestrate.iam.policy.Statement` has it.

    A protocol, so that this client does not import the orchestrator's policy code.
    """

    @property
    def effect(self) -> str:
        """``allow`` or ``deny``."""

    @property
    def actions(self) -> Sequence[str]:
        """Action globs."""

    @property
    def resources(self) -> Sequence[str]:
        """Resource globs."""


class IamClient(OrchestratorClient):
    """Talk to the Iam service of the orchestrator at ``endpoint`` with ``token``.

    Failures become the same one-line errors as the orchestrator client's.
    """

    def __init__(self, endpoint: str, token: str, timeout: float = DEFAULT_TIMEOUT,
                 tls: ClientTls | None = None) -> None:
        """Open a channel (TLS as ``tls`` says, plain text without); nothing is sent yet."""
        super().__init__(endpoint, token, timeout, tls)
        self._iam = iam_pb2_grpc.IamStub(self._channel)

    def login(self, code: str, ttl_seconds: float = 0.0) -> pb.Session:
        """Spend a login code for a token."""
        reply: pb.Session = self._call(
            self._iam.Login, pb.LoginRequest(code=code, ttl_seconds=ttl_seconds), None)
        return reply

    def whoami(self) -> pb.Identity:
        """Who this client's token says it is."""
        reply: pb.Identity = self._call(self._iam.WhoAmI, pb.WhoAmIRequest(), None)
        return reply

    def logout(self) -> None:
        """Revoke this client's token."""
        self._call(self._iam.Logout, pb.LogoutRequest(), None)

    def put_user(self, name: str, roles: Iterable[str], groups: Iterable[str]) -> pb.User:
        """Create or replace a user."""
        reply: pb.User = self._call(self._iam.PutUser, pb.User(
            name=name, roles=list(roles), groups=list(groups)), None)
        return reply

    def users(self) -> list[pb.User]:
        """Every user."""
        return list(self._call(self._iam.ListUsers, pb.ListRequest(), None).users)

    def delete_user(self, name: str) -> None:
        """Delete a user (their tokens are revoked)."""
        self._call(self._iam.DeleteUser, pb.NameRef(name=name), None)

    def issue_login_code(self, user: str, ttl_seconds: float = 0.0) -> pb.LoginCode:
        """A one-time login code for ``user``."""
        reply: pb.LoginCode = self._call(self._iam.IssueLoginCode, pb.LoginCodeRequest(
            user=user, ttl_seconds=ttl_seconds), None)
        return reply

    def revoke_tokens(self, user: str) -> int:
        """Revoke every token and code of ``user``; how many were live."""
        return int(self._call(self._iam.RevokeTokens, pb.NameRef(name=user), None).revoked)

    def put_group(self, name: str, roles: Iterable[str]) -> pb.Group:
        """Create or replace a group."""
        reply: pb.Group = self._call(self._iam.PutGroup, pb.Group(name=name, roles=list(roles)),
                                     None)
        return reply

    def groups(self) -> list[pb.Group]:
        """Every group."""
        return list(self._call(self._iam.ListGroups, pb.ListRequest(), None).groups)

    def delete_group(self, name: str) -> None:
        """Delete a group."""
        self._call(self._iam.DeleteGroup, pb.NameRef(name=name), None)

    def put_role(self, name: str, statements: Iterable[StatementFields]) -> pb.Role:
        """Create or replace a role."""
        reply: pb.Role = self._call(self._iam.PutRole, pb.Role(name=name, statements=[
            pb.Statement(effect=s.effect, actions=s.actions, resources=s.resources)
            for s in statements]), None)
        return reply

    def roles(self) -> list[pb.Role]:
        """Every role, built-in ones first."""
        return list(self._call(self._iam.ListRoles, pb.ListRequest(), None).roles)

    def delete_role(self, name: str) -> None:
        """Delete a role."""
        self._call(self._iam.DeleteRole, pb.NameRef(name=name), None)

    def set_curtain(self, drawn: bool) -> bool:
        """Draw or open the curtain; whether it is drawn now."""
        return bool(self._call(self._iam.SetCurtain, pb.Curtain(drawn=drawn), None).drawn)
