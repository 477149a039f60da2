"""The image of ``fuzz server`` (deploy/image/, ``make image``): built with mmdebstrap and
umoci, run by runc under the Deployment's own restrictions (read-only root, the
capabilities it grants and no others, no new privileges), and the image the manifests
name."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml

from fuzz.crypto import pki
from fuzz.orchestrate.connect import CA_FILE, TOKEN_FILE
from fuzz.orchestrate.datadir import CA_KEY_FILE
from fuzz.testing.oci import free_port, require, run_checked
from fuzz.testing.server_image import ImageDefinition, ServerImage, build_server_image
from tests.deploy.kubeutil import (
    container,
    container_env,
    mounts,
    spec_document,
    volume,
)
from tests.support.mpiimages import layer_paths
from tests.support.orchestratorutil import wait_until


@pytest.fixture(scope="module")
def server_image(tmp_path_factory: pytest.TempPathFactory) -> ServerImage:
    """The image, built here (its Debian base layer from the cache after the first time)."""
    built = build_server_image(tmp_path_factory.mktemp("image") / "fuzz-server")
    print(f"\nfuzz-server image: base layer {built.base_seconds} s (0: cached), "
          f"fuzz layer {built.fuzz_seconds} s")
    return built






def _confine(image: ServerImage, bundle: Path, args: list[str],
             extra_mounts: tuple[dict[str, Any], ...] = (),
             host_network: bool = False, program: tuple[str, ...] | None = None) -> list[str]:
    """Unpack the image into ``bundle`` (once) and set it to run ``args`` after its
    entrypoint (or ``program``) confined as the Deployment confines the orchestrator,
    with ``extra_mounts`` after a tmpfs on /tmp; the runc command that runs it."""
    umoci, runc = require("umoci", "umoci"), require("runc", "runc")
    if not bundle.exists():
        run_checked([umoci, "unpack", "--image", f"{image.layout}:{image.tag}", str(bundle)])
    config_path = bundle / "config.json"
    config = json.loads(config_path.read_text())
    if host_network:
        config["linux"]["namespaces"] = [
            n for n in config["linux"]["namespaces"] if n["type"] != "network"]
    context = container()["securityContext"]
    capabilities = [f"CAP_{name}" for name in context["capabilities"]["add"]]
    config["process"].update(
        terminal=False, args=[*(program or ImageDefinition.load().entrypoint), *args],
        noNewPrivileges=not context["allowPrivilegeEscalation"],
        capabilities={kind: capabilities for kind in ("bounding", "effective", "permitted")})
    config["root"]["readonly"] = context["readOnlyRootFilesystem"]
    config["mounts"] += [{"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                          "options": ["nosuid", "nodev", "mode=1777"]}, *extra_mounts]
    config_path.write_text(json.dumps(config))
    state = bundle.parent / "runc-state"
    return [runc, "--root", str(state), "run", "--bundle", str(bundle),
            f"fuzz-image-{uuid.uuid4().hex[:8]}"]


def _run(image: ServerImage, bundle: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``args`` after the image's entrypoint, confined (:func:`_confine`), to its end."""
    return subprocess.run(_confine(image, bundle, args), capture_output=True, text=True,
                          timeout=120, check=False)


def test_the_image_runs_fuzz_under_the_deployments_restrictions(
        server_image: ServerImage, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    version = _run(server_image, bundle, ["--version"])
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip().endswith(f"version {metadata.version('fuzz')}")
    server_help = _run(server_image, bundle, ["server", "--help"])
    assert server_help.returncode == 0, server_help.stderr
    assert "Run the orchestrator of the cluster in the spec" in server_help.stdout
    # a cluster CA made and written where the Deployment gives it room (the root is read-only)
    written = _run(server_image, bundle, ["server", "--init", "--data-dir", "/tmp/data"])
    assert written.returncode == 0, written.stderr
    assert written.stdout.startswith("created the cluster CA (/tmp/data/ca.pem)")
    refused = _run(server_image, bundle, ["server", "--init", "--data-dir", "/var/lib/data"])
    assert refused.returncode == 1
    assert "Read-only file system" in refused.stderr + refused.stdout


def test_the_image_is_the_one_the_deployment_names(server_image: ServerImage) -> None:
    definition = ImageDefinition.load()
    assert container()["image"] == server_image.reference == definition.reference()
    blobs = server_image.layout / "blobs" / "sha256"
    index = json.loads((server_image.layout / "index.json").read_text())
    [entry] = index["manifests"]
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == server_image.tag
    manifest = json.loads((blobs / entry["digest"].split(":", 1)[1]).read_text())
    config = json.loads((blobs / manifest["config"]["digest"].split(":", 1)[1]).read_text())
    assert config["config"]["Entrypoint"] == list(definition.entrypoint)
    assert config["config"]["Cmd"] == list(definition.cmd)
    assert {f"{k}={v}" for k, v in definition.env.items()} <= set(config["config"]["Env"])


def test_the_image_holds_no_package_installer(server_image: ServerImage) -> None:
    paths = set(layer_paths(server_image.layout))
    assert "usr/local/lib/python3.11/dist-packages/fuzz/cli/main.py" in paths
    assert "usr/local/lib/python3.11/dist-packages/grpc/__init__.py" in paths
    assert not any(path.startswith("usr/lib/python3/dist-packages/pip/") for path in paths)
    assert not any(path.startswith("tmp/fuzz-wheels") for path in paths)


VOLUME_WORK = """
import os
from fuzz.orchestrate.transfer.confined import Directory, Identity
owner = Identity(4321, 4321)
with Directory.open(ROOT, None, "volumes") as root, \\
        root.make_directories("alice/scratch", 0o700) as volume:
    volume.give_to(owner, 0o700)
with Directory.open(ROOT + "/alice/scratch", owner, "scratch") as volume:
    fd = volume.create_exclusive("data", 0o600)
    os.write(fd, b"ingress")
    os.close(fd)
print(sum(len(files) for _, _, files, _ in os.fwalk(ROOT)))
"""
"""What the orchestrator does to a volume, with fuzz's own code: make its directory and
give it to the owner's uid, write in it as the owner (a transfer), walk it (the quota
watch)."""


def test_the_deployments_capabilities_are_what_volumes_take(
        server_image: ServerImage, tmp_path: Path) -> None:
    volumes = tmp_path / "volumes"
    volumes.mkdir()
    root = spec_document()["orchestrator"]["volume_root"]
    argv = _confine(server_image, tmp_path / "bundle",
                    ["-c", VOLUME_WORK.replace("ROOT", repr(root))],
                    ({**_bind(volumes, root), "options": ["rbind", "rw"]},),
                    program=(ImageDefinition.load().entrypoint[0],))
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"
    written = volumes / "alice" / "scratch" / "data"
    assert (written.stat().st_uid, written.stat().st_gid) == (4321, 4321)
    assert written.read_bytes() == b"ingress"


def _bind(source: Path, destination: str) -> dict[str, Any]:
    return {"destination": destination, "type": "bind", "source": str(source),
            "options": ["rbind", "ro"]}


def _secret_files(tmp_path: Path) -> dict[str, Path]:
    """What the Deployment's Secrets hold, as files of mode 0400 (as Kubernetes mounts
    them): the cluster CA and keys, a gateway certificate from a CA of its own."""
    keys = tmp_path / "keys"
    keys.mkdir()
    authority = pki.CertificateAuthority.create("k8s-test")
    public = pki.CertificateAuthority.create("public")
    gateway_key = pki.new_key()
    files = {CA_FILE: authority.cert_pem, CA_KEY_FILE: authority.key_pem,
             TOKEN_FILE: b"an-admin-token-of-the-test\n", "master.key": os.urandom(32),
             "tls.crt": pki.cert_pem(public.issue(gateway_key.public_key(), "gateway",
                                                  ["127.0.0.1"])),
             "tls.key": pki.key_pem(gateway_key), "public-ca.pem": public.cert_pem}
    for name, data in files.items():
        (keys / name).write_bytes(data)
        (keys / name).chmod(0o400)
    return {name: keys / name for name in files}


def _answers_tls(port: int, ca: Path) -> bool:
    """Whether 127.0.0.1:``port`` completes a TLS handshake with a certificate of ``ca``."""
    context = ssl.create_default_context(cafile=str(ca))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as raw, \
                context.wrap_socket(raw, server_hostname="127.0.0.1"):
            return True
    except OSError:
        return False


def test_fuzz_server_serves_from_the_image_with_the_deployments_mounts(
        server_image: ServerImage, tmp_path: Path) -> None:
    """The ConfigMap's spec (on loopback ports, its store the data dir's SQLite: no
    PostgreSQL here), the
    Secrets as read-only files in an otherwise empty data dir, the root read-only and
    its capabilities: the orchestrator starts, serving gRPC with a certificate of the
    mounted cluster CA and the gateway with the mounted certificate."""
    secrets = _secret_files(tmp_path)
    document = spec_document()
    block = document["orchestrator"]
    del block["store"]
    block["metrics"]["listen"] = f"127.0.0.1:{free_port()}"
    grpc_port, https_port = free_port(), free_port()
    block["listen"] = block["advertise"] = f"127.0.0.1:{grpc_port}"
    block["endpoints"]["listen"] = f"127.0.0.1:{https_port}"
    block["endpoints"]["url"] = f"https://127.0.0.1:{https_port}"
    spec = tmp_path / "fuzz.yaml"
    spec.write_text(yaml.safe_dump(document))
    volumes = tmp_path / "volumes"
    volumes.mkdir()
    extra = [_bind(spec, container_env()["FUZZ_SPEC"]),
              {"destination": block["data_dir"], "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "nodev", "mode=0700"]}]  # the emptyDir
    for path, mount in mounts().items():
        secret = volume(mount["name"]).get("secret")
        if secret is not None and "subPath" in mount:
            extra.append(_bind(secrets[mount["subPath"]], path))
    gateway = next(p for p, m in mounts().items() if m["name"] == "gateway-tls")
    extra += [_bind(secrets["tls.crt"], f"{gateway}/tls.crt"),
               _bind(secrets["tls.key"], f"{gateway}/tls.key"),
               {**_bind(volumes, block["volume_root"]), "options": ["rbind", "rw"]}]
    argv = _confine(server_image, tmp_path / "bundle", list(ImageDefinition.load().cmd),
                    tuple(extra), host_network=True)
    log = tmp_path / "server.log"
    with open(log, "wb") as output:
        server = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        wait_until("the orchestrator's gRPC port in the image (or its end)",
                   lambda: server.poll() is not None or _answers_tls(grpc_port, secrets[CA_FILE]),
                   timeout=120)
        assert server.poll() is None, log.read_text()
        assert _answers_tls(grpc_port, secrets[CA_FILE]), log.read_text()
        wait_until("the endpoint gateway in the image",
                   lambda: _answers_tls(https_port, secrets["public-ca.pem"]), timeout=60)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)  # runc passes it on to fuzz server
            server.wait(timeout=60)
