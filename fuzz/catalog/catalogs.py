"""Catalogs: a directory, or a git repository checked out at a ref, holding
``applications/<app>/`` folders in Fuzzball's layout (reference §5.1).

Used alike by the user's own catalogs (``fuzz app catalog add``, :mod:`.registry`) and by
the ones an orchestrator's admin lists in the cluster spec (``orchestrator.catalogs``).
Git is Debian's ``git``, run as a subprocess with prompts off.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fuzz.catalog.application import (
    Application,
    is_application_dir,
    load_application,
    read_bundle,
)
from fuzz.errors import ConfigError, FuzzError
from fuzz.spec.cluster import CatalogSpec

APPLICATIONS = "applications"
GIT_TIMEOUT = 300.0
"""Seconds a clone or checkout may take."""

_SCP_LIKE = re.compile(r"[\w.-]+@[\w.-]+:")


@dataclass(frozen=True)
class LoadedCatalog:
    """A catalog's applications, and one line for each application that could not be read."""

    name: str
    applications: list[Application]
    broken: list[str]


def parse_source(name: str, argument: str) -> CatalogSpec:
    """``PATH`` or ``GIT_URL[@REF]`` (``fuzz app catalog add``) as a catalog source.

    An existing directory is a directory catalog (read where it is); a URL
    (``https://…``, ``file://…``, ``git@host:…``) or a local repository followed by
    ``@REF`` is a git catalog, cloned at REF (a branch, tag or commit; default: the
    repository's HEAD).
    """
    if Path(argument).is_dir():
        return CatalogSpec(name=name, path=str(Path(argument).resolve()))
    left, sep, ref = argument.rpartition("@")
    candidates = [(left, ref)] if sep and left and ":" not in ref else []
    for url, at in [*candidates, (argument, None)]:
        if Path(url).is_dir():
            return CatalogSpec(name=name, git=str(Path(url).resolve()), ref=at)
        if _SCP_LIKE.match(url) or "/" in url.partition("://")[2]:
            return CatalogSpec(name=name, git=url, ref=at)
    raise ConfigError(f"{argument}: not a directory, nor a git URL (https://…, file://…, "
                      "git@host:…) with an optional @REF")


def _git(*args: str, cwd: Path | None = None) -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true"}
    try:
        done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=GIT_TIMEOUT, check=False)
    except FileNotFoundError as exc:
        raise ConfigError("git is not installed (Debian: apt-get install git)") from exc
    except subprocess.TimeoutExpired as exc:
        raise ConfigError(f"git {args[0]} took longer than {GIT_TIMEOUT:.0f} s") from exc
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise ConfigError(f"git {args[0]}: {lines[-1] if lines else f'exit {done.returncode}'}")
    return done.stdout.strip()


def git_checkout(url: str, ref: str | None, destination: Path) -> str:
    """Clone ``url`` at ``ref`` into ``destination`` (replacing what was there only once
    the new checkout is complete); the commit checked out."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{destination.name}-", dir=destination.parent))
    try:
        _git("clone", "--quiet", "--no-checkout", "--", url, str(work / "repo"))
        repo = work / "repo"
        commit = _resolve(repo, ref)
        _git("checkout", "--quiet", "--detach", commit, cwd=repo)
        old = work / "old"
        if destination.exists():
            destination.rename(old)
        repo.rename(destination)
        return commit
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _resolve(repo: Path, ref: str | None) -> str:
    """The commit ``ref`` names in a fresh clone: a branch (``origin/REF``), tag or commit."""
    if ref is None:
        return _git("rev-parse", "--verify", "HEAD^{commit}", cwd=repo)
    for candidate in (f"refs/remotes/origin/{ref}", f"refs/tags/{ref}", ref):
        try:
            return _git("rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}",
                        cwd=repo)
        except ConfigError:
            continue
    raise ConfigError(f"git: no branch, tag or commit {ref!r} in the repository")


def catalog_root(source: CatalogSpec, clones: Path, base: Path | None = None) -> Path:
    """Where ``source``'s files are: its directory (relative to ``base``), or its clone
    under ``clones`` (made on first use)."""
    if source.path is not None:
        return (base / source.path) if base is not None else Path(source.path)
    clone = clones / source.name
    if not clone.is_dir():
        assert source.git is not None  # a source has a path or a git URL
        git_checkout(source.git, source.ref, clone)
    return clone


def load_catalog(name: str, root: Path, shown: str | None = None) -> LoadedCatalog:
    """The applications under ``root/applications``; ``shown`` is how messages name
    ``root``. An application that cannot be read is listed in ``broken`` (one line)."""
    where = shown if shown is not None else str(root)
    folder = root / APPLICATIONS
    if not folder.is_dir():
        raise ConfigError(f"catalog {name}: {where} has no {APPLICATIONS}/ folder (a catalog "
                          f"holds {APPLICATIONS}/<app>/template.yaml, values.yaml and "
                          "metadata.md)")
    applications: list[Application] = []
    broken: list[str] = []
    for directory in sorted(path for path in folder.iterdir() if path.is_dir()):
        if not is_application_dir(directory):
            continue  # not an application (a shared folder, say)
        try:
            bundle = read_bundle(directory, f"{where}/{APPLICATIONS}/{directory.name}")
            applications.append(load_application(name, directory.name, bundle))
        except FuzzError as exc:
            broken.append(str(exc).splitlines()[0])
    return LoadedCatalog(name, applications, broken)
