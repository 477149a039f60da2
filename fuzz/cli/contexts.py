"""The client's config file: named contexts (a server, a token, the CA to trust), one current.

``fuzz login`` writes ``~/.config/fuzz/config.yaml`` (``$XDG_CONFIG_HOME`` is
honoured; ``$FUZZ_CONFIG`` names another file), mode 0600 since it holds tokens::

    current-context: alice@hpc.example.org:7400
    contexts:
      alice@hpc.example.org:7400:
        server: hpc.example.org:7400
        user: alice
        token: fzt_...
        expires: 1735689600.0      # unix seconds
        ca: |                      # the cluster CA (PEM); absent with insecure: true
          -----BEGIN CERTIFICATE-----
          ...
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fuzz.errors import ConfigError
from fuzz.fsutil import write_private_file
from fuzz.orchestrate.connect import Target
from fuzz.rpc.client import ClientTls

CONFIG_ENV = "FUZZ_CONFIG"


def config_path() -> Path:
    """Where the client config lives."""
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "fuzz" / "config.yaml"


class Context(BaseModel):
    """One server and the credentials to use there."""

    model_config = ConfigDict(extra="forbid")

    server: str
    user: str
    token: str
    expires: float = 0.0
    ca: str | None = None
    insecure: bool = False

    def target(self) -> Target:
        """The orchestrator this context points at."""
        return Target(self.server, self.token,
                      None if self.insecure else ClientTls((self.ca or "").encode()))


class ClientConfig(BaseModel):
    """The whole file."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    current: str | None = Field(default=None, alias="current-context")
    contexts: dict[str, Context] = Field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> ClientConfig:
        """The config in ``path`` (empty when there is none); ConfigError if unusable."""
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls()
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
        if mode & 0o077:
            raise ConfigError(f"{path} holds tokens but others may read it (mode {mode:04o}); "
                              f"run: chmod 600 {path}")
        try:
            return cls.model_validate(yaml.safe_load(text) or {})
        except (yaml.YAMLError, ValidationError) as exc:
            problem = " ".join(str(exc).split())
            raise ConfigError(f"{path} is not a fuzz client config: {problem}") from exc

    def save(self, path: Path) -> None:
        """Write the config to ``path`` (mode 0600, its directory 0700)."""
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        data = self.model_dump(by_alias=True, exclude_none=True)
        write_private_file(path, yaml.safe_dump(data, sort_keys=False).encode())

    def context(self, name: str | None = None) -> tuple[str, Context]:
        """Context ``name`` (default: the current one) and its name; ConfigError if none."""
        chosen = name or self.current
        if chosen is None:
            raise ConfigError("not logged in: run `fuzz login SERVER` (or run next to a "
                              "cluster spec with an orchestrator: block)")
        if chosen not in self.contexts:
            known = ", ".join(self.contexts) or "none"
            raise ConfigError(f"no context {chosen!r} (known: {known})")
        return chosen, self.contexts[chosen]
