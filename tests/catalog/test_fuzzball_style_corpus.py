"""A corpus of catalog applications written the way Fuzzball's published catalog writes
them (reference §5), rendered and validated unchanged by the real commands.

``tests/catalog/corpus/applications/`` holds applications written for these tests in
that style (none copied): a copyright comment before the front matter, ``keyart`` and
``key_art``, the catalog's categories; values of every kind (multi-line
``display_name`` with ``[required]``, ``options_input``, ``bool_value``,
``uint_value``, ``secret_value`` with and without a default); templates of both
dialects with a prelude of derived values and ``fail`` checks, ``range`` over
``splitList`` lists with ``$``, ``append``/``dict``/``index``, ``randInt`` ports,
``now | unixEpoch`` in names, raw strings that emit braces, ``toJson``/``b64enc``/
``quote``, int64 arithmetic, ``with``, ``ternary``; services that persist with endpoints
and probes, ingress/egress with secrets, task arrays, multinode, ``requires`` and
``depends-on``, v1 and v4 mounts, top-level and job ``files``. Each renders with its
defaults through ``fuzz app render`` and the file it writes passes ``fuzz workflow
validate`` as it is; its ``fail`` checks name the template's line; the catalog lists
every application with none broken.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.cliutil import Result, run_fuzz

CORPUS = Path(__file__).resolve().parent / "corpus"
APPS = CORPUS / "applications"
Doc = dict[str, Any]


def fuzz(home: Path, *args: str) -> Result:
    """``fuzz ARGS`` with a client config (and so the user's catalogs) of its own."""
    (home / "work").mkdir(exist_ok=True)
    return run_fuzz(home / "work", *args,
                    env={"FUZZ_CONFIG": str(home / "config" / "config.yaml")})


def render(home: Path, app: str, *sets: str) -> Result:
    """``fuzz app render`` of the corpus's ``app`` with ``--set`` for each of ``sets``,
    written to ``home/app.fz``."""
    folder = APPS / app
    options = [arg for value in sets for arg in ("--set", value)]
    return fuzz(home, "app", "render", str(folder / "template.yaml"),
                str(folder / "values.yaml"), *options, "-o", str(home / f"{app}.fz"))


def _hello_world(doc: Doc) -> None:
    job = doc["jobs"]["hello"]
    assert job["env"] == ["GREETING=Hello from Fuzzball"]
    assert "-lt 3 ]" in job["script"]
    assert job["image"]["uri"] == "docker://docker.io/library/alpine:3.20"


def _sequence_search(doc: Doc) -> None:
    data = doc["volumes"]["data"]
    assert [entry["destination"]["uri"] for entry in data["ingress"]] == [
        "file://db/nt_small.fasta", *(f"file://queries/{i}.fasta" for i in range(3))]
    assert all("secret" not in entry["source"] for entry in data["ingress"])  # none given
    stamp = data["egress"][0]["destination"]["uri"].rstrip("/").rsplit("-", 1)[1]
    assert abs(int(stamp) - time.time()) < 600
    search = doc["jobs"]["search"]
    assert search["task-array"] == {"start": 1, "end": 3, "concurrency": 2}
    assert search["policy"]["timeout"]["execute"] == "60m"
    assert search["resource"]["memory"]["size"] == "8GiB"
    assert "-db /data/db/nt_small" in search["script"]


def _notebook_server(doc: Doc) -> None:
    service = doc["services"]["notebook"]
    port = service["network"]["ports"][0]["port"]
    assert 20000 <= port < 30000
    assert service["readiness-probe"]["http-get"]["port"] == port
    assert service["env"] == [f"NOTEBOOK_PORT={port}"]
    assert json.loads(service["files"]["/etc/notebook/config.json"]) == {
        "base_url": "ENDPOINT", "port": port}
    assert service["files"]["/etc/notebook/banner.txt"] == "{{ served by fuzz }}\n"
    assert service["mounts"] == {"/home/jovyan/work": {"volume": "vol0"},
                                 "/data/datasets": {"volume": "vol1"}}
    assert doc["volumes"]["vol1"]["reference"] == "volume://user/persistent/datasets"
    assert service["persist"] is True and "devices" not in service["resource"]


def _mpi_ring(doc: Doc) -> None:
    ring = doc["jobs"]["ring"]
    assert ring["multinode"] == {"nodes": 2, "implementation": "openmpi"}
    assert ring["env"] == ["RING_LAPS=10", "RING_RANKS=8"]
    assert ring["resource"]["memory"]["size"] == "2GiB"
    assert ring["policy"]["timeout"]["execute"] == "25m"
    assert "secret" not in ring["image"]


def _gpu_finetune(doc: Doc) -> None:
    job = doc["jobs"]["finetune"]
    settings = json.loads(doc["files"]["settings"])
    assert settings == {"dataset": "/data/chat/train.jsonl", "epochs": 3, "gpus": 2,
                        "model": "corpus/tiny-llm-1b"}
    env = dict(entry.split("=", 1) for entry in job["env"])
    assert json.loads(base64.b64decode(env["SETTINGS_B64"])) == settings
    assert env["RUN_NAME"] == "tiny-llm-1b-e3" and env["HF_TOKEN"] == "secret://user/HF_TOKEN"
    assert job["resource"] == {"cpu": {"cores": 16}, "memory": {"size": "64GiB"},
                               "devices": {"nvidia.com/gpu": 2}, "exclusive": True}
    assert job["policy"]["timeout"]["execute"] == "7h"


def _file_sync(doc: Doc) -> None:
    assert doc["version"] == "v1"
    assert {name: volume["reference"] for name, volume in doc["volumes"].items()} == {
        "v0": "volume://user/persistent", "v1": "volume://user/persistent/shared"}
    mounts = {"v0": {"location": "/srv/home"}, "v1": {"location": "/srv/shared"}}
    server = doc["services"]["server"]
    assert doc["jobs"]["prepare"]["mounts"] == mounts and server["mounts"] == mounts
    assert '--addr ":8080" --read-only' in server["script"]
    assert server["requires"] == ["prepare"]


CHECKS: dict[str, Callable[[Doc], None]] = {
    "hello_world": _hello_world, "sequence_search": _sequence_search,
    "notebook_server": _notebook_server, "mpi_ring": _mpi_ring,
    "gpu_finetune": _gpu_finetune, "file_sync": _file_sync}
"""What each application's defaults render to (beyond being a valid Fuzzfile)."""


def test_the_corpus_holds_the_applications_checked_here() -> None:
    assert sorted(path.name for path in APPS.iterdir()) == sorted(CHECKS)


@pytest.mark.parametrize("app", sorted(CHECKS))
def test_an_application_renders_with_its_defaults_and_validates_unchanged(
        tmp_path: Path, app: str) -> None:
    rendered = render(tmp_path, app)
    assert rendered.code == 0, rendered.err
    validated = fuzz(tmp_path, "workflow", "validate", str(tmp_path / f"{app}.fz"), "--json")
    assert validated.code == 0, validated.out + validated.err
    assert validated.json()["valid"] is True
    CHECKS[app](yaml.safe_load((tmp_path / f"{app}.fz").read_text()))


@pytest.mark.parametrize(("app", "value", "line", "message"), [
    ("hello_world", "Repeat=0", 11, "Repeat must be between 1 and 100, not 0"),
    ("sequence_search", "Queries=s3://b/a.fa, http://b/x.fa", 4,
     'every query must be an s3:// URI, not "http://b/x.fa"'),
    ("notebook_server", "DataVolume=s3://b/x", 7,
     'DataVolume: "s3://b/x" is not a volume:// reference'),
    ("mpi_ring", "Nodes=1", 3, "Nodes: a ring needs at least 2 nodes"),
    ("gpu_finetune", "Gpus=0", 12, "Gpus must be at least 1 with UseGpu"),
    ("file_sync", "Volumes=/srv", 5, 'Volumes: "/srv" must start with volume://'),
])
def test_a_templates_fail_names_its_line_and_message(
        tmp_path: Path, app: str, value: str, line: int, message: str) -> None:
    failed = render(tmp_path, app, value)
    assert failed.code == 1
    assert failed.err.startswith(f"{APPS / app / 'template.yaml'}:{line}:"), failed.err
    assert failed.err.endswith(f": fail: {message}\n"), failed.err
    assert failed.err.count("\n") == 1


def test_options_and_bools_set_at_render_change_what_renders(tmp_path: Path) -> None:
    assert render(tmp_path, "mpi_ring", "Implementation=mpich",
                  "ImageSecret=secret://user/REGISTRY").code == 0
    ring = yaml.safe_load((tmp_path / "mpi_ring.fz").read_text())["jobs"]["ring"]
    assert ring["multinode"]["implementation"] == "mpich"
    assert ring["image"]["secret"] == "secret://user/REGISTRY"
    assert render(tmp_path, "gpu_finetune", "UseGpu=false", "TokenSecret=").code == 0
    job = yaml.safe_load((tmp_path / "gpu_finetune.fz").read_text())["jobs"]["finetune"]
    assert job["resource"] == {"cpu": {"cores": 4}, "memory": {"size": "16GiB"}}
    assert not any(entry.startswith("HF_TOKEN=") for entry in job["env"])


def test_the_corpus_as_a_catalog_lists_every_application_none_broken(tmp_path: Path) -> None:
    added = fuzz(tmp_path, "app", "catalog", "add", "corpus", str(CORPUS))
    assert added.code == 0, added.err
    listed = fuzz(tmp_path, "app", "list", "--json")
    assert listed.code == 0, listed.err
    entries = {entry["app"]: entry for entry in listed.json()}
    assert sorted(entries) == sorted(CHECKS)
    assert entries["hello_world"]["id"] == "fuzz-corpus/examples/hello_world"
    assert entries["hello_world"]["featured"] is True
    assert entries["file_sync"]["category"] == "UTILITIES"
    shown = fuzz(tmp_path, "app", "show", "corpus/sequence_search", "--json")
    assert shown.code == 0, shown.err
    values = {value["name"]: value for value in shown.json()["values"]}
    assert values["Queries"]["required"] and not values["S3Secret"]["required"]
    assert values["Program"]["options"] == ["blastn", "blastp", "tblastx"]
    assert values["Threads"]["type"] == "uint" and values["Threads"]["default"] == 4
