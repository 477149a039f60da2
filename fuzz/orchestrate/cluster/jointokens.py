"""Join tokens: issued for one node name, short-lived, the newest one for a name voiding the rest.

A join token lets a new node prove it is the node it was issued for: it spends it
for its certificate (``EnrollNode``) or, in a plain-text cluster, shows it at every
registration. Only SHA-256 hashes are stored. A token expires ``ttl`` seconds after
it was issued (the cluster spec's ``orchestrator.join_token_ttl``, one hour by
default); issuing a new token for a node name voids every older one for that name
at once, so a leaked token of a re-created node is worthless.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

from fuzz.errors import FuzzError
from fuzz.orchestrate.records import JoinTokenRecord
from fuzz.orchestrate.store import Store
from fuzz.units import utc

DEFAULT_JOIN_TOKEN_TTL = 3600.0


class JoinRefusedError(FuzzError):
    """A registration with a wrong join token, or from an agent that cannot be reached."""


def join_token_hash(token: str) -> str:
    """How a join token is stored and looked up."""
    return hashlib.sha256(token.encode()).hexdigest()


class JoinTokens:
    """Issues join tokens and says whether one is still good for a node."""

    def __init__(self, store: Store, ttl: float = DEFAULT_JOIN_TOKEN_TTL,
                 clock: Callable[[], float] = time.time) -> None:
        """Keep the tokens' hashes in ``store``; each lives ``ttl`` seconds."""
        if ttl <= 0:
            raise ValueError("a join token's lifetime must be positive")
        self._store = store
        self._ttl = ttl
        self._clock = clock

    def issue(self, node: str) -> str:
        """A new join token for the node called ``node``; older ones for it are void."""
        token = secrets.token_urlsafe(32)
        self._store.save(JoinTokenRecord(join_token_hash(token), node, self._clock()))
        return token

    def check(self, name: str, join_token: str, *, expired_ok: bool = False) -> str:
        """The hash of ``join_token`` when it is node ``name``'s newest and unexpired one.

        ``expired_ok`` lets an expired (still newest) token pass: a plain-text node
        that joined with it shows it at every heartbeat. Raises JoinRefusedError
        saying which of the three it is not.
        """
        digest = join_token_hash(join_token)
        issued = self._store.load(JoinTokenRecord, token_hash=digest)
        if not issued or not hmac.compare_digest(issued[0].node, name):
            raise JoinRefusedError(f"node {name!r}: the join token was not issued for it")
        newest = self._store.load(JoinTokenRecord, order_by="created DESC", node=name)[0]
        if newest.token_hash != digest:
            raise JoinRefusedError(f"node {name!r}: the join token is void: a newer one was "
                                   f"issued for this node at {utc(newest.created)}")
        expires = issued[0].created + self._ttl
        if not expired_ok and expires <= self._clock():
            raise JoinRefusedError(f"node {name!r}: the join token expired at {utc(expires)} "
                                   "(orchestrator.join_token_ttl); issue a new one")
        return digest
