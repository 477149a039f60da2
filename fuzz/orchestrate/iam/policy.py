"""The policy engine: may a user do an action on a resource? Pure, no I/O.

A role is a named policy document: a list of statements, each allowing or denying
some actions on some resources. Actions and resources are glob patterns
(``workflow:*``, ``workflow/alice/*``); ``${user}`` in a resource pattern stands
for the user asking, ``${account}`` for each account (IAM group) they are a member
of. A decision looks at every statement of every role the user
has (their own and their groups'): any matching deny wins, else any matching allow
allows, else it is denied (nothing allows it).

Resources are named ``workflow/<owner>/<name>``, ``secret/<owner>/<name>``,
``account/<account>`` and ``account/<account>/secret/<name>`` (an account's secrets),
``node/<name>``, ``cluster/<name>`` and ``iam/<kind>/<name>``; see
:data:`ACTIONS` for the actions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Literal, cast

from fuzz.spec.names import iam_name_problem

Effect = Literal["allow", "deny"]
USER_VARIABLE = "${user}"
ACCOUNT_VARIABLE = "${account}"

ACTIONS: Mapping[str, str] = {
    "workflow:start": "start a workflow (a new run of a name one owns)",
    "workflow:read": "see a workflow: status, describe, list, logs",
    "workflow:cancel": "cancel a workflow",
    "workflow:exec": "run a process in a running job",
    "workflow:port-forward": "reach a port of a running job",
    "secret:create": "store a secret",
    "secret:read": "list secrets (names and sizes, never values)",
    "secret:delete": "delete a secret",
    "secret:use": "use a secret in a workflow (image pulls, transfers)",
    "account:use": "run a workflow in an account (account/<name>): its secrets and "
                   "persistent volumes",
    "node:read": "list the cluster's nodes",
    "node:drain": "cordon, uncordon and drain nodes, and see the tasks running on them",
    "cluster:apply": "create nodes (issue join tokens)",
    "cache:read": "list the ingress cache (cluster/<name>): every user's cached sources",
    "cache:prune": "empty the ingress cache (cluster/<name>)",
    "iam:manage": "manage users, groups, roles, login codes, tokens and the curtain",
    "iam:grant": "give a role (iam/role/<name>) to users and groups, or put users in a group "
                 "(iam/group/<name>)",
}
WORKFLOW_EXEC = "workflow:exec"
WORKFLOW_PORT_FORWARD = "workflow:port-forward"
CURTAINED_ACTIONS = (WORKFLOW_EXEC, WORKFLOW_PORT_FORWARD)


class PolicyError(ValueError):
    """A statement or role that cannot be used (unknown action, bad effect or name)."""


def check_name(kind: str, name: str) -> str:
    """``name`` when it is a valid user, group or role name; PolicyError otherwise."""
    problem = iam_name_problem(kind, name)
    if problem is not None:
        raise PolicyError(problem)
    return name


@dataclass(frozen=True)
class Statement:
    """Allow or deny ``actions`` on ``resources`` (glob patterns)."""

    effect: Effect
    actions: tuple[str, ...]
    resources: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.actions or not self.resources:
            raise PolicyError("a statement needs at least one action and one resource")
        for pattern in self.actions:
            if not any(fnmatchcase(action, pattern) for action in ACTIONS):
                raise PolicyError(f"action {pattern!r} matches no action (known: "
                                  f"{', '.join(ACTIONS)})")

    def matches(self, action: str, resource: str, user: str, accounts: Sequence[str] = ()
                ) -> bool:
        """Whether this statement speaks about ``user``, a member of ``accounts``, doing
        ``action`` on ``resource``. A pattern with ``${account}`` matches when it does for
        one of ``accounts`` (none: it matches nothing)."""
        return any(fnmatchcase(action, a) for a in self.actions) and any(
            fnmatchcase(resource, pattern) for r in self.resources
            for pattern in _expanded(r, user, accounts))


def _expanded(pattern: str, user: str, accounts: Sequence[str]) -> list[str]:
    """``pattern`` with ``${user}`` put in, once per account where it has ``${account}``.

    An account name never holds a glob character (IAM names are letters, digits,
    ``.``, ``_`` and ``-``), so putting it into a pattern keeps it literal.
    """
    pattern = pattern.replace(USER_VARIABLE, user)
    if ACCOUNT_VARIABLE not in pattern:
        return [pattern]
    return [pattern.replace(ACCOUNT_VARIABLE, account) for account in accounts]


@dataclass(frozen=True)
class Role:
    """A named policy document; built-in roles cannot be changed."""

    name: str
    statements: tuple[Statement, ...]
    builtin: bool = False


@dataclass(frozen=True)
class Decision:
    """The outcome of a check and why."""

    allowed: bool
    reason: str


@dataclass(frozen=True)
class Subject:
    """Who asks: a user, the roles they have (own and through groups), by name, and the
    accounts (groups) they are a member of."""

    user: str
    roles: tuple[str, ...] = ()
    accounts: tuple[str, ...] = ()


def _own(*actions: str) -> Statement:
    return Statement("allow", actions, (f"workflow/{USER_VARIABLE}/*",))


def _accounts(*secret_actions: str) -> tuple[Statement, ...]:
    """Running in one's accounts and ``secret_actions`` on their secrets."""
    return (Statement("allow", ("account:use",), (f"account/{ACCOUNT_VARIABLE}",)),
            Statement("allow", secret_actions, (f"account/{ACCOUNT_VARIABLE}/secret/*",)))


BUILTIN_ROLES: Mapping[str, Role] = {
    "admin": Role("admin", (Statement("allow", ("*",), ("*",)),), builtin=True),
    "user": Role("user", (
        _own("workflow:*"),
        Statement("allow", ("secret:*",), (f"secret/{USER_VARIABLE}/*",)),
        *_accounts("secret:*"),
        Statement("allow", ("node:read",), ("node/*",)),
    ), builtin=True),
    "submit-only": Role("submit-only", (
        _own("workflow:start", "workflow:read", "workflow:cancel"),
        Statement("allow", ("secret:use",), (f"secret/{USER_VARIABLE}/*",)),
        *_accounts("secret:use"),
    ), builtin=True),
}
CURTAIN = Role("curtain", (Statement("deny", CURTAINED_ACTIONS, ("*",)),), builtin=True)


def decide(subject: Subject, action: str, resource: str, roles: Mapping[str, Role],
           curtain: bool = False) -> Decision:
    """May ``subject`` do ``action`` on ``resource``, given the ``roles`` defined?

    Deny wins over allow; nothing matching is a deny. With ``curtain`` drawn,
    :data:`CURTAINED_ACTIONS` are denied to everyone. Roles the subject names that
    are not defined give nothing.
    """
    applying = [roles[name] for name in subject.roles if name in roles]
    if curtain:
        applying.insert(0, CURTAIN)
    allowed_by: str | None = None
    for role in applying:
        for statement in role.statements:
            if not statement.matches(action, resource, subject.user, subject.accounts):
                continue
            if statement.effect == "deny":
                return Decision(False, f"denied by role {role.name!r}")
            allowed_by = allowed_by or role.name
    if allowed_by is not None:
        return Decision(True, f"allowed by role {allowed_by!r}")
    return Decision(False, "no role allows it")


def statement(effect: str, actions: Iterable[str], resources: Iterable[str]) -> Statement:
    """A statement from untyped parts (a request, a file); PolicyError when it is invalid."""
    if effect not in ("allow", "deny"):
        raise PolicyError(f"effect must be allow or deny, not {effect!r}")
    return Statement(cast(Effect, effect), tuple(actions), tuple(resources))


def statements_from(data: Sequence[Mapping[str, object]]) -> tuple[Statement, ...]:
    """Statements from plain data (a policy document's ``statements:``); PolicyError if bad."""
    statements = []
    for index, item in enumerate(data):
        unknown = set(item) - {"effect", "actions", "resources"}
        if unknown:
            raise PolicyError(f"statements[{index}]: unknown keys {sorted(unknown)}")
        try:
            statements.append(statement(str(item.get("effect", "")),
                                        _strings(item.get("actions")),
                                        _strings(item.get("resources"))))
        except PolicyError as exc:
            raise PolicyError(f"statements[{index}]: {exc}") from None
    return tuple(statements)


def _strings(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Iterable) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise PolicyError("actions and resources must be strings or lists of strings")
