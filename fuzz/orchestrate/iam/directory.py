"""Who is who: users, groups, roles, tokens, login codes and the curtain, kept in the store.

Tokens and one-time login codes are random strings the server keeps only as
SHA-256 hashes, with an expiry; revoking marks the hash. An admin adds a user and
hands them a login code (``fuzz iam user add``); ``fuzz login`` spends the code
for a token of that user. Giving a user more (a role, a group, a wider role)
revokes their unspent login codes: a code is issued for the user as they were.
The data dir's ``admin.token`` is the bootstrap credential of the built-in
``admin`` user: whoever can read the data dir is admin.

Everything is held in memory (a cluster has few users) and written through to
the store, so a check costs no database query.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from fuzz.errors import FuzzError
from fuzz.orchestrate.iam.policy import (
    BUILTIN_ROLES,
    Role,
    Statement,
    Subject,
    check_name,
    statement,
)
from fuzz.orchestrate.records import (
    GroupRecord,
    RoleRecord,
    SettingRecord,
    TokenRecord,
    UserRecord,
)
from fuzz.orchestrate.store import Store
from fuzz.units import utc

ADMIN_USER = "admin"
DEFAULT_TOKEN_TTL = 30 * 86400.0
MAX_TOKEN_TTL = 365 * 86400.0
DEFAULT_CODE_TTL = 86400.0
CURTAIN_SETTING = "curtain"
TOKEN_PREFIX = "fzt_"
CODE_PREFIX = "fzc_"


class IamError(FuzzError):
    """A request about users, groups or roles that cannot be done as asked."""


class IamNotFoundError(IamError):
    """No such user, group or role."""


class AuthenticationError(FuzzError):
    """A token or login code that is unknown, expired, revoked or spent."""


@dataclass(frozen=True)
class Identity:
    """An authenticated caller: the user, their effective roles and groups, their token."""

    user: str
    roles: tuple[str, ...]
    groups: tuple[str, ...]
    token_hash: str
    expires: float

    @property
    def subject(self) -> Subject:
        """Who the policy engine sees: the user's groups are their accounts."""
        return Subject(self.user, self.roles, self.groups)


def token_hash(token: str) -> str:
    """How a token or code is stored and looked up."""
    return hashlib.sha256(token.encode()).hexdigest()


def _role_from(record: RoleRecord) -> Role:
    return Role(record.name, tuple(
        statement(str(s["effect"]), s["actions"], s["resources"]) for s in record.statements))


def _role_record(name: str, statements: Sequence[Statement]) -> RoleRecord:
    return RoleRecord(name, [{"effect": s.effect, "actions": list(s.actions),
                              "resources": list(s.resources)} for s in statements])


class IamDirectory:
    """Users, groups, roles, tokens and the curtain of one orchestrator."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        """Load everything from ``store``."""
        self._store = store
        self._clock = clock
        self._lock = threading.Lock()
        self._users = {u.name: u for u in store.load(UserRecord)}
        self._groups = {g.name: g for g in store.load(GroupRecord)}
        self._roles = {r.name: _role_from(r) for r in store.load(RoleRecord)}
        self._tokens = {t.token_hash: t for t in store.load(TokenRecord)}
        curtain = store.load(SettingRecord, name=CURTAIN_SETTING)
        self._curtain = bool(curtain) and curtain[0].value == "on"

    # --- tokens ------------------------------------------------------------------------

    def authenticate(self, token: str) -> Identity:
        """The identity ``token`` stands for; AuthenticationError saying why there is none."""
        digest = token_hash(token)
        with self._lock:
            record = self._tokens.get(digest)
            if record is None or record.user not in self._users:
                raise AuthenticationError("invalid bearer token")
            if record.kind == "code":
                raise AuthenticationError(
                    "that is a login code, not a token: use it with fuzz login")
            if record.revoked:
                raise AuthenticationError("the token was revoked")
            if record.expires and record.expires <= self._clock():
                raise AuthenticationError(
                    f"the token expired at {utc(record.expires)}: logging in again needs a "
                    f"new one-time login code: ask an admin for one (`fuzz iam user code "
                    f"{record.user}`), then run `fuzz login SERVER --code CODE`")
            user = self._users[record.user]
            return Identity(record.user, self._effective_roles(user), tuple(user.groups),
                            digest, record.expires)

    def ensure_admin(self, token: str) -> None:
        """Make ``token`` (the data dir's admin.token) a never-expiring token of ``admin``.

        A revoked admin token stays revoked; a new admin.token file makes a new one.
        """
        digest = token_hash(token)
        with self._lock:
            if digest in self._tokens:
                return
            now = self._clock()
            user = self._users.get(ADMIN_USER) or UserRecord(ADMIN_USER, [ADMIN_USER], [], now)
            if ADMIN_USER not in user.roles:
                user.roles.append(ADMIN_USER)
            record = TokenRecord(digest, ADMIN_USER, "admin", now, 0.0)
            self._store.save(user, record)
            self._users[ADMIN_USER] = user
            self._tokens[digest] = record

    def issue_code(self, user: str, ttl: float = 0.0) -> tuple[str, float]:
        """A one-time login code for ``user`` and when it expires."""
        code = CODE_PREFIX + secrets.token_urlsafe(24)
        expires = self._new_secret(code, user, "code", ttl or DEFAULT_CODE_TTL)
        return code, expires

    def login(self, code: str, ttl: float = 0.0) -> tuple[str, str, float]:
        """Spend a login code for a token: (token, user, expiry)."""
        digest = token_hash(code)
        with self._lock:
            record = self._tokens.get(digest)
            if record is None or record.kind != "code" or record.user not in self._users:
                raise AuthenticationError("unknown login code")
            if record.revoked:
                raise AuthenticationError("the login code was used or revoked already")
            if record.expires <= self._clock():
                raise AuthenticationError("the login code expired; ask for a new one")
            record.revoked = True
            self._store.save(record)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        expires = self._new_secret(token, record.user, "session",
                                   min(ttl or DEFAULT_TOKEN_TTL, MAX_TOKEN_TTL))
        return token, record.user, expires

    def _new_secret(self, secret: str, user: str, kind: str, ttl: float) -> float:
        if ttl <= 0:
            raise IamError("a lifetime must be positive")
        now = self._clock()
        record = TokenRecord(token_hash(secret), user, kind, now, now + ttl)
        with self._lock:
            if user not in self._users:
                raise IamNotFoundError(f"no user {user!r}")
            self._store.save(record)
            self._tokens[record.token_hash] = record
        return record.expires

    def revoke(self, digest: str) -> None:
        """Revoke the token stored as ``digest``."""
        with self._lock:
            record = self._tokens.get(digest)
            if record is not None and not record.revoked:
                record.revoked = True
                self._store.save(record)

    def revoke_user(self, user: str) -> int:
        """Revoke every token and code of ``user``; how many were live."""
        with self._lock:
            if user not in self._users:
                raise IamNotFoundError(f"no user {user!r}")
            live = [t for t in self._tokens.values() if t.user == user and not t.revoked]
            for record in live:
                record.revoked = True
            if live:
                self._store.save(*live)
            return len(live)

    # --- users, groups and roles -------------------------------------------------------

    def put_user(self, name: str, roles: Iterable[str], groups: Iterable[str]) -> UserRecord:
        """Create or replace user ``name`` with these roles and groups (which must exist)."""
        roles, groups = sorted(set(roles)), sorted(set(groups))
        with self._lock:
            self._require(check_name("user", name), roles, groups)
            known = self._users.get(name)
            record = UserRecord(name, roles, groups, known.created if known else self._clock())
            self._store.save(record)
            self._users[name] = record
            if known is not None and (set(roles) - set(known.roles) or
                                      set(groups) - set(known.groups)):
                self._revoke_codes({name})
            return record

    def user(self, name: str) -> UserRecord | None:
        """User ``name``, or None when there is none."""
        with self._lock:
            return self._users.get(name)

    def user_roles(self, name: str) -> tuple[str, ...]:
        """The roles user ``name`` has, their own and their groups'; IamNotFoundError if none."""
        with self._lock:
            if name not in self._users:
                raise IamNotFoundError(f"no user {name!r}")
            return self._effective_roles(self._users[name])

    def delete_user(self, name: str) -> None:
        """Delete user ``name`` and revoke all they hold."""
        self.revoke_user(name)
        with self._lock:
            self._store.delete(self._users.pop(name))

    def users(self) -> list[UserRecord]:
        """Every user, by name."""
        with self._lock:
            return [self._users[n] for n in sorted(self._users)]

    def put_group(self, name: str, roles: Iterable[str]) -> GroupRecord:
        """Create or replace group ``name`` with these roles (which must exist)."""
        roles = sorted(set(roles))
        with self._lock:
            self._require(check_name("group", name), roles, ())
            known = self._groups.get(name)
            record = GroupRecord(name, roles)
            self._store.save(record)
            self._groups[name] = record
            if known is not None and set(roles) - set(known.roles):
                self._revoke_codes({u.name for u in self._users.values() if name in u.groups})
            return record

    def group(self, name: str) -> GroupRecord | None:
        """Group ``name``, or None when there is none."""
        with self._lock:
            return self._groups.get(name)

    def delete_group(self, name: str) -> None:
        """Delete group ``name``; IamError while a user belongs to it."""
        with self._lock:
            if name not in self._groups:
                raise IamNotFoundError(f"no group {name!r}")
            members = [u.name for u in self._users.values() if name in u.groups]
            if members:
                raise IamError(f"group {name!r} still has members: {', '.join(sorted(members))}")
            self._store.delete(self._groups.pop(name))

    def groups(self) -> list[GroupRecord]:
        """Every group, by name."""
        with self._lock:
            return [self._groups[n] for n in sorted(self._groups)]

    def put_role(self, name: str, statements: Sequence[Statement]) -> Role:
        """Create or replace role ``name``; built-in roles cannot be changed."""
        check_name("role", name)
        if name in BUILTIN_ROLES:
            raise IamError(f"role {name!r} is built in and cannot be changed")
        if not statements:
            raise IamError(f"role {name!r} needs at least one statement")
        role = Role(name, tuple(statements))
        with self._lock:
            self._store.save(_role_record(name, statements))
            known = self._roles.get(name)
            self._roles[name] = role
            if known is not None and known.statements != role.statements:
                self._revoke_codes({u.name for u in self._users.values()
                                    if name in self._effective_roles(u)})
        return role

    def delete_role(self, name: str) -> None:
        """Delete role ``name``; IamError while a user or group has it."""
        if name in BUILTIN_ROLES:
            raise IamError(f"role {name!r} is built in and cannot be deleted")
        with self._lock:
            if name not in self._roles:
                raise IamNotFoundError(f"no role {name!r}")
            holders = [f"user {u.name}" for u in self._users.values() if name in u.roles]
            holders += [f"group {g.name}" for g in self._groups.values() if name in g.roles]
            if holders:
                raise IamError(f"role {name!r} is still given to {', '.join(sorted(holders))}")
            self._store.delete(RoleRecord(name))
            del self._roles[name]

    def roles(self) -> dict[str, Role]:
        """Every role, built-in ones first."""
        with self._lock:
            return {**BUILTIN_ROLES, **dict(sorted(self._roles.items()))}

    def _require(self, name: str, roles: Iterable[str], groups: Iterable[str]) -> None:
        for role in roles:
            if role not in BUILTIN_ROLES and role not in self._roles:
                raise IamNotFoundError(f"{name}: no role {role!r}")
        for group in groups:
            if group not in self._groups:
                raise IamNotFoundError(f"{name}: no group {group!r} (create it first)")

    def _revoke_codes(self, users: set[str]) -> None:
        """Revoke the unspent login codes of ``users`` (the lock is held)."""
        codes = [t for t in self._tokens.values()
                 if t.user in users and t.kind == "code" and not t.revoked]
        for record in codes:
            record.revoked = True
        if codes:
            self._store.save(*codes)

    def _effective_roles(self, user: UserRecord) -> tuple[str, ...]:
        roles = set(user.roles)
        for group in user.groups:
            known = self._groups.get(group)
            roles.update(known.roles if known else ())
        return tuple(sorted(roles))

    # --- the curtain -------------------------------------------------------------------

    @property
    def curtain(self) -> bool:
        """Whether exec and port-forward are off for everyone."""
        return self._curtain

    def set_curtain(self, drawn: bool) -> None:
        """Draw (True) or open the curtain."""
        with self._lock:
            self._store.save(SettingRecord(CURTAIN_SETTING, "on" if drawn else "off"))
            self._curtain = drawn

