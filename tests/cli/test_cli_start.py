"""The ``fuzz`` command's start: commands that talk to a running cluster import no spec models.

``fuzz workflow exec`` is measured against ``ssh host cat`` (bench/port_forward.py), and
ssh starts in milliseconds: the commands that only need the server's address, token and
CA must not pay for the cluster spec's and the Fuzzfile's pydantic models on every run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import import_module
from pathlib import Path

import click
import pytest

from fuzz.cli.lazygroup import LazyGroup, load_command
from fuzz.cli.main import TOP_COMMANDS, WORKFLOW_COMMANDS, cli
from fuzz.testing.cluster import cluster_spec

SPEC_MODULES = ("fuzz.spec.cluster", "pydantic")
"""What reading the cluster spec takes: only a command run next to one loads them."""
HEAVY_MODULES = (*SPEC_MODULES, "fuzz.spec.fuzzfile", "fuzz.spec.fuzzfile_loader",
                 "fuzz.catalog.application", "fuzz.cli.workspace", "fuzz.lifecycle.gateway",
                 "fuzz.plugin.loader")
ACCESS_AVOIDS = ("rich", "cryptography", "fuzz.clients.iam")
"""What exec and port-forward do not import either (exec's start is part of its figure
against ssh): the consoles they never print through, the x509 parser only the agent
needs, and the Iam API's stubs."""

# Runs the real CLI in a fresh interpreter, then says which of HEAVY_MODULES it imported.
RUN_THEN_LIST_MODULES = f"""
import json, sys
from fuzz.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps([name for name in {(*HEAVY_MODULES, *ACCESS_AVOIDS)!r} if name in sys.modules]))
"""


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's cache (fuzz.cli.spectargets) in the test's own folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _run(*argv: str, cwd: Path | None = None) -> tuple[list[str], str]:
    """Run ``fuzz ARGV``: the heavy modules it imported, and its standard error."""
    result = subprocess.run([sys.executable, "-c", RUN_THEN_LIST_MODULES, *argv], cwd=cwd,
                            capture_output=True, text=True, timeout=120, check=True)
    return json.loads(result.stdout.splitlines()[-1]), result.stderr


@pytest.mark.parametrize("argv", [
    ("workflow", "exec", "--help"),
    ("workflow", "port-forward", "--help"),
    ("workflow", "connect", "--help"),
    ("workflow", "status", "--help"),
    ("workflow", "log", "--help"),
])
def test_commands_that_reach_a_running_cluster_import_no_spec_models(argv: tuple[str, ...]) -> None:
    """exec, port-forward, connect, status and log start without the spec, Fuzzfile or pydantic;
    exec and port-forward without rich, cryptography or the Iam stubs too."""
    imported = _run(*argv)[0]
    access = argv[1] in ("exec", "port-forward")
    assert [name for name in imported if access or name in HEAVY_MODULES] == []


def test_exec_against_no_server_imports_no_spec_models(tmp_path: Path) -> None:
    """A real exec run gets as far as connecting (nothing listens there), still light."""
    token = tmp_path / "token"
    token.write_text("not-a-real-token\n")
    token.chmod(0o600)
    heavy, err = _run("workflow", "exec", "--server", "127.0.0.1:1", "--token-file", str(token),
                      "--insecure", "wf", "job", "--", "true")
    assert "127.0.0.1:1" in err
    assert heavy == []


def test_exec_next_to_a_cluster_spec_reads_only_the_spec(tmp_path: Path) -> None:
    """Next to a spec with an ``orchestrator:`` block, exec parses the spec to find the
    server (its data dir holds the token and CA), but loads no plugins, state or Fuzzfile."""
    (tmp_path / "fuzz.yaml").write_text(cluster_spec("start", 1, orchestrator_port=1))
    heavy, err = _run("workflow", "exec", "wf", "job", "--", "true", cwd=tmp_path)
    assert "no orchestrator was initialized" in err
    assert heavy == list(SPEC_MODULES)


def test_exec_next_to_the_same_spec_again_reads_no_spec_models(tmp_path: Path) -> None:
    """The spec's orchestrator block is remembered for the file's exact bytes: the next exec
    next to it starts without the spec's models; a changed spec is read (and checked) again."""
    spec = tmp_path / "fuzz.yaml"
    spec.write_text(cluster_spec("start", 1, orchestrator_port=1))
    argv = ("workflow", "exec", "wf", "job", "--", "true")
    first, said = _run(*argv, cwd=tmp_path)
    assert first == list(SPEC_MODULES) and "no orchestrator was initialized" in said
    assert _run(*argv, cwd=tmp_path) == ([], said)
    spec.write_text(spec.read_text() + "no_such_key: 1\n")
    changed, said = _run(*argv, cwd=tmp_path)
    assert changed == list(SPEC_MODULES) and "no_such_key" in said


def test_a_cache_that_is_not_json_only_means_reading_the_spec(tmp_path: Path) -> None:
    """What the CLI remembers is a cache: garbage there is read past (the spec is read, and
    the cache written anew), never an error."""
    (tmp_path / "fuzz.yaml").write_text(cluster_spec("start", 1, orchestrator_port=1))
    cache = tmp_path / "cache" / "fuzz" / "spec-targets.json"
    cache.parent.mkdir(parents=True)
    cache.write_text("{not json")
    argv = ("workflow", "exec", "wf", "job", "--", "true")
    heavy, said = _run(*argv, cwd=tmp_path)
    assert heavy == list(SPEC_MODULES) and "no orchestrator was initialized" in said
    assert str(tmp_path / "fuzz.yaml") in json.loads(cache.read_text())
    assert _run(*argv, cwd=tmp_path) == ([], said)


def _lazy_groups(group: click.Group) -> list[LazyGroup]:
    ctx = click.Context(group)
    found = [group] if isinstance(group, LazyGroup) else []
    for name in group.list_commands(ctx):
        sub = group.get_command(ctx, name)
        if isinstance(sub, click.Group):
            found += _lazy_groups(sub)
    return found


def test_every_lazy_name_loads_its_command_and_every_module_command_has_a_name() -> None:
    """The name tables in fuzz.cli.main and the modules' COMMANDS agree both ways."""
    for table in (TOP_COMMANDS, WORKFLOW_COMMANDS):
        for name, module in table.items():
            assert load_command(module, name).name == name
            module_names = {command.name for command in import_module(module).COMMANDS}
            assert module_names <= set(table), f"{module} has commands missing from the table"
    assert {group.name for group in _lazy_groups(cli)} == {"cli", "workflow", "server", "node"}
