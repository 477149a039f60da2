"""Saved plans (``fuzz plan -out FILE``): written atomically, readable only by their owner."""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from fuzz.engine.model import Plan
from fuzz.errors import ConfigError

PLAN_FORMAT = "fuzz-plan/1"


def write_plan(path: Path, plan: Plan, spec_path: Path) -> None:
    """Save ``plan`` to ``path`` (mode 0600, atomic replace)."""
    document = {
        "format": PLAN_FORMAT,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "spec": str(spec_path),
        "plan": plan.to_json(),
    }
    directory = path.parent if str(path.parent) else Path(".")
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(document, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def read_plan(path: Path) -> Plan:
    """Load a saved plan, with a one-line error for anything that is not one."""
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such plan file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a fuzz plan file ({exc})") from None
    if not isinstance(document, dict) or document.get("format") != PLAN_FORMAT:
        raise ConfigError(f"{path}: not a fuzz plan file (expected format {PLAN_FORMAT})")
    try:
        return Plan.from_json(document["plan"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: damaged plan file ({type(exc).__name__}: {exc})") from None
