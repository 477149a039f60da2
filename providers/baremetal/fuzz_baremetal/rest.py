"""Warewulf through warewulfd's REST API (4.6.1+; power needs a release serving ``/api/power``).

Routes used: ``GET /api/nodes/``, ``PUT|PATCH|DELETE /api/nodes/{id}`` (bodies
``{"node": {...}}`` in nodes.conf field names), ``POST /api/nodes/{id}/overlays/build``,
``GET|POST /api/power/{id}``. Authentication is HTTP Basic with a user of
``/etc/warewulf/auth.conf``.

The client is the standard library's ``urllib``: six JSON calls with Basic auth
need no HTTP library, and the provider then depends on nothing but fuzz.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any, Literal

from fuzz.plugin.provider import ProviderError
from fuzz_baremetal.client import NewNode, NodeFields, NodeSetup, PowerState
from fuzz_baremetal.errors import classify, one_line


class RestWarewulf:
    """Calls warewulfd at ``url`` as ``user``."""

    def __init__(self, url: str, user: str | None, password: str | None, timeout: float) -> None:
        """Remember where and who; nothing is sent yet."""
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if user is not None:
            pair = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
            self._headers["Authorization"] = f"Basic {pair}"

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers=self._headers)
        what = f"{method} {path}"
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise classify(what, _error_text(exc), exc.code) from exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ProviderError(f"warewulf: the API at {self.url} does not answer: "
                                f"{reason}") from exc
        try:
            return json.loads(raw) if raw.strip() else None
        except ValueError:
            raise ProviderError(f"warewulf: {what} answered no JSON: "
                                f"{one_line(raw.decode(errors='replace'))[:200]}") from None

    @staticmethod
    def _node_path(name: str, suffix: str = "") -> str:
        return f"/api/nodes/{urllib.parse.quote(name, safe='')}{suffix}"

    def list_nodes(self) -> dict[str, NodeFields]:
        """``GET /api/nodes/``."""
        nodes = self._call("GET", "/api/nodes/")
        if not isinstance(nodes, dict):
            raise ProviderError("warewulf: GET /api/nodes/ did not return nodes by name")
        return nodes

    def add_node(self, node: NewNode) -> None:
        """``PUT /api/nodes/{id}`` with the machine's network, BMC and fuzz's tags."""
        netdev: dict[str, str] = {"hwaddr": node.mac}
        if node.ip:
            netdev["ipaddr"] = node.ip
        fields = {"profiles": [node.profile], "network devices": {node.network: netdev},
                  "ipmi": {"ipaddr": node.ipmi_address}, "tags": dict(node.tags)}
        self._call("PUT", self._node_path(node.name), {"node": fields})

    def set_node(self, name: str, setup: NodeSetup) -> None:
        """``PATCH /api/nodes/{id}`` with the image, the overlay and the bootstrap tags."""
        fields = {"image name": setup.image, "system overlay": [setup.overlay],
                  "tags": dict(setup.tags)}
        self._call("PATCH", self._node_path(name), {"node": fields})

    def delete_node(self, name: str) -> None:
        """``DELETE /api/nodes/{id}``."""
        self._call("DELETE", self._node_path(name))

    def build_overlays(self, name: str) -> None:
        """``POST /api/nodes/{id}/overlays/build``."""
        self._call("POST", self._node_path(name, "/overlays/build"))

    def power(self, name: str, state: Literal["on", "off"]) -> None:
        """``POST /api/power/{id}`` with ``{"state": ...}``."""
        self._call("POST", f"/api/power/{urllib.parse.quote(name, safe='')}", {"state": state})

    def power_status(self, nodes: Mapping[str, str]) -> dict[str, PowerState]:
        """``GET /api/power/{id}`` per node: ``[{"node_id", "bmc_ip", "result": "on"|"off"}]``."""
        states: dict[str, PowerState] = {}
        for name in nodes:
            reply = self._call("GET", f"/api/power/{urllib.parse.quote(name, safe='')}")
            result = reply[0].get("result") if isinstance(reply, list) and reply else None
            states[name] = result if result in ("on", "off") else "unknown"
        return states


def _error_text(exc: urllib.error.HTTPError) -> str:
    """The API's error message (``{"error": ..., "status": ...}``) or the raw body."""
    body = exc.read().decode(errors="replace")
    try:
        parsed = json.loads(body)
    except ValueError:
        return f"HTTP {exc.code}: {body}"
    if isinstance(parsed, Mapping) and "error" in parsed:
        return f"HTTP {exc.code}: {parsed['error']}"
    return f"HTTP {exc.code}: {body}"
