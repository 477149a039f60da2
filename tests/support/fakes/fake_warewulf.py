"""A fake Warewulf server: nodes.conf, images, overlays and the machines behind the BMCs.

Both fakes of the baremetal tests drive this one model: ``tests/support/fakes/wwctl.py``
(the ``wwctl`` command line) and ``tests/support/fakes/warewulf_api.py`` (warewulfd's REST
API). Its state lives in one directory, so that the fake ``wwctl`` subprocesses
and the test share it::

    nodes.conf                  nodeprofiles + nodes, as Warewulf keeps them (YAML)
    images/<name>/              the imported images (wwctl image list)
    overlays/<name>/rootfs/     site overlays; ``*.ww`` files are templates
    provision/<node>/           a node's built system overlay (wwctl overlay build)
    power.yaml                  power state by BMC address
    machines/<bmc>/             the machine behind a BMC: the root its boot plays in
    deny                        while present, every wwctl call is refused (not root)

Rules it enforces as Warewulf does: unknown profiles, images and overlays are
refused; a node name is added once; MAC and IP addresses must parse; power needs
an IPMI address, user name and password (the node's or its profiles'). Templates
support what the fuzz overlay uses: ``{{ index .Tags "KEY" }}`` and
``{{ softlink "PATH" }}``; anything else is refused.

Booting (power on) plays the machine: when its built overlay carries fuzz's
bootstrap (``etc/fuzz/bootstrap.b64``), the fake decodes and runs it as the
overlay's ``fuzz-bootstrap.service`` would, with the environment of the rendered
``etc/fuzz/agent.env`` (``FUZZ_LISTEN``, ``FUZZ_ADVERTISE``), under
``machines/<bmc>/`` — a real agent starts.
Power off stops the agents of that machine.
"""

from __future__ import annotations

import base64
import fcntl
import ipaddress
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
TEMPLATE_ACTION = re.compile(r"\{\{(.*?)\}\}", re.S)
INDEX_TAG = re.compile(r'^\s*index \.Tags "([^"]*)"\s*$')
SOFTLINK = re.compile(r'^\s*softlink "([^"]*)"\s*$')
BOOTSTRAP = Path("etc/fuzz/bootstrap.b64")
AGENT_ENV = Path("etc/fuzz/agent.env")


class WarewulfError(Exception):
    """Warewulf refuses the request; ``status`` is the HTTP code warewulfd would answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class FakeWarewulf:
    """The server's state in ``root``; every operation holds the state lock."""

    def __init__(self, root: Path) -> None:
        self.root = root

    # --- set-up (what an admin did before fuzz came) -------------------------------

    def initialise(self, images: list[str], overlays: Mapping[str, Path | None],
                   ipmi_user: str = "admin", ipmi_password: str = "ipmi-pw") -> None:
        """Write a nodes.conf with a ``default`` profile, import images, install overlays."""
        for name in images:
            (self.root / "images" / name).mkdir(parents=True, exist_ok=True)
        for name, source in overlays.items():
            target = self.root / "overlays" / name
            if source is None:
                (target / "rootfs").mkdir(parents=True, exist_ok=True)
            else:
                shutil.copytree(source, target)
        profile = {"ipmi": {"username": ipmi_user, "password": ipmi_password},
                   "system overlay": ["wwinit"]}
        self._save({"nodeprofiles": {"default": profile}, "nodes": {}})

    # --- state --------------------------------------------------------------------

    @contextmanager
    def locked(self) -> Iterator[dict[str, Any]]:
        """The nodes.conf document, locked; written back when the block succeeds."""
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            conf = yaml.safe_load((self.root / "nodes.conf").read_text()) or {}
            conf.setdefault("nodeprofiles", {})
            conf.setdefault("nodes", {})
            yield conf
            self._save(conf)
        finally:
            os.close(fd)

    def _save(self, conf: Mapping[str, Any]) -> None:
        tmp = self.root / "nodes.conf.tmp"
        tmp.write_text(yaml.safe_dump(dict(conf), sort_keys=True))
        tmp.replace(self.root / "nodes.conf")

    def nodes(self) -> dict[str, dict[str, Any]]:
        """Every node by name, in nodes.conf field names, empty values left out."""
        with self.locked() as conf:
            return {name: _pruned(fields) for name, fields in conf["nodes"].items()}

    def node(self, name: str) -> dict[str, Any]:
        """One node, or 404."""
        nodes = self.nodes()
        if name not in nodes:
            raise WarewulfError(f"node not found: {name}", 404)
        return nodes[name]

    # --- nodes --------------------------------------------------------------------

    def add(self, name: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Add node ``name``; refuses a taken name and unknown profiles, images, overlays."""
        with self.locked() as conf:
            if name in conf["nodes"]:
                raise WarewulfError(f"node name '{name}' already exists")
            node = _copy(fields)
            self._check(conf, name, node)
            conf["nodes"][name] = node
            return _pruned(node)

    def update(self, name: str, fields: Mapping[str, Any],
               delete_tags: tuple[str, ...] = ()) -> dict[str, Any]:
        """Merge ``fields`` into node ``name`` (maps merge, lists and values replace)."""
        with self.locked() as conf:
            if name not in conf["nodes"]:
                raise WarewulfError(f"node not found: {name}", 404)
            node = _merged(conf["nodes"][name], _copy(fields))
            for key in delete_tags:
                node.get("tags", {}).pop(key, None)
            self._check(conf, name, node)
            conf["nodes"][name] = node
            return _pruned(node)

    def delete(self, name: str) -> dict[str, Any]:
        """Delete node ``name`` and its built overlay."""
        with self.locked() as conf:
            if name not in conf["nodes"]:
                raise WarewulfError(f"nodename does not exist: {name}", 500)
            node = conf["nodes"].pop(name)
        shutil.rmtree(self.root / "provision" / name, ignore_errors=True)
        return _pruned(node)

    def _check(self, conf: Mapping[str, Any], name: str, node: Mapping[str, Any]) -> None:
        for profile in node.get("profiles") or []:
            if profile not in conf["nodeprofiles"]:
                raise WarewulfError(f"profile '{profile}' does not exist")
        image = node.get("image name")
        if image and not (self.root / "images" / image).is_dir():
            raise WarewulfError(f"image '{image}' does not exist")
        for overlay in node.get("system overlay") or []:
            if not (self.root / "overlays" / overlay).is_dir():
                raise WarewulfError(f"overlay '{overlay}' does not exist")
        for netname, netdev in (node.get("network devices") or {}).items():
            hwaddr = netdev.get("hwaddr")
            if hwaddr and not MAC.fullmatch(hwaddr):
                raise WarewulfError(f"{name}: network device {netname}: invalid hwaddr {hwaddr}")
            _check_ip(netdev.get("ipaddr"), f"{name}: network device {netname}: ipaddr")
        _check_ip((node.get("ipmi") or {}).get("ipaddr"), f"{name}: ipmi ipaddr")
        tags = node.get("tags") or {}
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
            raise WarewulfError(f"{name}: tags must map strings to strings")

    # --- overlays -----------------------------------------------------------------

    def build_overlays(self, names: list[str]) -> list[str]:
        """Render every system overlay of each node (all nodes when ``names`` is empty)."""
        with self.locked() as conf:
            names = names or sorted(conf["nodes"])
            for name in names:
                if name not in conf["nodes"]:
                    raise WarewulfError(f"node not found: {name}", 404)
                self._build(name, _effective(conf, name))
        return names

    def _build(self, name: str, node: Mapping[str, Any]) -> None:
        target = self.root / "provision" / name
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        tags = node.get("tags") or {}
        for overlay in node.get("system overlay") or []:
            rootfs = self.root / "overlays" / overlay / "rootfs"
            for source in sorted(p for p in rootfs.rglob("*") if p.is_file()):
                relative = source.relative_to(rootfs)
                if source.suffix != ".ww":
                    (target / relative).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source, target / relative)
                    continue
                dest = target / relative.with_suffix("")
                dest.parent.mkdir(parents=True, exist_ok=True)
                link, text = _render(source, tags)
                if link is not None:
                    dest.unlink(missing_ok=True)
                    dest.symlink_to(link)
                else:
                    dest.write_text(text)

    # --- power --------------------------------------------------------------------

    def bmc(self, name: str) -> str:
        """The node's BMC address, or the error Warewulf gives when IPMI is not configured."""
        with self.locked() as conf:
            if name not in conf["nodes"]:
                raise WarewulfError(f"node not found: {name}", 404)
            ipmi = _effective(conf, name).get("ipmi") or {}
        if not ipmi.get("ipaddr") or not ipmi.get("username") or not ipmi.get("password"):
            raise WarewulfError("node ipmi not configured")
        return str(ipmi["ipaddr"])

    def power_state(self, name: str) -> str:
        """``on`` or ``off``."""
        bmc = self.bmc(name)
        return str(self._power().get(bmc, "off"))

    def power(self, name: str, state: str) -> str:
        """Power the node's machine on (it boots) or off (its agents stop); return its BMC."""
        bmc = self.bmc(name)
        machine = self.root / "machines" / bmc
        if state == "on":
            if self._power().get(bmc) != "on":
                self._set_power(bmc, "on")
                self._boot(name, machine)
        elif state == "off":
            self._set_power(bmc, "off")
            from fuzz.testing.boot import stop_agents

            stop_agents(machine)
        else:
            raise WarewulfError(f"invalid power state {state} valid states are [on off]")
        return bmc

    def _power(self) -> dict[str, str]:
        path = self.root / "power.yaml"
        return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}

    def _set_power(self, bmc: str, state: str) -> None:
        with self.locked():
            power = self._power()
            power[bmc] = state
            (self.root / "power.yaml").write_text(yaml.safe_dump(power))

    def _boot(self, name: str, machine: Path) -> None:
        """Start the machine's boot in the background, as fuzz-bootstrap.service would run."""
        built = self.root / "provision" / name
        if not (built / BOOTSTRAP).is_file():
            return  # the machine boots, but nothing in its overlay starts fuzz
        from fuzz.testing.boot import SCRIPT_NAME, boot_env

        env = boot_env(machine, listen=None)
        if (built / AGENT_ENV).is_file():  # the unit's EnvironmentFile
            for line in (built / AGENT_ENV).read_text().splitlines():
                key, eq, value = line.partition("=")
                if eq and key.strip() and value.strip():
                    env[key.strip()] = value.strip()
        machine.mkdir(parents=True, exist_ok=True)
        script = machine / SCRIPT_NAME
        script.write_bytes(base64.b64decode((built / BOOTSTRAP).read_text()))
        with open(machine / "boot.log", "ab") as log:
            subprocess.Popen(["/bin/sh", str(script)], env=env,
                             stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)

    # --- faults -------------------------------------------------------------------

    @property
    def denied(self) -> bool:
        """True while wwctl callers are refused as if they were not root."""
        return (self.root / "deny").exists()

    def deny(self, on: bool) -> None:
        """Refuse (or accept again) every wwctl call."""
        if on:
            (self.root / "deny").touch()
        else:
            (self.root / "deny").unlink(missing_ok=True)


def _copy(fields: Mapping[str, Any]) -> dict[str, Any]:
    return yaml.safe_load(yaml.safe_dump(dict(fields)))  # type: ignore[no-any-return]


def _merged(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = _merged(dict(result[key]), value)
        else:
            result[key] = value
    return result


def _pruned(value: Any) -> Any:
    """``value`` without empty strings, lists and maps (Warewulf's JSON omits them)."""
    if isinstance(value, Mapping):
        kept = {k: _pruned(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v not in ("", None, [], {})}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value


def _effective(conf: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A node with its profiles' values under its own; overlay lists are appended."""
    node = conf["nodes"][name]
    merged: dict[str, Any] = {}
    overlays: list[str] = []
    for profile in node.get("profiles") or []:
        fields = conf["nodeprofiles"].get(profile) or {}
        overlays += fields.get("system overlay") or []
        merged = _merged(merged, fields)
    merged = _merged(merged, node)
    merged["system overlay"] = overlays + list(node.get("system overlay") or [])
    return merged


def _check_ip(value: Any, what: str) -> None:
    if value:
        try:
            ipaddress.ip_address(str(value))
        except ValueError:
            raise WarewulfError(f"{what}: invalid IP address {value}") from None


def _render(source: Path, tags: Mapping[str, str]) -> tuple[str | None, str]:
    """Render the template subset the fuzz overlay uses: (symlink target or None, text)."""
    link: str | None = None

    def action(match: re.Match[str]) -> str:
        nonlocal link
        body = match[1]
        if tag := INDEX_TAG.match(body):
            return str(tags.get(tag[1], ""))
        if target := SOFTLINK.match(body):
            link = target[1]
            return ""
        raise WarewulfError(f"template {source.name}: unsupported action {{{{{body}}}}}")

    text = TEMPLATE_ACTION.sub(action, source.read_text())
    return link, text
