"""The container monitor imports only the standard library, its own package and the few fuzz
modules that themselves import only the standard library (the one atomic write, the error
types, the network label).

It runs as ``python -S`` (no site-packages), so an import of anything else would
fail at its start, or slow it. The one exception is pyroute2, imported inside the
job network's thread (:mod:`fuzz.substrate.monitor.netns`), never at module level.
Exec's reaper, the other ``python -S`` helper, loads no more than the monitor's modules.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import fuzz.substrate.monitor.process
from fuzz.substrate.runtime.exec_reaper import REAPER_MAIN
from fuzz.substrate.runtime.helper_process import helper_command, helper_env
from fuzz.substrate.runtime.monitor_client import MONITOR_MAIN

PACKAGE = "fuzz.substrate.monitor"
MONITOR_DIR = Path(fuzz.substrate.monitor.__file__).parent
# Imported lazily by the network thread only (see fuzz.substrate.monitor.netns).
THREAD_ONLY = {"netns.py": {"pyroute2"}}
# What importing a package module loads on its way: the parents of the monitor package.
PARENTS = {"fuzz", "fuzz.substrate", "fuzz.spec"}
# fuzz modules the monitor shares with the rest, each importing only the standard library
# (kept so by the import-linter contract "monitor-standard-library").
SHARED = {"fuzz.fsutil", "fuzz.errors", "fuzz.spec.labels"}


def _imports(tree: ast.Module) -> list[tuple[str, bool]]:
    """Every module ``tree`` imports, each with whether the import is at module level."""
    top = {id(node) for node in tree.body}
    found: list[tuple[str, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            assert node.level == 0, "the monitor uses absolute imports"
            found.append((node.module, id(node) in top))
    return found


def _allowed(module: str) -> bool:
    root = module.split(".")[0]
    return (root in sys.stdlib_module_names or module in SHARED or module == PACKAGE
            or module.startswith(PACKAGE + "."))


def test_monitor_modules_import_only_the_standard_library_and_their_package() -> None:
    files = sorted(MONITOR_DIR.glob("*.py"))
    assert len(files) > 10  # the whole package, not an empty glob
    wrong: list[str] = []
    for path in files:
        exceptions = THREAD_ONLY.get(path.name, set())
        for module, top_level in _imports(ast.parse(path.read_text(), str(path))):
            if _allowed(module):
                continue
            if module.split(".")[0] in exceptions and not top_level:
                continue
            wrong.append(f"{path.name}: {module}{' (module level)' if top_level else ''}")
    assert wrong == []


@pytest.mark.parametrize(("main", "entry", "own"), [
    (MONITOR_MAIN, f"{PACKAGE}.process", set()),
    (REAPER_MAIN, "fuzz.substrate.runtime.exec_reaper",
     {"fuzz.substrate.runtime", "fuzz.substrate.runtime.exec_reaper"}),
], ids=["monitor", "exec-reaper"])
def test_the_helpers_start_with_only_standard_modules_loaded(
        main: str, entry: str, own: set[str]) -> None:
    """A helper's entry, run as the agent runs it (``python -S``), loads nothing else."""
    code = main.split(";")[1].strip()  # "from ... import main", without running it
    assert code.startswith(f"from {entry} import")
    probe = f"{code}; import sys; print('\\n'.join(sorted(sys.modules)))"
    done = subprocess.run(helper_command(probe), env=helper_env(), capture_output=True,
                          text=True, timeout=60, check=True)
    loaded = done.stdout.split()
    assert entry in loaded
    foreign = [name for name in loaded
               if not _allowed(name) and name not in PARENTS | own and name != "__main__"]
    assert foreign == []
