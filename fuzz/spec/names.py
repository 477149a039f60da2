"""Names of users, groups and roles: what a spec, a workflow reference and IAM accept.

One rule for all of them, checked where they are written (``OWNER/NAME`` workflow
references) and where they are made (:mod:`fuzz.orchestrate.policy`).
"""

from __future__ import annotations

import re

IAM_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
"""User, group and role names: lowercase letters, digits, '.', '_' and '-', at most 64."""


def iam_name_problem(kind: str, name: str) -> str | None:
    """Why ``name`` is no valid ``kind`` (user, group, role, owner) name; None when it is."""
    if IAM_NAME_PATTERN.match(name):
        return None
    return (f"invalid {kind} name {name!r}: use 1-64 lowercase letters, digits, "
            "'.', '_' or '-', starting with a letter or digit")
