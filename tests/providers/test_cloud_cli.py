"""fuzz apply, state and destroy drive the GCP and Azure providers against the fake APIs,
and a refused create is one line on stderr."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.cliutil import run_fuzz
from tests.support.fakes.fixtures import AzureApi, GcpApi, turned

OFFERINGS = {"gcp": "e2-standard-2", "azure": "Standard_D2s_v5"}


def _spec(directory: Path, kind: str, config: dict[str, Any]) -> None:
    spec = {"version": 1, "cluster": "clouds",
            "state": {"backend": "local", "path": ".fuzz/state.json"},
            "providers": {kind: config},
            "pools": {"cpu": {"provider": kind, "offerings": [OFFERINGS[kind]], "min": 2}}}
    (directory / "fuzz.yaml").write_text(yaml.safe_dump(spec))


@pytest.fixture(params=["gcp", "azure"])
def cloud(request: pytest.FixtureRequest) -> tuple[str, GcpApi | AzureApi]:
    """The fake API of each cloud in turn, with the kind that uses it."""
    api: GcpApi | AzureApi = request.getfixturevalue(f"{request.param}_api")
    return request.param, api


def _node_count(api: GcpApi | AzureApi) -> int:
    """The nodes the fake holds once the operations under way have finished."""
    if isinstance(api, GcpApi):
        time.sleep(api.fake.op_seconds)
        return len(api.fake.settled_instances())
    return len(api.fake.vms)


def test_apply_and_destroy_through_the_cli(cloud: tuple[str, GcpApi | AzureApi],
                                           tmp_path: Path) -> None:
    kind, api = cloud
    _spec(tmp_path, kind, dict(api.context().config))
    applied = run_fuzz(tmp_path, "apply", "--auto-approve")
    assert applied.code == 0, applied.err
    assert _node_count(api) == 2
    listed = run_fuzz(tmp_path, "state", "list")
    assert listed.out.split() == ["pool.cpu.node[0]", "pool.cpu.node[1]"]
    planned = run_fuzz(tmp_path, "plan", "--detailed-exitcode")
    assert planned.code == 0, planned.out + planned.err
    destroyed = run_fuzz(tmp_path, "destroy", "--auto-approve")
    assert destroyed.code == 0, destroyed.err
    assert _node_count(api) == 0


def test_a_refused_create_is_one_line(cloud: tuple[str, GcpApi | AzureApi],
                                      tmp_path: Path) -> None:
    kind, api = cloud
    _spec(tmp_path, kind, dict(api.context().config))
    quota = {"cpu_quota": 0} if kind == "gcp" else {"core_quota": 0}
    with turned(api.fake, **quota):
        applied = run_fuzz(tmp_path, "apply", "--auto-approve")
    assert applied.code == 1
    assert applied.err.strip().count("\n") == 0 and applied.err.startswith("Error: ")
    failed = [line for line in applied.out.splitlines()
              if line.startswith("[1/2] pool.cpu.node[") and ": failed: " in line]
    assert failed, applied.out
    assert f": failed: {kind}: creating pool.cpu.node[" in failed[0]
    assert "quota" in failed[0].lower()
    assert _node_count(api) == 0
