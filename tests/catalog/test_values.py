"""values.yaml and metadata.md: Fuzzball's typed inputs and front matter, checked with
one ``file:line:col: field: message`` line per problem, and ``--set`` typed by them."""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzz.catalog.application import parse_metadata, render_application
from fuzz.catalog.catalogs import load_catalog, parse_source
from fuzz.catalog.values import parse_values, resolve_values
from fuzz.errors import ConfigError
from fuzz.spec.problems import SpecError

CATALOG = Path(__file__).resolve().parents[2] / "catalog"

VALUES = """\
values:
  - name: Cores
    display_name: CPU cores
    display_category: Resources
    uint_value: 4
  - name: Partition
    display_name: Partition
    string_value: short
    options_input:
      options: [short, long]
  - name: Debug
    display_name: Debug output
    bool_value: false
  - name: Data
    display_name: "Data volume [required]"
    string_value: ""
  - name: Key
    display_name: S3 key
    secret_value:
      reference: secret://user/s3
"""


def test_values_have_kinds_defaults_options_and_required_markers() -> None:
    values = {value.name: value for value in parse_values(VALUES, "values.yaml")}
    assert [(v.kind, v.default) for v in values.values()] == [
        ("uint", 4), ("string", "short"), ("bool", False), ("string", ""),
        ("secret", "secret://user/s3")]
    assert values["Partition"].options == ("short", "long")
    assert values["Data"].required and not values["Cores"].required
    assert values["Cores"].category == "Resources"
    assert values["Cores"].where == "values.yaml:2:5"


@pytest.mark.parametrize(("text", "line"), [
    ("values:\n  - name: N\n    display_name: n\n    uint_value: -1\n",
     "values.yaml:4:17: values[0].uint_value: must be >= 0"),
    ("values:\n  - name: N\n    display_name: n\n    uint_value: '4'\n",
     "values.yaml:4:17: values[0].uint_value: must be an integer"),
    ("values:\n  - name: N\n    display_name: n\n    bool_value: yes please\n",
     "values.yaml:4:17: values[0].bool_value: must be true or false"),
    ("values:\n  - name: N\n    display_name: n\n",
     "values.yaml:2:5: values[0]: needs exactly one of string_value, uint_value, bool_value, "
     "secret_value, volume_value (found none)"),
    ("values:\n  - name: N\n    display_name: n\n    string_value: a\n    uint_value: 1\n",
     "values.yaml:2:5: values[0]: needs exactly one of string_value, uint_value, bool_value, "
     "secret_value, volume_value (found string_value, uint_value)"),
    ("values:\n  - name: 9lives\n    display_name: n\n    string_value: a\n",
     "values.yaml:2:11: values[0].name: '9lives' is not a template name (letters, digits "
     "and _, not starting with a digit)"),
    ("values:\n  - name: P\n    display_name: n\n    string_value: medium\n"
     "    options_input: {options: [short, long]}\n",
     "values.yaml:4:19: values[0].string_value: 'medium' is not one of the options "
     "(short, long)"),
    ("values:\n  - name: P\n    display_name: n\n    string_value: a\n    colour: red\n",
     "values.yaml:5:5: values[0].colour: unknown key"),
])
def test_bad_values_files_get_one_line_naming_the_field(text: str, line: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_values(text, "values.yaml")
    assert str(caught.value).splitlines()[0].startswith(line), str(caught.value)


def test_set_values_are_typed_by_their_declaration() -> None:
    declared = parse_values(VALUES, "values.yaml")
    chosen = resolve_values(declared, ["Cores=16", "Debug=yes", "Data=volume://user/d",
                                       "Partition=long"], "values.yaml")
    assert chosen == {"Cores": 16, "Partition": "long", "Debug": True,
                      "Data": "volume://user/d", "Key": "secret://user/s3"}


@pytest.mark.parametrize(("override", "message"), [
    ("Cores=many", "--set Cores=many: Cores is a uint value (values.yaml:2:5): must be a "
     "whole number, 0 or more"),
    ("Cores=-2", "--set Cores=-2: Cores is a uint value (values.yaml:2:5): must be a whole "
     "number, 0 or more"),
    ("Debug=maybe", "--set Debug=maybe: Debug is a bool value (values.yaml:11:5): must be "
     "true or false"),
    ("Partition=medium", "--set Partition=medium: Partition must be one of short, long"),
    ("Cpus=2", "--set Cpus=2: values.yaml declares no value 'Cpus'"),
    ("Cores", "--set Cores: give it as NAME=VALUE"),
    ("Data= ", "--set Data= : Data is required"),
])
def test_bad_set_values_get_one_line(override: str, message: str) -> None:
    declared = parse_values(VALUES, "values.yaml")
    with pytest.raises(ConfigError) as caught:
        resolve_values(declared, [override, "Data=x"] if not override.startswith("Data")
                       else [override], "values.yaml")
    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_required_value_left_empty_names_its_entry() -> None:
    declared = parse_values(VALUES, "values.yaml")
    with pytest.raises(SpecError) as caught:
        resolve_values(declared, [], "values.yaml")
    assert str(caught.value) == ("values.yaml:14:5: Data: is required (default ''); "
                                 "give it with --set")


def test_metadata_front_matter_after_a_comment_and_its_description() -> None:
    meta = parse_metadata("# Copyright 2025 CIQ, Inc. All rights reserved.\n---\n"
                          "id: ciq/examples/x\nname: X\ncategory: EXAMPLES\ntags: [a]\n"
                          "key_art: art.jpg\n---\nDoes *x*.\n", "metadata.md")
    assert (meta.id, meta.name, meta.category, meta.tags, meta.keyart, meta.description) == \
        ("ciq/examples/x", "X", "EXAMPLES", ("a",), "art.jpg", "Does *x*.")


def test_metadata_problems_name_the_file_line() -> None:
    with pytest.raises(SpecError) as caught:
        parse_metadata("# c\n---\nid: x\nname: 3\n---\n", "metadata.md")
    assert str(caught.value).splitlines() == [
        "metadata.md:3:1: category: required field missing",
        "metadata.md:4:7: name: must be a string",
    ]


def test_the_shipped_catalog_renders_every_application_with_its_defaults() -> None:
    loaded = load_catalog("fuzz", CATALOG)
    assert not loaded.broken
    assert {app.key for app in loaded.applications} >= {
        "mpi_hello_world", "parameter_sweep", "data_pipeline", "jupyter"}
    for app in loaded.applications:
        rendered = render_application(app, [])
        assert rendered.loaded.fuzzfile.jobs or rendered.loaded.fuzzfile.services, app.key


def test_the_jupyter_application_renders_a_notebook_service_with_a_path_endpoint() -> None:
    app = next(app for app in load_catalog("fuzz", CATALOG).applications
               if app.key == "jupyter")
    service = render_application(app, []).loaded.fuzzfile.services["jupyter"]
    assert service.image.uri == "docker://127.0.0.1:5000/fuzz/jupyter:latest"
    [endpoint] = service.network.endpoints
    assert (endpoint.name, endpoint.type, endpoint.scope) == ("jupyter", "path", "user")
    assert service.persist and service.readiness_probe.exec is not None
    assert "$FB_ENDPOINT_PATH_JUPYTER" in (service.script or "")


def test_catalog_sources_directory_git_url_and_ref(tmp_path: Path) -> None:
    assert parse_source("a", str(tmp_path)).path == str(tmp_path)
    assert parse_source("a", "https://example.org/c.git@v1.2").model_dump(
        exclude_none=True) == {"name": "a", "git": "https://example.org/c.git", "ref": "v1.2"}
    assert parse_source("a", "git@example.org:c.git").git == "git@example.org:c.git"
    assert parse_source("a", f"{tmp_path}@main").model_dump(exclude_none=True) == \
        {"name": "a", "git": str(tmp_path), "ref": "main"}
    with pytest.raises(ConfigError, match="not a directory, nor a git URL"):
        parse_source("a", str(tmp_path / "missing"))
