"""Who may reach into a running job: the seam where IAM policies plug in.

Every orchestrator RPC that reaches into a running job (exec, port-forward)
calls :meth:`Authorizer.authorize` exactly once, with the action and the
workflow as a resource (``workflow/OWNER/NAME``), before it does anything else.
Today's :class:`AdminOnly` lets the admin token through and nothing else; IAM
(users, groups, roles and policies, the curtain, the audit log) replaces it
without touching the RPCs.
"""

from __future__ import annotations

from typing import Protocol

import grpc

from fuzz.substrate.auth import check_authorization

WORKFLOW_EXEC = "workflow:exec"
WORKFLOW_PORT_FORWARD = "workflow:port-forward"


def workflow_resource(owner: str, name: str) -> str:
    """The resource name a policy matches a workflow by, e.g. ``workflow/alice/notebook``."""
    return f"workflow/{owner}/{name}"


class Authorizer(Protocol):
    """Decides whether the caller of an RPC may do an action on a resource."""

    def authorize(self, context: grpc.ServicerContext, action: str, resource: str) -> None:
        """Return when the caller may; otherwise end the call with PERMISSION_DENIED."""


class AdminOnly:
    """Allows the holder of the admin token everything, and anyone else nothing."""

    def __init__(self, admin_token: str) -> None:
        """Allow callers that present ``admin_token``."""
        self._token = admin_token

    def authorize(self, context: grpc.ServicerContext, action: str, resource: str) -> None:
        """Let the admin token through; PERMISSION_DENIED for any other caller."""
        if check_authorization(self._token, context.invocation_metadata() or ()) is not None:
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"{action} on {resource} is allowed to the admin only")
