"""Which ``state:`` block a spec was last used with, kept in ``.fuzz/backend.json``.

Like Terraform's record of the initialised backend: when the spec's ``state:``
block names another backend (or other backend settings) than the one recorded,
commands refuse to run until ``fuzz init --migrate-state`` moves the state or
``fuzz init --reconfigure`` accepts the new backend as it is. Without this, an
edited spec would silently start from empty state and treat every existing node
as an orphan. The record holds the block as written (environment variable names,
never passphrases), keyed by the spec's file name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from fuzz.errors import StateError
from fuzz.fsutil import write_atomic
from fuzz.spec.cluster import StateSpec

RECORD = Path(".fuzz") / "backend.json"


def _record_path(spec_path: Path) -> Path:
    return spec_path.absolute().parent / RECORD


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise StateError(f"{path} is unreadable ({exc}); remove it and run fuzz init") from exc
    return data if isinstance(data, dict) else {}


def recorded_state_block(spec_path: Path) -> StateSpec | None:
    """The ``state:`` block last used with this spec, or None if there is no record."""
    path = _record_path(spec_path)
    block = _load(path).get(spec_path.name)
    if block is None:
        return None
    try:
        return StateSpec.model_validate(block)
    except ValidationError:
        raise StateError(f"{path}: the record for {spec_path.name} is damaged; remove it and "
                         "run fuzz init") from None


def record_state_block(spec_path: Path, block: StateSpec) -> None:
    """Record ``block`` as the one used with this spec (atomic replace)."""
    path = _record_path(spec_path)
    records = _load(path)
    entry = block.model_dump(mode="json", exclude_none=True)
    if records.get(spec_path.name) == entry:
        return
    records[spec_path.name] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(records, indent=2, sort_keys=True).encode(), mode=0o600,
                 durable=False)


def same_backend(old: StateSpec, new: StateSpec) -> bool:
    """True when both blocks name the same backend with the same settings, as written.

    (Blocks written differently may still name the same place, e.g. a default
    spelled out; callers then compare the backends' descriptions.)

    Encryption settings do not count: changing them needs ``fuzz state rekey``,
    not a migration.
    """
    return old.backend == new.backend and old.backend_config() == new.backend_config()

