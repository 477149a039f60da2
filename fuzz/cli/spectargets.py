"""The ``orchestrator:`` block of a cluster spec, remembered for the spec's exact bytes.

A command run next to a cluster spec reaches the orchestrator its ``orchestrator:``
block declares. Reading the spec takes its pydantic models, about 0.15 CPU-s of every
start, and ``fuzz workflow exec``'s start is part of its figure against ``ssh HOST
cmd``. So once a spec has been read and validated, the few fields a client needs
(:class:`~fuzz.orchestrate.connect.SpecOrchestrator`) are kept under the spec's absolute
path with the SHA-256 of its bytes and this fuzz's version: any change to the file
reads and validates it again, problems reported as ever. The token, the CA and the
running endpoint are never kept: :func:`~fuzz.orchestrate.connect.orchestrator_target`
reads them each time.

They live in ``$XDG_CACHE_HOME/fuzz/spec-targets.json`` (``~/.cache``), replaced
whole by a rename; a file that cannot be read or written only makes a slower start.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import fuzz
from fuzz.orchestrate.connect import SpecOrchestrator

MAX_ENTRIES = 64  # the most recently remembered specs kept


def cache_path() -> Path:
    """Where the remembered blocks live."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fuzz" / "spec-targets.json"


def _key(spec_bytes: bytes) -> str:
    return f"{fuzz.__version__}:{hashlib.sha256(spec_bytes).hexdigest()}"


def _entries() -> dict[str, Any]:
    try:
        entries = json.loads(cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def recall(spec_path: Path, spec_bytes: bytes) -> SpecOrchestrator | None:
    """The block remembered for ``spec_path`` with exactly ``spec_bytes``, or None."""
    entry = _entries().get(str(spec_path.absolute()))
    if not isinstance(entry, dict) or entry.get("key") != _key(spec_bytes):
        return None
    try:
        return SpecOrchestrator(Path(entry["data_dir"]), str(entry["address"]),
                                bool(entry["replicated"]), bool(entry["insecure"]))
    except (KeyError, TypeError):
        return None


def remember(spec_path: Path, spec_bytes: bytes, block: SpecOrchestrator) -> None:
    """Keep ``block`` for ``spec_path`` with ``spec_bytes`` (read and validated)."""
    entries = _entries()
    name = str(spec_path.absolute())
    entries.pop(name, None)
    entries[name] = {"key": _key(spec_bytes), "data_dir": str(block.data_dir),
                     "address": block.address, "replicated": block.replicated,
                     "insecure": block.insecure}
    kept = dict(list(entries.items())[-MAX_ENTRIES:])
    path = cache_path()
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent,
                                         prefix=".spec-targets-", delete=False) as handle:
            json.dump(kept, handle)
        try:
            os.replace(handle.name, path)
        except OSError:
            os.unlink(handle.name)
            raise
