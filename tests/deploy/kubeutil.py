"""The manifests of ``deploy/kubernetes/`` as data, for the tests of this folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

MANIFESTS = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"


@dataclass(frozen=True)
class Manifest:
    """One object of a manifest file."""

    file: str
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        """Its ``kind``."""
        return str(self.body["kind"])

    @property
    def name(self) -> str:
        """Its ``metadata.name``."""
        return str(self.body["metadata"]["name"])

    def label(self) -> str:
        """``file:Kind/name``, how a parametrised test names it."""
        return f"{self.file}:{self.kind}/{self.name}"


def manifests() -> list[Manifest]:
    """Every object of every ``*.yaml`` in deploy/kubernetes/, in file order."""
    return [Manifest(path.name, body) for path in sorted(MANIFESTS.glob("*.yaml"))
            for body in yaml.safe_load_all(path.read_text()) if body]


def the(kind: str, name: str | None = None) -> dict[str, Any]:
    """The one object of ``kind`` (named ``name``, when there are several)."""
    found = [m.body for m in manifests() if m.kind == kind and name in (None, m.name)]
    assert len(found) == 1, f"{len(found)} {kind} objects named {name!r} in {MANIFESTS}"
    return found[0]
