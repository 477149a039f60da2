"""Tests for the cluster-spec loader: real YAML files in, exact problem lines out."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fuzz.errors import ConfigError
from fuzz.spec.cluster import ClusterSpec, PoolSpec, StaticNodeSpec
from fuzz.spec.loader import (
    LoadedSpec,
    load_cluster_spec,
    validate_block,
    validate_provider_block,
    validate_state_block,
)
from fuzz.spec.problems import Problem, SpecError, problems_from_validation_error
from fuzz.spec.yamlsource import Position, parse_yaml

VALID = """
version: 1
cluster: demo
state:
  backend: local
  path: .fuzz/state.json
providers:
  local: {}
  lab:
  aws:
    region: us-east-1
  aws-west:
    kind: aws
    region: us-west-2
pools:
  cpu:
    provider: local
    min: 3
    max: 10
    idle_ttl: 10m
    labels: {arch: x86_64}
  gpu:
    provider: aws-west
    offerings: [p3.2xlarge, g5.xlarge]
    min: 1
    idle_ttl: 90
  metal:
    provider: lab
    nodes:
      - name: n01
        mac: "aa:bb:cc:dd:ee:01"
      - name: n02.rack-1
        mac: "aa:bb:cc:dd:ee:02"
"""


def write(tmp_path: Path, text: str, name: str = "fuzz.yaml") -> Path:
    """Write ``text`` (dedented, without the leading newline) to a spec file."""
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str) -> LoadedSpec:
    return load_cluster_spec(write(tmp_path, text), "fuzz.yaml")


def problems(tmp_path: Path, text: str) -> list[str]:
    """The problem lines that loading ``text`` reports (it must fail)."""
    with pytest.raises(SpecError) as info:
        load(tmp_path, text)
    lines = [str(problem) for problem in info.value.problems]
    assert str(info.value) == "\n".join(lines)
    return lines


def spec_with_pool(pool: str, providers: str = "  local: {}\n") -> str:
    """A spec whose only pool (``p``) has the given body, indented by four spaces."""
    return (
        "version: 1\ncluster: demo\nproviders:\n"
        + providers
        + "pools:\n  p:\n"
        + textwrap.indent(textwrap.dedent(pool).lstrip("\n"), "    ")
    )


# --- a valid spec ------------------------------------------------------------------------


def test_valid_full_spec(tmp_path: Path) -> None:
    loaded = load(tmp_path, VALID)
    spec = loaded.spec
    assert spec.version == 1
    assert spec.cluster == "demo"
    assert spec.state.backend == "local"
    assert spec.state.backend_config() == {"path": ".fuzz/state.json"}
    assert list(spec.providers) == ["local", "lab", "aws", "aws-west"]
    assert spec.providers["local"].provider_config() == {}
    assert spec.providers["lab"].provider_config() == {}
    assert spec.providers["aws"].provider_config() == {"region": "us-east-1"}
    assert spec.provider_kind("aws-west") == "aws"
    assert spec.provider_kind("aws") == "aws"
    cpu, gpu, metal = spec.pools["cpu"], spec.pools["gpu"], spec.pools["metal"]
    assert (cpu.min, cpu.max, cpu.max_nodes(), cpu.is_static) == (3, 10, 10, False)
    assert cpu.idle_ttl_seconds() == 600.0
    assert cpu.labels == {"arch": "x86_64"}
    assert gpu.offerings == ["p3.2xlarge", "g5.xlarge"]
    assert (gpu.max, gpu.max_nodes()) == (None, 1)  # max defaults to min
    assert gpu.idle_ttl_seconds() == 90.0
    assert metal.is_static
    assert metal.nodes is not None
    assert [node.name for node in metal.nodes] == ["n01", "n02.rack-1"]
    assert metal.nodes[0].provider_attributes() == {"mac": "aa:bb:cc:dd:ee:01"}
    assert metal.max_nodes() == 2
    assert spec.issues() == []
    assert loaded.path == (tmp_path / "fuzz.yaml").absolute()
    assert loaded.base_dir == tmp_path
    assert loaded.source.file == "fuzz.yaml"
    assert loaded.source.key_position(("pools", "gpu", "min")) == Position(24, 5)
    assert loaded.source.value_position(("pools", "gpu", "min")) == Position(24, 10)
    assert loaded.source.value_position(("pools", "metal", "nodes", 1)) == Position(31, 9)


def test_minimal_spec_has_defaults(tmp_path: Path) -> None:
    spec = load(tmp_path, "version: 1\ncluster: c\n").spec
    assert spec.pools == {}
    assert spec.providers == {}
    assert spec.state.backend == "local"


def test_null_sections_mean_empty(tmp_path: Path) -> None:
    spec = load(tmp_path, "version: 1\ncluster: c\nstate:\nproviders:\npools:\n").spec
    assert (spec.pools, spec.providers, spec.state.backend) == ({}, {}, "local")


def test_file_name_defaults_to_path_as_given(tmp_path: Path) -> None:
    path = write(tmp_path, "version: 2\ncluster: c\n")
    with pytest.raises(SpecError) as info:
        load_cluster_spec(path)
    assert str(info.value) == (
        f"{path}:1:10: version: unsupported version 2; this fuzz reads version 1"
    )


# --- one rule at a time -----------------------------------------------------------------


def test_version_must_be_1(tmp_path: Path) -> None:
    assert problems(tmp_path, "version: 2\ncluster: demo\n") == [
        "fuzz.yaml:1:10: version: unsupported version 2; this fuzz reads version 1"
    ]


def test_version_must_be_an_integer(tmp_path: Path) -> None:
    assert problems(tmp_path, "version: 'one'\ncluster: demo\n") == [
        "fuzz.yaml:1:10: version: must be an integer"
    ]


@pytest.mark.parametrize("name", ["Demo", "1demo", "demo_1", "-demo", "d" * 64, "''"])
def test_cluster_name_pattern(tmp_path: Path, name: str) -> None:
    shown = "" if name == "''" else name
    assert problems(tmp_path, f"version: 1\ncluster: {name}\n") == [
        f"fuzz.yaml:2:10: cluster: invalid name {shown!r}: use 1-63 lowercase letters,"
        " digits or '-', starting with a letter"
    ]


def test_cluster_name_longest_allowed(tmp_path: Path) -> None:
    assert load(tmp_path, f"version: 1\ncluster: a{'-9' * 31}\n").spec.cluster == "a" + "-9" * 31


def test_pool_name_pattern_reported_at_key(tmp_path: Path) -> None:
    text = "version: 1\ncluster: demo\nproviders: {local: }\npools:\n  GPU_1: {provider: local}\n"
    assert problems(tmp_path, text) == [
        "fuzz.yaml:5:3: pools.GPU_1: invalid name 'GPU_1': use 1-63 lowercase letters,"
        " digits or '-', starting with a letter"
    ]


def test_pool_name_must_be_a_string(tmp_path: Path) -> None:
    text = "version: 1\ncluster: demo\nproviders: {local: }\npools:\n  7:\n    provider: local\n"
    assert problems(tmp_path, text) == ["fuzz.yaml:5:3: pools[7]: key must be a string"]


def test_min_must_not_be_negative(tmp_path: Path) -> None:
    assert problems(tmp_path, spec_with_pool("provider: local\nmin: -1\n")) == [
        "fuzz.yaml:8:10: pools.p.min: must be >= 0"
    ]


def test_max_must_be_at_least_min(tmp_path: Path) -> None:
    text = """
    version: 1
    cluster: demo
    providers:
      aws:
        region: us-east-1
    pools:
      cpu:
        provider: aws
      gpu:
        provider: aws
        min: 4
        max: 2
    """
    assert problems(tmp_path, text) == ["fuzz.yaml:12:5: pools.gpu.max: must be >= min"]


def test_max_below_default_min_is_fine_when_equal(tmp_path: Path) -> None:
    pool = load(tmp_path, spec_with_pool("provider: local\nmax: 0\n")).spec.pools["p"]
    assert (pool.min, pool.max_nodes()) == (0, 0)


def test_max_defaults_to_min(tmp_path: Path) -> None:
    pool = load(tmp_path, spec_with_pool("provider: local\nmin: 5\n")).spec.pools["p"]
    assert (pool.max, pool.max_nodes()) == (None, 5)


@pytest.mark.parametrize("key", ["min", "max"])
def test_min_and_max_must_be_integers(tmp_path: Path, key: str) -> None:
    assert problems(tmp_path, spec_with_pool(f"provider: local\n{key}: three\n")) == [
        f"fuzz.yaml:8:{len(key) + 7}: pools.p.{key}: must be an integer"
    ]


def test_min_must_not_be_a_boolean(tmp_path: Path) -> None:
    assert problems(tmp_path, spec_with_pool("provider: local\nmin: true\n")) == [
        "fuzz.yaml:8:10: pools.p.min: must be an integer"
    ]


def test_idle_ttl_must_parse(tmp_path: Path) -> None:
    assert problems(tmp_path, spec_with_pool("provider: local\nidle_ttl: 10 minutes\n")) == [
        "fuzz.yaml:8:15: pools.p.idle_ttl: invalid duration '10 minutes': use e.g. 30s, 10m, 1h30m"
    ]


def test_idle_ttl_accepts_compound_durations(tmp_path: Path) -> None:
    pool = load(tmp_path, spec_with_pool("provider: local\nidle_ttl: 1h30m\n")).spec.pools["p"]
    assert pool.idle_ttl_seconds() == 5400.0


def test_static_pool_must_not_set_elastic_keys(tmp_path: Path) -> None:
    pool = """
    provider: local
    offerings: [small]
    min: 1
    max: 2
    nodes:
      - name: n01
    """
    assert problems(tmp_path, spec_with_pool(pool)) == [
        "fuzz.yaml:8:5: pools.p.offerings: not allowed in a static pool (one that lists nodes:)",
        "fuzz.yaml:9:5: pools.p.min: not allowed in a static pool (one that lists nodes:)",
        "fuzz.yaml:10:5: pools.p.max: not allowed in a static pool (one that lists nodes:)",
    ]


def test_static_node_names_unique(tmp_path: Path) -> None:
    pool = """
    provider: local
    nodes:
      - name: n01
      - name: n02
      - name: n01
        mac: "aa:bb:cc:dd:ee:03"
    """
    assert problems(tmp_path, spec_with_pool(pool)) == [
        "fuzz.yaml:11:15: pools.p.nodes[2].name: duplicate node name 'n01' (first at nodes[0])"
    ]


@pytest.mark.parametrize("name", ["-n1", "n 1", "n/1", ".n1", "_n"])
def test_static_node_name_pattern(tmp_path: Path, name: str) -> None:
    pool = f"provider: local\nnodes:\n  - name: '{name}'\n"
    assert problems(tmp_path, spec_with_pool(pool)) == [
        f"fuzz.yaml:9:15: pools.p.nodes[0].name: invalid node name {name!r}: use letters,"
        " digits, '_', '.' or '-', starting with a letter or digit"
    ]


def test_static_node_entries(tmp_path: Path) -> None:
    pool = "provider: local\nnodes:\n  - mac: x\n  - n02\n"
    assert problems(tmp_path, spec_with_pool(pool)) == [
        "fuzz.yaml:9:9: pools.p.nodes[0].name: required field missing",
        "fuzz.yaml:10:9: pools.p.nodes[1]: must be a mapping",
    ]


def test_pool_provider_must_be_declared(tmp_path: Path) -> None:
    text = spec_with_pool("provider: aws2\n", providers="  local: {}\n  aws: {}\n")
    assert problems(tmp_path, text) == [
        "fuzz.yaml:8:15: pools.p.provider: unknown provider 'aws2' (declared: local, aws)"
        " (did you mean 'aws'?)"
    ]


def test_pool_provider_without_close_match(tmp_path: Path) -> None:
    text = spec_with_pool("provider: gcp\n", providers="  local: {}\n  aws: {}\n")
    assert problems(tmp_path, text) == [
        "fuzz.yaml:8:15: pools.p.provider: unknown provider 'gcp' (declared: local, aws)"
    ]


def test_pool_provider_when_none_declared(tmp_path: Path) -> None:
    text = "version: 1\ncluster: demo\npools:\n  p:\n    provider: local\n"
    assert problems(tmp_path, text) == [
        "fuzz.yaml:5:15: pools.p.provider: unknown provider 'local' (no providers are declared)"
    ]


def test_unknown_key_with_suggestion(tmp_path: Path) -> None:
    assert problems(tmp_path, spec_with_pool("provider: local\nofferring: [a]\n")) == [
        "fuzz.yaml:8:5: pools.p.offerring: unknown key 'offerring' (did you mean 'offerings'?)"
    ]


def test_unknown_top_level_key(tmp_path: Path) -> None:
    assert problems(tmp_path, "version: 1\ncluster: demo\nprovider: {}\npaint: red\n") == [
        "fuzz.yaml:3:1: provider: unknown key 'provider' (did you mean 'providers'?)",
        "fuzz.yaml:4:1: paint: unknown key 'paint'",
    ]


def test_required_fields_missing(tmp_path: Path) -> None:
    text = "# a spec\nversion: 1\nproviders: {local: {}}\npools:\n  p:\n    min: 1\n"
    assert problems(tmp_path, text) == [
        "fuzz.yaml:2:1: cluster: required field missing",
        "fuzz.yaml:5:3: pools.p.provider: required field missing",
    ]


def test_type_errors_are_short(tmp_path: Path) -> None:
    text = """
    version: 1
    cluster: 5
    providers: [local]
    pools:
      p:
        provider: local
        offerings: small
        labels: {arch: 64}
    """
    assert problems(tmp_path, text) == [
        "fuzz.yaml:2:10: cluster: must be a string",
        "fuzz.yaml:3:12: providers: must be a mapping",
        "fuzz.yaml:7:16: pools.p.offerings: must be a list",
        "fuzz.yaml:8:20: pools.p.labels.arch: must be a string",
    ]


def test_pool_must_be_a_mapping(tmp_path: Path) -> None:
    text = "version: 1\ncluster: demo\npools:\n  p: [1, 2]\n"
    assert problems(tmp_path, text) == ["fuzz.yaml:4:6: pools.p: must be a mapping"]


# --- YAML-level problems -----------------------------------------------------------------


def test_duplicate_keys(tmp_path: Path) -> None:
    text = """
    version: 1
    cluster: demo
    providers:
      local: {}
    pools:
      p:
        provider: local
        min: 1
        min: 2
    cluster: other
    """
    assert problems(tmp_path, text) == [
        "fuzz.yaml:9:5: pools.p.min: duplicate key 'min' (first at line 8)",
        "fuzz.yaml:10:1: cluster: duplicate key 'cluster' (first at line 2)",
    ]


def test_duplicate_keys_in_flow_mapping(tmp_path: Path) -> None:
    assert problems(tmp_path, "version: 1\ncluster: demo\nstate: {path: a, path: b}\n") == [
        "fuzz.yaml:3:18: state.path: duplicate key 'path' (first at line 3)"
    ]


def test_yaml_syntax_error(tmp_path: Path) -> None:
    text = "version: 1\ncluster: demo\npools:\n  p:\n    offerings: [a, b\n    min: 1\n"
    assert problems(tmp_path, text) == [
        "fuzz.yaml:6:8: expected ',' or ']', but got ':'"
        " (while parsing a flow sequence started at line 5, column 16)"
    ]


def test_yaml_bad_indentation(tmp_path: Path) -> None:
    assert problems(tmp_path, "version: 1\n cluster: demo\n") == [
        "fuzz.yaml:2:9: mapping values are not allowed here"
    ]


def test_yaml_tab_indentation(tmp_path: Path) -> None:
    assert problems(tmp_path, "version: 1\npools:\n\tp: {}\n") == [
        "fuzz.yaml:3:1: found character '\\t' that cannot start any token"
        " (while scanning for the next token)"
    ]


def test_two_documents(tmp_path: Path) -> None:
    assert problems(tmp_path, "version: 1\n---\ncluster: demo\n") == [
        "fuzz.yaml:2:1: expected a single document in the stream, but found another document"
    ]


@pytest.mark.parametrize("text", ["", "\n\n", "# nothing here\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    assert problems(tmp_path, text) == ["fuzz.yaml:1:1: file is empty"]


@pytest.mark.parametrize(("text", "what"), [("- a\n- b\n", "a list"), ("just text\n", "a scalar")])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str, what: str) -> None:
    assert problems(tmp_path, text) == [
        f"fuzz.yaml:1:1: the top level must be a mapping, not {what}"
    ]


def test_unknown_yaml_tag(tmp_path: Path) -> None:
    assert problems(tmp_path, "version: 1\ncluster: !env NAME\n") == [
        "fuzz.yaml:2:10: cluster: could not determine a constructor for the tag '!env'"
    ]


def test_non_scalar_key(tmp_path: Path) -> None:
    assert problems(tmp_path, "version: 1\ncluster: demo\n? [a, b]\n: 1\n") == [
        "fuzz.yaml:3:3: a mapping key must be a plain value, not a list"
    ]


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(b"version: 1\ncluster: d\xffmo\n")
    with pytest.raises(SpecError) as info:
        load_cluster_spec(path, "fuzz.yaml")
    assert str(info.value) == "fuzz.yaml:2:11: not valid UTF-8 text"


def test_unprintable_character(tmp_path: Path) -> None:
    assert problems(tmp_path, "version: 1\ncluster: de\x07mo\n") == [
        "fuzz.yaml:2:12: unacceptable character #x0007: special characters are not allowed"
    ]


def test_recursive_alias(tmp_path: Path) -> None:
    assert problems(tmp_path, "version: 1\ncluster: demo\nx: &a [*a]\n") == [
        "fuzz.yaml:3:1: x: unknown key 'x'",
        "fuzz.yaml:3:4: x[0]: recursive alias: a value must not contain itself",
    ]


def test_merge_keys_and_anchors(tmp_path: Path) -> None:
    text = """
    version: 1
    cluster: demo
    providers: {local: {}}
    pools:
      a: &base
        provider: local
        min: 2
        max: 4
      b:
        <<: *base
        max: 1
    """
    assert problems(tmp_path, text) == ["fuzz.yaml:11:5: pools.b.max: must be >= min"]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_cluster_spec(tmp_path / "nope.yaml", "fuzz.yaml")
    assert str(info.value) == "fuzz.yaml: no such file"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_cluster_spec(tmp_path, "fuzz.yaml")
    assert str(info.value) == "fuzz.yaml: is a directory, not a file"


# --- everything at once -----------------------------------------------------------------


def test_all_problems_reported_together_in_file_order(tmp_path: Path) -> None:
    text = """
    version: 2
    cluster: Demo
    providers:
      local:
      aws:
        region: us-east-1
    pools:
      gpu:
        provider: aws2
        offerring: [p3]
        min: 4
        max: 2
        idle_ttl: soon
      metal:
        provider: local
        min: 1
        nodes:
          - name: n01
          - name: n01
      metal:
        provider: local
    """
    assert problems(tmp_path, text) == [
        "fuzz.yaml:1:10: version: unsupported version 2; this fuzz reads version 1",
        "fuzz.yaml:2:10: cluster: invalid name 'Demo': use 1-63 lowercase letters, digits"
        " or '-', starting with a letter",
        "fuzz.yaml:9:15: pools.gpu.provider: unknown provider 'aws2' (declared: local, aws)"
        " (did you mean 'aws'?)",
        "fuzz.yaml:10:5: pools.gpu.offerring: unknown key 'offerring' (did you mean 'offerings'?)",
        "fuzz.yaml:12:5: pools.gpu.max: must be >= min",
        "fuzz.yaml:13:15: pools.gpu.idle_ttl: invalid duration 'soon': use e.g. 30s, 10m, 1h30m",
        "fuzz.yaml:16:5: pools.metal.min: not allowed in a static pool (one that lists nodes:)",
        "fuzz.yaml:19:15: pools.metal.nodes[1].name: duplicate node name 'n01' (first at nodes[0])",
        "fuzz.yaml:20:3: pools.metal: duplicate key 'metal' (first at line 14)",
    ]


def test_cross_field_checks_on_a_model() -> None:
    spec = ClusterSpec(
        version=1,
        cluster="demo",
        pools={
            "a": PoolSpec(provider="nope", min=3, max=1),
            "b": PoolSpec(
                provider="nope", min=1, nodes=[StaticNodeSpec(name="x"), StaticNodeSpec(name="x")]
            ),
        },
    )
    assert [(issue.path, issue.message, issue.at) for issue in spec.issues()] == [
        (
            ("pools", "a", "provider"),
            "unknown provider 'nope' (no providers are declared)",
            "value",
        ),
        (("pools", "a", "max"), "must be >= min", "key"),
        (
            ("pools", "b", "provider"),
            "unknown provider 'nope' (no providers are declared)",
            "value",
        ),
        (("pools", "b", "min"), "not allowed in a static pool (one that lists nodes:)", "key"),
        (
            ("pools", "b", "nodes", 1, "name"),
            "duplicate node name 'x' (first at nodes[0])",
            "value",
        ),
    ]


# --- plugin blocks ----------------------------------------------------------------------


class AwsConfig(BaseModel):
    """A small provider schema, as a plugin would declare it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    region: str
    profile: str | None = None
    max_instances: int = Field(default=10, ge=1)


class FileStateConfig(BaseModel):
    """A small state-backend schema."""

    model_config = ConfigDict(extra="forbid")

    path: str


PLUGIN_SPEC = """
version: 1
cluster: demo
state:
  backend: local
  pathh: state.json
providers:
  local: {}
  aws:
    kind: aws
    regoin: us-east-1
    max_instances: 0
  aws-west:
    region: [us-west-2]
    profile: ops
"""


def test_validate_block_success(tmp_path: Path) -> None:
    loaded = load(tmp_path, VALID)
    config = validate_provider_block(loaded, "aws", AwsConfig)
    assert config == AwsConfig(region="us-east-1")
    assert validate_state_block(loaded, FileStateConfig).path == ".fuzz/state.json"


def test_validate_block_points_into_the_file(tmp_path: Path) -> None:
    loaded = load(tmp_path, PLUGIN_SPEC)
    block = loaded.spec.providers["aws"].provider_config()
    with pytest.raises(SpecError) as info:
        validate_block(loaded, ("providers", "aws"), AwsConfig, block)
    assert str(info.value).splitlines() == [
        "fuzz.yaml:8:3: providers.aws.region: required field missing",
        "fuzz.yaml:10:5: providers.aws.regoin: unknown key 'regoin' (did you mean 'region'?)",
        "fuzz.yaml:11:20: providers.aws.max_instances: must be >= 1",
    ]


def test_validate_block_type_error(tmp_path: Path) -> None:
    loaded = load(tmp_path, PLUGIN_SPEC)
    with pytest.raises(SpecError) as info:
        validate_provider_block(loaded, "aws-west", AwsConfig)
    assert str(info.value) == "fuzz.yaml:13:13: providers.aws-west.region: must be a string"


def test_validate_state_block(tmp_path: Path) -> None:
    loaded = load(tmp_path, PLUGIN_SPEC)
    with pytest.raises(SpecError) as info:
        validate_state_block(loaded, FileStateConfig)
    assert str(info.value).splitlines() == [
        "fuzz.yaml:3:1: state.path: required field missing",
        "fuzz.yaml:5:3: state.pathh: unknown key 'pathh' (did you mean 'path'?)",
    ]


def test_validate_static_node_attributes(tmp_path: Path) -> None:
    class NodeAttributes(BaseModel):
        model_config = ConfigDict(extra="forbid")
        mac: str

    loaded = load(tmp_path, VALID.replace('mac: "aa:bb:cc:dd:ee:02"', "macc: x"))
    nodes = loaded.spec.pools["metal"].nodes
    assert nodes is not None
    path = ("pools", "metal", "nodes", 1)
    with pytest.raises(SpecError) as info:
        validate_block(loaded, path, NodeAttributes, nodes[1].provider_attributes())
    assert str(info.value).splitlines() == [
        "fuzz.yaml:31:9: pools.metal.nodes[1].mac: required field missing",
        "fuzz.yaml:32:9: pools.metal.nodes[1].macc: unknown key 'macc' (did you mean 'mac'?)",
    ]


# --- the generic parts, as Fuzzfiles will use them ---------------------------------------


class Image(BaseModel):
    model_config = ConfigDict(extra="forbid")
    uri: str
    secret: str | None = None


class Job(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    image: Image | str
    cores: int | str = 1
    task_array: dict[str, int] | None = Field(default=None, alias="task-array")


def test_validation_errors_with_unions_and_aliases() -> None:
    text = "image: {uri: docker://x, secert: s}\ncores: [1]\ntask-aray: {}\n"
    document = parse_yaml(text, "Fuzzfile")
    with pytest.raises(ValidationError) as info:
        Job.model_validate(document.data)
    assert [
        str(p) for p in problems_from_validation_error(info.value, document.source, model=Job)
    ] == [
        "Fuzzfile:1:26: image.secert: unknown key 'secert' (did you mean 'secret'?)",
        "Fuzzfile:2:8: cores: must be an integer or a string",
        "Fuzzfile:3:1: task-aray: unknown key 'task-aray' (did you mean 'task-array'?)",
    ]


def test_problem_str() -> None:
    assert str(Problem("f.yaml", 3, 7, "a.b", "bad")) == "f.yaml:3:7: a.b: bad"
    assert str(Problem("f.yaml", 1, 1, "", "file is empty")) == "f.yaml:1:1: file is empty"
    assert Problem("f.yaml", 3, 7, "a.b", "bad").to_json() == {
        "file": "f.yaml",
        "line": 3,
        "col": 7,
        "field": "a.b",
        "message": "bad",
    }
    error = SpecError([Problem("f", 1, 2, "x", "m"), Problem("f", 3, 4, "", "n")])
    assert isinstance(error, ConfigError)
    assert str(error) == "f:1:2: x: m\nf:3:4: n"
    assert error.exit_code == 1


def test_elastic_pool_keys_have_defaults_and_are_checked(tmp_path: Path) -> None:
    pool = load(tmp_path, spec_with_pool("provider: local\nmax: 2\nstandby: 1\nspot: true\n"
                                         "boot_timeout: 90\n")).spec.pools["p"]
    assert (pool.standby, pool.spot, pool.boot_timeout_seconds(), pool.boot_retries) == (
        1, True, 90.0, 3)
    default = load(tmp_path, spec_with_pool("provider: local\n")).spec.pools["p"]
    assert (default.standby, default.spot, default.boot_timeout_seconds()) == (0, False, 600.0)
    assert problems(tmp_path, spec_with_pool("provider: local\nmax: 2\nstandby: 3\n")) == [
        "fuzz.yaml:9:5: pools.p.standby: must be <= max (2)"]
    assert problems(tmp_path, spec_with_pool("provider: local\nboot_timeout: soon\n")) == [
        "fuzz.yaml:8:19: pools.p.boot_timeout: invalid duration 'soon': use e.g. 30s, 10m, 1h30m"]
    assert problems(tmp_path, spec_with_pool("provider: local\nboot_retries: -1\n")) == [
        "fuzz.yaml:8:19: pools.p.boot_retries: must be >= 0"]


def test_join_token_ttl_defaults_to_an_hour_and_must_be_a_positive_duration(
        tmp_path: Path) -> None:
    orchestrator = load(tmp_path, "version: 1\ncluster: demo\norchestrator: {}\n").spec.orchestrator
    assert orchestrator is not None and orchestrator.join_token_ttl_seconds() == 3600.0
    given = load(tmp_path, "version: 1\ncluster: demo\norchestrator:\n  join_token_ttl: 90\n")
    assert given.spec.orchestrator is not None
    assert given.spec.orchestrator.join_token_ttl_seconds() == 90.0
    assert problems(tmp_path, "version: 1\ncluster: demo\norchestrator:\n"
                              "  join_token_ttl: 0s\n") == [
        "fuzz.yaml:4:19: orchestrator.join_token_ttl: must be longer than 0s"]
    assert problems(tmp_path, "version: 1\ncluster: demo\norchestrator:\n"
                              "  join_token_ttl: soon\n") == [
        "fuzz.yaml:4:19: orchestrator.join_token_ttl: invalid duration 'soon': use e.g. 30s, "
        "10m, 1h30m"]


def test_node_grace_defaults_to_a_minute_and_must_be_a_positive_duration(
        tmp_path: Path) -> None:
    orchestrator = load(tmp_path, "version: 1\ncluster: demo\norchestrator: {}\n").spec.orchestrator
    assert orchestrator is not None and orchestrator.node_grace_seconds() == 60.0
    given = load(tmp_path, "version: 1\ncluster: demo\norchestrator:\n  node_grace: 2m\n")
    assert given.spec.orchestrator is not None
    assert given.spec.orchestrator.node_grace_seconds() == 120.0
    assert problems(tmp_path, "version: 1\ncluster: demo\norchestrator:\n"
                              "  node_grace: 0\n") == [
        "fuzz.yaml:4:15: orchestrator.node_grace: must be longer than 0s"]


def test_pool_network_is_isolated_unless_the_admin_opts_in(tmp_path: Path) -> None:
    assert load(tmp_path, spec_with_pool("provider: local\n")).spec.pools["p"].network == "isolated"
    pool = load(tmp_path, spec_with_pool("provider: local\nnetwork: host\n")).spec.pools["p"]
    assert pool.network == "host"
    assert problems(tmp_path, spec_with_pool("provider: local\nnetwork: open\n")) == [
        "fuzz.yaml:8:14: pools.p.network: must be 'isolated' or 'host'"
    ]


def test_drain_timeout_defaults_to_ten_minutes_and_is_checked(tmp_path: Path) -> None:
    default = load(tmp_path, spec_with_pool("provider: local\n")).spec.pools["p"]
    assert default.drain_timeout_seconds() == 600.0
    given = load(tmp_path, spec_with_pool("provider: local\ndrain_timeout: 90\n")).spec.pools["p"]
    assert given.drain_timeout_seconds() == 90.0
    assert problems(tmp_path, spec_with_pool("provider: local\ndrain_timeout: soon\n")) == [
        "fuzz.yaml:8:20: pools.p.drain_timeout: invalid duration 'soon': use e.g. 30s, 10m, 1h30m"]
