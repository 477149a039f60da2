"""``fuzz app``: render, and catalogs from a directory and from a local git repository,
through the real command (no cluster: the user's own catalogs only)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.cliutil import Result, run_fuzz

CATALOG = Path(__file__).resolve().parents[2] / "catalog"
SWEEP = CATALOG / "applications" / "parameter_sweep"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A working directory with no cluster spec, and a client config of its own."""
    (tmp_path / "work").mkdir()
    return tmp_path


def fuzz(home: Path, *args: str) -> Result:
    """``fuzz ARGS`` with the config (and so the user's catalogs) under ``home``."""
    return run_fuzz(home / "work", *args,
                    env={"FUZZ_CONFIG": str(home / "config" / "config.yaml")})


def _app(directory: Path, template: str, values: str = "values: []\n") -> Path:
    directory.mkdir(parents=True)
    (directory / "template.yaml").write_text(template)
    (directory / "values.yaml").write_text(values)
    (directory / "metadata.md").write_text(
        "---\nid: t/x\nname: X\ncategory: EXAMPLES\n---\nA test.\n")
    return directory


def test_render_prints_the_fuzzfile_with_defaults_and_set_values(home: Path) -> None:
    result = fuzz(home, "app", "render", str(SWEEP / "template.yaml"),
                  str(SWEEP / "values.yaml"), "--set", "Last=3", "--set", "Concurrency=9")
    assert result.code == 0, result.err
    assert "end: 3\n" in result.out and "concurrency: 3\n" in result.out  # clamped
    assert "test \"$count\" -eq 3" in result.out


def test_a_failing_fail_is_one_line_at_its_template_line(home: Path) -> None:
    result = fuzz(home, "app", "render", str(SWEEP / "template.yaml"),
                  str(SWEEP / "values.yaml"), "--set", "First=5", "--set", "Last=2")
    assert result.code == 1
    assert result.err == (f"{SWEEP}/template.yaml:3:6: fail: Last (2) must not be less than "
                          "First (5)\n")


@pytest.mark.parametrize(("args", "error"), [
    (["--set", "Last=lots"], "Error: --set Last=lots: Last is a uint value "
     "({values}:10:5): must be a whole number, 0 or more\n"),
    (["--set", "Colour=red"], "Error: --set Colour=red: {values} declares no value 'Colour'\n"),
    (["--set", "Image= "], "Error: --set Image= : Image is required\n"),
])
def test_bad_values_are_one_line(home: Path, args: list[str], error: str) -> None:
    values = SWEEP / "values.yaml"
    result = fuzz(home, "app", "render", str(SWEEP / "template.yaml"), str(values), *args)
    assert (result.code, result.err) == (1, error.format(values=values))


def test_a_bad_values_file_and_an_invalid_rendered_fuzzfile(home: Path) -> None:
    app = _app(home / "bad", "version: v1\njobs:\n  j:\n    image: {uri: {{ .Image }}}\n"
               "    command: [true]\n    resource: {cpu: {cores: {{ .Cores }}}}\n",
               "values:\n  - name: Cores\n    display_name: c\n    uint_value: 1\n"
               "  - name: Image\n    display_name: i\n    string_value: ftp://x\n")
    result = fuzz(home, "app", "render", str(app / "template.yaml"), str(app / "values.yaml"))
    assert result.code == 1
    assert result.err.startswith(f"{app}/template.yaml (rendered):4:18: jobs.j.image.uri: "), \
        result.err
    out = home / "out.yaml"
    result = fuzz(home, "app", "render", str(app / "template.yaml"), str(app / "values.yaml"),
                  "-o", str(out))
    assert result.code == 1 and result.err.startswith(f"{out}:4:18: jobs.j.image.uri: ")
    assert "uri: ftp://x" in out.read_text()  # written for the user to look at
    (app / "values.yaml").write_text("values:\n  - name: Cores\n    uint_value: many\n")
    result = fuzz(home, "app", "render", str(app / "template.yaml"), str(app / "values.yaml"))
    assert (result.code, result.err) == (
        1, f"{app}/values.yaml:3:17: values[0].uint_value: must be an integer\n")


def test_catalog_from_a_directory_list_show_and_remove(home: Path) -> None:
    assert fuzz(home, "app", "catalog", "add", "ours", str(CATALOG)).code == 0
    listed = fuzz(home, "app", "list", "--json")
    assert listed.code == 0, listed.err
    refs = {entry["ref"]: entry for entry in listed.json()}
    assert {"ours/mpi_hello_world", "ours/parameter_sweep", "ours/data_pipeline"} <= set(refs)
    assert refs["ours/parameter_sweep"]["source"] == "user"
    only = fuzz(home, "app", "list", "--category", "data_science", "--json").json()
    assert [entry["app"] for entry in only] == ["data_pipeline"]
    table = fuzz(home, "app", "list").out
    assert "EXAMPLES" in table and "Parameter Sweep" in table
    shown = fuzz(home, "app", "show", "parameter_sweep", "--json").json()
    assert shown["name"] == "Parameter Sweep" and "task array" in shown["description"]
    values = {value["name"]: value for value in shown["values"]}
    assert values["Last"] == {"name": "Last", "display_name": "The last value of x (inclusive)",
                              "category": "Sweep", "type": "uint", "default": 8,
                              "options": [], "required": False}
    assert values["Image"]["required"]
    text = fuzz(home, "app", "show", "ours/mpi_hello_world").out
    assert "Implementation" in text and "openmpi | mpich" in text
    missing = fuzz(home, "app", "show", "nope")
    assert missing.code == 1 and missing.err.startswith("Error: no application 'nope' in the "
                                                        "catalogs (known: ours/data_pipeline")
    twice = fuzz(home, "app", "catalog", "add", "ours", str(CATALOG))
    assert twice.code == 1 and "catalog ours exists already" in twice.err
    assert fuzz(home, "app", "catalog", "remove", "ours").code == 0
    assert fuzz(home, "app", "list", "--json").json() == []


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def test_catalog_from_a_local_git_repository_at_a_tag_branch_and_commit(home: Path) -> None:
    repo = home / "repo"
    shutil.copytree(CATALOG, repo)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "one")
    first = _git(repo, "rev-parse", "HEAD")
    _git(repo, "tag", "v1")
    metadata = repo / "applications" / "parameter_sweep" / "metadata.md"
    metadata.write_text(metadata.read_text().replace("name: Parameter Sweep",
                                                     "name: Parameter Sweep 2"))
    _git(repo, "commit", "-qam", "two")

    def sweep_name(catalog: str) -> str:
        return str(fuzz(home, "app", "show", f"{catalog}/parameter_sweep", "--json").json()[
            "name"])

    added = fuzz(home, "app", "catalog", "add", "tagged", f"file://{repo}@v1")
    assert added.code == 0, added.err
    assert added.out.strip() == f"catalog tagged added (file://{repo} at {first[:12]})"
    assert sweep_name("tagged") == "Parameter Sweep"
    assert fuzz(home, "app", "catalog", "add", "branch", f"{repo}@main").code == 0
    assert sweep_name("branch") == "Parameter Sweep 2"
    assert fuzz(home, "app", "catalog", "add", "pinned", f"{repo}@{first}").code == 0
    assert sweep_name("pinned") == "Parameter Sweep"
    catalogs = fuzz(home, "app", "catalog", "list", "--json").json()
    assert catalogs == [{"name": "tagged", "git": f"file://{repo}", "ref": "v1"},
                        {"name": "branch", "git": str(repo), "ref": "main"},
                        {"name": "pinned", "git": str(repo), "ref": first}]
    ambiguous = fuzz(home, "app", "show", "parameter_sweep")
    assert ambiguous.code == 1 and "names several applications" in ambiguous.err
    bad_ref = fuzz(home, "app", "catalog", "add", "bad", f"{repo}@nope")
    assert (bad_ref.code, bad_ref.err) == (
        1, "Error: git: no branch, tag or commit 'nope' in the repository\n")
    assert fuzz(home, "app", "catalog", "remove", "tagged").code == 0
    assert not (home / "config" / "catalogs" / "tagged").exists()
    assert (home / "config" / "catalogs" / "branch" / "applications").is_dir()


def test_catalog_sources_that_are_not_catalogs_are_refused(home: Path) -> None:
    empty = home / "empty"
    empty.mkdir()
    result = fuzz(home, "app", "catalog", "add", "e", str(empty))
    assert (result.code, result.err) == (
        1, f"Error: catalog e: {empty} has no applications/ folder (a catalog holds "
        "applications/<app>/template.yaml, values.yaml and metadata.md)\n")
    result = fuzz(home, "app", "catalog", "add", "Bad Name", str(CATALOG))
    assert result.code == 1 and result.err.startswith("Error: catalog Bad Name: invalid name")
    assert json.loads(fuzz(home, "app", "catalog", "list", "--json").out) == []
