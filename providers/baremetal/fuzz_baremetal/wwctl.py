"""Warewulf through ``wwctl`` (4.6.1+): one subprocess per call, arguments as a list, no shell."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Mapping
from typing import Literal

from fuzz.plugin.provider import ProviderError
from fuzz_baremetal.client import NewNode, NodeFields, NodeSetup, PowerState
from fuzz_baremetal.errors import classify, one_line

_STATUS_LINE = re.compile(r"^\s*(?P<who>\S+):\s*(?P<result>.*)$")


def _tag_args(tags: Mapping[str, str]) -> list[str]:
    args: list[str] = []
    for key, value in sorted(tags.items()):
        args += ["--tagadd", f"{key}={value}"]
    return args


class WwctlWarewulf:
    """Runs ``wwctl`` (the ``command`` of the provider block) with a timeout per call."""

    def __init__(self, command: str, timeout: float) -> None:
        """Use ``command`` (a name on PATH or a path); nothing runs yet."""
        self.command = command
        self.timeout = timeout

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [self.command, *args]
        what = " ".join(argv[:3])
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout,
                                  stdin=subprocess.DEVNULL)
        except FileNotFoundError as exc:
            raise ProviderError(f"warewulf: {self.command} not found; install Warewulf on this "
                                f"host or set wwctl: in the provider block") from exc
        except subprocess.TimeoutExpired as exc:
            raise ProviderError(f"warewulf: {what} did not finish within "
                                f"{self.timeout:g}s") from exc
        if check and proc.returncode != 0:
            raise classify(what, proc.stderr or proc.stdout)
        return proc

    def list_nodes(self) -> dict[str, NodeFields]:
        """``wwctl node list --json``: a JSON object of nodes by name (4.6.1+)."""
        out = self._run("node", "list", "--json").stdout
        try:
            nodes = json.loads(out or "{}")
        except ValueError:
            raise ProviderError(f"warewulf: wwctl node list --json printed no JSON: "
                                f"{one_line(out)[:200]}") from None
        if not isinstance(nodes, dict):
            raise ProviderError("warewulf: wwctl node list --json did not print nodes by name; "
                                "fuzz needs Warewulf 4.6.1 or later")
        return nodes

    def add_node(self, node: NewNode) -> None:
        """``wwctl node add`` with the machine's network, BMC and fuzz's tags."""
        args = ["node", "add", "--profile", node.profile, "--netname", node.network,
                "--hwaddr", node.mac, "--ipmiaddr", node.ipmi_address]
        if node.ip:
            args += ["--ipaddr", node.ip]
        self._run(*args, *_tag_args(node.tags), node.name)

    def set_node(self, name: str, setup: NodeSetup) -> None:
        """``wwctl node set --yes`` with the image, the overlay and the bootstrap tags."""
        self._run("node", "set", "--yes", "--image", setup.image, "--system-overlays",
                  setup.overlay, *_tag_args(setup.tags), name)

    def delete_node(self, name: str) -> None:
        """``wwctl node delete --yes``."""
        self._run("node", "delete", "--yes", name)

    def build_overlays(self, name: str) -> None:
        """``wwctl overlay build NODE``."""
        self._run("overlay", "build", name)

    def power(self, name: str, state: Literal["on", "off"]) -> None:
        """``wwctl power on|off NODE``."""
        self._run("power", state, name)

    def power_status(self, nodes: Mapping[str, str]) -> dict[str, PowerState]:
        """``wwctl power status NODE…``: lines ``<node or BMC address>: Chassis Power is on``.

        A node whose BMC does not answer is reported ``unknown`` (wwctl then exits
        non-zero and says so on stderr, while it still prints the others).
        """
        if not nodes:
            return {}
        proc = self._run("power", "status", *sorted(nodes), check=False)
        by_address = {address: name for name, address in nodes.items()}
        states: dict[str, PowerState] = dict.fromkeys(nodes, "unknown")
        for line in proc.stdout.splitlines():
            match = _STATUS_LINE.match(line)
            if not match:
                continue
            name = match["who"] if match["who"] in nodes else by_address.get(match["who"])
            result = match["result"].lower()
            if name is not None and result.endswith("power is on"):
                states[name] = "on"
            elif name is not None and result.endswith("power is off"):
                states[name] = "off"
        if proc.returncode != 0 and all(s == "unknown" for s in states.values()):
            raise classify("wwctl power status", proc.stderr or proc.stdout)
        return states
