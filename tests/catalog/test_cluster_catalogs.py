"""``orchestrator.catalogs`` in the cluster spec, and what the orchestrator serves of it
(:class:`fuzz.orchestrate.catalogs.ClusterCatalogs`, behind the ListApplications RPC)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from fuzz.orchestrate.catalogs import ClusterCatalogs
from fuzz.spec.cluster import CatalogSpec
from fuzz.spec.loader import load_cluster_spec
from fuzz.spec.problems import SpecError

CATALOG = Path(__file__).resolve().parents[2] / "catalog"


def _spec(tmp_path: Path, catalogs: object) -> Path:
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "cluster": "c",
                                    "orchestrator": {"catalogs": catalogs}}, sort_keys=False))
    return path


def test_catalogs_are_read_from_the_spec(tmp_path: Path) -> None:
    spec = load_cluster_spec(_spec(tmp_path, [{"name": "ours", "path": "catalog"},
                                              {"name": "ciq", "git": "https://x/c.git",
                                               "ref": "v4.1"}])).spec
    assert spec.orchestrator is not None
    assert [c.model_dump(exclude_none=True) for c in spec.orchestrator.catalogs] == [
        {"name": "ours", "path": "catalog"},
        {"name": "ciq", "git": "https://x/c.git", "ref": "v4.1"}]


@pytest.mark.parametrize(("catalogs", "message"), [
    ([{"name": "a", "path": "p", "git": "g"}],
     "fuzz.yaml:5:5: orchestrator.catalogs[0]: set path or git, one of them"),
    ([{"name": "a"}], "fuzz.yaml:5:5: orchestrator.catalogs[0]: set path or git, one of them"),
    ([{"name": "a", "path": "p", "ref": "main"}],
     "fuzz.yaml:5:5: orchestrator.catalogs[0]: ref goes with git"),
    ([{"name": "a", "path": "p"}, {"name": "a", "path": "q"}],
     "fuzz.yaml:5:3: orchestrator.catalogs: catalog 'a' is listed twice"),
    ([{"name": "A b", "path": "p"}], "fuzz.yaml:5:11: orchestrator.catalogs[0].name: invalid "
     "name 'A b'"),
])
def test_bad_catalog_entries_are_one_line(tmp_path: Path, catalogs: object,
                                          message: str) -> None:
    with pytest.raises(SpecError) as caught:
        load_cluster_spec(_spec(tmp_path, catalogs), "fuzz.yaml")
    assert str(caught.value).startswith(message), str(caught.value)


def test_the_orchestrator_serves_directory_and_git_catalogs_and_names_broken_apps(
        tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(CATALOG, repo)
    broken = repo / "applications" / "broken"
    shutil.copytree(repo / "applications" / "parameter_sweep", broken)
    (broken / "values.yaml").write_text("values: 3\n")
    for args in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-qm", "c"]):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo,
                       check=True, capture_output=True)
    served = ClusterCatalogs([CatalogSpec(name="dir", path=str(CATALOG)),
                              CatalogSpec(name="git", git=f"file://{repo}", ref="main"),
                              CatalogSpec(name="gone", path=str(tmp_path / "gone"))],
                             tmp_path / "clones").applications()
    refs = {(bundle.catalog, bundle.app) for bundle in served.applications}
    assert {("dir", "parameter_sweep"), ("git", "parameter_sweep"),
            ("git", "data_pipeline")} <= refs
    assert ("git", "broken") not in refs
    sweep = next(b for b in served.applications if (b.catalog, b.app) == ("git",
                                                                          "parameter_sweep"))
    assert sweep.template == (CATALOG / "applications" / "parameter_sweep" /
                              "template.yaml").read_text()
    assert list(served.broken) == [
        f"file://{repo}/applications/broken/values.yaml:1:9: values: must be a list",
        f"catalog gone: {tmp_path / 'gone'} has no applications/ folder (a "
        "catalog holds applications/<app>/template.yaml, values.yaml and metadata.md)"]
