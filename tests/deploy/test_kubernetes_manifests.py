"""deploy/kubernetes/: every object validates against the Kubernetes schemas (offline,
``kubernetes-validate``), is locked down, and agrees with the spec it carries and with
the files and ports ``fuzz server`` uses."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from fuzz.orchestrate.connect import CA_FILE, TOKEN_FILE
from fuzz.orchestrate.datadir import CA_KEY_FILE
from fuzz.orchestrate.server import KEY_FILE
from fuzz.spec.cluster import OrchestratorSpec
from fuzz.spec.loader import load_cluster_spec
from fuzz.testing.server_image import ImageDefinition
from tests.deploy.kubeutil import (
    Manifest,
    container,
    container_env,
    manifests,
    mount_of,
    mounts,
    pod,
    spec_document,
    the,
    volume,
)

KUBERNETES_VERSIONS = ("1.30.0", "1.34.0")
"""The oldest and newest Kubernetes releases the manifests are checked against."""
HEALTH_PATH, READY_PATH = "/healthz", "/readyz"
"""What the metrics port answers to liveness and readiness probes."""
ALLOWED_CAPABILITIES = {"CHOWN", "FOWNER", "DAC_OVERRIDE", "SETUID", "SETGID"}
"""What volumes take (a directory given to the job owner, transfers as the owner, the
quota walk: tests/deploy/test_server_image.py runs them with these); nothing else."""
BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL",
                         "MKNOD", "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP",
                         "SETUID", "SYS_CHROOT"}
"""What the Pod Security Standard "baseline" lets a container add (the namespace enforces it)."""


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("manifest", manifests(), ids=Manifest.label)
def test_every_manifest_validates(manifest: Manifest, version: str) -> None:
    kubernetes_validate.validate(manifest.body, version, strict=True)


def test_validation_rejects_a_misspelt_field() -> None:
    deployment = copy.deepcopy(the("Deployment"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["readOnlyRootFileSystem"] = True  # sic: FileSystem
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)








def _orchestrator(tmp_path: Path) -> OrchestratorSpec:
    """The ConfigMap's spec as fuzz reads it."""
    document = spec_document()
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(document))
    orchestrator = load_cluster_spec(path).spec.orchestrator
    assert orchestrator is not None
    return orchestrator


def _port(address: str) -> int:
    return int(address.rpartition(":")[2])


def _container_ports() -> dict[str, int]:
    return {port["name"]: port["containerPort"] for port in container()["ports"]}








def test_the_container_is_locked_down() -> None:
    spec = pod()["spec"]
    context = container()["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["privileged"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert set(context["capabilities"].get("add", [])) <= ALLOWED_CAPABILITIES
    assert ALLOWED_CAPABILITIES <= BASELINE_CAPABILITIES
    labels = the("Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    assert the("ServiceAccount")["automountServiceAccountToken"] is False
    assert not {"hostNetwork", "hostPID", "hostIPC"} & set(spec)
    assert all("hostPath" not in each for each in spec["volumes"])
    assert {"requests", "limits"} <= set(container()["resources"])
    assert "memory" in container()["resources"]["limits"]


def test_every_secret_is_mounted_read_only_as_files_nowhere_else() -> None:
    secrets = {v["name"]: v["secret"] for v in pod()["spec"]["volumes"] if "secret" in v}
    assert secrets
    for secret in secrets.values():
        assert secret["defaultMode"] == 0o400
    for mount in container()["volumeMounts"]:
        if mount["name"] in secrets:
            assert mount["readOnly"] is True
    assert not any("valueFrom" in variable for variable in container().get("env", []))


def test_the_secrets_fuzz_reads_are_in_its_data_dir(tmp_path: Path) -> None:
    data_dir = _orchestrator(tmp_path).data_dir
    assert mount_of(data_dir)["mountPath"] == data_dir
    assert "emptyDir" in volume(mount_of(data_dir)["name"])  # writable: server.crt …
    example = {m.name: m.body for m in manifests() if m.kind == "Secret"}
    for name in (CA_FILE, CA_KEY_FILE, TOKEN_FILE, KEY_FILE):
        mount = mounts()[f"{data_dir}/{name}"]
        assert mount["subPath"] == name
        secret = volume(mount["name"])["secret"]["secretName"]
        assert name in example[secret]["stringData"], f"{name} is not in Secret {secret}"


def test_the_spec_validates_and_its_files_are_mounted(tmp_path: Path) -> None:
    orchestrator = _orchestrator(tmp_path)
    spec_path = container_env()["FUZZ_SPEC"]
    assert mounts()[spec_path]["subPath"] == "fuzz.yaml"
    assert orchestrator.volume_root is not None
    assert "persistentVolumeClaim" in volume(mounts()[orchestrator.volume_root]["name"])
    assert volume(mounts()[orchestrator.volume_root]["name"])[
        "persistentVolumeClaim"]["claimName"] == the("PersistentVolumeClaim")["metadata"]["name"]
    endpoints = orchestrator.endpoints
    assert endpoints.cert is not None and endpoints.key is not None
    for path in (endpoints.cert, endpoints.key):
        secret = volume(mount_of(path)["name"])["secret"]["secretName"]
        assert the("Secret", secret)["type"] == "kubernetes.io/tls"
        assert Path(path).name in the("Secret", secret)["stringData"]
    password_file = spec_document()["orchestrator"]["store"]["password_file"]
    secret = volume(mount_of(password_file)["name"])["secret"]["secretName"]
    assert Path(password_file).name in the("Secret", secret)["stringData"]
    assert spec_document()["orchestrator"]["store"]["url"].startswith("postgres://")




def test_ports_are_the_ones_the_spec_serves(tmp_path: Path) -> None:
    orchestrator = _orchestrator(tmp_path)
    ports = _container_ports()
    assert ports["grpc"] == _port(orchestrator.listen)
    assert orchestrator.endpoints.listen is not None
    assert ports["https"] == _port(orchestrator.endpoints.listen)
    assert ports["metrics"] == _port(spec_document()["orchestrator"]["metrics"]["listen"])
    for address in (orchestrator.listen, orchestrator.endpoints.listen):
        assert address.startswith("0.0.0.0:"), "the pod's address must be served"
    service = the("Service", "fuzz-orchestrator")
    host, _, port = orchestrator.address.rpartition(":")
    namespace = service["metadata"]["namespace"]
    assert host == f"{service['metadata']['name']}.{namespace}.svc"
    grpc = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert grpc["port"] == int(port)
    for object_ in (service, the("Service", "fuzz-orchestrator-metrics")):
        for service_port in object_["spec"]["ports"]:
            assert service_port["targetPort"] in ports
    for rule in the("NetworkPolicy")["spec"]["ingress"]:
        for rule_port in rule["ports"]:
            assert rule_port["port"] in ports


def test_probes_ask_the_metrics_port_for_health_and_readiness() -> None:
    orchestrator = container()
    for probe in ("startupProbe", "livenessProbe"):
        assert orchestrator[probe]["httpGet"] == {"path": HEALTH_PATH, "port": "metrics"}
    assert orchestrator["readinessProbe"]["httpGet"] == {"path": READY_PATH, "port": "metrics"}
    metrics_rule = next(r for r in the("NetworkPolicy")["spec"]["ingress"] if "from" in r)
    assert [p["port"] for p in metrics_rule["ports"]] == ["metrics"]


def test_two_replicas_replaced_whole_behind_one_selector() -> None:
    """Two replicas (one leads, one stands by), replaced together: a rolling update
    would wait for a new pod to be ready, and a standby never is while a leader lives."""
    deployment = the("Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    labels = pod()["metadata"]["labels"]
    selectors = [deployment["spec"]["selector"]["matchLabels"],
                 the("NetworkPolicy")["spec"]["podSelector"]["matchLabels"],
                 *(s["spec"]["selector"] for s in manifests_of("Service"))]
    for selector in selectors:
        assert selector.items() <= labels.items()
    namespace = the("Namespace")["metadata"]["name"]
    for manifest in manifests():
        if manifest.kind != "Namespace":
            assert manifest.body["metadata"]["namespace"] == namespace, manifest.label()


def manifests_of(kind: str) -> list[dict[str, Any]]:
    """Every object of ``kind``."""
    return [m.body for m in manifests() if m.kind == kind]


def test_the_deployment_runs_the_image_deploy_image_defines() -> None:
    definition = ImageDefinition.load()
    orchestrator = container()
    assert orchestrator["image"] == definition.reference()
    assert "command" not in orchestrator and "args" not in orchestrator, \
        "the image's entrypoint and command run: fuzz server"
    assert definition.cmd == ("server",)
    assert container_env()["FUZZ_SPEC"] == definition.env["FUZZ_SPEC"]
