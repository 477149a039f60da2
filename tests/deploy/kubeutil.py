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


def pod() -> dict[str, Any]:
    """The Deployment's pod template."""
    return the("Deployment")["spec"]["template"]  # type: ignore[no-any-return]


def container() -> dict[str, Any]:
    """The pod's one container, the orchestrator."""
    containers = pod()["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]  # type: ignore[no-any-return]


def container_env() -> dict[str, str]:
    """The container's environment variables (plain values)."""
    return {variable["name"]: variable["value"] for variable in container()["env"]}


def mounts() -> dict[str, dict[str, Any]]:
    """The container's volume mounts by path."""
    return {mount["mountPath"]: mount for mount in container()["volumeMounts"]}


def mount_of(path: str) -> dict[str, Any]:
    """The deepest mount that holds ``path``."""
    holding = [m for p, m in mounts().items() if path == p or path.startswith(p + "/")]
    assert holding, f"nothing is mounted at {path}"
    return max(holding, key=lambda mount: len(mount["mountPath"]))


def volume(name: str) -> dict[str, Any]:
    """The pod's volume ``name``."""
    return next(v for v in pod()["spec"]["volumes"] if v["name"] == name)


def spec_document() -> dict[str, Any]:
    """The cluster spec in the ConfigMap, as plain data."""
    return yaml.safe_load(the("ConfigMap", "fuzz-spec")["data"]["fuzz.yaml"])  # type: ignore[no-any-return]
