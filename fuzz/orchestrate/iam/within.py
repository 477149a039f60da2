"""Whether one set of permissions lies within another: what a delegate may give away. Pure.

A caller may give (a role, a group, a login code of a user) only what they have
themselves. :func:`exceeding` finds the first allow statement of what is given
that the caller's own statements do not cover. It is conservative: when it cannot
prove that a pattern of the given statement lies within one of the caller's, it
says it does not.

- Actions are checked exactly: a pattern stands for the known actions it matches
  (:data:`~fuzz.orchestrate.iam.policy.ACTIONS`).
- Resource patterns (``fnmatch`` globs) are compared token by token
  (:func:`covers`): a literal character only by the same character; ``?`` and a
  ``[...]`` class by a ``?``, or a class holding that literal; a ``*`` of the
  caller by any run of tokens. ``${user}`` is compared as a template: it is covered
  by the caller's ``${user}`` at the same place (both stand for whoever holds the
  role) or by a ``*``, never by a literal name; ``${account}`` likewise (each account
  of whoever holds the role).
- A deny statement of the caller that may overlap (:func:`may_overlap`) a given
  allow for the same action makes it exceed: the caller cannot do it either.
- Deny statements of what is given only take away, so they are not looked at.

Hand-written: no library decides inclusion between two glob patterns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import cache, lru_cache

from fuzz.orchestrate.iam.policy import ACCOUNT_VARIABLE, ACTIONS, USER_VARIABLE, Statement

_STAR, _ANY, _VARIABLE, _CLASS, _LITERAL = "*", "?", "variable", "class", "literal"
_VARIABLES = (USER_VARIABLE, ACCOUNT_VARIABLE)
Token = tuple[str, str]
"""(kind, text): a literal character, ``*``, ``?``, a ``[...]`` class or a variable
(``${user}``, ``${account}``)."""


@lru_cache(maxsize=4096)
def tokens(pattern: str) -> tuple[Token, ...]:
    """``pattern`` as glob tokens (an unclosed ``[`` is a literal, as in ``fnmatch``)."""
    found: list[Token] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        variable = next((v for v in _VARIABLES if pattern.startswith(v, index)), None)
        if variable is not None:
            found.append((_VARIABLE, variable))
            index += len(variable)
            continue
        if char in (_STAR, _ANY):
            found.append((char, char))
        elif char == "[":
            end = index + 1
            end += pattern[end:end + 1] == "!"
            end += pattern[end:end + 1] == "]"
            close = pattern.find("]", end)
            if close >= 0:
                found.append((_CLASS, pattern[index:close + 1]))
                index = close + 1
                continue
            found.append((_LITERAL, char))
        else:
            found.append((_LITERAL, char))
        index += 1
    return tuple(found)


@lru_cache(maxsize=4096)
def covers(outer: str, inner: str) -> bool:
    """Whether every resource ``inner`` matches is matched by ``outer`` (False when unsure)."""
    wide, narrow = tokens(outer), tokens(inner)

    @cache
    def from_(i: int, j: int) -> bool:
        if i == len(wide):
            return j == len(narrow)
        kind, text = wide[i]
        if kind == _STAR:
            return from_(i + 1, j) or (j < len(narrow) and from_(i, j + 1))
        if j == len(narrow):
            return False
        other, other_text = narrow[j]
        if kind == _LITERAL:
            same = other == _LITERAL and other_text == text
        elif kind == _ANY:
            same = other in (_LITERAL, _ANY, _CLASS)
        elif kind == _CLASS:
            same = other == _LITERAL and fnmatchcase(other_text, text)
        else:  # ${user}, ${account}: the same holder's on both sides
            same = other == _VARIABLE and other_text == text
        return same and from_(i + 1, j + 1)

    return from_(0, 0)


def _literal_ends(pattern: str) -> tuple[str, str, bool]:
    """The literal text a pattern's matches start and end with, and whether it is all literal."""
    found = tokens(pattern)
    wild = [k for k, (kind, _) in enumerate(found) if kind != _LITERAL]
    if not wild:
        return pattern, pattern, True
    prefix = "".join(text for _, text in found[:wild[0]])
    suffix = "".join(text for _, text in found[wild[-1] + 1:])
    return prefix, suffix, False


def may_overlap(first: str, second: str) -> bool:
    """Whether some resource may match both patterns (True unless they are surely disjoint)."""
    head_a, tail_a, literal_a = _literal_ends(first)
    head_b, tail_b, literal_b = _literal_ends(second)
    if literal_a and literal_b:
        return head_a == head_b
    shortest = min(len(head_a), len(head_b))
    if head_a[:shortest] != head_b[:shortest]:
        return False
    shortest = min(len(tail_a), len(tail_b))
    return tail_a[len(tail_a) - shortest:] == tail_b[len(tail_b) - shortest:]


def actions_of(statement: Statement) -> frozenset[str]:
    """The known actions ``statement``'s action patterns stand for."""
    return frozenset(a for a in ACTIONS if any(fnmatchcase(a, p) for p in statement.actions))


@dataclass(frozen=True)
class Excess:
    """An allow statement (of the named role) that goes beyond the caller's permissions."""

    role: str
    statement: Statement

    def describe(self) -> str:
        """``role R allows ACTIONS on RESOURCES``, as the statement writes them."""
        return (f"role {self.role} allows {', '.join(self.statement.actions)} on "
                f"{', '.join(self.statement.resources)}")


def _within(given: Statement, own: Sequence[Statement]) -> bool:
    allows = [(actions_of(s), s.resources) for s in own if s.effect == "allow"]
    denies = [(actions_of(s), s.resources) for s in own if s.effect == "deny"]
    for action in actions_of(given):
        for pattern in given.resources:
            if not any(action in acts and any(covers(mine, pattern) for mine in resources)
                       for acts, resources in allows):
                return False
            if any(action in acts and any(may_overlap(mine, pattern) for mine in resources)
                   for acts, resources in denies):
                return False
    return True


def exceeding(given: Mapping[str, Iterable[Statement]], own: Sequence[Statement]
              ) -> Excess | None:
    """The first allow statement of the ``given`` roles (name -> statements) not within ``own``."""
    for role, statements in given.items():
        for statement in statements:
            if statement.effect == "allow" and not _within(statement, own):
                return Excess(role, statement)
    return None
