"""Saved plans (``fuzz plan -out FILE``): written atomically, readable only by their owner.

A plan names nodes, their provider ids and attributes, so it is encrypted exactly
like the state it was made from (see :mod:`fuzz.lifecycle.sealing`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from fuzz.engine.model import Plan
from fuzz.errors import ConfigError
from fuzz.fsutil import write_atomic
from fuzz.lifecycle.sealing import PLAINTEXT, PLAN_CONTEXT, Encryption

PLAN_FORMAT = "fuzz-plan/1"


def write_plan(path: Path, plan: Plan, spec_path: Path,
               encryption: Encryption = PLAINTEXT) -> None:
    """Save ``plan`` to ``path`` (mode 0600, atomic replace), sealed if encryption is on."""
    document = {
        "format": PLAN_FORMAT,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "spec": str(spec_path),
        "plan": plan.to_json(),
    }
    data = encryption.seal(json.dumps(document, indent=1).encode(), PLAN_CONTEXT)
    write_atomic(path, data, mode=0o600)


def read_plan(path: Path, encryption: Encryption = PLAINTEXT) -> Plan:
    """Load a saved plan (decrypting it if sealed), with a one-line error for anything else.

    A plaintext plan is accepted even while encryption is on: it is the user's own
    file, saved before encryption was turned on.
    """
    try:
        data = encryption.open(path.read_bytes(), PLAN_CONTEXT, f"plan file {path}",
                               allow_plaintext=True)
        document = json.loads(data)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such plan file") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a fuzz plan file ({exc})") from exc
    if not isinstance(document, dict) or document.get("format") != PLAN_FORMAT:
        raise ConfigError(f"{path}: not a fuzz plan file (expected format {PLAN_FORMAT})")
    try:
        return Plan.from_json(document["plan"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: damaged plan file ({type(exc).__name__}: {exc})") from None
