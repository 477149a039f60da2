"""The image of ``fuzz server`` (deploy/image/, ``make image``): built with mmdebstrap and
umoci, run by runc under the Deployment's own restrictions (read-only root, the
capabilities it grants and no others, no new privileges), and the image the manifests
name."""

from __future__ import annotations

import json
import subprocess
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from fuzz.testing.oci import require, run_checked
from fuzz.testing.server_image import ImageDefinition, ServerImage, build_server_image
from tests.deploy.kubeutil import the
from tests.support.mpiimages import layer_paths


@pytest.fixture(scope="module")
def server_image(tmp_path_factory: pytest.TempPathFactory) -> ServerImage:
    """The image, built here (its Debian base layer from the cache after the first time)."""
    built = build_server_image(tmp_path_factory.mktemp("image") / "fuzz-server")
    print(f"\nfuzz-server image: base layer {built.base_seconds} s (0: cached), "
          f"fuzz layer {built.fuzz_seconds} s")
    return built


def _deployed_container() -> dict[str, Any]:
    return the("Deployment")["spec"]["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]


def _run(image: ServerImage, bundle: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``args`` after the image's entrypoint in a runc container confined as the
    Deployment confines the orchestrator."""
    umoci, runc = require("umoci", "umoci"), require("runc", "runc")
    if not bundle.exists():
        run_checked([umoci, "unpack", "--image", f"{image.layout}:{image.tag}", str(bundle)])
    config_path = bundle / "config.json"
    config = json.loads(config_path.read_text())
    context = _deployed_container()["securityContext"]
    capabilities = [f"CAP_{name}" for name in context["capabilities"]["add"]]
    config["process"].update(
        terminal=False, args=[*ImageDefinition.load().entrypoint, *args],
        noNewPrivileges=not context["allowPrivilegeEscalation"],
        capabilities={kind: capabilities for kind in ("bounding", "effective", "permitted")})
    config["root"]["readonly"] = context["readOnlyRootFilesystem"]
    config["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                             "options": ["nosuid", "nodev", "mode=1777"]})
    config_path.write_text(json.dumps(config))
    state, name = bundle.parent / "runc-state", f"fuzz-image-{uuid.uuid4().hex[:8]}"
    return subprocess.run(
        [runc, "--root", str(state), "run", "--bundle", str(bundle), name],
        capture_output=True, text=True, timeout=120, check=False)


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
    assert _deployed_container()["image"] == server_image.reference == definition.reference()
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
